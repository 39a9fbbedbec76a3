"""The CNN with one channel pair per imaging modality: each modality's crop centred on its own tumour on its own
grid (not registered to the PET), its intensities by kind (CT window, z-scored unitless), zero channels for a
missing modality, training and prediction with a third of the cases lacking the MR, and the errors."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import assert_heat_map_on_pet_grid
from test_deep_train import make_cohort

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.core.names import modality_kind
from DPETResponseLib.deep.data import (
    BatchAugmenter,
    CropCache,
    CropSpec,
    crop_geometry,
    preprocess_case,
    preprocess_cohort,
)
from DPETResponseLib.deep.train import DeepConfig, DeepModel, train_deep


def _image(array_zyx: np.ndarray, spacing, origin, pixel=sitk.sitkFloat32) -> sitk.Image:
    image = sitk.Cast(sitk.GetImageFromArray(array_zyx), pixel)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    return image


def _sphere(size, spacing, origin, centre_mm, radius, inside: float, outside: float):
    """(image, mask): a sphere of ``inside`` on ``outside``, identity direction."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    points = np.stack([x, y, z], -1) * np.asarray(spacing) + np.asarray(origin)
    tumour = np.linalg.norm(points - np.asarray(centre_mm), axis=-1) <= radius
    values = np.where(tumour, inside, outside).astype(np.float32)
    return _image(values, spacing, origin), _image(tumour.astype(np.uint8), spacing, origin, sitk.sitkUInt8)


def _centre_of_mass(channel: torch.Tensor, above: float = 0.5) -> np.ndarray:
    return np.argwhere(channel.numpy() > above).mean(axis=0)


def test_each_modality_is_centred_on_its_own_tumour_in_the_same_physical_cube():
    # PET 4 x 4 x 3 mm, tumour at (60, 60, 30) mm; CT 1 x 1 x 3 mm with its origin shifted by 40 mm and its tumour
    # elsewhere, off its grid's centre, at (90, 110, 64) mm: not registered to the PET.
    radius = 12.0
    pet, pet_mask = _sphere((30, 30, 20), (4, 4, 3), (0, 0, 0), (60, 60, 30), radius, 8.0, 1.0)
    ct, ct_mask = _sphere((120, 120, 20), (1, 1, 3), (40, 40, 40), (90, 110, 64), radius, 40.0, -100.0)
    spec = CropSpec(size=24, spacing=2.0, modalities=("ct",))
    crop, geometry = preprocess_case(pet, pet_mask, spec, "c1", {"ct": (ct, ct_mask)})
    assert crop.shape == (4, 24, 24, 24) and spec.channels == 4 and spec.image_channels == (0, 2)
    # each crop's centre is its own tumour's centre; the cube is the same (24 voxels of 2 mm) in both
    np.testing.assert_allclose(np.asarray(geometry.origin) + 2.0 * 11.5, (60, 60, 30), atol=1e-9)
    ct_geometry = crop_geometry(ct, ct_mask, CropSpec(size=24, spacing=2.0))
    np.testing.assert_allclose(np.asarray(ct_geometry.origin) + 2.0 * 11.5, (90, 110, 64), atol=1e-9)
    assert (ct_geometry.size, ct_geometry.spacing) == (geometry.size, geometry.spacing)
    for channel in (1, 3):  # the PET's and the CT's mask channels: centre of mass at the crop centre
        np.testing.assert_allclose(_centre_of_mass(crop[channel]), 11.5, atol=0.5)
    # the CT's image channel: its tumour (40 HU -> 0.5) on fat (-100 HU -> 0.15) likewise
    np.testing.assert_allclose(_centre_of_mass(crop[2], above=0.3), 11.5, atol=0.5)
    np.testing.assert_allclose(crop[2, 11, 11, 11].item(), (40 + 160) / 400, atol=1e-6)
    # both tumours keep their physical volume, 4/3 pi 12^3 = 7238 mm^3 (8 mm^3 crop voxels)
    volume = 4 / 3 * np.pi * radius ** 3
    for channel in (1, 3):
        assert abs(float(crop[channel].sum()) * 8.0 - volume) / volume < 0.15


def _aligned(values_zyx: np.ndarray, box=(slice(4, 8), slice(6, 10), slice(10, 14))):
    """(image, mask) on a 2 mm grid with a tumour box of even extent: the 2 mm crop's voxels are the image's own
    voxels (crop voxel (i, j, k) = image index (x, y, z) = (8 + i, 4 + j, 2 + k) for a size-8 crop)."""
    mask = np.zeros(values_zyx.shape, np.uint8)
    mask[box] = 1
    origin = (-31.0, 17.0, 5.0)
    return _image(values_zyx, (2, 2, 2), origin), _image(mask, (2, 2, 2), origin, sitk.sitkUInt8), mask > 0


