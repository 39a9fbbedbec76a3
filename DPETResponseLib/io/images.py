"""Reading PET images (NIfTI/NRRD/MHA or DICOM, converted to SUV) and tumour masks onto the PET grid; atomic writes.

Every image comes back as a SimpleITK image in LPS physical space (what ITK and DICOM use; NIfTI's RAS is converted
by ITK's reader). PET images are float32 SUV, masks UInt8 0/1 on exactly the PET's grid.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from ..core.files import atomic_write
from .dicom_seg import read_seg_mask
from .geometry import require_same_grid
from .suv import check_suv_type, file_record, require_plausible_suv, suv_conversion

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img")


# ----------------------------------------------------------------------------------------------------- reading
def _check_exists(path: Path, case) -> None:
    if not path.exists():
        raise InputError(f"file not found: {path}", case=case)


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _dicom_series_files(folder: Path, case, modality: str | None = None) -> list[str]:
    """The slice files of the one series in ``folder`` (of ``modality`` if given), sorted along the slice normal."""
    import pydicom

    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"no DICOM series found in folder {folder}", case=case)
    series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    if modality is not None and len(series) > 1:
        modalities = {sid: str(pydicom.dcmread(files[0], stop_before_pixels=True).get("Modality", ""))
                      for sid, files in series.items()}
        series = {sid: files for sid, files in series.items() if modalities[sid] == modality}
        if not series:
            raise InputError(f"folder {folder} holds no {modality} series (series and modalities: {modalities})",
                             case=case)
    if len(series) > 1:
        raise InputError(f"folder {folder} holds several series, give the folder of one: {sorted(series)}",
                         case=case)
    return list(next(iter(series.values())))


def _read_series(files: list[str], case) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    # Float64 so that each slice's own RescaleSlope/Intercept is applied without truncation.
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        return reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM series {Path(files[0]).parent}: {_first_line(err)}", case=case) from None


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def read_image(path, case=None) -> sitk.Image:
    """Read NIfTI (.nii/.nii.gz), NRRD, MHA/MHD, a single DICOM file or a DICOM folder (one series)."""
    path = Path(path)
    _check_exists(path, case)
    if path.is_dir():
        return _read_series(_dicom_series_files(path, case), case)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"cannot read image file {path}: {_first_line(err)}", case=case) from None
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        _require_finite_nifti(path, case)
    return image


def _require_finite_nifti(path: Path, case) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0, which would hide them from the case checks (a tumour with a slab
    of zeros); nibabel reads the stored values as they are, so non-finite ones are found here."""
    import nibabel

    values = np.asanyarray(nibabel.load(str(path)).dataobj)
    if np.issubdtype(values.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        if bad:
            raise InputError(f"image {path} has {bad} non-finite voxel(s) (NaN/inf) of {values.size}", case=case)


# ----------------------------------------------------------------------------------------------------- PET / SUV
def _dicom_headers(files: list[str], case) -> list:
    import pydicom

    headers = []
    for f in files:
        try:
            headers.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as err:  # pydicom raises several types on corrupt files
            raise InputError(f"cannot read DICOM file {f}: {err}", case=case) from None
    return headers


def pet_dicom_headers(path, case=None) -> list | None:
    """The headers (pydicom, no pixels) of the PET ``path`` names: a folder's PT series or one DICOM file; None when
    ``path`` is an image file (NIfTI, NRRD, MHA). InputError when the DICOM is not PET."""
    path = Path(path)
    _check_exists(path, case)
    if path.is_dir():
        files = _dicom_series_files(path, case, modality="PT")
    elif _is_dicom_file(path):
        files = [str(path)]
    else:
        return None
    headers = _dicom_headers(files, case)
    modality = headers[0].get("Modality")
    if modality != "PT":
        raise InputError(f"{files[0]} is a {modality} image (tag Modality), not PET (PT)", case=case)
    return headers


def read_pet(path, suv_type: str = "bw", case=None) -> sitk.Image:
    """Read a PET image as float32 SUV in LPS geometry (`read_pet_with_provenance` without the record)."""
    return read_pet_with_provenance(path, suv_type, case)[0]


def read_pet_with_provenance(path, suv_type: str = "bw", case=None) -> tuple[sitk.Image, dict]:
    """A PET image as float32 SUV in LPS geometry, and the record of how its SUV was obtained (`io.suv`).

    Image files (NIfTI, NRRD, MHA) are taken to hold SUV already and are returned as they are (``suv_type`` is not
    applied to them). A DICOM folder (its PT series) or file is converted to SUV of ``suv_type`` by the IBSI-SUV
    manual's rules (`io.suv.suv_conversion`); DICOM already in SUVbw (Units GML) is never converted twice. Either
    way a maximum that is not a plausible SUV is refused (`io.suv.require_plausible_suv`).
    """
    check_suv_type(suv_type)
    path = Path(path)
    headers = pet_dicom_headers(path, case)
    if headers is None:
        image, record = _as_float32(read_image(path, case)), file_record(path)
        require_plausible_suv(sitk.GetArrayViewFromImage(image), record, case)
        return image, record

    files = [ds.filename for ds in headers]
    factors, record = suv_conversion(headers, str(path), suv_type, case)
    image = _read_series(files, case) if len(files) > 1 else _read_single(files[0], case)
    values = sitk.GetArrayViewFromImage(image) * factors[:, None, None]  # array axes are (slice, row, column)
    require_plausible_suv(values, record, case)
    suv = sitk.GetImageFromArray(values.astype(np.float32))
    suv.CopyInformation(image)
    return suv, record


#: The DICOM Modality code a modality name's prefix stands for (a folder holding several series is searched for it).
DICOM_MODALITY_CODES = {"ct": "CT", "mr": "MR", "us": "US", "mg": "MG"}


def read_modality(path, modality: str, case=None) -> sitk.Image:
    """Another modality's image (CT, MR, ...) as float32 in LPS geometry, its values as stored after the DICOM
    rescale (CT: Hounsfield units). A DICOM folder's series of the modality's DICOM code is read (`DICOM_MODALITY_CODES`
    by the name's prefix). Units are checked with the mask, by `io.validation.check_case`."""
    path = Path(path)
    _check_exists(path, case)
    if path.is_dir():
        code = next((c for prefix, c in DICOM_MODALITY_CODES.items() if modality.startswith(prefix)), None)
        return _as_float32(_read_series(_dicom_series_files(path, case, modality=code), case))
    return _as_float32(read_image(path, case))


def _as_float32(image: sitk.Image) -> sitk.Image:
    """float32 voxels; SimpleITK's Cast refuses a float32 -> float32 cast of 4D images, so none is asked for."""
    return image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)


