"""Metabolic subregions (habitats) of a tumour: per-tumour k-means, and two-stage population habitats.

Labels: 0 background, then 1..K ordered by increasing mean SUV (K=2: 1 = low uptake, 2 = high uptake).
Voxel features: SUV, and the local mean and local SD of SUV over the tumour voxels within ``local_radius_mm``
(:func:`local_stats`). The local mean keeps the partial-volume dip at the tumour border from passing for low
uptake (SUV alone put a blurred hot rim's outer shell with the cold core: Dice 0.47 against 0.94 with it, on
the rim/core phantom of Testing/test_subregions.py).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..core.errors import ConfigError, InputError
from ..core.names import SUBREGION_SEGMENTS
from .petmetrics import tumour_arrays

SUPERVOXEL_FEATURES = ("mean_suv", "mean_local_sd")
# KMEANS_THREADS_NOTE: k-means runs on one thread. These problems are small (at most tens of thousands of
# points), and on a machine shared by other jobs scikit-learn's OpenMP worker threads can wait on each other
# far longer than the arithmetic takes; one thread gives the same result.


def local_stats(suv: np.ndarray, inside: np.ndarray, spacing_xyz, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of SUV over the tumour voxels whose centres lie within ``radius_mm`` (0 outside the tumour).

    Only tumour voxels enter a neighbourhood, so at the border the local mean is not dragged down by the
    background and the SD does not read the tumour edge as heterogeneity.
    """
    spacing_zyx = np.asarray(spacing_xyz, dtype=float)[::-1]
    half = np.floor(radius_mm / spacing_zyx).astype(int)
    grids = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx)], indexing="ij")
    ball = (sum(g**2 for g in grids) <= radius_mm**2).astype(float)
    idx = np.argwhere(inside)
    box = tuple(slice(a, b) for a, b in zip(np.maximum(idx.min(0) - half, 0), idx.max(0) + half + 1))
    w = inside[box].astype(float)
    x = np.where(inside[box], suv[box], 0.0)
    n = np.maximum(ndimage.correlate(w, ball, mode="constant"), 1e-12)
    mean = ndimage.correlate(x, ball, mode="constant") / n
    var = ndimage.correlate(x * x, ball, mode="constant") / n - mean**2
    local_mean, local_sd = np.zeros_like(suv), np.zeros_like(suv)
    local_mean[box] = mean * w
    local_sd[box] = np.sqrt(np.maximum(var, 0.0)) * w
    return local_mean, local_sd


def kmeans_labels(features: np.ndarray, k: int, seed: int, n_init: int = 10,
                  sample_weight=None) -> tuple[np.ndarray, int]:
    """k-means cluster of each row, numbered 0..k_used-1, with k_used <= k.

    Features are rounded to 10 decimals first, so rows equal up to floating-point noise count as one;
    k-means asks for min(k, distinct rows) clusters, and clusters it leaves empty are dropped.
    """
    features = np.round(features, 10)
    k_wanted = min(k, len(np.unique(features, axis=0)))
    if k_wanted <= 1:
        return np.zeros(len(features), dtype=int), 1
    model = KMeans(n_clusters=k_wanted, random_state=seed, n_init=n_init)
    with threadpool_limits(1):  # see KMEANS_THREADS_NOTE
        cluster = model.fit_predict(features, sample_weight=sample_weight)
    _, compact = np.unique(cluster, return_inverse=True)
    return compact, int(compact.max()) + 1


def _order_by_suv(cluster: np.ndarray, suv: np.ndarray, k_used: int) -> np.ndarray:
    """Relabel clusters 1..k_used by increasing mean SUV."""
    means = np.array([suv[cluster == c].mean() for c in range(k_used)])
    rank = np.empty(k_used, dtype=int)
    rank[np.argsort(means, kind="stable")] = np.arange(1, k_used + 1)
    return rank[cluster]


def _label_image(labels_in_mask: np.ndarray, inside: np.ndarray, reference: sitk.Image) -> sitk.Image:
    arr = np.zeros(inside.shape, dtype=np.uint8)
    arr[inside] = labels_in_mask
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(reference)
    return out