def test_ct_window_and_mr_z_score():
    assert [modality_kind(n) for n in ("ct", "ct_contrast", "mr", "mrt1", "us")] == \
        ["ct", "ct", "unitless", "unitless", "unitless"]
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1200, 1200, (14, 16, 20)).astype(np.float32)
    # crop voxel (i, j, k) reads hu[2 + k, 4 + j, 8 + i]; a few set by hand:
    hand = {(0, 0, 0): (-1000.0, 0.0), (1, 2, 3): (-160.0, 0.0), (3, 3, 3): (40.0, 0.5), (4, 4, 4): (0.0, 0.4),
            (5, 1, 6): (240.0, 1.0), (7, 7, 7): (1000.0, 1.0), (2, 5, 1): (140.0, 0.75)}
    for (i, j, k), (value, _) in hand.items():
        hu[2 + k, 4 + j, 8 + i] = value
    pet, pet_mask = _sphere((20, 20, 12), (4, 4, 3), (0, 0, 0), (40, 40, 18), 10.0, 6.0, 1.0)
    ct, ct_mask, _ = _aligned(hu)
    spec = CropSpec(size=8, spacing=2.0, modalities=("ct",))
    crop, _ = preprocess_case(pet, pet_mask, spec, modalities={"ct": (ct, ct_mask)})
    for (i, j, k), (_, expected) in hand.items():
        assert crop[2, i, j, k].item() == pytest.approx(expected, abs=1e-6)
    window = np.clip((hu[2:10, 4:12, 8:16].transpose(2, 1, 0) + 160) / 400, 0, 1)
    np.testing.assert_allclose(crop[2].numpy(), window, atol=1e-6)
    wide, _ = preprocess_case(pet, pet_mask, CropSpec(size=8, spacing=2.0, modalities=("ct",),
                                                      ct_window=(-1000.0, 1000.0)),
                              modalities={"ct": (ct, ct_mask)})
    assert wide[2, 4, 4, 4].item() == pytest.approx(0.5, abs=1e-6)  # 0 HU in the middle of [-1000, 1000]

    # MR: z-scored by its own tumour's voxels, clipped to [-5, 5], scaled to [0, 1]; scale and offset do not matter
    mr_values = rng.gamma(2.0, 300.0, (14, 16, 20)).astype(np.float32)
    mr, mr_mask, inside = _aligned(mr_values)
    spec = CropSpec(size=8, spacing=2.0, modalities=("mr",))
    crop, _ = preprocess_case(pet, pet_mask, spec, modalities={"mr": (mr, mr_mask)})
    tumour = mr_values[inside].astype(np.float64)
    z = (mr_values[2:10, 4:12, 8:16].transpose(2, 1, 0) - tumour.mean()) / tumour.std()
    np.testing.assert_allclose(crop[2].numpy(), (np.clip(z, -5, 5) + 5) / 10, atol=1e-6)
    scaled = _image(mr_values * 7.0 + 100.0, mr.GetSpacing(), mr.GetOrigin())
    again, _ = preprocess_case(pet, pet_mask, spec, modalities={"mr": (scaled, mr_mask)})
    np.testing.assert_allclose(again.numpy(), crop.numpy(), atol=1e-5)
    constant = _image(np.full_like(mr_values, 3.0), mr.GetSpacing(), mr.GetOrigin())
    with pytest.raises(InputError, match="c4: the mr image is constant inside its tumour mask"):
        preprocess_case(pet, pet_mask, spec, "c4", {"mr": (constant, mr_mask)})


