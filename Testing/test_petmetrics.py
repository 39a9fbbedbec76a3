"""PET metrics against values computed by hand on small anisotropic arrays and an analytic SUVpeak."""

import numpy as np
import pytest
import SimpleITK as sitk

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.features.petmetrics import PEAK_RADIUS_MM, pet_metrics, sphere_kernel, suv_peak


def _image(array_zyx, spacing_xyz, direction=None, origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.float32))
    img.SetSpacing(spacing_xyz)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def _mask_like(img, array_zyx):
    m = sitk.GetImageFromArray(np.asarray(array_zyx, dtype=np.uint8))
    m.CopyInformation(img)
    return m


# Voxels 4 x 4 x 8 mm (x, y, z): 0.128 ml. With centre weighting, the 6.2 mm sphere holds the 3x3 in-plane
# block (in-plane diagonal 5.66 mm < 6.2 mm) and nothing of the slices above and below (8 mm > 6.2 mm).
SPACING = (4.0, 4.0, 8.0)
SLICE = np.array([  # z = 1, rows y = 0..3, columns x = 0..4
    [1, 1, 1, 10, 1],
    [1, 2, 4, 6, 1],
    [1, 3, 5, 9, 1],
    [1, 1, 1, 1, 1],
], dtype=float)


def _hand_case(corner_value=10.0, corner_in_mask=False):
    arr = np.ones((3, 4, 5))
    arr[1] = SLICE
    arr[1, 0, 3] = corner_value
    arr[0, 2, 2] = 50.0  # one slice below the tumour, 8 mm away: outside every 6.2 mm sphere
    mask = np.zeros((3, 4, 5))
    mask[1, 1:3, 1:4] = 1
    if corner_in_mask:
        mask[1, 0, 3] = 1
    direction = (0, 1, 0, -1, 0, 0, 0, 0, 1)  # rotated about z: distances in mm are unchanged
    img = _image(arr, SPACING, direction, origin=(-12.5, 40.0, 7.0))
    return img, _mask_like(img, mask)


def test_pet_metrics_hand_computed():
    img, mask = _hand_case()
    m = pet_metrics(img, mask, case="hand")
    assert m["pet_SUVmax"] == pytest.approx(9.0)
    assert m["pet_SUVmean"] == pytest.approx(29 / 6)  # (2+4+6+3+5+9)/6
    assert m["pet_MTV"] == pytest.approx(6 * 0.128)
    assert m["pet_TLG"] == pytest.approx(29 / 6 * 0.768)
    # Centre weighting: the best centre is (y1, x2): 3x3 block 1+1+10 + 2+4+6 + 3+5+9 = 41 over 9 voxels
    # (the 10 outside the mask counts: the sphere is not restricted to the tumour; the 50 a slice below does not).
    assert suv_peak(img, mask, weighting="centre") == pytest.approx(41 / 9)


def test_suv_peak_sphere_cut_by_image_edge_averages_only_inside():
    img, mask = _hand_case(corner_value=40.0, corner_in_mask=True)
    # Centre (y0, x3) on the image edge: in-image part 1+40+1 / 4+6+1 = 53 over 6 voxels, beating (y1, x2):
    # 1+1+40+2+4+6+3+5+9 = 71 / 9 = 7.89. Counting the 3 missing voxels as zeros would give 53/9 = 5.89.
    assert suv_peak(img, mask, weighting="centre") == pytest.approx(53 / 6)


def test_volume_weighted_kernel_holds_one_millilitre():
    for spacing in [(4.0, 4.0, 8.0), (4.69, 4.69, 3.27), (1.0, 1.5, 2.0)]:
        kernel = sphere_kernel(spacing)
        volume = kernel.sum() * np.prod(spacing)
        assert volume == pytest.approx(4 / 3 * np.pi * PEAK_RADIUS_MM**3, rel=3e-3)  # 998.3 mm3


def _quadratic_field(spacing):
    # f = 100 - 0.1 |r - r0|^2 sampled at voxel centres, r0 on the middle voxel; tumour = the voxels within 2 mm.
    shape = [int(2 * np.ceil(10.0 / s)) + 1 for s in spacing[::-1]]  # z, y, x: at least +-10 mm around r0
    zz, yy, xx = np.meshgrid(*[(np.arange(n) - n // 2) * s for n, s in zip(shape, spacing[::-1])], indexing="ij")
    r2 = xx**2 + yy**2 + zz**2
    img = _image(100 - 0.1 * r2, spacing)
    return img, _mask_like(img, r2 <= 2.0**2)


def test_suv_peak_of_quadratic_field_converges_to_analytic_sphere_mean():
    # The mean of |r - r0|^2 over a ball of radius R centred at r0 is 3 R^2 / 5, so the best 1 ml sphere (centred
    # at r0) has mean SUV 100 - 0.1 * 3 * 6.2^2 / 5 = 97.6936. Volume weighting values a partial voxel at its
    # centre, which lies outside the part inside the sphere: an O(h^2) discretisation error (measured: -0.067
    # at 1 x 1.5 x 2 mm, -0.016 at half that spacing). Tolerances: 0.1 (0.1 %), then 0.025 at half spacing.
    expected = 100 - 0.1 * 3 * PEAK_RADIUS_MM**2 / 5
    assert suv_peak(*_quadratic_field((1.0, 1.5, 2.0))) == pytest.approx(expected, abs=0.1)
    assert suv_peak(*_quadratic_field((0.5, 0.75, 1.0))) == pytest.approx(expected, abs=0.025)


def test_empty_mask_and_wrong_grid_raise_input_error():
    img, mask = _hand_case()
    empty = _mask_like(img, np.zeros((3, 4, 5)))
    with pytest.raises(InputError, match="case7.*empty"):
        pet_metrics(img, empty, case="case7")
    shifted = sitk.Image(mask)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the PET grid"):
        pet_metrics(img, shifted, case="case7")
    nan_img = sitk.GetImageFromArray(np.full((3, 4, 5), np.nan, dtype=np.float32))
    nan_img.CopyInformation(img)
    with pytest.raises(InputError, match="NaN"):
        pet_metrics(nan_img, mask, case="case7")
