"""Reading PET images (NIfTI/NRRD/MHA or DICOM, converted to SUV) and tumour masks onto the PET grid; atomic writes.

Every image comes back as a SimpleITK image in LPS physical space (what ITK and DICOM use; NIfTI's RAS is converted
by ITK's reader). PET images are float32 SUV, masks UInt8 0/1 on exactly the PET's grid.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import ConfigError, InputError
from ..core.files import atomic_write
from .geometry import require_same_grid

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
SUV_TYPES = ("bw", "lbm")


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
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"cannot read image file {path}: {_first_line(err)}", case=case) from None


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


def _tag(ds, keyword: str, source, case, positive: bool = False):
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(f"DICOM tag {keyword} is missing in {source}", case=case)
    if positive:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(f"DICOM tag {keyword}={value!r} in {source} is not a number", case=case) from None
        if not (value > 0 and math.isfinite(value)):
            raise InputError(f"DICOM tag {keyword}={value} in {source} must be a positive number", case=case)
    return value


def _datetime(date, time, what: str, source, case) -> datetime:
    from pydicom.valuerep import DA, DT, TM

    try:
        if date is None:  # a DT value
            value = DT(str(time))
            return datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                            value.microsecond)
        day, clock = DA(str(date)), TM(str(time))
        return datetime(day.year, day.month, day.day, clock.hour, clock.minute, clock.second, clock.microsecond)
    except (ValueError, TypeError, AttributeError):
        raise InputError(f"cannot parse {what} (date {date!r}, time {time!r}) in {source}", case=case) from None


#: RadionuclideTotalDose is stored in Bq or MBq (both allowed by DICOM IODs); the IBSI-SUV manual says to tell them
#: apart by value: human PET doses cluster near 4e2 in MBq and 4e8 in Bq. Below MBQ_MAX the value is read as MBq
#: (up to 10 GBq), from BQ_MIN as Bq (10 MBq and more); in between neither reading is a plausible dose.
MBQ_MAX, BQ_MIN = 1e4, 1e7


def _dose_in_bq(value: float, source, case) -> float:
    if value < MBQ_MAX:
        return value * 1e6
    if value >= BQ_MIN:
        return value
    raise InputError(f"RadionuclideTotalDose {value:g} in {source} is neither a plausible dose in MBq (< {MBQ_MAX:g}) "
                     f"nor in Bq (>= {BQ_MIN:g}): SUV cannot be computed", case=case)


def _injection(ds, source, case) -> tuple[float, float, datetime]:
    """(total dose [Bq], half-life [s], injection date-time) from RadiopharmaceuticalInformationSequence."""
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise InputError(f"DICOM tag RadiopharmaceuticalInformationSequence is missing in {source}", case=case)
    item = seq[0]
    dose = _dose_in_bq(_tag(item, "RadionuclideTotalDose", source, case, positive=True), source, case)
    half_life = _tag(item, "RadionuclideHalfLife", source, case, positive=True)
    if item.get("RadiopharmaceuticalStartDateTime"):
        injected = _datetime(None, item.RadiopharmaceuticalStartDateTime, "RadiopharmaceuticalStartDateTime",
                             source, case)
    else:
        start = _tag(item, "RadiopharmaceuticalStartTime", source, case)
        injected = _datetime(_tag(ds, "SeriesDate", source, case), start, "SeriesDate + RadiopharmaceuticalStartTime",
                             source, case)
    return dose, half_life, injected


def _acquisition(ds, source, case) -> datetime:
    date = ds.get("AcquisitionDate") or _tag(ds, "SeriesDate", source, case)
    return _datetime(date, _tag(ds, "AcquisitionTime", source, case), "AcquisitionDate/Time", source, case)


def _scan_start(headers, sources, case) -> datetime:
    """The time START-corrected images are decay corrected to: the series start.

    SeriesDate/Time is the reference (DICOM PS3.3 C.8.9.1.1.4), also when it equals the injection time (dynamic
    scans started at injection) while AcquisitionTime is later. Post-processing can rewrite SeriesTime to after
    the scan; then, as in the QIBA vendor-neutral SUV recipe, GE's private scan date-time or else the earliest
    AcquisitionDate/Time is the reference.
    """
    first = headers[0]
    series = _datetime(_tag(first, "SeriesDate", sources[0], case), _tag(first, "SeriesTime", sources[0], case),
                       "SeriesDate/Time", sources[0], case)
    earliest = min(_acquisition(ds, src, case) for ds, src in zip(headers, sources))
    if series <= earliest:
        return series
    try:
        ge_scan = first.get_private_item(0x0009, 0x0D, "GEMS_PETD_01").value
        return _datetime(None, ge_scan, "GE private scan date-time (0009,xx0D)", sources[0], case)
    except (KeyError, AttributeError):
        pass
    warnings.warn(f"{case or sources[0]}: SeriesTime is after the earliest AcquisitionTime (post-processed "
                  "series?); the earliest AcquisitionDate/Time is used as the decay reference", stacklevel=2)
    return earliest


def _lean_body_mass_kg(ds, source, case) -> float:
    """Janmahasatian et al., Clin Pharmacokinet 2005;44:1051: lean body mass from weight, height and sex."""
    weight = _tag(ds, "PatientWeight", source, case, positive=True)
    height = _tag(ds, "PatientSize", source, case, positive=True)
    sex = str(_tag(ds, "PatientSex", source, case)).upper()
    if sex not in ("M", "F"):
        raise InputError(f"DICOM tag PatientSex={sex!r} in {source}: lean body mass needs M or F", case=case)
    bmi = weight / height**2
    return 9270.0 * weight / ((6680.0 + 216.0 * bmi) if sex == "M" else (8780.0 + 244.0 * bmi))


def _check_consistent(headers, sources, case) -> None:
    """Units, decay correction, weight and dose must be the same on every slice of a series."""
    for keyword in ("Units", "DecayCorrection", "PatientWeight", "SeriesTime"):
        values = {str(ds.get(keyword)) for ds in headers}
        if len(values) > 1:
            raise InputError(f"DICOM tag {keyword} differs between slices of {Path(sources[0]).parent}: "
                             f"{sorted(values)}", case=case)


def _suv_factors(headers, sources, suv_type: str, case) -> np.ndarray:
    """Per-slice factor turning the stored values into SUV of ``suv_type`` (1 for data already in that SUV)."""
    first, source = headers[0], sources[0]
    units = str(_tag(first, "Units", source, case)).upper()
    if units == "GML":
        stored = str(first.get("SUVType") or "BW").upper()
        if stored == suv_type.upper():
            return np.ones(len(headers))
        if stored == "BW" and suv_type == "lbm":
            weight = _tag(first, "PatientWeight", source, case, positive=True)
            return np.full(len(headers), _lean_body_mass_kg(first, source, case) / weight)
        raise InputError(f"{source} holds SUV of type {stored} (tag SUVType); cannot convert it to {suv_type}",
                         case=case)
    if units != "BQML":
        raise InputError(f"DICOM tag Units={units} in {source}: only BQML (Bq/ml) or GML (SUV) PET can be "
                         "converted to SUV", case=case)

    corrected = first.get("CorrectedImage")
    if corrected is not None and "ATTN" not in corrected:
        raise InputError(f"DICOM tag CorrectedImage={list(corrected)} in {source}: the image is not attenuation "
                         "corrected, so SUV is meaningless", case=case)
    decay = str(_tag(first, "DecayCorrection", source, case)).upper()
    if corrected is not None and decay in ("START", "ADMIN") and "DECY" not in corrected:
        raise InputError(f"DICOM tags disagree in {source}: DecayCorrection={decay} but CorrectedImage="
                         f"{list(corrected)} lacks DECY", case=case)

    dose, half_life, injected = _injection(first, source, case)
    mass_g = 1000.0 * (_lean_body_mass_kg(first, source, case) if suv_type == "lbm"
                       else _tag(first, "PatientWeight", source, case, positive=True))

    def decayed_dose(at: datetime, what: str) -> float:
        elapsed = (at - injected) / timedelta(seconds=1)
        if elapsed < 0:
            raise InputError(f"injection time {injected:%Y-%m-%d %H:%M:%S} (RadiopharmaceuticalStart) is after the "
                             f"{what} {at:%Y-%m-%d %H:%M:%S} in {source}", case=case)
        return dose * 2.0 ** (-elapsed / half_life)

    if decay == "ADMIN":  # images already decay corrected to the injection time
        return np.full(len(headers), mass_g / dose)
    if decay == "START":
        return np.full(len(headers), mass_g / decayed_dose(_scan_start(headers, sources, case), "series start"))
    if decay == "NONE":  # each slice holds activity at its own acquisition time
        return np.array([mass_g / decayed_dose(_acquisition(ds, src, case), "acquisition time")
                         for ds, src in zip(headers, sources)])
    raise InputError(f"DICOM tag DecayCorrection={decay} in {source}: expected START, ADMIN or NONE", case=case)


def read_pet(path, suv_type: str = "bw", case=None) -> sitk.Image:
    """Read a PET image as float32 SUV in LPS geometry.

    Image files (NIfTI, NRRD, MHA) are taken to hold SUV already and are returned as they are (``suv_type`` is
    not applied to them). A DICOM folder (its PT series) or file in Bq/ml (Units BQML) is converted to SUV of
    ``suv_type`` ("bw": body weight; "lbm": lean body mass, Janmahasatian) using the patient's weight and the
    decay-corrected injected dose; DICOM already in SUV (Units GML) is never converted twice.
    """
    if suv_type not in SUV_TYPES:
        raise ConfigError(f"suv_type must be one of {SUV_TYPES}, got {suv_type!r}")
    path = Path(path)
    _check_exists(path, case)
    if path.is_dir():
        files = _dicom_series_files(path, case, modality="PT")
    elif _is_dicom_file(path):
        files = [str(path)]
    else:
        return _as_float32(read_image(path, case))

    headers = _dicom_headers(files, case)
    modality = headers[0].get("Modality")
    if modality != "PT":
        raise InputError(f"{files[0]} is a {modality} image (tag Modality), not PET (PT)", case=case)
    _check_consistent(headers, files, case)
    factors = _suv_factors(headers, files, suv_type, case)
    image = _read_series(files, case) if len(files) > 1 else _read_single(files[0], case)
    if np.all(factors == 1.0):
        return _as_float32(image)
    values = sitk.GetArrayViewFromImage(image) * factors[:, None, None]  # array axes are (slice, row, column)
    suv = sitk.GetImageFromArray(values.astype(np.float32))
    suv.CopyInformation(image)
    return suv


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
def read_mask(path, reference: sitk.Image, case=None, label: int | str | None = None) -> sitk.Image:
    """Read a tumour mask as UInt8 0/1 on exactly ``reference``'s grid.

    Label images (NIfTI, NRRD, ...) must share the reference's grid (`io.geometry.same_grid`);
    every nonzero label counts as tumour, or only ``label`` if given (several labels merged are warned about).
    A DICOM RTSTRUCT file is rasterized onto the reference grid (``label``: the ROI's number or name; all ROIs
    merged if None).
    """
    path = Path(path)
    _check_exists(path, case)
    if path.is_file() and _is_dicom_file(path) and _dicom_modality(path) == "RTSTRUCT":
        return _rasterize_rtstruct(path, reference, case, label)
    image = read_image(path, case)
    require_same_grid(reference, image, what=f"mask {path}", case=case)
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
