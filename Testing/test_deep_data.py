"""Tumour crops (geometry against exact references), the crop cache, batched augmentation, bad input."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.deep.data import (
    BatchAugmenter,
    CropCache,
    CropSpec,
    crop_to_image,
    preprocess_case,
    preprocess_cohort,
)

# A rotated, axis-flipped, anisotropic PET grid: the pitfalls of LPS geometry in one image.
ANGLE = 0.4
DIRECTION = (np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])
             @ np.diag([1, -1, -1]))
SPACING = (1.5, 2.0, 3.0)
ORIGIN = (10.0, -20.0, 5.0)
SIZE = (40, 30, 20)


def _grid_image(array_zyx: np.ndarray, pixel=sitk.sitkFloat32) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(tuple(DIRECTION.ravel()))
    return sitk.Cast(image, pixel)


def _physical_points() -> np.ndarray:
    """(z, y, x, 3) LPS position of every voxel, from the grid definition (not from SimpleITK)."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in SIZE[::-1]], indexing="ij")
    index = np.stack([x, y, z], -1).astype(float)
    return index @ (DIRECTION @ np.diag(SPACING)).T + np.asarray(ORIGIN)


def _box_mask() -> np.ndarray:
    mask = np.zeros(SIZE[::-1], np.uint8)
    mask[8:13, 10:17, 15:22] = 1  # bounding box centre index (x, y, z) = (18, 13, 10)
    return mask


def test_crop_samples_a_linear_field_exactly_at_lps_positions():
    # SUV = a . p + b is linear in physical space, so trilinear resampling must reproduce it exactly inside
    # the PET: any error in axis order, spacing, direction or origin shows up as a mismatch.
    a, b = np.array([0.05, -0.03, 0.02]), 6.0
    suv = (_physical_points() @ a + b).astype(np.float32)
    spec = CropSpec(size=16, spacing=1.0, suv_clip=15.0, mask_channel=True)
    crop, geometry = preprocess_case(_grid_image(suv), _grid_image(_box_mask(), sitk.sitkUInt8), spec)
    assert crop.shape == (2, 16, 16, 16) and crop.dtype == torch.float32
    # crop centre = centre of the mask's bounding box, index (18, 13, 10) -> physical point by the grid definition
    centre = DIRECTION @ (np.array([18.0, 13.0, 10.0]) * SPACING) + ORIGIN
    np.testing.assert_allclose(np.asarray(geometry.origin) + 7.5, centre, atol=1e-9)
    i, j, k = np.meshgrid(*[np.arange(16)] * 3, indexing="ij")
    positions = np.asarray(geometry.origin) + np.stack([i, j, k], -1) * geometry.spacing
    expected = (positions @ a + b) / 15.0  # SUV scaled by the clip
    np.testing.assert_allclose(crop[0].numpy(), expected, atol=2e-5)


def test_mask_channel_and_suv_clip():
    suv = np.full(SIZE[::-1], 30.0, np.float32)  # above the clip everywhere
    mask = _box_mask()
    crop, geometry = preprocess_case(_grid_image(suv), _grid_image(mask, sitk.sitkUInt8), CropSpec(24, 1.0, 10.0))
    inside = crop[0].numpy()[2:-2, 2:-2, 2:-2]
    np.testing.assert_allclose(inside, 1.0, atol=1e-6)  # clipped at 10 then scaled to 1
    m = crop[1].numpy()
    assert set(np.unique(m)) == {0.0, 1.0}
    # the mask's physical volume is kept: 5*7*7 voxels of 1.5*2*3 mm = 2205 mm^3 (1 mm^3 crop voxels)
    assert abs(m.sum() - 2205) / 2205 < 0.12
    # and its centre of mass is the crop centre (11.5) within one crop voxel
    np.testing.assert_allclose(np.argwhere(m > 0).mean(0), 11.5, atol=1.0)


def test_crop_to_image_puts_the_crop_back_on_the_pet_grid():
    suv = np.zeros(SIZE[::-1], np.float32)
    suv[10, 12, 17] = 1.0  # one voxel
    image, mask = _grid_image(suv), _grid_image(_box_mask(), sitk.sitkUInt8)
    spec = CropSpec(size=32, spacing=1.0, suv_clip=1.0, mask_channel=False)
    crop, geometry = preprocess_case(image, mask, spec)
    back = sitk.Resample(crop_to_image(crop[0].numpy(), geometry), image, sitk.Transform(), sitk.sitkLinear, 0.0)
    values = sitk.GetArrayFromImage(back)
    assert np.unravel_index(values.argmax(), values.shape) == (10, 12, 17)


