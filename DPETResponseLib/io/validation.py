"""Per-case input validation, the one gatekeeper for a PET (SUV), or another modality, and its tumour mask.

`require_case` is the contract every stage checks on entry (3D scalar SimpleITK images on one grid); `check_case`,
run on every case before any analysis, also cleans and checks the values. `check_case` returns the image as float32
3D and the mask as 0/1 ``sitkUInt8`` on the image's grid, or raises `InputError(problem, case=case)`. Rules:

- dimensions: 3D only. A 4D image/mask with a single time point (size 1 on the 4th axis) is squeezed to 3D with a
  warning; 2D, multi-frame 4D and multi-component (vector) images are errors.
- non-finite voxels (NaN, inf) anywhere in the image: error naming how many.
- negative SUVs: values in [-1, 0) SUV are reconstruction noise (e.g. FBP/OSEM undershoot in cold regions): warning,
  values left as they are; any voxel below -1 SUV means the image is not a SUV image (or is corrupt): error.
- mask labels: 0/1 is fine; a single other foreground value (e.g. 255) is taken as the tumour (warning); several
  foreground labels, negative, fractional or non-finite values are errors (one tumour per case).
- geometry: one grid by `io.geometry.same_grid` (size equal; spacing, origin and direction within 1e-4 of a voxel).
  Within tolerance the mask gets the image's exact geometry; beyond it the error says which of them differ. A mask
  whose tumour lies outside the image's physical extent is reported as such.
- other modalities (``kind``, `core.names.modality_kind`): a CT must be in Hounsfield units: a CT whose values are all
  >= 0 with a tumour median above `CT_STORED_VALUE_MEDIAN` is stored values without the DICOM rescale (soft tissue is
  0-100 HU, air -1000): error. Unitless images (MR ...) have no unit to check; their radiomics normalise them.
- tumour: an empty mask, a mask covering only zero-valued voxels (outside the PET field of view), fewer than
  `MIN_TUMOUR_VOXELS` voxels, or a tumour that extends along one axis only (pyradiomics needs two) are errors.
"""

from __future__ import annotations

import warnings as _warnings

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from .geometry import grid_differences, require_same_grid

NOISE_NEGATIVE_SUV = -1.0  # below this SUV a negative value is not reconstruction noise
MIN_TUMOUR_VOXELS = 3
#: A CT tumour's median value above which a CT without negative values is taken as not rescaled to HU.
CT_STORED_VALUE_MEDIAN = 500.0


class InputWarning(UserWarning):
    """Something in a case's input that was accepted but is worth a look (noise negatives, squeezed 4D, ...)."""


def _to_3d(image: sitk.Image, what: str, case, notes: list[str]) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel (a vector/RGB "
                         "image); a scalar 3D volume is needed", case=case)
    dim, size = image.GetDimension(), image.GetSize()
    if dim == 3:
        return image
    if dim == 4 and size[3] == 1:
        notes.append(f"{what} is 4D with a single time point (size {size}); squeezed to 3D")
        return sitk.Extract(image, [*size[:3], 0], [0, 0, 0, 0])
    if dim == 4:
        raise InputError(f"{what} is 4D with {size[3]} time points/frames (size {size}); give one 3D frame", case=case)
    raise InputError(f"{what} is {dim}D (size {size}); a 3D volume is needed", case=case)


def _fmt(values, digits: int) -> str:
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"