def _read_single(file: str, case) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM file {file}: {_first_line(err)}", case=case) from None
    return image if image.GetDimension() == 3 else sitk.JoinSeries(image)


# ----------------------------------------------------------------------------------------------------- masks
def read_mask(path, reference: sitk.Image, case=None, label: int | str | None = None,
              reference_name: str = "PET") -> sitk.Image:
    """Read a tumour mask as UInt8 0/1 on exactly ``reference``'s grid (``reference_name`` names that image in
    messages: "PET", "ct image", ...).

    Label images (NIfTI, NRRD, ...) must share the reference's grid (`io.geometry.same_grid`);
    every nonzero label counts as tumour, or only ``label`` if given (several labels merged are warned about).
    A DICOM RTSTRUCT file is rasterized onto the reference grid (``label``: the ROI's number or name; all ROIs
    merged if None); a DICOM SEG's segment is placed on it (`io.dicom_seg.read_seg_mask`, ``label``: the segment's
    number or label).
    """
    path = Path(path)
    _check_exists(path, case)
    modality = _dicom_modality(path) if path.is_file() and _is_dicom_file(path) else None
    if modality == "RTSTRUCT":
        return _rasterize_rtstruct(path, reference, case, label)
    if modality == "SEG":
        return read_seg_mask(path, reference, case, label)
    image = read_image(path, case)
    require_same_grid(reference, image, what=f"mask {path}", case=case, reference=reference_name)
    labels = sitk.GetArrayFromImage(image)
    present = np.unique(labels[labels != 0])
    if label is not None:
        if label not in present:
            raise InputError(f"mask {path} has no voxel with label {label} (labels present: {present.tolist()})",
                             case=case)
        binary = labels == label
    else:
        if len(present) > 1:
            shown = present.tolist() if len(present) <= 10 else f"{len(present)} distinct values"
            warnings.warn(f"{case or path}: mask labels {shown} merged into one tumour mask (pass label= to pick one)",
                          stacklevel=2)
        binary = labels != 0
    mask = sitk.GetImageFromArray(binary.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def _dicom_modality(path: Path) -> str | None:
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True).get("Modality")
    except Exception:  # not readable as DICOM: let read_image report it
        return None


