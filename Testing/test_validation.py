"""check_case: every bad input gets its own InputError message naming the case; accepted oddities give warnings."""

import re

import numpy as np
import pytest
import SimpleITK as sitk
from cohort_tasks import synthetic_case

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.io.validation import InputWarning, check_case


def _with_array(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def _set(image, index_zyx, value):
    array = sitk.GetArrayFromImage(image)
    array[index_zyx] = value
    return _with_array(image, array)


def _tiny_mask(mask, n):
    array = np.zeros(sitk.GetArrayViewFromImage(mask).shape, np.uint8)
    array[5, 6:8, 7] = 1  # a 2-voxel line
    array[5, 6, 7] = 1 if n >= 1 else 0
    array[5, 7, 7] = 1 if n >= 2 else 0
    return _with_array(mask, array)


def _shifted(mask, offset_mm):
    out = sitk.Image(mask)
    out.SetOrigin(tuple(np.array(mask.GetOrigin()) + offset_mm))
    return out


def _join4d(image, frames):
    return sitk.JoinSeries([image] * frames)


# (name, make (image, mask) from a good pair, expected message regex)
BAD_CASES = [
    ("2D image", lambda im, m: (im[:, :, 5], m), r"image is 2D \(size \(16, 14\)\); a 3D volume is needed"),
    ("4D image, 3 frames", lambda im, m: (_join4d(im, 3), m), r"image is 4D with 3 time points/frames"),
    ("vector image", lambda im, m: (sitk.Compose(im, im), m), r"image has 2 components per voxel"),
    ("NaNs", lambda im, m: (_set(im, (slice(0, 2), 0, slice(0, 3)), np.nan), m),
     r"image has 6 non-finite voxel\(s\) \(NaN/inf\) of 2688"),
    ("inf", lambda im, m: (_set(im, (0, 0, 0), np.inf), m), r"image has 1 non-finite voxel"),
    ("strongly negative SUV", lambda im, m: (_set(im, (0, slice(0, 4), 0), -50.0), m),
     r"image has 4 voxel\(s\) below -1 SUV \(minimum -50\): not a SUV image"),
    ("empty mask", lambda im, m: (im, m * 0), r"mask is empty \(no tumour voxel\)"),
    ("several labels", lambda im, m: (im, _set(m, (6, 7, slice(0, 3)), 2)),
     r"mask has 2 labels \(1, 2\); give one tumour per case"),
    ("probability mask", lambda im, m: (im, sitk.Cast(m, sitk.sitkFloat32) * 0.5),
     r"mask is not a label image: values 0.5"),
    ("geometry: spacing", lambda im, m: (im, _spacing(m, (2.0, 2.1, 3.0))),
     r"mask is not on the PET grid: spacing \(2, 2.1, 3\) vs PET \(2, 2, 3\) mm"),
    ("geometry: size", lambda im, m: (im, m[:, :, 1:]), r"mask is not on the PET grid: size \(16, 14, 11\) vs PET "
     r"\(16, 14, 12\) voxels; origin"),
    ("geometry: origin", lambda im, m: (im, _shifted(m, (0.0, 0.0, 1.5))),
     r"not on the PET grid: origin \(-10, 25, 41.5\) vs PET \(-10, 25, 40\) mm"),
    ("mask outside the image", lambda im, m: (im, _shifted(m, (500.0, 0.0, 0.0))),
     # by hand: tumour x indices 4..12 -> -10 + 2 * i +- 1 mm half voxel = -3..15, +500 mm; image x 0..15 -> -11..21
     r"mask's tumour lies outside the image \(tumour \(497, 30, 44.5\) to \(515, 48, 71.5\) mm, "
     r"image \(-11, 24, 38.5\) to \(21, 52, 74.5\) mm\)"),
    ("mask on zero voxels", lambda im, m: (im * sitk.Cast(m == 0, sitk.sitkFloat32), m),
     r"mask covers only voxels of SUV <= 0 \(\d+ voxels\): outside the PET field of view"),
    ("1-voxel tumour", lambda im, m: (im, _tiny_mask(m, 1)),
     r"tumour has 1 voxel\(s\): too small for texture analysis \(at least 3 needed\)"),
    ("2-voxel tumour", lambda im, m: (im, _tiny_mask(m, 2)), r"tumour has 2 voxel\(s\): too small"),
    ("line tumour", lambda im, m: (im, _with_array(m, _line())), r"tumour \(5 voxels\) extends along one axis only"),
]


def _spacing(image, spacing):
    out = sitk.Image(image)
    out.SetSpacing(spacing)
    return out


def _line():
    array = np.zeros((12, 14, 16), np.uint8)
    array[6, 7, 3:8] = 1
    return array


@pytest.mark.parametrize("name,make,expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_an_input_error_naming_case_and_problem(name, make, expected):
    image, mask = make(*synthetic_case(1))
    with pytest.raises(InputError) as info:
        check_case(image, mask, "P042")
    assert info.value.case == "P042"
    assert str(info.value).startswith("P042: ")
    assert re.search(expected, info.value.problem), info.value.problem


def test_good_case_passes_unchanged():
    image, mask = synthetic_case(2)
    clean_image, clean_mask, notes = check_case(sitk.Cast(image, sitk.sitkFloat64), mask * 1, "P1")
    assert notes == []
    assert clean_image.GetPixelID() == sitk.sitkFloat32 and clean_mask.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(clean_image), sitk.GetArrayFromImage(image))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(clean_mask), sitk.GetArrayFromImage(mask))
    assert clean_mask.GetOrigin() == image.GetOrigin()