def habitat_report(image: sitk.Image, labels: sitk.Image, k: int, min_voxels: int = 10,
                   case: str | None = None) -> dict:
    """Voxel count and mean SUV per label 1..k, warnings for empty or tiny (< ``min_voxels``) subregions.

    For k=2 also the feature-table columns ``sub_low_voxels``, ``sub_high_voxels``, ``sub_high_fraction``.
    """
    suv = sitk.GetArrayViewFromImage(image)
    lab = sitk.GetArrayViewFromImage(labels)
    voxels, mean_suv, notes = {}, {}, []
    for label in range(1, k + 1):
        n = int((lab == label).sum())
        voxels[label] = n
        mean_suv[label] = float(suv[lab == label].mean()) if n else float("nan")
        name = SUBREGION_SEGMENTS.get(label, f"habitat {label}") if k == 2 else f"habitat {label}"
        if n == 0:
            notes.append(f"subregion {label} ({name}) is empty")
        elif n < min_voxels:
            notes.append(f"subregion {label} ({name}) has {n} voxels (< {min_voxels}): too small for texture")
    report = {"k": k, "voxels": voxels, "mean_suv": mean_suv,
              "warnings": [f"{case}: {w}" if case else w for w in notes]}
    if k == 2:
        total = voxels[1] + voxels[2]
        report["features"] = {"sub_low_voxels": voxels[1], "sub_high_voxels": voxels[2],
                              "sub_high_fraction": voxels[2] / total if total else float("nan")}
    return report


def _check_settings(k: int, local_radius_mm: float, case) -> None:
    if not (isinstance(k, (int, np.integer)) and k >= 2):
        raise ConfigError(f"the number of subregions k={k!r} must be an integer >= 2")
    if not local_radius_mm > 0:
        raise ConfigError(f"local_radius_mm={local_radius_mm!r} must be positive")


def tumour_habitats(image: sitk.Image, mask: sitk.Image, k: int = 2, local_radius_mm: float = 7.0,
                    seed: int = 0, min_voxels: int = 10, case: str | None = None) -> tuple[sitk.Image, dict]:
    """Per-tumour k-means habitats on standardised voxel features (SUV, local mean and local SD of SUV).

    Returns (label image on the PET grid, :func:`habitat_report`). Clusters are ordered by increasing
    mean SUV, labels 1..k. When the tumour has fewer distinct feature vectors than k (a uniform tumour,
    a tumour of one voxel), the distinct groups take labels 1.. upward and the higher labels stay empty;
    empty and tiny subregions are reported in ``report["warnings"]``, not raised.
    """
    _check_settings(k, local_radius_mm, case)
    suv, inside = tumour_arrays(image, mask, case)
    local_mean, local_sd = local_stats(suv, inside, image.GetSpacing(), local_radius_mm)
    features = np.column_stack([suv[inside], local_mean[inside], local_sd[inside]])
    scaled = StandardScaler().fit_transform(features)
    cluster, k_used = kmeans_labels(scaled, k, seed)
    labels = _label_image(_order_by_suv(cluster, suv[inside], k_used), inside, image)
    report = habitat_report(image, labels, k, min_voxels, case)
    if k_used < k:
        report["warnings"].insert(0, f"{case + ': ' if case else ''}only {k_used} distinct voxel feature "
                                     f"vector(s) in the tumour, fewer than k={k}")
    return labels, report


class TumourHabitats(TransformerMixin, BaseEstimator):
    """scikit-learn wrapper of :func:`tumour_habitats`.

    The per-tumour method learns nothing across cases: ``fit`` only checks the settings and returns self,
    and ``transform`` clusters each tumour on its own (it needs no prior ``fit``).
    """

    def __init__(self, k: int = 2, local_radius_mm: float = 7.0, seed: int = 0, min_voxels: int = 10):
        self.k = k
        self.local_radius_mm = local_radius_mm
        self.seed = seed
        self.min_voxels = min_voxels

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags

    def fit(self, cases=None, y=None):
        """Check the settings; ``cases`` (a list of (image, mask)) is accepted for Pipeline use and not read."""
        _check_settings(self.k, self.local_radius_mm, None)
        return self

    def transform(self, image: sitk.Image, mask: sitk.Image, case: str | None = None) -> sitk.Image:
        """Label image of this tumour's habitats (1..k by increasing mean SUV)."""
        return tumour_habitats(image, mask, self.k, self.local_radius_mm, self.seed, self.min_voxels, case)[0]