def test_a_missing_modality_is_zero_channels_after_the_pet_only_crop(tmp_path):
    pet, pet_mask = _sphere((20, 20, 12), (4, 4, 3), (0, 0, 0), (40, 40, 18), 10.0, 6.0, 1.0)
    mr, mr_mask = _sphere((40, 40, 20), (1.5, 1.5, 2), (-30, 10, 0), (0, 40, 20), 9.0, 700.0, 200.0)
    noise = np.random.default_rng(1).normal(0, 30, mr.GetSize()[::-1])
    mr = _image(sitk.GetArrayFromImage(mr) + noise.astype(np.float32), mr.GetSpacing(), mr.GetOrigin())
    spec = CropSpec(size=16, spacing=2.0, modalities=("ct", "mr"))
    pet_only, _ = preprocess_case(pet, pet_mask, CropSpec(size=16, spacing=2.0))
    crop, _ = preprocess_case(pet, pet_mask, spec, modalities={"ct": (None, None), "mr": (None, None)})
    assert crop.shape == (6, 16, 16, 16)
    assert torch.equal(crop[:2], pet_only) and not crop[2:].any()
    crop, _ = preprocess_case(pet, pet_mask, spec, modalities={"ct": (None, None), "mr": (mr, mr_mask)})
    assert torch.equal(crop[:2], pet_only) and not crop[2:4].any() and crop[4].any() and crop[5].any()
    # without mask channels: one zero channel per missing modality
    bare, _ = preprocess_case(pet, pet_mask, CropSpec(16, 2.0, mask_channel=False, modalities=("ct", "mr")),
                              modalities={"ct": (None, None), "mr": (mr, mr_mask)})
    assert bare.shape == (3, 16, 16, 16) and torch.equal(bare[0], pet_only[0]) and not bare[1].any()
    # the cache key holds each modality's image and mask, and their absence
    cache = CropCache(spec, tmp_path)
    present = cache.get(pet, pet_mask, modalities={"ct": (None, None), "mr": (mr, mr_mask)})[0]
    absent = cache.get(pet, pet_mask, modalities={"ct": (None, None), "mr": (None, None)})[0]
    brighter = _image(sitk.GetArrayFromImage(mr) * 2.0 + 5.0, mr.GetSpacing(), mr.GetOrigin())
    cache.get(pet, pet_mask, modalities={"ct": (None, None), "mr": (brighter, mr_mask)})
    moved = sitk.Image(mr_mask)
    moved.SetOrigin((-28.0, 10.0, 0.0))
    moved_image = sitk.Image(mr)
    moved_image.SetOrigin((-28.0, 10.0, 0.0))
    cache.get(pet, pet_mask, modalities={"ct": (None, None), "mr": (moved_image, moved)})
    assert len(list(tmp_path.glob("*.safetensors"))) == 4 and not torch.equal(present, absent)
    again = CropCache(spec, tmp_path).get(pet, pet_mask, modalities={"ct": (None, None), "mr": (mr, mr_mask)})[0]
    assert torch.equal(again, present)


def test_augmenter_keeps_masks_binary_and_a_missing_modality_zero():
    batch = torch.zeros(4, 4, 16, 16, 16)
    batch[:, 0] = torch.rand(4, 16, 16, 16)
    batch[:, 1:, 4:12, 4:12, 4:12] = 1.0  # the PET's mask, the MR (a cube of 1) and its mask
    batch[1, 2:] = 0.0  # sample 1 lacks the MR
    spec = CropSpec(16, 2.0, modalities=("mr",))
    out = BatchAugmenter(seed=3, image_channels=spec.image_channels)(batch)
    assert set(torch.unique(out[:, [1, 3]]).tolist()) <= {0.0, 1.0} and not out[1, 2:].any()
    centre = out[[0, 2, 3], 2, 8, 8, 8]  # 1 before: each sample's own gain (0.9-1.1) and shift (+-0.05)
    assert torch.all((centre > 0.85) & (centre < 1.15)) and len(torch.unique(centre)) == 3
    # the PET's channels are augmented as without the modality (its draws come first)
    assert torch.equal(out[:, :2], BatchAugmenter(seed=3)(batch[:, :2]))


def _mr_case(rng, pet: sitk.Image, pet_mask: sitk.Image):
    """An MR of the case on its own grid (other origin, spacing and extent), arbitrary scale, tumour brighter."""
    radius = float(np.cbrt(3 * sitk.GetArrayViewFromImage(pet_mask).sum() * np.prod(pet.GetSpacing()) / 4 / np.pi))
    origin = rng.uniform(-100, 100, 3)
    centre = origin + np.array([30.0, 30.0, 24.0]) + rng.uniform(-4, 4, 3)
    image, mask = _sphere((40, 40, 24), (1.5, 1.5, 2.0), origin, centre, radius, rng.uniform(600, 900),
                          rng.uniform(100, 300))
    noisy = sitk.GetArrayFromImage(image) + rng.normal(0, 40, image.GetSize()[::-1]).astype(np.float32)
    return _image(noisy, image.GetSpacing(), image.GetOrigin()), mask


@pytest.fixture(scope="module")
def cohort():
    images, masks, y = make_cohort(18, seed=11)
    rng = np.random.default_rng(3)
    mr = [_mr_case(rng, image, mask) for image, mask in zip(images, masks)]
    lacking = set(range(0, 18, 3))  # a third of the cases have no MR
    mr_images = [None if i in lacking else m[0] for i, m in enumerate(mr)]
    mr_masks = [None if i in lacking else m[1] for i, m in enumerate(mr)]
    return images, masks, y, mr_images, mr_masks


@pytest.fixture(scope="module")
def trained(cohort):
    images, masks, y, mr_images, mr_masks = cohort
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = DeepConfig.preset("cpu-fast", folds=3, epochs=3, seed=0, device="cpu", modalities=("mr",))
    model = train_deep(images, masks, y, config, progress=False, modalities={"mr": (mr_images, mr_masks)})
    yield model
    torch.set_num_threads(threads)