def _rasterize_rtstruct(path: Path, reference: sitk.Image, case, label) -> sitk.Image:
    """Fill the RTSTRUCT's closed planar contours on the reference's slices (voxel centres inside, even-odd rule).

    pydicom reads the contours, but no library in our stack rasterizes them onto an arbitrary SimpleITK grid
    (rt-utils and platipy need the whole DICOM image series), so the polygon fill uses matplotlib's Path.
    """
    import pydicom
    from matplotlib.path import Path as Polygon

    rs = pydicom.dcmread(str(path))
    names = {int(roi.ROINumber): str(roi.ROIName) for roi in rs.get("StructureSetROISequence", [])}
    contours = {int(item.ReferencedROINumber): item.get("ContourSequence", [])
                for item in rs.get("ROIContourSequence", [])}
    if not contours:
        raise InputError(f"RTSTRUCT {path} has no ROI contours", case=case)
    if label is None:
        chosen = sorted(contours)
        if len(chosen) > 1:
            warnings.warn(f"{case or path}: RTSTRUCT ROIs {[names.get(r, r) for r in chosen]} merged into one mask",
                          stacklevel=2)
    else:
        chosen = [r for r in contours if label in (r, names.get(r))]
        if not chosen:
            raise InputError(f"RTSTRUCT {path} has no ROI {label!r} (ROIs: {names})", case=case)

    size = reference.GetSize()
    spacing = np.array(reference.GetSpacing())
    to_index = np.linalg.inv(np.array(reference.GetDirection()).reshape(3, 3) * spacing)
    origin = np.array(reference.GetOrigin())
    mask = np.zeros(size[::-1], dtype=bool)
    cols, rows = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
    centres = np.column_stack([cols.ravel(), rows.ravel()])
    for roi in chosen:
        filled = np.zeros_like(mask)  # even-odd within one ROI (holes), union across ROIs
        for contour in contours[roi]:
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) not in ("CLOSED_PLANAR", "POINT"):
                continue
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            index = (points - origin) @ to_index.T
            k = int(round(float(np.mean(index[:, 2]))))
            if np.ptp(index[:, 2]) > 0.5:
                raise InputError(f"RTSTRUCT {path}: a contour of ROI {names.get(roi, roi)} is not in one image "
                                 "slice (does the RTSTRUCT belong to this image?)", case=case)
            if not 0 <= k < size[2]:
                raise InputError(f"RTSTRUCT {path}: ROI {names.get(roi, roi)} has a contour outside the image "
                                 f"(slice index {k}, image has {size[2]} slices)", case=case)
            inside = Polygon(index[:, :2]).contains_points(centres).reshape(size[1], size[0])
            filled[k] ^= inside
        mask |= filled
    if not mask.any():
        raise InputError(f"RTSTRUCT {path}: ROI contours enclose no voxel centre of the image", case=case)
    out = sitk.GetImageFromArray(mask.astype(np.uint8))
    out.CopyInformation(reference)
    return out


# ----------------------------------------------------------------------------------------------------- writing
def write_image(image: sitk.Image, path) -> Path:
    """Write ``image`` atomically (temporary name in the same folder, then rename); compressed where supported."""
    path = Path(path)
    with atomic_write(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path