def _physical_box(image: sitk.Image, lower_index, upper_index) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical box (mm) of the index box [lower, upper] including half-voxel borders."""
    corners = [image.TransformContinuousIndexToPhysicalPoint([(hi if bit else lo) + (0.5 if bit else -0.5)
                                                              for lo, hi, bit in zip(lower_index, upper_index, bits)])
               for bits in np.ndindex(2, 2, 2)]
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _check_mask_values(values: np.ndarray, case) -> tuple[np.ndarray, list[str]]:
    notes = []
    if not np.all(np.isfinite(values)):
        raise InputError(f"mask has {int(np.count_nonzero(~np.isfinite(values)))} non-finite voxel(s)", case=case)
    labels = np.unique(values)
    if np.any(labels < 0) or np.any(labels != np.round(labels)):
        odd = [f"{v:g}" for v in labels if v < 0 or v != round(v)][:5]
        raise InputError(f"mask is not a label image: values {', '.join(odd)} (a probability map? threshold it "
                         "to 0/1 first)", case=case)
    foreground = labels[labels != 0]
    if len(foreground) > 1:
        raise InputError(f"mask has {len(foreground)} labels ({', '.join(f'{v:g}' for v in foreground[:10])}); "
                         "give one tumour per case as a 0/1 mask", case=case)
    if len(foreground) == 1 and foreground[0] != 1:
        notes.append(f"mask foreground value {foreground[0]:g} taken as the tumour")
    return values != 0, notes


def require_case(image: sitk.Image, mask: sitk.Image, case=None, what: str = "mask", reference: str = "PET") -> None:
    """Raise InputError unless ``image`` (named ``reference``) and ``mask`` (named ``what``) are 3D SimpleITK
    images, the image scalar, on one grid."""
    for name, img in ((f"{reference} image", image), (what, mask)):
        if not isinstance(img, sitk.Image):
            raise InputError(f"the {name} is a {type(img).__name__}, not a SimpleITK image", case=case)
        if img.GetDimension() != 3:
            raise InputError(f"the {name} is {img.GetDimension()}D; a 3D volume is needed", case=case)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the {reference} image has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a scalar image is needed", case=case)
    require_same_grid(image, mask, what=what, case=case, reference=reference)


def check_case(image: sitk.Image, mask: sitk.Image, case, kind: str = "pet",
               what: str = "image") -> tuple[sitk.Image, sitk.Image, list[str]]:
    """Validated ``(image float32 3D, mask uint8 0/1 on the image's grid, warnings)``; see the module's rules.
    ``kind``: "pet" (SUV), "ct" or "unitless"; ``what`` names the image in messages (e.g. "ct image").

    Each warning is also issued with ``warnings.warn(..., InputWarning)``."""
    notes: list[str] = []
    image = _to_3d(image, what, case, notes)
    mask = _to_3d(mask, "mask", case, notes)
    image = sitk.Cast(image, sitk.sitkFloat32)

    values = sitk.GetArrayViewFromImage(image)
    n_bad = int(np.count_nonzero(~np.isfinite(values)))
    if n_bad:
        raise InputError(f"{what} has {n_bad} non-finite voxel(s) (NaN/inf) of {values.size}", case=case)
    minimum = float(values.min())
    if kind == "pet" and minimum < NOISE_NEGATIVE_SUV:
        raise InputError(f"image has {int(np.count_nonzero(values < NOISE_NEGATIVE_SUV))} voxel(s) below "
                         f"{NOISE_NEGATIVE_SUV:g} SUV (minimum {minimum:.3g}): not a SUV image (wrong units, or "
                         "corrupt)", case=case)
    if kind == "pet" and minimum < 0:
        notes.append(f"image has {int(np.count_nonzero(values < 0))} negative voxel(s) (minimum {minimum:.3g} SUV), "
                     "taken as reconstruction noise and left as they are")

    foreground, mask_notes = _check_mask_values(sitk.GetArrayViewFromImage(mask).astype(np.float64), case)
    notes += mask_notes
    n_voxels = int(np.count_nonzero(foreground))
    if n_voxels == 0:
        raise InputError("mask is empty (no tumour voxel)", case=case)

    differences = grid_differences(image, mask)
    if differences:
        where = np.argwhere(foreground)[:, ::-1]  # numpy (z, y, x) -> ITK index (x, y, z)
        tumour_lo, tumour_hi = _physical_box(mask, where.min(axis=0), where.max(axis=0))
        image_lo, image_hi = _physical_box(image, [0, 0, 0], np.array(image.GetSize()) - 1)
        if np.any(tumour_hi <= image_lo) or np.any(tumour_lo >= image_hi):
            raise InputError(f"mask's tumour lies outside the image (tumour {_fmt(tumour_lo, 1)} to "
                             f"{_fmt(tumour_hi, 1)} mm, image {_fmt(image_lo, 1)} to {_fmt(image_hi, 1)} mm)",
                             case=case)
        require_same_grid(image, mask, case=case)

    clean = sitk.GetImageFromArray(foreground.astype(np.uint8))
    clean.CopyInformation(image)
    median = float(np.median(values[foreground])) if kind == "ct" else None
    if kind == "ct" and minimum >= 0 and median > CT_STORED_VALUE_MEDIAN:
        raise InputError(f"{what} does not look like Hounsfield units: no negative value and a tumour median of "
                         f"{median:.0f} (soft tissue is about 0-100 HU, air -1000): stored values without the DICOM "
                         "rescale slope/intercept?", case=case)
    if kind == "pet" and float(values[foreground].max()) <= 0:
        raise InputError(f"mask covers only voxels of SUV <= 0 ({n_voxels} voxels): outside the PET field of view?",
                         case=case)
    if n_voxels < MIN_TUMOUR_VOXELS:
        raise InputError(f"tumour has {n_voxels} voxel(s): too small for texture analysis (at least "
                         f"{MIN_TUMOUR_VOXELS} needed)", case=case)
    extent = np.ptp(np.argwhere(foreground), axis=0) + 1
    if np.count_nonzero(extent > 1) < 2:
        raise InputError(f"tumour ({n_voxels} voxels) extends along one axis only: texture analysis needs at least "
                         "two", case=case)
    for note in notes:
        _warnings.warn(f"{case}: {note}" if case else note, InputWarning, stacklevel=2)
    return image, clean, notes
