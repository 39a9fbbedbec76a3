"""The deep pathway end to end on a synthetic cohort whose label is in the tumour's uptake PATTERN:
pCR (1) = solid uptake, no pCR (0) = rim uptake around a cold (necrotic) core; tumour size, peak SUV and a
label-independent hot distractor outside the tumour vary at random. A CNN that sees the pattern separates them;
one that does not scores AUC 0.5."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import assert_heat_map_on_pet_grid
from sklearn.metrics import roc_auc_score

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.deep.train import DeepConfig, DeepModel, train_deep

GRID = (36, 36, 26)
SPACING = (2.0, 2.0, 2.5)  # anisotropic, as PET is


def _direction(rng) -> np.ndarray:
    """A rotation about z, with the y axis flipped: a non-identity LPS direction."""
    a = rng.uniform(-0.5, 0.5)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ np.diag([1, -1, 1])


def make_case(rng, label: int, rotated: bool) -> tuple[sitk.Image, sitk.Image]:
    direction = _direction(rng) if rotated else np.eye(3)
    origin = rng.uniform(-50, 50, 3)
    z, y, x = np.meshgrid(*[np.arange(n) for n in GRID[::-1]], indexing="ij")
    points = np.stack([x, y, z], -1) @ (direction @ np.diag(SPACING)).T + origin
    centre = direction @ ((np.array(GRID) / 2 + rng.uniform(-3, 3, 3)) * SPACING) + origin
    radius, peak = rng.uniform(7, 11), rng.uniform(5, 10)
    dist = np.linalg.norm(points - centre, axis=-1)
    tumour = dist <= radius
    suv = np.ones(GRID[::-1])
    suv[tumour] = peak if label == 1 else np.where(dist[tumour] > 0.55 * radius, peak, 0.3 * peak)
    if rng.random() < 0.6:  # distractor hot spot outside the tumour, independent of the label
        way = rng.normal(size=3)
        spot = centre + way / np.linalg.norm(way) * (radius + rng.uniform(8, 14))
        suv[np.linalg.norm(points - spot, axis=-1) <= rng.uniform(3, 6)] = rng.uniform(4, 9)
    image = sitk.GetImageFromArray(suv.astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin(tuple(origin))
    image.SetDirection(tuple(direction.ravel()))
    blurred = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 2.0))  # PET resolution
    noisy = np.clip(blurred + rng.normal(0, 0.25, blurred.shape), 0, None).astype(np.float32)
    out = sitk.GetImageFromArray(noisy)
    out.CopyInformation(image)
    mask = sitk.GetImageFromArray(tumour.astype(np.uint8))
    mask.CopyInformation(image)
    return out, mask


def make_cohort(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    cases = [make_case(rng, int(label), rotated=i % 3 == 0) for i, label in enumerate(y)]
    return [c[0] for c in cases], [c[1] for c in cases], y


# Small and fast: cpu-fast crops (24^3 at 2 mm, narrow ResNet10), 3 folds. 30 epochs: with early stopping on an
# inner split (honest out-of-fold estimates) 16 epochs gave out-of-fold AUC 0.76, 30 epochs 1.0
# (test cohort 0.98 -> 1.0).
CONFIG = dict(folds=3, epochs=30, seed=0, device="cpu")


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on 2 shared cores one thread is several times faster than oversubscribed OpenMP
    images, masks, y = make_cohort(36, seed=1)
    model = train_deep(images, masks, y, DeepConfig.preset("cpu-fast", **CONFIG), progress=False)
    yield model, (images, masks, y), make_cohort(24, seed=2)
    torch.set_num_threads(threads)


def test_cnn_learns_the_uptake_pattern(trained):
    model, (images, masks, y), (test_images, test_masks, test_y) = trained
    assert model.oof_prob.shape == (36,) and model.oof_embedding.shape == (36, 128)
    assert len(model.fold_val_auc) == 3 and sorted(np.unique(model.fold_of_case)) == [0, 1, 2]
    # chance is 0.5; seeds 0 and 1 gave 0.99 out-of-fold and 1.0 on the test cohort: the bounds leave a margin
    assert roc_auc_score(y, model.oof_prob) > 0.8
    outputs = model.fold_outputs(test_images, test_masks)
    assert len(outputs) == 3 and all(p.shape == (24,) and e.shape == (24, 128) for p, e in outputs)
    prob = model.predict(test_images, test_masks)
    # the ensemble pools the fold models' log-odds (hand-computed here; probabilities clipped to [1e-6, 1 - 1e-6])
    clipped = [np.clip(p.astype(float), 1e-6, 1 - 1e-6) for p, _ in outputs]
    logits = np.log([p / (1 - p) for p in clipped])
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits.mean(axis=0))), rtol=1e-9)
    assert roc_auc_score(test_y, prob) > 0.85


def _mass_inside(cam: sitk.Image, mask: sitk.Image, dilate: int = 0) -> float:
    """Share of the map's total mass (sum of values) inside the tumour mask (dilated by ``dilate`` voxels)."""
    values = sitk.GetArrayFromImage(cam)
    region = mask if dilate == 0 else sitk.BinaryDilate(mask, (dilate,) * 3)
    return float(values[sitk.GetArrayFromImage(region) > 0].sum() / values.sum())


