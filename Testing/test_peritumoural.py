"""The peritumoural shell (features.peritumoural) and its features: the width in physical units on anisotropic
grids (a hand-counted neighbourhood, a sphere against the analytic shell), clipping to the image and to a body
mask, errors that name the case, and the `peri_` features of the per-case analysis."""

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DPETResponseLib.core.errors import ConfigError, InputError
from DPETResponseLib.features.analysis import analyse_image
from DPETResponseLib.features.peritumoural import peritumoural_shell

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peritumoural_shell import sphere  # noqa: E402  (the benchmark's sphere, so both measure the same thing)


def _image(array, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_the_width_is_in_millimetres_on_an_anisotropic_grid():
    """One tumour voxel on a 1 x 1 x 2 mm grid, a 2 mm shell: the voxels whose centre is within 2 mm of it, by
    hand: 4 along x (1, 2 mm), 4 along y, 2 along z (2 mm), 4 in-plane diagonals (1.41 mm); not (1, 0, 1)
    (2.24 mm) nor (2, 1, 0) (2.24 mm)."""
    tumour = np.zeros((9, 9, 9), np.uint8)
    tumour[4, 4, 4] = 1
    shell = sitk.GetArrayFromImage(peritumoural_shell(_image(tumour), 2.0))
    z, y, x = np.nonzero(shell)
    offsets = sorted(zip(z - 4, y - 4, x - 4))
    expected = sorted([(0, 0, d) for d in (-2, -1, 1, 2)] + [(0, d, 0) for d in (-2, -1, 1, 2)]
                      + [(d, 0, 0) for d in (-1, 1)] + [(0, a, b) for a in (-1, 1) for b in (-1, 1)])
    assert offsets == expected and shell[4, 4, 4] == 0


def test_shell_volume_on_a_sphere_against_the_analytic_shell():
    """A 5 mm shell around a 15 mm sphere on a 0.4 x 0.4 x 1 mm grid, two grid phases: 2.3-2.5 % below the
    analytic 4/3 pi ((r + w)^3 - r^3) (the tumour's outermost voxel centres lie inside its surface; the issue's 2 %
    is not met at this grid, see benchmarks/peritumoural_shell.py), and well above a 4 or 6 mm shell's."""
    for phase in (0.0, 0.37):
        mask, _ = sphere((0.4, 0.4, 1.0), 15.0, 9.0, phase)
        voxel = 0.4 * 0.4 * 1.0
        analytic = 4 / 3 * np.pi * ((15.0 + 5.0) ** 3 - 15.0**3)
        volume = sitk.GetArrayFromImage(peritumoural_shell(mask, 5.0)).sum() * voxel
        assert -0.03 < volume / analytic - 1 < -0.015
        for other in (4.0, 6.0):
            v_other = 4 / 3 * np.pi * ((15.0 + other) ** 3 - 15.0**3)
            assert abs(volume - analytic) < abs(volume - v_other) / 4


def test_shell_is_clipped_to_the_image_and_to_a_body_mask():
    tumour = np.zeros((12, 20, 20), np.uint8)
    tumour[4:8, 8:12, 0:4] = 1  # touching the image's x = 0 face
    mask = _image(tumour)
    shell = sitk.GetArrayFromImage(peritumoural_shell(mask, 3.0))
    assert shell.shape == tumour.shape and not (shell & tumour).any()
    body = np.zeros_like(tumour)
    body[:, :10, :] = 1  # only the half y < 10
    clipped = sitk.GetArrayFromImage(peritumoural_shell(mask, 3.0, body=_image(body)))
    assert clipped.sum() > 0 and (clipped == (shell & body)).all() and clipped.sum() < shell.sum()


def test_bad_input_is_named():
    tumour = np.zeros((5, 5, 5), np.uint8)
    with pytest.raises(InputError, match="case7.*tumour mask is empty"):
        peritumoural_shell(_image(tumour), 3.0, case="case7")
    with pytest.raises(ConfigError, match="must be positive"):
        peritumoural_shell(_image(tumour + 1), 0.0)
    with pytest.raises(InputError, match="case7.*shell is empty"):
        peritumoural_shell(_image(tumour + 1), 3.0, case="case7")
    other = _image(tumour, spacing=(2.0, 2.0, 2.0))
    tumour[2, 2, 2] = 1
    with pytest.raises(InputError, match="case7"):
        peritumoural_shell(_image(tumour), 3.0, body=other, case="case7")


FIRST_ORDER = """
imageType:
  Original: {}
featureClass:
  firstorder: [Mean, Maximum]
setting:
  binWidth: 0.25
"""


def test_analysis_adds_the_shell_features(tmp_path):
    """`peri_pet_*` against the SUV of the shell's voxels computed here; `peri_original_firstorder_Mean` equals
    `peri_pet_SUVmean`; 0 mm leaves them out; a negative width is refused."""
    z, y, x = np.mgrid[:24, :40, :40]
    r = np.sqrt(((x - 20) * 1.0) ** 2 + ((y - 20) * 1.0) ** 2 + ((z - 12) * 2.0) ** 2)
    rng = np.random.default_rng(0)
    pet = np.where(r <= 8, 6.0, np.where(r <= 12, 2.5, 1.0)) + rng.normal(0, 0.05, r.shape)
    image, mask = _image(pet.astype(np.float32)), _image((r <= 8).astype(np.uint8))
    (tmp_path / "p.yaml").write_text(FIRST_ORDER)
    settings = {"radiomics_params": str(tmp_path / "p.yaml"), "habitat_method": "tumour", "ith_dims": [2],
                "peritumoural_mm": 3.0}
    features, _, _ = analyse_image(image, mask, settings, "c1")
    shell = sitk.GetArrayFromImage(peritumoural_shell(mask, 3.0)).astype(bool)
    assert features["peri_pet_SUVmean"] == pytest.approx(pet[shell].mean(), rel=1e-6)
    assert features["peri_pet_SUVmax"] == pytest.approx(pet[shell].max(), rel=1e-6)
    assert features["peri_pet_volume"] == pytest.approx(shell.sum() * 2.0 / 1000)
    assert features["peri_original_firstorder_Mean"] == pytest.approx(features["peri_pet_SUVmean"], rel=1e-5)
    assert 2.0 < features["peri_pet_SUVmean"] < features["pet_SUVmean"]
    none, _, _ = analyse_image(image, mask, {**settings, "peritumoural_mm": 0.0}, "c1")
    assert not [k for k in none if k.startswith("peri_")]
    with pytest.raises(ConfigError, match="peritumoural_mm"):
        analyse_image(image, mask, {**settings, "peritumoural_mm": -1.0}, "c1")
