"""Habitats on phantoms with known uptake zones: per-tumour k-means and two-stage population habitats."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from sklearn.base import clone

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.features.subregions import PopulationHabitats, TumourHabitats, local_stats, tumour_habitats


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _phantom(level_of, radius, spacing, fwhm, noise, seed, extent=40.0):
    """Ball tumour (mask r <= radius) whose SUV is level_of(x, y, z, r) then blurred by the PET PSF plus noise."""
    shape = tuple(int(extent / s) * 2 + 1 for s in spacing[::-1])
    z, y, x = np.meshgrid(*[(np.arange(n) - n // 2) * s for n, s in zip(shape, spacing[::-1])], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    truth = np.where(r <= radius, level_of(x, y, z, r), 0)
    img = sitk.GetImageFromArray(np.where(r <= radius, truth, 1.0).astype(np.float32))
    img.SetSpacing(spacing)
    img = sitk.SmoothingRecursiveGaussian(img, fwhm / 2.3548)
    arr = sitk.GetArrayFromImage(img) + np.random.default_rng(seed).normal(0, noise, shape)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    mask = sitk.GetImageFromArray((r <= radius).astype(np.uint8))
    mask.CopyInformation(img)
    return out, mask, truth


def rim_core(seed):
    """15 mm ball, cold core (SUV 3, r < 8 mm) in a hot rim (SUV 9); 2 x 2 x 3 mm voxels, 6 mm FWHM, noise SD 0.5."""
    img, mask, truth = _phantom(lambda x, y, z, r: np.where(r < 8.0, 3.0, 9.0), 15.0, (2.0, 2.0, 3.0), 6.0, 0.5, seed)
    return img, mask, truth == 3.0, truth == 9.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_per_tumour_kmeans_recovers_rim_and_core(seed):
    img, mask, core, rim = rim_core(seed)
    labels, report = tumour_habitats(img, mask, k=2, case="phantom")
    lab = sitk.GetArrayFromImage(labels)
    # Thresholds: core Dice > 0.85, rim Dice > 0.95 (measured 0.90-0.94 and 0.98-0.99 over 8 noise seeds; the
    # blur smears the 8 mm core boundary by ~1 voxel, which costs the small core more Dice than the rim).
    assert dice(lab == 1, core) > 0.85
    assert dice(lab == 2, rim) > 0.95
    assert report["mean_suv"][1] < report["mean_suv"][2]  # label order: 1 = low uptake
    assert report["voxels"][1] + report["voxels"][2] == sitk.GetArrayViewFromImage(mask).sum()
    assert report["features"]["sub_high_fraction"] == pytest.approx(report["voxels"][2] / (lab > 0).sum())
    assert report["warnings"] == []
    assert labels.GetSpacing() == img.GetSpacing() and labels.GetPixelID() == sitk.sitkUInt8


def test_same_seed_same_labels_and_estimator_wrapper():
    img, mask, _, _ = rim_core(1)
    first = sitk.GetArrayFromImage(tumour_habitats(img, mask, seed=0)[0])
    est = clone(TumourHabitats(k=2, seed=0)).fit([(img, mask)])
    assert np.array_equal(first, sitk.GetArrayFromImage(est.transform(img, mask)))
    assert est.get_params() == {"k": 2, "local_radius_mm": 7.0, "seed": 0, "min_voxels": 10}


def test_uniform_tumour_reports_empty_high_subregion():
    img, mask, _ = _phantom(lambda x, y, z, r: np.full_like(r, 5.0), 10.0, (2.0, 2.0, 2.0), 0.01, 0.0, 0)
    flat = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(img).shape, 5.0, dtype=np.float32))
    flat.CopyInformation(img)
    labels, report = tumour_habitats(flat, mask, k=2, case="flat")
    n = int(sitk.GetArrayViewFromImage(mask).sum())
    assert report["voxels"] == {1: n, 2: 0}
    assert report["features"] == {"sub_low_voxels": n, "sub_high_voxels": 0, "sub_high_fraction": 0.0}
    assert any("flat" in w and "High uptake" in w and "empty" in w for w in report["warnings"])


def test_tiny_subregion_is_reported_not_raised():
    # A 3 x 3 x 3-voxel hot spot (SUV 20) in a uniform SUV 4 ball of radius 12 mm (2 mm voxels, no blur/noise).
    n = 13
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2] * 3, indexing="ij")
    hot = (abs(x) <= 1) & (abs(y) <= 1) & (abs(z) <= 1)
    img = sitk.GetImageFromArray(np.where(hot, 20.0, 4.0).astype(np.float32))
    img.SetSpacing((2.0, 2.0, 2.0))
    mask = sitk.GetImageFromArray(((x**2 + y**2 + z**2) * 4 <= 12.0**2).astype(np.uint8))
    mask.CopyInformation(img)
    # local_radius_mm=1 < the voxel size: neighbourhoods are single voxels, so the clusters follow SUV alone.
    labels, report = tumour_habitats(img, mask, k=2, local_radius_mm=1.0, min_voxels=30)
    lab = sitk.GetArrayFromImage(labels)
    assert report["voxels"][2] == 27 and np.array_equal(lab == 2, hot)
    assert report["mean_suv"] == {1: pytest.approx(4.0), 2: pytest.approx(20.0)}
    assert report["warnings"] == ["subregion 2 (High uptake) has 27 voxels (< 30): too small for texture"]


def test_local_stats_hand_computed():
    # 1 x 1 x 3 tumour row [2, 4, 9] at 1 mm voxels, radius 1 mm: neighbourhoods {2,4}, {2,4,9}, {4,9}.
    suv = np.array([[[0.0, 2.0, 4.0, 9.0, 100.0]]])  # the 100 is outside the mask and must not count
    inside = np.array([[[False, True, True, True, False]]])
    mean, sd = local_stats(suv, inside, (1.0, 1.0, 1.0), 1.0)
    assert mean[0, 0, 1:4] == pytest.approx([3.0, 5.0, 6.5])
    assert sd[0, 0, 1:4] == pytest.approx([1.0, np.std([2, 4, 9]), 2.5])
    assert mean[0, 0, 4] == 0 and sd[0, 0, 0] == 0


def slab_tumour(cuts, seed):
    """16 mm ball cut by x-planes into habitats 1/2/3 at SUV 2/6/12; 2 x 2 x 2.5 mm voxels, 4 mm FWHM, noise 0.4."""
    level = lambda x, y, z, r: np.where(x < cuts[0], 1, np.where(x < cuts[1], 2, 3))  # noqa: E731
    img, mask, truth = _phantom(lambda x, y, z, r: np.array([2.0, 6.0, 12.0])[level(x, y, z, r) - 1], 16.0,
                                (2.0, 2.0, 2.5), 4.0, 0.4, seed, extent=30.0)
    return img, mask, np.select([truth == 2.0, truth == 6.0, truth == 12.0], [1, 2, 3], 0)


@pytest.fixture(scope="module")
def population():
    train = [slab_tumour(c, seed=i) for i, c in enumerate([(-6, 4), (-2, 8), (-9, 2), (-4, 6)])]
    return PopulationHabitats(k=3, seed=0).fit([(img, mask) for img, mask, _ in train])


def test_population_habitats_map_a_new_tumour(population):
    img, mask, truth = slab_tumour((-3, 5), seed=99)  # new patient, zones at other positions
    lab = sitk.GetArrayFromImage(population.transform(img, mask))
    # Threshold 0.8 per habitat (measured 0.96 / 0.90 / 0.90): supervoxels straddling a blurred zone boundary
    # go to one side as a whole.
    for habitat in (1, 2, 3):
        assert dice(lab == habitat, truth == habitat) > 0.8
    # Habitats are ordered by centroid SUV: the centroids' SUV column increases.
    suv = population.centroids_[:, 0] * population.scaler_scale_[0] + population.scaler_mean_[0]
    assert np.all(np.diff(suv) > 0)
    assert 1.5 < suv[0] < 3.5 and 9.0 < suv[2] < 13.0  # near the zones' SUV 2 and 12 (blur pulls 12 down)


def test_population_habitats_round_trip_through_json(population):
    img, mask, _ = slab_tumour((-3, 5), seed=99)
    saved = json.loads(json.dumps(population.to_dict()))
    restored = PopulationHabitats.from_dict(saved)
    assert restored.get_params() == population.get_params()
    assert np.array_equal(sitk.GetArrayFromImage(restored.transform(img, mask)),
                          sitk.GetArrayFromImage(population.transform(img, mask)))
    saved["centroids"] = saved["centroids"][:2]
    with pytest.raises(InputError, match="centroids have shape"):
        PopulationHabitats.from_dict(saved)


def test_bad_settings_and_inputs_raise_input_error():
    img, mask, _, _ = rim_core(1)
    with pytest.raises(ConfigError, match="k=1"):
        tumour_habitats(img, mask, k=1, case="c")
    empty = sitk.Image(mask.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(mask)
    with pytest.raises(InputError, match="c: the tumour mask is empty"):
        tumour_habitats(img, empty, case="c")
    uniform = [(img, mask)]
    with pytest.raises(InputError, match="fewer than k=60"):
        PopulationHabitats(n_supervoxels=5, k=60).fit(uniform)


def cored_or_solid(scale, core_mm, seed):
    """12 mm ball at 1 mm (D-PET-like, 2.5 mm FWHM, clipped at 0): uptake 9 x scale, with a cold core (3 x scale) of
    radius core_mm (0: solid). Returns (image, mask, true high-uptake fraction)."""
    img, mask, truth = _phantom(lambda x, y, z, r: scale * np.where(r < core_mm, 3.0, 9.0), 12.0, (1.0, 1.0, 1.0),
                                2.5, 0.5 * scale, seed, extent=16.0)
    inside = truth > 0
    return sitk.Clamp(img, lowerBound=0.0), mask, float((truth[inside] > 5 * scale).mean())  # PET is not negative


def _high_fraction(model, img, mask):
    lab = sitk.GetArrayFromImage(model.transform(img, mask))
    return float((lab == 2).sum() / (lab > 0).sum())


def test_relative_population_habitats_tell_solid_from_cored_tumours_at_any_uptake():
    """Per-tumour k-means splits every tumour, a solid one too (its blurred edge becomes the low habitat); relative
    population habitats keep a solid tumour mostly high-uptake, faint or hot, and find the cold core of a cored one.
    Measured: solid 0.84 / 0.80 high (truth 1; per-tumour k-means 0.31 / 0.28); cored (truth 0.71) 0.60 / 0.44
    with core Dice 0.82 / 0.67. On absolute SUV the faint solid tumour falls wholly into the low habitat."""
    train = [cored_or_solid(s, c, i)[:2] for i, (s, c) in
             enumerate([(1, 8), (0.4, 8), (2, 10), (1, 0), (0.5, 0), (1.5, 6), (0.6, 9), (2, 0)])]
    relative = PopulationHabitats(k=2, relative=True, seed=0).fit(train)
    solid = [cored_or_solid(scale, 0, 50) for scale in (0.5, 2.5)]
    cored = [cored_or_solid(scale, 8, 50) for scale in (0.5, 2.5)]
    solid_fractions = [_high_fraction(relative, img, mask) for img, mask, _ in solid]
    cored_fractions = [_high_fraction(relative, img, mask) for img, mask, _ in cored]
    assert min(solid_fractions) > 0.75 and min(solid_fractions) > max(cored_fractions) + 0.15
    for (_img, _mask, truth), fraction in zip(cored, cored_fractions):
        assert truth == pytest.approx(0.706, abs=0.01) and 0.3 < fraction < truth
    for img, mask, _ in solid:
        per_tumour = sitk.GetArrayFromImage(tumour_habitats(img, mask, k=2)[0])
        assert (per_tumour == 2).sum() / (per_tumour > 0).sum() < 0.5
    # the two stages run apart give the same model as fit()
    stage1 = [relative.supervoxel_features(img, mask) for img, mask in train]
    apart = PopulationHabitats(k=2, relative=True, seed=0).fit_features(*zip(*stage1))
    np.testing.assert_allclose(apart.centroids_, relative.centroids_)
    absolute = PopulationHabitats(k=2, relative=False, seed=0).fit(train)
    assert _high_fraction(absolute, *solid[0][:2]) < 0.05