def test_gradcam_is_on_the_pet_grid_and_inside_the_tumour(trained, tmp_path):
    """Every test case's map of its predicted class has the PET's exact geometry and puts a large share of its mass
    in the tumour (about half; never less than a third, on any seed or machine measured) (the label is in the
    tumour's uptake pattern; a hot distractor lies outside it in 60% of cases).
    The tumour fills about 3% of the crop, so a map blind to it would hold about 3% of its mass there."""
    from DPETResponseLib.deep.data import crop_to_image

    model, _, (images, masks, y) = trained
    inside, dilated, gradcam_inside = [], [], []
    for image, mask in zip(images, masks):
        cam = model.gradcam(image, mask)
        assert_heat_map_on_pet_grid(cam, image)
        values = sitk.GetArrayFromImage(cam)
        # zero outside the crop (a 48 mm cube around the tumour)
        _, geometry = model._cache.get(image, mask)
        cube = sitk.Resample(crop_to_image(np.ones((24, 24, 24)), geometry), image, sitk.Transform(),
                             sitk.sitkNearestNeighbor, 0.0)
        in_cube = sitk.GetArrayFromImage(cube) > 0
        assert 0 < in_cube.mean() < 1 and values[~in_cube].max() == 0.0
        inside.append(_mass_inside(cam, mask))
        dilated.append(_mass_inside(cam, mask, dilate=2))
        model.config.cam_method = "gradcam"  # MONAI's Grad-CAM on the same nets, side by side
        gradcam_inside.append(_mass_inside(model.gradcam(image, mask), mask))
        model.config.cam_method = "hirescam"
    print("mass inside the mask: HiResCAM median", np.median(inside), "min", min(inside),
          "| dilated 2 voxels median", np.median(dilated), "| Grad-CAM median", np.median(gradcam_inside))
    # Medians in the mask / within 2 voxels of it depend on the CPU (the training differs in the last bits): training
    # seed 0 gave 0.57 / 0.77 on one machine and 0.52 / 0.66 on another, where seeds 1 and 2 gave 0.58 / 0.82 and
    # 0.43 / 0.67; Grad-CAM 0.06. The bounds hold for all of them: 12x and 18x a map blind to the tumour.
    assert np.median(inside) > 0.35 and np.median(dilated) > 0.55
    assert np.median(inside) > 3 * np.median(gradcam_inside)
    path = tmp_path / "cam.nii.gz"
    sitk.WriteImage(cam, str(path))
    again = sitk.ReadImage(str(path))
    np.testing.assert_allclose(again.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(again), values)


def test_parts_and_folder_round_trips_give_identical_predictions(trained, tmp_path):
    model, _, (images, masks, _) = trained
    outputs = model.fold_outputs(images[:5], masks[:5])
    info, parts = model.to_parts()
    json.dumps(info)  # the config side is plain JSON
    assert set(parts) == {"fold0", "fold1", "fold2", "oof"}
    again = DeepModel.from_parts(json.loads(json.dumps(info)), parts)
    for (p, e), (p2, e2) in zip(outputs, again.fold_outputs(images[:5], masks[:5])):
        np.testing.assert_array_equal(p2, p)
        np.testing.assert_array_equal(e2, e)
    loaded = DeepModel.load(model.save(tmp_path / "deep"))
    np.testing.assert_array_equal(loaded.predict(images[:5], masks[:5]), model.predict(images[:5], masks[:5]))
    np.testing.assert_array_equal(loaded.oof_prob, model.oof_prob)
    assert loaded.fold_val_auc == model.fold_val_auc and not list((tmp_path / "deep").glob("*.tmp*"))