def test_small_negative_suvs_are_a_warning_and_left_alone():
    image, mask = synthetic_case(3)
    noisy = _set(image, (0, 0, slice(0, 5)), -0.4)
    with pytest.warns(InputWarning, match=r"P7: image has 5 negative voxel\(s\) \(minimum -0.4 SUV\)"):
        clean, _, notes = check_case(noisy, mask, "P7")
    assert notes == ["image has 5 negative voxel(s) (minimum -0.4 SUV), taken as reconstruction noise and left as "
                     "they are"]
    assert float(sitk.GetArrayViewFromImage(clean).min()) == pytest.approx(-0.4)


def test_single_time_point_4d_is_squeezed_with_a_warning():
    image, mask = synthetic_case(4)
    with pytest.warns(InputWarning, match=r"4D with a single time point"):
        clean, clean_mask, notes = check_case(_join4d(image, 1), mask, "P8")
    assert clean.GetDimension() == 3 and clean.GetSize() == image.GetSize()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(clean), sitk.GetArrayFromImage(image))
    assert len(notes) == 1


def test_single_foreground_value_255_is_taken_as_tumour():
    image, mask = synthetic_case(5)
    with pytest.warns(InputWarning, match="mask foreground value 255 taken as the tumour"):
        _, clean_mask, _ = check_case(image, mask * 255, "P9")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(clean_mask), sitk.GetArrayFromImage(mask))


def test_geometry_within_tolerance_gets_the_image_grid():
    image, mask = synthetic_case(6)
    nudged = _shifted(mask, (1e-4, 0.0, 0.0))  # 5e-5 voxel: float32 NIfTI rounding, not a different grid
    _, clean_mask, _ = check_case(image, nudged, "P10")
    assert clean_mask.GetOrigin() == image.GetOrigin()


def test_real_sts_case_passes(shared_data):
    folder = shared_data / "sts_pet" / "STS_001"
    image = sitk.ReadImage(str(folder / "PET_image.nii.gz"))
    mask = sitk.ReadImage(str(folder / "PET_mask.nii.gz"))
    clean, clean_mask, notes = check_case(image, mask, "STS_001")
    assert notes == []
    assert int(sitk.GetArrayViewFromImage(clean_mask).sum()) == 5095  # the expert mask's voxel count
