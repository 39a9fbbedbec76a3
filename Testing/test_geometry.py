"""One grid rule (`io.geometry`): the same tolerance from a file, in memory, in every stage."""

import numpy as np
import pytest
import SimpleITK as sitk

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.deep.data import CropSpec, preprocess_cohort
from DPETResponseLib.features.petmetrics import pet_metrics
from DPETResponseLib.features.radiomics import RadiomicsExtractor
from DPETResponseLib.io.geometry import GRID_TOLERANCE, grid_differences, same_grid
from DPETResponseLib.io.images import read_mask, write_image
from DPETResponseLib.io.validation import check_case


def _case():
    image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(1, 3, (10, 12, 14)).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    image.SetOrigin((-10.0, 25.0, 40.0))
    array = np.zeros((10, 12, 14), np.uint8)
    array[3:7, 4:8, 4:9] = 1
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return image, mask


def _shifted(mask, voxels):
    """``mask`` with its origin moved by ``voxels`` of the smallest spacing (2 mm) along x."""
    out = sitk.Image(mask)
    out.SetOrigin(tuple(np.add(mask.GetOrigin(), (voxels * 2.0, 0, 0))))
    return out


@pytest.mark.parametrize("voxels, same", [(0.5 * GRID_TOLERANCE, True), (5 * GRID_TOLERANCE, False)])
def test_one_tolerance_from_a_file_and_in_memory(tmp_path, voxels, same):
    """A mask 5e-5 of a voxel off is accepted and one 5e-4 off refused, read from a file or given in memory."""
    image, mask = _case()
    moved = _shifted(mask, voxels)
    assert same_grid(image, moved) is same
    path = write_image(moved, tmp_path / "mask.nrrd")
    checks = [lambda: read_mask(path, image, case="c1"), lambda: check_case(image, moved, "c1"),
              lambda: pet_metrics(image, moved, case="c1")]
    for check in checks:
        if same:
            check()
        else:
            with pytest.raises(InputError, match=r"c1: the .*mask.* is not on the PET grid: origin .* \(differs by "
                                                 r"0.001, tolerance 0.0002\)"):
                check()


def test_every_stage_refuses_the_same_off_grid_mask():
    image, mask = _case()
    moved = _shifted(mask, 5 * GRID_TOLERANCE)
    with pytest.raises(InputError, match="'whole' mask is not on the PET grid: origin"):
        RadiomicsExtractor.from_text("imageType:\n  Original: {}\nfeatureClass:\n  firstorder: []\n").extract(
            image, {"whole": moved}, case="c1")
    with pytest.raises(InputError, match="c1: the mask is not on the PET grid: origin"):
        preprocess_cohort([image], [moved], CropSpec(size=8, spacing=2.0), case_ids=["c1"])


def test_differences_name_each_property_with_hand_computed_values():
    image, mask = _case()
    other = sitk.Image(mask)
    other.SetSpacing((2.0, 2.1, 3.0))
    other.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    found = grid_differences(image, other)
    assert found == ["spacing (2, 2.1, 3) vs PET (2, 2, 3) mm (differs by 0.1, tolerance 0.0002)",
                     "direction (0, 1, 0, 1, 0, 0, 0, 0, 1) vs PET (1, 0, 0, 0, 1, 0, 0, 0, 1) (differs by 1, "
                     "tolerance 0.0001)"]
    assert grid_differences(image, mask[:, :, 1:])[0] == "size (14, 12, 9) vs PET (14, 12, 10) voxels"
