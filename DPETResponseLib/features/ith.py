"""ITHscore: intratumoural heterogeneity from the connectivity of pixel clusters (2D largest slice, or 3D).

Method of Li J, Qiu Z, Zhang C, et al. "ITHscore: comprehensive quantification of intra-tumor heterogeneity
in NSCLC by multi-scale radiomic features", Eur Radiol 2023;33:893-903 (doi:10.1007/s00330-022-09055-0) and
its `ITHscore` package (github.com/LiJiaqi96/ITHscore): on the tumour's largest cross-sectional slice, every
tumour pixel gets radiomic features of the window around it, the features are min-max scaled, the pixels are
clustered with k-means, and

    ITHscore = 1 - (1 / S_total) * sum_i S_i,max / n_i

where S_total is the number of tumour pixels, and for cluster i, n_i is its number of connected regions and
S_i,max the area of its largest one (8-connectivity in 2D). As in the package's ``calITHscore``, connected
regions of a single pixel are not counted (a cluster made only of those drops out of the sum).

Differences from the package, for PET: SUV is discretised with a fixed bin width (default 0.25 SUV) or a
fixed bin count instead of pyradiomics' default 25-unit bins (which collapse SUV to one or two levels);
window features (first order on SUV and GLCM on the levels, all directions merged into one symmetric matrix)
are computed for every pixel at once with numpy windows instead of one pyradiomics call per pixel; and a 3D
variant (whole tumour, 3D windows, 13 GLCM directions, 26- or 6-connected regions) is offered, since the 2D
slice was the study's named weakness.

Caution: the per-tumour min-max scaling (kept from the package) stretches whatever small variation a tumour has,
so noise alone fragments the clusters and on PET the score mixes heterogeneity with image noise (figures in
DEVELOPERS.md, "Things learnt the hard way").
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from sklearn.preprocessing import MinMaxScaler

from ..core.errors import ConfigError, InputError
from .petmetrics import tumour_arrays
from .subregions import kmeans_labels

FEATURE_NAMES = ("mean", "sd", "min", "max", "median",
                 "glcm_contrast", "glcm_dissimilarity", "glcm_homogeneity", "glcm_energy", "glcm_entropy")
_CHUNK = 4096  # windows processed at once: bounds memory on large 3D tumours


def ith_from_labels(label_map: np.ndarray, connectivity: str = "full", min_region_size: int = 2) -> float:
    """ITHscore of a cluster label map (0 = background, 1.. = clusters), 2D or 3D.

    ``connectivity``: "full" (8 in 2D, 26 in 3D; the package's choice) or "face" (4 / 6).
    Regions smaller than ``min_region_size`` pixels are ignored (2: the package's rule; 1: the plain formula).
    A map whose every region is ignored scores 1.
    """
    label_map = np.asarray(label_map)
    if connectivity not in ("full", "face"):
        raise ConfigError(f"unknown connectivity {connectivity!r} (use 'full' or 'face')")
    structure = ndimage.generate_binary_structure(label_map.ndim, label_map.ndim if connectivity == "full" else 1)
    total = int((label_map > 0).sum())
    if total == 0:
        raise InputError("the cluster label map has no tumour pixel")
    summed = 0.0
    for cluster in np.unique(label_map[label_map > 0]):
        regions, _ = ndimage.label(label_map == cluster, structure=structure)
        sizes = np.bincount(regions.ravel())[1:]
        sizes = sizes[sizes >= min_region_size]
        if sizes.size:
            summed += sizes.max() / sizes.size
    return 1.0 - summed / total


def discretise(suv: np.ndarray, inside: np.ndarray, bin_width: float | None = 0.25,
               bin_count: int | None = None) -> np.ndarray:
    """Grey levels (int, from 0) of ``suv``: fixed bin width in SUV, or ``bin_count`` bins over the tumour's range.

    With a bin count, values outside the tumour's range (window pixels outside the mask) go to the end bins.
    """
    if bin_count is not None:
        lo, hi = suv[inside].min(), suv[inside].max()
        if hi == lo:
            return np.zeros(suv.shape, dtype=np.int64)
        levels = np.floor(bin_count * (suv - lo) / (hi - lo))
        return np.clip(levels, 0, bin_count - 1).astype(np.int64)
    levels = np.floor(suv / bin_width).astype(np.int64)
    return levels - levels.min()


def _offsets(ndim: int) -> list[tuple[int, ...]]:
    """One of each pair of opposite neighbour offsets: 4 directions in 2D, 13 in 3D."""
    return [d for d in itertools.product((-1, 0, 1), repeat=ndim) if d > (0,) * ndim]


def _pairs(windows: np.ndarray, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Both members (N, P) of every neighbour pair inside each window, over all directions."""
    w = windows.shape[1]
    firsts, seconds = [], []
    for d in _offsets(ndim):
        a = (slice(None),) + tuple(slice(max(0, -k), w - max(0, k)) for k in d)
        b = (slice(None),) + tuple(slice(max(0, k), w - max(0, -k)) for k in d)
        firsts.append(windows[a].reshape(len(windows), -1))
        seconds.append(windows[b].reshape(len(windows), -1))
    return np.concatenate(firsts, axis=1), np.concatenate(seconds, axis=1)


def _run_lengths(codes: np.ndarray) -> np.ndarray:
    """For each element of each row, how many elements of that row share its value (rows of any length)."""
    s = np.sort(codes, axis=1)
    n = s.shape[1]
    idx = np.broadcast_to(np.arange(n), s.shape)
    starts = np.ones(s.shape, dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones(s.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, idx, n)[:, ::-1], axis=1)[:, ::-1]
    return last - first + 1


def window_features(suv: np.ndarray, levels: np.ndarray, centres: np.ndarray, window: int) -> np.ndarray:
    """Features (N, len(FEATURE_NAMES)) of the ``window``-wide square/cube around each centre index.

    ``suv`` and ``levels`` are 2D or 3D arrays already padded by window // 2 on every side; ``centres``
    (N, ndim) index the unpadded array. First order: mean, SD, min, max, median of SUV. GLCM: one symmetric
    co-occurrence matrix per window from all neighbour pairs (distance 1, all directions merged); contrast
    sum p (i-j)^2, dissimilarity sum p |i-j|, homogeneity sum p / (1 + |i-j|), energy sum p^2, entropy
    -sum p log2 p.
    """
    ndim = suv.ndim
    suv_windows = sliding_window_view(suv, (window,) * ndim)
    level_windows = sliding_window_view(levels, (window,) * ndim)
    n_levels = int(levels.max()) + 1
    out = np.empty((len(centres), len(FEATURE_NAMES)))
    for start in range(0, len(centres), _CHUNK):
        idx = tuple(centres[start:start + _CHUNK].T)
        values = suv_windows[idx].reshape(len(idx[0]), -1)
        first, second = _pairs(level_windows[idx], ndim)
        diff = np.abs(first - second).astype(float)
        codes = np.concatenate([first * n_levels + second, second * n_levels + first], axis=1)
        p = _run_lengths(codes) / codes.shape[1]  # probability of each element's (i, j) cell
        out[start:start + len(values)] = np.column_stack([
            values.mean(1), values.std(1), values.min(1), values.max(1), np.median(values, 1),
            (diff**2).mean(1), diff.mean(1), (1 / (1 + diff)).mean(1),
            p.mean(1),  # sum over cells p^2 = mean over elements of their cell's p
            -np.log2(p).mean(1),  # -sum over cells p log2 p = -mean over elements of log2 p
        ])
    return out


def ith_score(image: sitk.Image, mask: sitk.Image, dims: int = 2, window: int = 3, n_clusters: int = 6,
              bin_width: float | None = 0.25, bin_count: int | None = None, connectivity: str = "full",
              seed: int = 0, return_labels: bool = False, case: str | None = None) -> dict:
    """ITHscore of a tumour: ``{"ith_score2d": s}`` for dims=2 (largest axial slice), ``{"ith_score3d": s}``
    for dims=3 (whole tumour).

    ``window``: odd window width in pixels (the package used 5 on ~0.7 mm CT pixels; 3 spans 12-16 mm on
    4-5 mm PET pixels). ``n_clusters``: k-means clusters (6, the package's example); fewer are used when
    the tumour has fewer distinct feature vectors. ``bin_width`` (SUV) or ``bin_count`` (wins when given).
    Windows read the image around the tumour (as the package does); at the image edge it is extended by
    its edge values. ``return_labels``: also ``"ith_labels"`` (cluster map on the PET grid, clusters
    numbered by increasing mean SUV) and, in 2D, ``"ith_slice"`` (z index of the slice).
    Tiny tumours: fewer tumour pixels (2D: in the slice) than ``n_clusters`` raises InputError (clustering
    and so the score are undefined); otherwise the score is defined, 1 when no region reaches 2 pixels.
    """
    if dims not in (2, 3):
        raise ConfigError(f"dims={dims!r} must be 2 or 3")
    if not (isinstance(window, (int, np.integer)) and window >= 3 and window % 2 == 1):
        raise ConfigError(f"window={window!r} must be an odd integer >= 3")
    if bin_count is None and not (bin_width and bin_width > 0):
        raise ConfigError(f"bin_width={bin_width!r} must be positive (or give bin_count)")
    if bin_count is not None and not (isinstance(bin_count, (int, np.integer)) and bin_count >= 2):
        raise ConfigError(f"bin_count={bin_count!r} must be an integer >= 2")
    suv, inside = tumour_arrays(image, mask, case)
    slice_index = None
    if dims == 2:
        slice_index = int(np.argmax(inside.sum(axis=(1, 2))))  # largest axial area; ties: lowest z
        suv, inside = suv[slice_index], inside[slice_index]
    n_pixels = int(inside.sum())
    if n_pixels < n_clusters:
        where = f"largest slice (z={slice_index})" if dims == 2 else "tumour"
        raise InputError(f"the {where} has {n_pixels} pixels, fewer than n_clusters={n_clusters}: "
                         f"ITHscore is undefined for so small a tumour", case=case)
    half = window // 2
    idx = np.argwhere(inside)
    box = tuple(slice(max(a - half, 0), b + half + 1) for a, b in zip(idx.min(0), idx.max(0)))
    pad = [(max(0, half - a), max(0, b + half + 1 - n)) for a, b, n in zip(idx.min(0), idx.max(0), suv.shape)]
    suv_box = np.pad(suv[box], pad, mode="edge")
    inside_box = np.pad(inside[box], pad, mode="constant")
    levels = discretise(suv_box, inside_box, bin_width, bin_count)
    centres = np.argwhere(inside_box) - half
    features = MinMaxScaler().fit_transform(window_features(suv_box, levels, centres, window))
    cluster, k_used = kmeans_labels(features, n_clusters, seed)
    values = suv_box[inside_box]
    rank = np.empty(k_used, dtype=int)
    rank[np.argsort([values[cluster == c].mean() for c in range(k_used)], kind="stable")] = np.arange(1, k_used + 1)
    label_box = np.zeros(inside_box.shape, dtype=np.uint8)
    label_box[inside_box] = rank[cluster]
    score = ith_from_labels(label_box, connectivity)
    result = {f"ith_score{dims}d": float(score)}
    if return_labels:
        full = np.zeros(sitk.GetArrayViewFromImage(mask).shape, dtype=np.uint8)
        unpadded = label_box[tuple(slice(lo, s - hi) for (lo, hi), s in zip(pad, label_box.shape))]
        if dims == 2:
            full[slice_index][box] = unpadded
            result["ith_slice"] = slice_index
        else:
            full[box] = unpadded
        labels = sitk.GetImageFromArray(full)
        labels.CopyInformation(mask)
        result["ith_labels"] = labels
    return result