class PopulationHabitats(TransformerMixin, BaseEstimator):
    """Two-stage habitats shared by a cohort: per-tumour supervoxels, then cohort-level k-means.

    Stage 1 (each tumour): k-means on the tumour's voxels over standardised (SUV, local SD, x, y, z) gives
    ``n_supervoxels`` compact groups of similar uptake. SimpleITK's SLIC was not used: it partitions the
    whole image box, so its supervoxels straddle the tumour border; k-means on the tumour voxels does not.
    Stage 2 (cohort): each supervoxel is described by its mean SUV and mean local SD; these are standardised
    over the cohort, the SD column is multiplied by ``heterogeneity_weight``, and the supervoxels are clustered
    into ``k`` habitats (weighted by their voxel count). At weight 1 the SD made a cluster of the blurred
    interfaces between uptake zones on the phantom of Testing/test_subregions.py (Dice 0.55-0.76 per habitat);
    0.5 keeps heterogeneity a secondary axis (Dice 0.82-0.97); 0 clusters on uptake alone.
    ``relative=True`` divides SUV and local SD by the tumour's own 95th-percentile SUV first, so that a habitat
    means the same *relative* uptake in every tumour (a cold core is "low uptake" in a hot and in a faint tumour
    alike); with absolute SUV, faint tumours fall wholly into the low habitat. Per-tumour k-means
    (:func:`tumour_habitats`) always splits a tumour in k parts, a solid tumour too, so its habitat volume
    fraction says little about how much of the tumour is hypometabolic; relative population habitats do not.
    The two stages can run apart (the cohort runner caches stage 1 per case): :meth:`supervoxel_features` then
    :meth:`fit_features`.
    Learned state, plain numpy arrays (JSON via :meth:`to_dict`): ``scaler_mean_``, ``scaler_scale_`` and
    ``centroids_`` (standardised, weighted space; rows ordered by increasing SUV: habitat 1 = lowest uptake).
    ``transform`` maps a new tumour's supervoxels to the nearest centroid.
    """

    def __init__(self, n_supervoxels: int = 50, k: int = 3, local_radius_mm: float = 7.0,
                 heterogeneity_weight: float = 0.5, relative: bool = False, seed: int = 0):
        self.n_supervoxels = n_supervoxels
        self.k = k
        self.local_radius_mm = local_radius_mm
        self.heterogeneity_weight = heterogeneity_weight
        self.relative = relative
        self.seed = seed

    def _weights(self) -> np.ndarray:
        return np.array([1.0, float(self.heterogeneity_weight)])

    def _supervoxels(self, image, mask, case) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(features per supervoxel, voxel count per supervoxel, supervoxel of each tumour voxel, mask)."""
        suv, inside = tumour_arrays(image, mask, case)
        if self.relative:
            reference = float(np.percentile(suv[inside], 95))
            if not reference > 0:
                raise InputError("the tumour's 95th-percentile SUV is not positive: relative habitats need uptake",
                                 case=case)
            suv = suv / reference
        _, local_sd = local_stats(suv, inside, image.GetSpacing(), self.local_radius_mm)
        coords = np.argwhere(inside) * np.asarray(image.GetSpacing())[::-1]
        voxel_features = np.column_stack([suv[inside], local_sd[inside], coords])
        group, n_groups = kmeans_labels(StandardScaler().fit_transform(voxel_features), self.n_supervoxels,
                                  self.seed, n_init=1)
        counts = np.bincount(group, minlength=n_groups)
        features = np.column_stack([np.bincount(group, weights=voxel_features[:, j], minlength=n_groups) / counts
                                    for j in range(len(SUPERVOXEL_FEATURES))])
        return features, counts, group, inside

    def _check(self) -> None:
        _check_settings(self.k, self.local_radius_mm, None)
        if not (isinstance(self.n_supervoxels, (int, np.integer)) and self.n_supervoxels >= 1):
            raise ConfigError(f"n_supervoxels={self.n_supervoxels!r} must be a positive integer")

    def supervoxel_features(self, image: sitk.Image, mask: sitk.Image, case: str | None = None):
        """Stage 1 for one tumour: (features per supervoxel (n, 2), voxel count per supervoxel (n,))."""
        self._check()
        features, counts, _, _ = self._supervoxels(image, mask, case)
        return features, counts

    def fit(self, cases, y=None):
        """Learn the cohort's habitats from ``cases``: a list of (image, mask) pairs (or (image, mask, case_id))."""
        self._check()
        stage1 = [self._supervoxels(*(*item, None)[:3])[:2] for item in cases]
        return self.fit_features([f for f, _ in stage1], [n for _, n in stage1])

    def fit_features(self, features: list, counts: list) -> "PopulationHabitats":
        """Stage 2: the cohort-level k-means on the tumours' :meth:`supervoxel_features`."""
        self._check()
        if not len(features):
            raise InputError("population habitats need at least one training tumour")
        features = np.vstack([np.asarray(f, dtype=float).reshape(-1, len(SUPERVOXEL_FEATURES)) for f in features])
        weights = np.concatenate([np.asarray(n, dtype=float).ravel() for n in counts])
        if len(np.unique(features, axis=0)) < self.k:
            raise InputError(f"the cohort's tumours give {len(np.unique(features, axis=0))} distinct supervoxels, "
                             f"fewer than k={self.k} habitats")
        scaler = StandardScaler().fit(features, sample_weight=weights)
        model = KMeans(n_clusters=self.k, random_state=self.seed, n_init=10)
        with threadpool_limits(1):  # see KMEANS_THREADS_NOTE
            model.fit(scaler.transform(features) * self._weights(), sample_weight=weights)
        centroids = model.cluster_centers_
        suv_of_centroid = centroids[:, 0]  # SUV column: standardised with a positive scale, weight 1
        self.scaler_mean_ = np.asarray(scaler.mean_, dtype=float)
        self.scaler_scale_ = np.asarray(scaler.scale_, dtype=float)
        self.centroids_ = np.asarray(centroids[np.argsort(suv_of_centroid, kind="stable")], dtype=float)
        return self

    def transform(self, image: sitk.Image, mask: sitk.Image, case: str | None = None) -> sitk.Image:
        """Habitat label image (1..k, the cohort's order) of a tumour, on the PET grid."""
        if not hasattr(self, "centroids_"):
            raise NotFittedError("PopulationHabitats is not fitted: call fit(cases) or from_dict(d) first")
        features, _, group, inside = self._supervoxels(image, mask, case)
        scaled = (features - self.scaler_mean_) / self.scaler_scale_ * self._weights()
        # Nearest centroid by hand (what KMeans.predict does), so the model is the JSON-able arrays alone.
        distances = ((scaled[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=-1)
        habitat_of_group = np.argmin(distances, axis=1) + 1
        return _label_image(habitat_of_group[group], inside, image)

    def to_dict(self) -> dict:
        """Settings and learned arrays as plain JSON-able Python values."""
        if not hasattr(self, "centroids_"):
            raise InputError("PopulationHabitats is not fitted: nothing to save")
        return {"type": "PopulationHabitats", "params": self.get_params(),
                "feature_names": list(SUPERVOXEL_FEATURES), "scaler_mean": self.scaler_mean_.tolist(),
                "scaler_scale": self.scaler_scale_.tolist(), "centroids": self.centroids_.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "PopulationHabitats":
        """Rebuild a fitted PopulationHabitats from :meth:`to_dict` output."""
        if d.get("type") != "PopulationHabitats" or list(d.get("feature_names", [])) != list(SUPERVOXEL_FEATURES):
            raise InputError("not a saved PopulationHabitats (wrong type or feature names)")
        model = cls(**d["params"])
        model.scaler_mean_ = np.asarray(d["scaler_mean"], dtype=float)
        model.scaler_scale_ = np.asarray(d["scaler_scale"], dtype=float)
        model.centroids_ = np.asarray(d["centroids"], dtype=float)
        if model.centroids_.shape != (model.k, len(SUPERVOXEL_FEATURES)):
            raise InputError(f"saved centroids have shape {model.centroids_.shape}, expected "
                             f"({model.k}, {len(SUPERVOXEL_FEATURES)})")
        return model
