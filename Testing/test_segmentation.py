"""Seed/box threshold segmentation on blurred spheres whose threshold surface is known analytically."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.optimize import brentq
from scipy.special import erf

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.features.segmentation import segment_from_seed

SPACING = (2.0, 2.5, 3.0)  # x, y, z mm: anisotropic
DIRECTION = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # RAS-like axes flipped against LPS, to exercise the geometry
ORIGIN = (60.0, 40.0, -30.0)
SHAPE_ZYX = (40, 40, 50)
SIGMA = 7.0 / 2.3548  # PET resolution: 7 mm FWHM
RADIUS, UPTAKE, BACKGROUND = 15.0, 10.0, 1.0


def blurred_ball(r, radius, sigma=SIGMA):
    """Exact value at distance r of a unit ball of ``radius`` convolved with an isotropic 3D Gaussian."""
    r = np.maximum(r, 1e-9)
    a, b = (radius - r) / (np.sqrt(2) * sigma), (radius + r) / (np.sqrt(2) * sigma)
    return (0.5 * (erf(a) + erf(b))
            - sigma / (r * np.sqrt(2 * np.pi)) * (np.exp(-a**2) - np.exp(-b**2)))


def _grid():
    img = sitk.Image([SHAPE_ZYX[2], SHAPE_ZYX[1], SHAPE_ZYX[0]], sitk.sitkFloat32)
    img.SetSpacing(SPACING)
    img.SetDirection(DIRECTION)
    img.SetOrigin(ORIGIN)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE_ZYX[::-1]], indexing="ij"), -1).reshape(-1, 3)
    points = (np.array(DIRECTION).reshape(3, 3) @ (idx * SPACING).T).T + ORIGIN  # physical x, y, z
    return img, points.reshape(SHAPE_ZYX[2], SHAPE_ZYX[1], SHAPE_ZYX[0], 3).transpose(2, 1, 0, 3)


def _image(spheres):
    """PET with BACKGROUND plus blurred uniform spheres [(centre_xyz, radius, uptake above background)]."""
    img, points = _grid()
    arr = np.full(SHAPE_ZYX, BACKGROUND)
    for centre, radius, uptake in spheres:
        arr += uptake * blurred_ball(np.linalg.norm(points - centre, axis=-1), radius)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(img)
    return out, points


CENTRE = np.array(ORIGIN) + np.array([-44.0, -50.0, 42.0])  # inside the image (axes x, y flipped)


def _expected_ml(threshold, radius=RADIUS, uptake=UPTAKE - BACKGROUND):
    """Volume (ml) of the ball where the blurred sphere is >= threshold."""
    r_star = brentq(lambda r: BACKGROUND + uptake * blurred_ball(r, radius) - threshold, 1e-3, 3 * radius)
    return 4 / 3 * np.pi * r_star**3 / 1000


def _ml(mask):
    return sitk.GetArrayViewFromImage(mask).sum() * np.prod(SPACING) / 1000


def test_relative_threshold_volume_matches_analytic_blurred_sphere():
    img, _ = _image([(CENTRE, RADIUS, UPTAKE - BACKGROUND)])
    peak = BACKGROUND + (UPTAKE - BACKGROUND) * blurred_ball(0.0, RADIUS)
    # Seed 6 mm off-centre: the local max (the centre voxel) is found within 10 mm of it.
    mask = segment_from_seed(img, seed_xyz=tuple(CENTRE + [4.0, 0.0, -4.5]), case="sphere")
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetDirection() == img.GetDirection()
    # The ball of voxel centres (15 ml at 2 x 2.5 x 3 mm voxels, 15 mm^3 each) matches the continuous ball
    # to within ~1 % (lattice-point counting); 3 % tolerance. 41 % of the peak lies outside R = 15 mm here.
    expected = _expected_ml(0.41 * peak)
    assert expected > 4 / 3 * np.pi * RADIUS**3 / 1000
    assert _ml(mask) == pytest.approx(expected, rel=0.03)
    mask30 = segment_from_seed(img, seed_xyz=tuple(CENTRE), relative=0.30)
    assert _ml(mask30) == pytest.approx(_expected_ml(0.30 * peak), rel=0.03)


def test_absolute_threshold_and_component_of_the_seed_only():
    other = CENTRE + np.array([0.0, 0.0, 45.0])  # a second, hotter sphere 45 mm away (well separated)
    img, _ = _image([(CENTRE, RADIUS, UPTAKE - BACKGROUND), (other, 8.0, 20.0)])
    mask = segment_from_seed(img, seed_xyz=tuple(CENTRE), absolute=5.5)
    assert _ml(mask) == pytest.approx(_expected_ml(5.5), rel=0.03)
    centre_index = img.TransformPhysicalPointToIndex(tuple(other))
    assert mask[centre_index] == 0  # above 5.5 SUV but not connected to the seed
    with pytest.raises(InputError, match="above the local SUVmax"):
        segment_from_seed(img, seed_xyz=tuple(CENTRE), absolute=50.0, case="c1")


def test_box_mode_finds_max_in_box_and_stays_inside_it():
    other = CENTRE + np.array([0.0, 0.0, 45.0])
    img, points = _image([(CENTRE, RADIUS, UPTAKE - BACKGROUND), (other, 8.0, 20.0)])
    lo, hi = CENTRE - 30.0, CENTRE + 30.0  # holds the first sphere only; the hotter one is 45 mm away in z
    mask = segment_from_seed(img, box=(*hi[:2], lo[2], *lo[:2], hi[2]))  # corners in any order
    peak = BACKGROUND + (UPTAKE - BACKGROUND) * blurred_ball(0.0, RADIUS)
    assert _ml(mask) == pytest.approx(_expected_ml(0.41 * peak), rel=0.03)
    # A box that cuts the sphere at z = centre: nothing beyond the box's face.
    cut = segment_from_seed(img, box=(*lo[:2], CENTRE[2], *hi[:2], hi[2]))
    z_of_voxels = points[..., 2][sitk.GetArrayViewFromImage(cut) > 0]
    assert z_of_voxels.min() >= CENTRE[2] - 1e-6
    # Voxels with centres at z >= centre fill the ball's cap above z = -1.5 mm (half a 3 mm slice): height h = r + 1.5.
    r_star = (_expected_ml(0.41 * peak) * 1000 * 3 / (4 * np.pi)) ** (1 / 3)
    h = r_star + SPACING[2] / 2
    assert _ml(cut) == pytest.approx(np.pi * h**2 * (3 * r_star - h) / 3 / 1000, rel=0.03)


def test_cold_core_is_filled():
    # Hot shell (radius 15 mm) with a cold core of radius 8 mm at background level: the 41 % threshold leaves
    # the core out, hole filling puts it back, so the mask is the full ball of the shell's threshold surface.
    img, _ = _image([(CENTRE, RADIUS, UPTAKE - BACKGROUND), (CENTRE, 8.0, -(UPTAKE - BACKGROUND))])
    arr = sitk.GetArrayViewFromImage(img)
    mask = segment_from_seed(img, seed_xyz=tuple(CENTRE), relative=0.41)
    core = img.TransformPhysicalPointToIndex(tuple(CENTRE))
    assert arr[core[::-1]] < 0.41 * arr.max()  # the core is below the threshold ...
    assert mask[core] == 1  # ... and filled
    peak = float(arr.max())
    r_star = brentq(lambda r: BACKGROUND + (UPTAKE - BACKGROUND) * (blurred_ball(r, RADIUS) - blurred_ball(r, 8.0))
                    - 0.41 * peak, RADIUS - 5, RADIUS + 10)
    assert _ml(mask) == pytest.approx(4 / 3 * np.pi * r_star**3 / 1000, rel=0.03)


def test_bad_seed_box_and_threshold_raise_input_error():
    img, _ = _image([(CENTRE, RADIUS, UPTAKE - BACKGROUND)])
    with pytest.raises(InputError, match="pt9.*outside the PET image"):
        segment_from_seed(img, seed_xyz=(1000.0, 0.0, 0.0), case="pt9")
    with pytest.raises(InputError, match="holds no voxel"):
        segment_from_seed(img, box=(1000, 1000, 1000, 1100, 1100, 1100), case="pt9")
    with pytest.raises(InputError, match="either a seed point or a box"):
        segment_from_seed(img, seed_xyz=tuple(CENTRE), box=(0, 0, 0, 1, 1, 1), case="pt9")
    with pytest.raises(InputError, match="relative threshold"):
        segment_from_seed(img, seed_xyz=tuple(CENTRE), relative=1.5, case="pt9")
    with pytest.raises(InputError, match="three numbers"):
        segment_from_seed(img, seed_xyz=(1.0, 2.0), case="pt9")
