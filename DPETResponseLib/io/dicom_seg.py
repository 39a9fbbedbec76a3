"""A tumour mask from a DICOM Segmentation (SEG), read with highdicom and placed on the PET's grid."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError
from .geometry import grid_differences


def read_seg_mask(path, reference: sitk.Image, case=None, label: int | str | None = None) -> sitk.Image:
    """The segment ``label`` (its number or its label text) of the DICOM SEG ``path``, or all its segments merged
    (warned about when there are several), as UInt8 0/1 on exactly ``reference``'s grid.

    The SEG's frames may cover only some of the reference's slices (and may be stored in any order or
    orientation: highdicom stacks them by position), but its voxel centres must be the reference's
    (`io.geometry`'s rule). InputError for anything else: not a SEG, an unknown label, an empty segment, another
    grid, a segment reaching outside the reference.
    """
    import highdicom as hd
    import pydicom

    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}", case=case)
    try:
        dataset = pydicom.dcmread(str(path))
    except Exception as err:  # pydicom raises several types on files that are not DICOM
        raise InputError(f"cannot read {path} as DICOM: {err}", case=case) from None
    if dataset.get("Modality") != "SEG":
        raise InputError(f"{path} is a {dataset.get('Modality')} file (tag Modality), not a DICOM SEG", case=case)
    try:
        seg = hd.seg.Segmentation.from_dataset(dataset, copy=False)
    except (AttributeError, KeyError, ValueError) as err:
        raise InputError(f"cannot read DICOM SEG {path}: {err}", case=case) from None
    names = {number: seg.get_segment_description(number).segment_label for number in seg.segment_numbers}
    if label is None:
        chosen = sorted(names)
        if len(chosen) > 1:
            warnings.warn(f"{case or path}: SEG segments {[names[n] for n in chosen]} merged into one mask "
                          "(pass label= to pick one)", stacklevel=2)
    else:
        chosen = [n for n, name in names.items() if label in (n, name)]
        if not chosen:
            raise InputError(f"DICOM SEG {path} has no segment {label!r} (segments: {names})", case=case)
    try:
        volume = seg.get_volume(segment_numbers=chosen, combine_segments=False)
    except (RuntimeError, ValueError) as err:
        raise InputError(f"the frames of DICOM SEG {path} do not form one volume: {err}", case=case) from None
    # Permute and flip (never resample) the SEG's axes to the reference's, so the index offset is a translation.
    geometry = hd.VolumeGeometry.from_components(
        reference.GetSize(), spacing=reference.GetSpacing(), position=reference.GetOrigin(),
        direction=np.reshape(reference.GetDirection(), (3, 3)), coordinate_system="PATIENT")
    volume = volume.match_orientation(geometry)
    inside = volume.array >= 0.5  # [x, y, z, segment]; fractional segments are rescaled to [0, 1]
    empty = [names[n] for n, present in zip(chosen, inside.any(axis=(0, 1, 2))) if not present]
    if len(empty) == len(chosen):
        raise InputError(f"DICOM SEG {path}: segment(s) {empty} are empty", case=case)
    return _place(inside.any(axis=-1), volume, reference, f"DICOM SEG {path}", case)


def _place(inside: np.ndarray, volume, reference: sitk.Image, what: str, case) -> sitk.Image:
    """``inside`` ([x, y, z] on ``volume``'s grid, axes parallel to the reference's) pasted onto ``reference``'s
    grid; InputError naming the difference when its voxel centres are not the reference's."""
    start = np.rint(reference.TransformPhysicalPointToContinuousIndex(volume.position)).astype(int)
    expected = sitk.Image(inside.shape, sitk.sitkUInt8)  # the reference's grid over the volume's voxels
    expected.SetSpacing(reference.GetSpacing())
    expected.SetDirection(reference.GetDirection())
    expected.SetOrigin(reference.TransformIndexToPhysicalPoint(start.tolist()))
    given = sitk.Image(inside.shape, sitk.sitkUInt8)
    given.SetSpacing(volume.spacing)
    given.SetDirection(volume.direction.ravel().tolist())
    given.SetOrigin(volume.position)
    differences = grid_differences(expected, given)
    if differences:
        raise InputError(f"{what} is not on the PET grid: " + "; ".join(differences), case=case)
    size = np.array(reference.GetSize())
    lo, hi = np.maximum(start, 0), np.minimum(start + inside.shape, size)
    kept = inside[tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))] if (hi > lo).all() else inside[:0]
    if kept.sum() < inside.sum():
        raise InputError(f"{what}: {int(inside.sum() - kept.sum())} voxels lie outside the PET image", case=case)
    mask = np.zeros(size, dtype=np.uint8)  # [x, y, z]
    mask[tuple(slice(a, b) for a, b in zip(lo, hi))] = kept
    out = sitk.GetImageFromArray(mask.transpose(2, 1, 0))
    out.CopyInformation(reference)
    return out
