"""One voxel grid: the single rule by which two images share a grid, used by every stage.

Like pyradiomics' single ``geometryTolerance``, one number, `GRID_TOLERANCE`: sizes equal; spacing and origin
within that fraction of the smaller voxel spacing (in mm; files storing geometry as float32 round it by about
1e-5 of a voxel); direction cosines within it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError

GRID_TOLERANCE = 1e-4


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def grid_differences(image: sitk.Image, other: sitk.Image, reference: str = "PET") -> list[str]:
    """What differs between the grids of ``image`` (named ``reference``) and ``other`` and by how much; empty when
    they share one."""
    if image.GetDimension() != other.GetDimension():
        return [f"dimension {other.GetDimension()}D vs {image.GetDimension()}D"]
    differences = []
    if image.GetSize() != other.GetSize():
        differences.append(f"size {other.GetSize()} vs {reference} {image.GetSize()} voxels")
    scale = min(min(image.GetSpacing()), min(other.GetSpacing()))
    for name, a, b, limit, unit in (
        ("spacing", image.GetSpacing(), other.GetSpacing(), GRID_TOLERANCE * scale, " mm"),
        ("origin", image.GetOrigin(), other.GetOrigin(), GRID_TOLERANCE * scale, " mm"),
        ("direction", image.GetDirection(), other.GetDirection(), GRID_TOLERANCE, ""),
    ):
        diff = float(np.max(np.abs(np.subtract(a, b))))
        if diff > limit:
            differences.append(f"{name} {_fmt(b)} vs {reference} {_fmt(a)}{unit} (differs by {diff:.3g}, "
                               f"tolerance {limit:.3g})")
    return differences


def same_grid(image: sitk.Image, other: sitk.Image) -> bool:
    """Whether the two images share one voxel grid (`grid_differences` is empty)."""
    return not grid_differences(image, other)


def require_same_grid(image: sitk.Image, other: sitk.Image, what: str = "mask", case=None,
                      reference: str = "PET") -> None:
    """Raise InputError naming ``what`` and each difference when ``other`` is not on the grid of ``image`` (named
    ``reference``)."""
    differences = grid_differences(image, other, reference)
    if differences:
        raise InputError(f"the {what} is not on the {reference} grid: " + "; ".join(differences)
                         + f" (resample it onto the {reference} grid first)", case=case)
