"""Conventional PET metrics of a tumour: SUVmax, SUVmean, SUVpeak, MTV and TLG.

Also holds :func:`tumour_arrays`, the image/mask checks shared by the tumour-analysis stages
(``segmentation``, ``subregions``, ``ith``).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..core.errors import ConfigError, InputError
from ..io.validation import require_case

PEAK_RADIUS_MM = 6.2  # radius of a 1 cm3 sphere: (3 / (4 pi) * 1000 mm3) ** (1/3) = 6.20 mm
_SUBSAMPLES = 10  # sub-points per axis used to measure how much of a voxel lies inside the sphere


def tumour_arrays(image: sitk.Image, mask: sitk.Image, case: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a PET image and its tumour mask; return (SUV array, boolean mask array), both indexed [z, y, x].

    Raises InputError when the images are not 3D scalar images on the same grid, the mask is empty, or the
    SUV inside the mask is not finite. Any non-zero mask value counts as tumour.
    """
    require_case(image, mask, case=case)
    suv = sitk.GetArrayFromImage(image).astype(np.float64)
    inside = sitk.GetArrayFromImage(mask) != 0
    if not inside.any():
        raise InputError("the tumour mask is empty", case=case)
    if not np.isfinite(suv[inside]).all():
        raise InputError("the PET image has NaN or infinite values inside the tumour mask", case=case)
    return suv, inside


def sphere_kernel(spacing_xyz, radius_mm: float = PEAK_RADIUS_MM, weighting: str = "volume") -> np.ndarray:
    """Weights [z, y, x] of the voxels of a sphere centred on the middle voxel.

    ``weighting="volume"``: each voxel weighs the fraction of its volume inside the sphere (measured on a
    10x10x10 sub-grid per voxel), so the kernel's total weight times the voxel volume is the sphere's
    volume. ``weighting="centre"``: a voxel weighs 1 when its centre lies within the radius, else 0
    (the IBSI 1 definition of the intensity peak).
    """
    if weighting not in ("volume", "centre"):
        raise ConfigError(f"unknown SUVpeak weighting {weighting!r} (use 'volume' or 'centre')")
    spacing_zyx = np.asarray(spacing_xyz, dtype=float)[::-1]
    half = np.ceil(radius_mm / spacing_zyx + 0.5).astype(int)
    if weighting == "centre":
        axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx)]
        zz, yy, xx = np.meshgrid(*axes, indexing="ij")
        return (zz**2 + yy**2 + xx**2 <= radius_mm**2).astype(float)
    sub = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5  # sub-point offsets within a voxel, in voxels
    axes = [((np.arange(-h, h + 1)[:, None] + sub[None, :]) * s).ravel() for h, s in zip(half, spacing_zyx)]
    inside = (axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
              <= radius_mm**2)
    shape = [2 * h + 1 for h in half]
    return inside.reshape(shape[0], _SUBSAMPLES, shape[1], _SUBSAMPLES, shape[2], _SUBSAMPLES).mean(axis=(1, 3, 5))


def suv_peak(image: sitk.Image, mask: sitk.Image, weighting: str = "volume", case: str | None = None) -> float:
    """Highest mean SUV in a 1 cm3 sphere (radius 6.2 mm) whose centre is a voxel centre inside the tumour.

    The sphere takes every image voxel it covers, inside the mask or not (the PERCIST SUVpeak and IBSI
    "global intensity peak" convention); parts of the sphere outside the image are left out of the mean.
    Partial voxels: see :func:`sphere_kernel` (default ``"volume"``: weighted by the fraction inside).
    """
    suv, inside = tumour_arrays(image, mask, case)
    return _peak(suv, inside, image.GetSpacing(), weighting)


def _peak(suv: np.ndarray, inside: np.ndarray, spacing_xyz, weighting: str) -> float:
    kernel = sphere_kernel(spacing_xyz, PEAK_RADIUS_MM, weighting)
    half = np.array(kernel.shape) // 2
    idx = np.argwhere(inside)
    lo = np.maximum(idx.min(axis=0) - half, 0)
    hi = np.minimum(idx.max(axis=0) + half + 1, suv.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    total = ndimage.correlate(suv[box], kernel, mode="constant", cval=0.0)
    weight = ndimage.correlate(np.ones_like(suv[box]), kernel, mode="constant", cval=0.0)
    return float((total / weight)[inside[box]].max())


def pet_metrics(image: sitk.Image, mask: sitk.Image, case: str | None = None) -> dict:
    """PET metrics of the tumour in ``mask``.

    Returns ``pet_SUVmax``, ``pet_SUVmean`` (over the mask voxels), ``pet_SUVpeak`` (:func:`suv_peak`,
    volume-weighted partial voxels), ``pet_MTV`` (mask volume in ml: voxel count x voxel volume) and
    ``pet_TLG`` (SUVmean x MTV). Raises InputError for an empty mask or a mask off the PET grid.
    """
    suv, inside = tumour_arrays(image, mask, case)
    values = suv[inside]
    mtv_ml = inside.sum() * float(np.prod(image.GetSpacing())) / 1000.0
    suv_mean = float(values.mean())
    return {
        "pet_SUVmax": float(values.max()),
        "pet_SUVmean": suv_mean,
        "pet_SUVpeak": _peak(suv, inside, image.GetSpacing(), "volume"),
        "pet_MTV": mtv_ml,
        "pet_TLG": suv_mean * mtv_ml,
    }
