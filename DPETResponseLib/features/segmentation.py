"""Tumour segmentation from a seed point or a box: fixed relative (EANM 41 % of SUVmax) or absolute SUV threshold."""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from ..core.errors import InputError

SEED_SEARCH_RADIUS_MM = 10.0  # the local SUVmax of a seed is searched for within this distance of the seed


def _seed_index(image: sitk.Image, seed_xyz, case) -> tuple[int, int, int]:
    try:
        point = tuple(float(v) for v in seed_xyz)
    except (TypeError, ValueError):
        raise InputError(f"the seed {seed_xyz!r} is not three numbers (x, y, z in mm)", case=case) from None
    if len(point) != 3:
        raise InputError(f"the seed {seed_xyz!r} is not three numbers (x, y, z in mm)", case=case)
    index = np.rint(image.TransformPhysicalPointToContinuousIndex(point)).astype(int)
    if np.any(index < 0) or np.any(index >= np.array(image.GetSize())):
        raise InputError(f"the seed {point} mm (LPS) lies outside the PET image", case=case)
    return tuple(int(i) for i in index)


def _box_region(image: sitk.Image, box, case) -> tuple[np.ndarray, np.ndarray]:
    """Index range [lo, hi) (x, y, z) of the voxels whose centres lie in the box, for any image direction."""
    try:
        corners = np.asarray(box, dtype=float).reshape(2, 3)
    except (TypeError, ValueError):
        raise InputError(f"the box {box!r} is not six numbers (x0, y0, z0, x1, y1, z1 in mm)", case=case) from None
    indices = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(corners[pick, axis] for axis, pick
                                                                            in enumerate(choice)))
                        for choice in itertools.product((0, 1), repeat=3)])
    lo = np.maximum(np.ceil(indices.min(axis=0) - 1e-6), 0).astype(int)
    hi = np.minimum(np.floor(indices.max(axis=0) + 1e-6) + 1, image.GetSize()).astype(int)
    if np.any(hi <= lo):
        raise InputError(f"the box {tuple(corners.ravel())} mm (LPS) holds no voxel of the PET image", case=case)
    return lo, hi


def _local_max_near(suv_zyx: np.ndarray, seed_xyz_index, spacing_xyz) -> tuple[int, int, int]:
    """Index (x, y, z) of the highest voxel within SEED_SEARCH_RADIUS_MM of the seed voxel."""
    spacing_zyx = np.asarray(spacing_xyz)[::-1]
    seed_zyx = np.asarray(seed_xyz_index)[::-1]
    half = np.floor(SEED_SEARCH_RADIUS_MM / spacing_zyx).astype(int)
    lo = np.maximum(seed_zyx - half, 0)
    hi = np.minimum(seed_zyx + half + 1, suv_zyx.shape)
    grids = np.meshgrid(*[(np.arange(a, b) - s) * sp for a, b, s, sp in zip(lo, hi, seed_zyx, spacing_zyx)],
                        indexing="ij")
    near = sum(g**2 for g in grids) <= SEED_SEARCH_RADIUS_MM**2
    window = np.where(near, suv_zyx[tuple(slice(a, b) for a, b in zip(lo, hi))], -np.inf)
    best = np.unravel_index(np.argmax(window), window.shape)
    return tuple(int(v) for v in (np.asarray(best) + lo)[::-1])


def segment_from_seed(image: sitk.Image, seed_xyz=None, box=None, relative: float = 0.41,
                      absolute: float | None = None, case: str | None = None) -> sitk.Image:
    """Threshold segmentation of the tumour at a seed point or inside a box; returns a UInt8 0/1 mask.

    ``seed_xyz``: a point (x, y, z) in physical LPS mm; the local SUVmax is the highest voxel within
    10 mm of it. ``box``: (x0, y0, z0, x1, y1, z1) mm, two opposite corners; the local SUVmax is the highest
    voxel whose centre is in the box and the segmentation stays inside the box. Give exactly one of them.
    Threshold: ``absolute`` SUV when given, else ``relative`` x local SUVmax (EANM: 41 %). The result is the
    region of voxels >= threshold connected (26-connectivity) to the seed voxel (to the local max when the
    seed voxel is below the threshold, and always in box mode), with enclosed holes filled.
    Raises InputError for a seed/box outside the image or a threshold that leaves nothing.
    """
    if (seed_xyz is None) == (box is None):
        raise InputError("give either a seed point or a box, not both or neither", case=case)
    if absolute is None and not 0.0 < relative <= 1.0:
        raise InputError(f"the relative threshold {relative} must lie in (0, 1]", case=case)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("the PET image must be a 3D scalar image", case=case)
    suv = sitk.Cast(image, sitk.sitkFloat32)
    if seed_xyz is not None:
        seed = _seed_index(image, seed_xyz, case)
        region, offset = suv, np.zeros(3, dtype=int)
        peak = _local_max_near(sitk.GetArrayViewFromImage(suv), seed, image.GetSpacing())
    else:
        lo, hi = _box_region(image, box, case)
        region = sitk.RegionOfInterest(suv, [int(v) for v in hi - lo], [int(v) for v in lo])
        offset = lo
        values = sitk.GetArrayViewFromImage(region)
        peak = tuple(int(v) for v in np.unravel_index(np.argmax(values), values.shape)[::-1] + lo)
        seed = peak
    peak_suv = float(suv[peak])
    if not np.isfinite(peak_suv):
        raise InputError(f"the PET image is not finite at the local maximum near the seed ({peak})", case=case)
    threshold = float(absolute) if absolute is not None else relative * peak_suv
    if peak_suv < threshold:
        raise InputError(f"the threshold {threshold:.3g} SUV is above the local SUVmax {peak_suv:.3g}: "
                         f"nothing to segment", case=case)
    if absolute is None and peak_suv <= 0:
        raise InputError(f"the local SUVmax near the seed is {peak_suv:.3g}: no uptake to segment", case=case)
    start = seed if suv[seed] >= threshold else peak
    grown = sitk.ConnectedThreshold(region, seedList=[tuple(int(v) for v in np.asarray(start) - offset)],
                                    lower=threshold, upper=float(np.finfo(np.float32).max), replaceValue=1,
                                    connectivity=sitk.ConnectedThresholdImageFilter.FullConnectivity)
    filled = sitk.BinaryFillhole(grown, fullyConnected=False, foregroundValue=1)
    mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(image)
    mask = sitk.Paste(mask, sitk.Cast(filled, sitk.sitkUInt8), filled.GetSize(), [0, 0, 0],
                      [int(v) for v in offset])
    return mask