def _fusion_cohort():
    """Images carry no label signal (all solid); the first radiomics feature does."""
    rng = np.random.default_rng(5)
    y = rng.permutation(np.arange(16) % 2)
    cases = [make_case(rng, 1, rotated=False) for _ in y]
    extra = np.column_stack([y * 3.0 + rng.normal(0, 0.5, 16), rng.normal(0, 1, 16)]) * 10 + 40  # unscaled units
    return [c[0] for c in cases], [c[1] for c in cases], y, extra


def test_e2e_fusion_learns_from_radiomics_and_is_deterministic():
    images, masks, y, extra = _fusion_cohort()
    config = DeepConfig.preset("cpu-fast", folds=2, epochs=6, seed=3, device="cpu", extra_dim=2, augment=True)
    first = train_deep(images, masks, y, config, extra=extra, progress=False)
    second = train_deep(images, masks, y, config, extra=extra, progress=False)
    np.testing.assert_array_equal(first.oof_prob, second.oof_prob)  # same seed, same numbers on CPU
    assert roc_auc_score(y, first.oof_prob) > 0.8  # the projected radiomics reach the head
    assert first.predict(images[:4], masks[:4], extra=extra[:4]).shape == (4,)
    with pytest.raises(InputError, match=r"shape \(4, 1\), expected \(4, 2\)"):
        first.predict(images[:4], masks[:4], extra=extra[:4, :1])
    with pytest.raises(InputError, match="pass `extra`"):
        first.predict(images[:4], masks[:4])
    other = train_deep(images, masks, y, DeepConfig.preset("cpu-fast", **{**config.to_dict(), "seed": 4}),
                       extra=extra, progress=False)
    assert not np.array_equal(other.oof_prob, first.oof_prob)


def test_bad_input_raises_input_error():
    images, masks, y = make_cohort(6, seed=7)
    config = DeepConfig.preset("cpu-fast", folds=2, epochs=1, device="cpu")
    empty = sitk.Image(masks[3].GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(masks[3])
    with pytest.raises(InputError, match=r"P03: tumour mask is empty"):
        train_deep(images, masks[:3] + [empty] + masks[4:], y, config, progress=False,
                   case_ids=[f"P{i:02d}" for i in range(6)])
    with pytest.raises(InputError, match="labels must be 6 values of 0/1"):
        train_deep(images, masks, np.arange(6), config, progress=False)
    with pytest.raises(InputError, match="at least 6 cases of each class"):
        train_deep(images, masks, y, DeepConfig.preset("cpu-fast", folds=5), progress=False)
    with pytest.raises(ConfigError, match="unknown deep preset"):
        DeepConfig.preset("gpu-huge")
    with pytest.raises(ConfigError, match="unknown deep settings: colour"):
        DeepConfig.from_dict({**config.to_dict(), "colour": "red"})


def test_early_stopping_reads_only_the_fold_s_training_cases(monkeypatch):
    """Leakage, structurally: each fold model is fit and early-stopped on two disjoint parts of that fold's
    training cases; the cases it predicts out of fold are in neither."""
    import DPETResponseLib.deep.train as deep_train

    images, masks, y = make_cohort(18, seed=4)
    calls = []
    original = deep_train._train_fold

    def spy(net, crops, labels, extra, fit_idx, stop_idx, config, device, fold, bar):
        calls.append((fold, set(fit_idx.tolist()), set(stop_idx.tolist())))
        return original(net, crops, labels, extra, fit_idx, stop_idx, config, device, fold, bar)

    monkeypatch.setattr(deep_train, "_train_fold", spy)
    model = train_deep(images, masks, y, DeepConfig.preset("cpu-fast", folds=3, epochs=1, device="cpu"),
                       progress=False)
    assert [fold for fold, _, _ in calls] == [0, 1, 2]
    for fold, fit, stop in calls:
        predicted = set(np.flatnonzero(model.fold_of_case == fold).tolist())
        assert fit and stop and fit.isdisjoint(stop) and not (fit | stop) & predicted
        assert fit | stop | predicted == set(range(18))