def test_trains_and_predicts_with_and_without_the_modality(cohort, trained):
    images, masks, y, mr_images, mr_masks = cohort
    model = trained
    assert model.config.crop.channels == 4
    assert model.oof_prob.shape == (18,) and np.all((model.oof_prob > 0) & (model.oof_prob < 1))
    given = {"mr": (mr_images, mr_masks)}
    outputs = model.fold_outputs(images, masks, modalities=given)
    assert len(outputs) == 3 and all(p.shape == (18,) and e.shape == (18, model.embed_dim) for p, e in outputs)
    prob = model.predict(images, masks, modalities=given)
    none = model.predict(images, masks, modalities={"mr": ([None] * 18, [None] * 18)})
    lacking = np.array([m is None for m in mr_images])
    # the cases without an MR get the same numbers either way; the others' MR changes them
    np.testing.assert_array_equal(none[lacking], prob[lacking])
    assert not np.allclose(none[~lacking], prob[~lacking])
    for i in (0, 1):  # case 0 lacks the MR, case 1 has it
        cam = model.gradcam(images[i], masks[i], modalities={"mr": (mr_images[i], mr_masks[i])})
        assert_heat_map_on_pet_grid(cam, images[i])
    cam = model.gradcam(images[1], masks[1], modalities={"mr": (None, None)})
    assert_heat_map_on_pet_grid(cam, images[1])

    info, parts = model.to_parts()
    assert info["config"]["modalities"] == ("mr",)
    again = DeepModel.from_parts(json.loads(json.dumps(info)), parts)
    assert again.config.modalities == ("mr",) and again.config.ct_window == (-160.0, 240.0)
    np.testing.assert_array_equal(again.predict(images, masks, modalities=given), prob)
    for (p, e), (p2, e2) in zip(outputs, again.fold_outputs(images, masks, modalities=given)):
        np.testing.assert_array_equal(p2, p)
        np.testing.assert_array_equal(e2, e)
    # a bundle written before the setting existed loads as PET-only
    old = {k: v for k, v in DeepConfig.preset("cpu-fast").to_dict().items()
           if k not in ("modalities", "ct_window", "zscore_clip")}
    assert DeepConfig.from_dict(old).modalities == () and DeepConfig.from_dict(old).crop.channels == 2


def test_modality_errors_name_the_case_and_the_modality(cohort, trained):
    images, masks, y, mr_images, mr_masks = cohort
    ids = [f"P{i:02d}" for i in range(18)]
    with pytest.raises(InputError, match=r"modality 'ct' is given but the CNN is not configured for it "
                                         r"\(DeepConfig.modalities: mr\)"):
        trained.predict(images, masks, modalities={"mr": (mr_images, mr_masks), "ct": (mr_images, mr_masks)})
    with pytest.raises(InputError, match=r"modality 'mr' is given .* \(DeepConfig.modalities: none: the PET only\)"):
        preprocess_cohort(images, masks, CropSpec(16, 2.0), modalities={"mr": (mr_images, mr_masks)})
    with pytest.raises(InputError, match="the CNN is configured for modality 'mr' but it is not given"):
        trained.predict(images, masks)
    with pytest.raises(InputError, match="the CNN is configured for modality 'mr' but it is not given"):
        trained.gradcam(images[1], masks[1])
    without_mask = list(mr_masks)
    without_mask[4] = None
    with pytest.raises(InputError, match="P04: the mr image is given without its mask"):
        trained.predict(images, masks, case_ids=ids, modalities={"mr": (mr_images, without_mask)})
    with pytest.raises(InputError, match="P00: the mr mask is given without its image"):
        trained.predict(images, masks, case_ids=ids, modalities={"mr": (mr_images, [masks[0]] + mr_masks[1:])})
    shifted = sitk.Image(mr_masks[2])
    shifted.SetOrigin(tuple(np.add(shifted.GetOrigin(), (3.0, 0.0, 0.0))))
    wrong_grid = mr_masks[:2] + [shifted] + mr_masks[3:]
    with pytest.raises(InputError, match=r"P02: the mr mask is not on the mr grid: origin .* vs mr "):
        train_deep(images, masks, y, trained.config, progress=False, case_ids=ids,
                   modalities={"mr": (mr_images, wrong_grid)})
    with pytest.raises(InputError, match=r"modality 'mr' needs \(images, masks\), one of each per case"):
        trained.predict(images, masks, modalities={"mr": (mr_images[:5], mr_masks[:5])})
    with pytest.raises(ConfigError, match="must be distinct"):
        DeepConfig.preset("cpu-fast", modalities=("mr", "mr")).check()
    with pytest.raises(ConfigError, match="low < high"):
        DeepConfig.preset("cpu-fast", ct_window=(200.0, -100.0)).check()
