"""ITHscore: hand-computed scores on given label maps, window features against a plain loop, phantoms, and
all 35 STS cases through pet_metrics, tumour_habitats and ith_score (2D and 3D)."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import SHARED_DATA
from scipy import ndimage

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.features.ith import discretise, ith_from_labels, ith_score, window_features
from DPETResponseLib.features.petmetrics import pet_metrics
from DPETResponseLib.features.subregions import tumour_habitats

# Clusters 1, 2, 3; 13 tumour pixels.
#   cluster 1: {5 pixels top-left} and {2 pixels right column}       -> S_max 5, n 2
#   cluster 2: {3 pixels top} and {1 pixel bottom-left}               -> S_max 3, n 2 (n 1 without singletons)
#   cluster 3: (2,2) and (3,3), touching only diagonally              -> 8-conn: one region of 2; 4-conn: two singletons
LABELS_2D = np.array([
    [1, 1, 1, 2, 2, 0],
    [1, 1, 0, 2, 0, 0],
    [0, 0, 3, 0, 0, 1],
    [2, 0, 0, 3, 0, 1],
])


@pytest.mark.parametrize("connectivity, min_region_size, expected", [
    ("full", 1, 1 - (5 / 2 + 3 / 2 + 2 / 1) / 13),  # plain formula: 7/13
    ("face", 1, 1 - (5 / 2 + 3 / 2 + 1 / 2) / 13),  # 8.5/13
    ("full", 2, 1 - (5 / 2 + 3 / 1 + 2 / 1) / 13),  # ITHscore package rule (singletons ignored): 5.5/13
    ("face", 2, 1 - (5 / 2 + 3 / 1) / 13),          # cluster 3 only singletons: dropped; 7.5/13
])
def test_score_of_given_2d_label_map(connectivity, min_region_size, expected):
    assert ith_from_labels(LABELS_2D, connectivity, min_region_size) == pytest.approx(expected)


def test_score_of_given_3d_label_map():
    # Each cluster: two voxels touching along an edge across slices (26-connected, not 6-connected).
    labels = np.array([[[1, 0], [0, 2]], [[0, 1], [2, 0]]])
    assert ith_from_labels(labels, "full", 1) == pytest.approx(1 - (2 + 2) / 4)  # 0
    assert ith_from_labels(labels, "face", 1) == pytest.approx(1 - (1 / 2 + 1 / 2) / 4)  # 0.75
    assert ith_from_labels(labels, "face", 2) == pytest.approx(1.0)  # no region reaches 2 voxels
    assert ith_from_labels(np.ones((3, 3, 3), dtype=int)) == pytest.approx(0.0)


def test_discretise_hand_computed():
    suv = np.array([0.1, 0.24, 0.25, 1.0, 2.6])
    inside = np.array([True, True, True, True, False])
    assert discretise(suv, inside, bin_width=0.25).tolist() == [0, 0, 1, 4, 10]
    # 4 bins over the tumour range [0.1, 1.0] (width 0.225); 2.6 lies outside it and goes to the top bin.
    assert discretise(suv, inside, bin_count=4).tolist() == [0, 0, 0, 3, 3]


def _loop_features(suv_window, level_window):
    """Reference: first order and a merged symmetric GLCM built pair by pair with Python loops."""
    ndim = suv_window.ndim
    glcm = {}
    for a in itertools.product(*[range(n) for n in suv_window.shape]):
        for d in itertools.product((-1, 0, 1), repeat=ndim):
            b = tuple(i + k for i, k in zip(a, d))
            if d != (0,) * ndim and all(0 <= i < n for i, n in zip(b, suv_window.shape)):
                pair = (int(level_window[a]), int(level_window[b]))  # each ordered pair once per direction
                glcm[pair] = glcm.get(pair, 0) + 1
    total = sum(glcm.values())
    p = {key: v / total for key, v in glcm.items()}
    v = suv_window.ravel()
    return [v.mean(), v.std(), v.min(), v.max(), np.median(v),
            sum(q * (i - j) ** 2 for (i, j), q in p.items()), sum(q * abs(i - j) for (i, j), q in p.items()),
            sum(q / (1 + abs(i - j)) for (i, j), q in p.items()), sum(q**2 for q in p.values()),
            -sum(q * np.log2(q) for q in p.values())]


@pytest.mark.parametrize("ndim, window", [(2, 3), (2, 5), (3, 3)])
def test_vectorised_window_features_match_a_plain_loop(ndim, window):
    rng = np.random.default_rng(ndim * 10 + window)
    suv = rng.gamma(4.0, 1.5, size=(9,) * ndim)
    levels = discretise(suv, np.ones_like(suv, dtype=bool), bin_width=1.0)
    half = window // 2
    centres = np.array([(half + 1,) * ndim, (9 - half - 1,) * ndim, (half,) + (9 - half - 1,) * (ndim - 1)]) - half
    got = window_features(suv, levels, centres, window)
    for row, start in zip(got, centres):
        box = tuple(slice(s, s + window) for s in start)
        assert row == pytest.approx(_loop_features(suv[box], levels[box]), rel=1e-9)


def _phantom(kind, seed, shape=(9, 40, 40), radius=15):
    """Flat disc-shaped tumour (7 slices, radius 15 px, 4 x 4 x 3.3 mm), noise-free, background SUV 1.

    homogeneous: SUV 6.1 throughout. patchy: SUV 3 or 9 by the sign of a smoothed random field (blobs ~2 px).
    """
    z, y, x = np.meshgrid(*[np.arange(n) - n // 2 for n in shape], indexing="ij")
    inside = (x**2 + y**2 <= radius**2) & (abs(z) <= 3)
    if kind == "homogeneous":
        suv = np.full(shape, 6.1)
    else:
        field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), (1, 2, 2))
        suv = np.where(field > 0, 9.0, 3.0)
    img = sitk.GetImageFromArray(np.where(inside, suv, 1.0).astype(np.float32))
    img.SetSpacing((4.0, 4.0, 3.3))
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(img)
    return img, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_homogeneous_tumour_scores_lower_than_patchy(seed):
    homogeneous, patchy = _phantom("homogeneous", seed), _phantom("patchy", seed)
    # The homogeneous disc's clusters are concentric rings (windows at the rim see background), one region
    # each: measured 0.16 (2D) and 0.13 (3D). Patchy: 0.74-0.86 (2D) and 0.24-0.47 (3D) over 3 seeds.
    h2, p2 = ith_score(*homogeneous, dims=2)["ith_score2d"], ith_score(*patchy, dims=2)["ith_score2d"]
    h3, p3 = ith_score(*homogeneous, dims=3)["ith_score3d"], ith_score(*patchy, dims=3)["ith_score3d"]
    assert h2 < 0.25 and p2 > 0.6
    assert h3 < 0.2 and p3 > h3 + 0.1


def test_labels_returned_on_the_pet_grid_and_same_seed_same_score():
    img, mask = _phantom("patchy", 0)
    r2 = ith_score(img, mask, dims=2, return_labels=True, seed=3)
    assert r2["ith_slice"] == 1  # slices z = 1..7 have equal area: the first is taken
    lab = sitk.GetArrayFromImage(r2["ith_labels"])
    assert np.array_equal(lab[1] > 0, sitk.GetArrayViewFromImage(mask)[1] > 0) and not lab[2:].any()
    assert r2["ith_score2d"] == pytest.approx(ith_from_labels(lab[1]))
    assert ith_score(img, mask, dims=2, seed=3)["ith_score2d"] == r2["ith_score2d"]
    r3 = ith_score(img, mask, dims=3, return_labels=True)
    assert np.array_equal(sitk.GetArrayViewFromImage(r3["ith_labels"]) > 0, sitk.GetArrayViewFromImage(mask) > 0)
    assert set(r3) == {"ith_score3d", "ith_labels"}


def test_tiny_tumours():
    arr = np.ones((3, 6, 6), dtype=np.float32)
    arr[1, 2:4, 2:4] = [[2, 2], [9, 9]]
    inside = np.zeros((3, 6, 6), dtype=np.uint8)
    inside[1, 2:4, 2:4] = 1
    img, mask = sitk.GetImageFromArray(arr), sitk.GetImageFromArray(inside)
    with pytest.raises(InputError, match="tiny.*4 pixels, fewer than n_clusters=6"):
        ith_score(img, mask, dims=2, case="tiny")
    # With 2 clusters the 2x2 slice splits into its rows (the two pixels of a row see mirror-image windows):
    # two clusters of one 2-pixel region each: 1 - (2/1 + 2/1) / 4 = 0.
    assert ith_score(img, mask, dims=2, n_clusters=2)["ith_score2d"] == pytest.approx(0.0)
    with pytest.raises(ConfigError, match="dims=4"):
        ith_score(img, mask, dims=4)
    with pytest.raises(ConfigError, match="window=4"):
        ith_score(img, mask, window=4)


STS_CASES = sorted(p.name for p in (SHARED_DATA / "sts_pet").glob("STS_*"))


def test_all_35_sts_cases_are_present():
    assert len(STS_CASES) == 35


@pytest.mark.parametrize("case", STS_CASES)
def test_sts_case_runs_through_tumour_analysis(case):
    folder = SHARED_DATA / "sts_pet" / case
    img = sitk.ReadImage(str(folder / "PET_image.nii.gz"), sitk.sitkFloat32)
    mask = sitk.ReadImage(str(folder / "PET_mask.nii.gz"), sitk.sitkUInt8)
    suv, inside = sitk.GetArrayViewFromImage(img), sitk.GetArrayViewFromImage(mask) > 0
    m = pet_metrics(img, mask, case=case)
    assert m["pet_MTV"] == pytest.approx(inside.sum() * np.prod(img.GetSpacing()) / 1000)
    assert m["pet_SUVmax"] == pytest.approx(float(suv[inside].max()))
    assert m["pet_TLG"] == pytest.approx(m["pet_SUVmean"] * m["pet_MTV"])
    assert m["pet_SUVmean"] < m["pet_SUVpeak"] <= float(suv.max())
    labels, report = tumour_habitats(img, mask, case=case)
    lab = sitk.GetArrayViewFromImage(labels)
    assert np.array_equal(lab > 0, inside)
    assert report["voxels"][1] + report["voxels"][2] == inside.sum()
    assert report["mean_suv"][1] < report["mean_suv"][2]
    for dims in (2, 3):
        score = ith_score(img, mask, dims=dims, case=case)[f"ith_score{dims}d"]
        assert 0.0 <= score < 1.0