def test_crops_near_the_edge_are_zero_padded():
    mask = np.zeros(SIZE[::-1], np.uint8)
    mask[0:2, 0:2, 0:2] = 1  # tumour in the corner: most of the crop lies outside the PET
    suv = np.full(SIZE[::-1], 5.0, np.float32)
    crop, _ = preprocess_case(_grid_image(suv), _grid_image(mask, sitk.sitkUInt8), CropSpec(24, 2.0, 10.0))
    values = crop[0].numpy()
    assert values.max() == pytest.approx(0.5, abs=1e-6) and values.min() == 0.0
    assert 0.1 < (values > 0).mean() < 0.5  # about one octant of the cube overlaps the PET


def test_bad_input_raises_input_error_naming_the_case():
    suv = _grid_image(np.ones(SIZE[::-1], np.float32))
    empty = _grid_image(np.zeros(SIZE[::-1], np.uint8), sitk.sitkUInt8)
    with pytest.raises(InputError, match=r"case-7: tumour mask is empty"):
        preprocess_case(suv, empty, CropSpec(16, 2.0), case="case-7")
    shifted = _grid_image(_box_mask(), sitk.sitkUInt8)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(InputError,
                       match=r"case-8: the mask is not on the PET grid: origin \(0, 0, 0\) vs PET \(10, -20, 5\)"):
        preprocess_case(suv, shifted, CropSpec(16, 2.0), case="case-8")
    nan = np.ones(SIZE[::-1], np.float32)
    nan[0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"case-9: PET image holds NaN"):
        preprocess_case(_grid_image(nan), _grid_image(_box_mask(), sitk.sitkUInt8), CropSpec(16, 2.0), case="case-9")


def test_cache_serves_the_same_crop_from_disk_and_misses_on_changed_input(tmp_path):
    suv = np.random.default_rng(0).uniform(0, 8, SIZE[::-1]).astype(np.float32)
    image, mask = _grid_image(suv), _grid_image(_box_mask(), sitk.sitkUInt8)
    spec = CropSpec(16, 2.0)
    first, geo1 = CropCache(spec, tmp_path).get(image, mask)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and not list(tmp_path.glob("*.tmp*"))
    second, geo2 = CropCache(spec, tmp_path).get(image, mask)  # a fresh cache reads the file
    assert torch.equal(first, second) and geo1 == geo2
    suv[10, 12, 17] += 5.0
    stacked, _ = preprocess_cohort([image, _grid_image(suv)], [mask, mask], spec, cache=CropCache(spec, tmp_path))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not torch.equal(stacked[0], stacked[1])


def test_augmenter_flip_matrix_is_an_exact_flip_and_is_seeded():
    from monai.networks.layers import AffineTransform

    x = torch.rand(2, 2, 10, 12, 14)
    warp = AffineTransform(normalized=False, zero_centered=True, align_corners=True, padding_mode="zeros")
    for axis in range(3):
        theta = torch.eye(4).repeat(2, 1, 1)
        theta[:, axis, axis] = -1
        torch.testing.assert_close(warp(x, theta), torch.flip(x, dims=[2 + axis]), atol=1e-5, rtol=0)
    batch = torch.zeros(4, 2, 16, 16, 16)
    batch[:, :, 4:12, 4:12, 4:12] = 1.0
    a, b = BatchAugmenter(seed=3)(batch), BatchAugmenter(seed=3)(batch)
    assert torch.equal(a, b)
    assert not torch.equal(a, BatchAugmenter(seed=4)(batch))
    assert set(torch.unique(a[:, 1]).tolist()) <= {0.0, 1.0}  # the mask channel stays binary
    # rotation <= 15 deg and scale within 10 % keep a centred cube's volume within 30 % (512 voxels)
    volumes = a[:, 1].sum(dim=(1, 2, 3))
    assert torch.all((volumes > 512 * 0.7) & (volumes < 512 * 1.3))
