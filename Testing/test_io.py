"""io: DICOM PET -> SUV checked against hand arithmetic on real headers, masks on the PET grid, atomic writes."""

import shutil
import warnings

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import edit_dicom_tags

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.core.files import atomic_write
from DPETResponseLib.io.geometry import grid_differences, same_grid
from DPETResponseLib.io.images import read_image, read_mask, read_pet, write_image


@pytest.fixture(scope="module")
def acrin(shared_data):
    return shared_data / "pet_dicom" / "acrin_flt_breast_bqml"


@pytest.fixture(scope="module")
def sts(shared_data):
    return shared_data / "pet_dicom" / "sts_001_suv"


def stored_bqml(path):
    """Activity in Bq/ml read independently with pydicom: stored pixel * RescaleSlope + RescaleIntercept."""
    ds = pydicom.dcmread(str(path))
    return ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def edited_copy(src, dst, **tags):
    """A pydicom-edited copy of one DICOM file (`conftest.edit_dicom_tags`)."""
    ds = pydicom.dcmread(str(src))
    edit_dicom_tags(ds, tags)
    ds.save_as(str(dst))
    return dst


# ------------------------------------------------------------------------------------- Bq/ml -> SUV, by hand
def test_acrin_slice_1_bqml_to_suvbw_matches_hand_computation(acrin):
    # Tags of 1.dcm: PatientWeight 69.7344 kg; RadionuclideTotalDose 178340011.59668 Bq; RadionuclideHalfLife
    # 6586.2 s; RadiopharmaceuticalStartTime 14:17:00.000; SeriesTime 15:23:16.921 (= AcquisitionTime);
    # DecayCorrection START, so the dose is decayed from injection to the series start:
    #   elapsed = 1 h 06 min 16.921 s = 3976.921 s; 3976.921 / 6586.2 = 0.603826; 2^-0.603826 = 0.658006
    #   decayed dose = 178340011.59668 * 0.658006 = 1.173489e8 Bq
    #   SUV factor = 69734.4 g / 1.173489e8 Bq = 5.94249e-4 ml/Bq (g/ml -> SUV, tissue density 1 g/ml)
    # Hottest pixel (row 95, col 88): stored 1327 * RescaleSlope 9.12329 = 12106.606 Bq/ml -> SUV 7.19433.
    factor = 69734.4 / (178340011.59668 * 2.0 ** (-3976.921 / 6586.2))
    assert factor == pytest.approx(5.94249e-4, rel=1e-5)
    suv = sitk.GetArrayFromImage(read_pet(acrin / "1.dcm"))[0]
    assert suv[95, 88] == pytest.approx(7.19433, rel=1e-5)
    np.testing.assert_allclose(suv, stored_bqml(acrin / "1.dcm") * factor, rtol=1e-6, atol=1e-6)


def test_acrin_slice_2_injection_at_series_start_is_not_decayed_to_acquisition_time(acrin):
    # Tags of 2.dcm: PatientWeight 82.174 kg; dose 173529998.7793 Bq; half-life 6586.2 s; injection 11:19:59.000;
    # SeriesTime 11:19:59.109 but AcquisitionTime 11:35:59.109 (a dynamic scan started at injection).
    # START means decay corrected to the series start, so only 0.109 s of decay applies:
    #   2^(-0.109/6586.2) = 0.9999885; factor = 82174 / (173529998.7793 * 0.9999885) = 4.73549e-4
    # Hottest pixel (row 90, col 85): 281 * 46.2619 = 12999.594 Bq/ml -> SUV 6.15594.
    # Decaying to AcquisitionTime instead (960.109 s, factor 0.9040) would give SUV 6.8104, 10.6 % too high.
    factor = 82174.0 / (173529998.7793 * 2.0 ** (-0.109 / 6586.2))
    assert factor == pytest.approx(4.73549e-4, rel=1e-5)
    suv = sitk.GetArrayFromImage(read_pet(acrin / "2.dcm"))[0]
    assert suv[90, 85] == pytest.approx(6.15594, rel=1e-5)
    assert suv[90, 85] != pytest.approx(6.8104, rel=1e-2)
    np.testing.assert_allclose(suv, stored_bqml(acrin / "2.dcm") * factor, rtol=1e-6, atol=1e-6)


def test_decay_correction_admin_and_none_use_injection_and_slice_acquisition_time(acrin, tmp_path):
    # 2.dcm edited: ADMIN -> no decay factor: factor = 82174 / 173529998.7793 = 4.735435e-4.
    # NONE -> the slice holds the mean activity over its frame (ActualFrameDuration 180 s) from its AcquisitionTime
    #   11:35:59.108962, 960.108962 s after injection (IBSI-SUV manual): lambda = ln 2 / 6586.2 = 1.0524235e-4 /s,
    #   lambda T = 0.0189436, lambda T / (1 - exp(-lambda T)) = 1.0095017, exp(lambda 960.108962) = 1.1063255,
    #   factor = 82174 * 1.0095017 * 1.1063260 / 173529998.7793 = 5.288711e-4.
    bqml = stored_bqml(acrin / "2.dcm")
    admin = read_pet(edited_copy(acrin / "2.dcm", tmp_path / "admin.dcm", DecayCorrection="ADMIN"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(admin)[0], bqml * 4.735435e-4, rtol=1e-6)
    none = read_pet(edited_copy(acrin / "2.dcm", tmp_path / "none.dcm", DecayCorrection="NONE"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(none)[0], bqml * 5.288711e-4, rtol=1e-6)


def test_dose_in_mbq_is_recognised_by_its_value_and_an_implausible_one_refused(acrin, tmp_path):
    """RadionuclideTotalDose may be stored in MBq (IBSI-SUV manual: tell the unit by the value, doses cluster near
    4e2 MBq and 4e8 Bq): 178.34001159668 MBq gives the SUV of 178340011.59668 Bq; 5e5 is neither."""
    in_bq = sitk.GetArrayFromImage(read_pet(acrin / "1.dcm"))
    in_mbq = read_pet(edited_copy(acrin / "1.dcm", tmp_path / "mbq.dcm", Radio_RadionuclideTotalDose=178.34001159668))
    np.testing.assert_allclose(sitk.GetArrayFromImage(in_mbq), in_bq, rtol=1e-6)
    with pytest.raises(InputError, match="RadionuclideTotalDose 500000 .* neither a plausible dose"):
        read_pet(edited_copy(acrin / "1.dcm", tmp_path / "odd.dcm", Radio_RadionuclideTotalDose=5e5), case="P01")


def test_lean_body_mass_suv_janmahasatian(acrin, sts, tmp_path):
    # STS_001 (Units GML, SUVType BW): 71 kg, 1.63 m, male. BMI = 71 / 1.63^2 = 26.7229;
    # LBM = 9270 * 71 / (6680 + 216 * 26.7229) = 658170 / 12452.15 = 52.856 kg -> SUL = SUVbw * 52.856 / 71.
    bw = sitk.GetArrayFromImage(read_pet(sts / "image"))
    lbm = sitk.GetArrayFromImage(read_pet(sts / "image", suv_type="lbm"))
    np.testing.assert_allclose(lbm, bw * (52.856 / 71.0), rtol=1e-4)
    # 1.dcm has no PatientSize: SUL cannot be computed.
    with pytest.raises(InputError, match="PatientSize"):
        read_pet(acrin / "1.dcm", suv_type="lbm")


# ------------------------------------------------------------------------------------- already SUV (GML)
def test_sts_dicom_series_in_suv_is_unchanged_and_equals_the_nifti(sts, shared_data):
    image = read_pet(sts / "image")
    nifti = sitk.ReadImage(str(shared_data / "sts_pet" / "STS_001" / "PET_image.nii.gz"))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert image.GetSize() == nifti.GetSize() == (41, 43, 59)
    np.testing.assert_allclose(image.GetSpacing(), nifti.GetSpacing(), atol=1e-5)  # NIfTI stores float32
    np.testing.assert_allclose(image.GetOrigin(), nifti.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), nifti.GetDirection(), atol=1e-9)
    assert same_grid(image, nifti)
    values = sitk.GetArrayFromImage(image)
    np.testing.assert_allclose(values, sitk.GetArrayFromImage(nifti), rtol=1e-6, atol=1e-5)
    assert values.max() == pytest.approx(25.4123, rel=1e-5)  # SUVmax, not re-multiplied by weight/dose


def test_series_applies_each_slices_own_rescale_slope(sts):
    files = sorted((sts / "image").glob("*.dcm"))
    headers = [pydicom.dcmread(str(f)) for f in files]
    slopes = {float(ds.RescaleSlope) for ds in headers}
    assert len(slopes) > 10  # the slopes do differ, so one slope for all slices would be wrong
    image = read_pet(sts / "image")
    by_position = sorted(headers, key=lambda ds: float(ds.ImagePositionPatient[2]))
    expected = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                         for ds in by_position])
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected, rtol=1e-6, atol=1e-6)


def test_folder_with_a_ct_and_a_pet_series_reads_the_pet_one(acrin, sts, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(sts / "image", folder)
    edited_copy(acrin / "1.dcm", folder / "ct.dcm", Modality="CT", SeriesInstanceUID="1.2.3.4.5")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_pet(folder)),
                                  sitk.GetArrayFromImage(read_pet(sts / "image")))
    edited_copy(acrin / "1.dcm", folder / "pet2.dcm", SeriesInstanceUID="1.2.3.4.6")
    with pytest.raises(InputError, match=r"several series.*1\.2\.3\.4\.6"):
        read_pet(folder)


# ------------------------------------------------------------------------------------- bad DICOM input
@pytest.mark.parametrize("tags, message", [
    ({"PatientWeight": None}, "PatientWeight is missing"),
    ({"PatientWeight": 0}, "PatientWeight=0.0 .* positive"),
    ({"Radio_RadionuclideHalfLife": None, "Radio_RadionuclideCodeSequence": None}, "RadionuclideHalfLife is missing"),
    ({"Radio_RadionuclideTotalDose": None}, "RadionuclideTotalDose is missing"),
    ({"Units": "PROPCPS"}, "Units=PROPCPS"),
    ({"Radio_RadiopharmaceuticalStartTime": "160000.000"}, "injection .* is after the decay reference time"),
    ({"DecayCorrection": "XYZ"}, "DecayCorrection=XYZ"),
    ({"CorrectedImage": ["NORM", "DECY"]}, "not attenuation corrected"),
    ({"Modality": "CT"}, "not PET"),
])
def test_bad_dicom_tags_raise_input_error_naming_tag_and_file(acrin, tmp_path, tags, message):
    bad = edited_copy(acrin / "1.dcm", tmp_path / "bad.dcm", **tags)
    with pytest.raises(InputError, match=message) as err:
        read_pet(bad, case="P01")
    assert "bad.dcm" in str(err.value) and str(err.value).startswith("P01: ")


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "scan.nii.gz"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read image file .*scan.nii.gz"):
        read_pet(garbage, case="P02")
    with pytest.raises(InputError, match="file not found: .*nothing.nrrd"):
        read_image(tmp_path / "nothing.nrrd")
    with pytest.raises(InputError, match="no DICOM series"):
        read_pet(tmp_path)


# ------------------------------------------------------------------------------------- masks and geometry
def oblique_image():
    """A small PET-like image with a rotated, flipped direction (not identity, not RAS-diagonal)."""
    values = np.zeros((6, 7, 8), np.float32)
    values[2, 3, 5] = 9.5
    image = sitk.GetImageFromArray(values)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    image.SetSpacing((1.0, 1.5, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_non_identity_direction_round_trips_in_lps(tmp_path, suffix):
    image = oblique_image()
    path = write_image(image, tmp_path / f"pet{suffix}")
    back = read_pet(path)
    assert not grid_differences(back, image)
    hot = np.unravel_index(np.argmax(sitk.GetArrayFromImage(back)), (6, 7, 8))[::-1]
    # voxel (x=5, y=3, z=2): origin + direction @ (5*1.0, 3*1.5, 2*2.0) = (10 + 5c - 4.5s, -20 + 5s + 4.5c, 30 - 4)
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint(tuple(int(i) for i in hot)),
                               (10 + 5 * 0.8660254 - 2.25, -20 + 2.5 + 4.5 * 0.8660254, 26.0), atol=1e-4)


def test_mask_on_a_ras_flipped_grid_is_refused(tmp_path):
    reference = oblique_image()
    mask = sitk.Cast(reference > 1, sitk.sitkUInt8)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    mask.SetDirection(tuple((np.diag([-1.0, -1.0, 1.0]) @ direction).ravel()))  # LPS <-> RAS mix-up
    path = write_image(mask, tmp_path / "mask.nii.gz")
    with pytest.raises(InputError, match=r"mask .*mask.nii.gz is not on the PET grid: direction .* \(differs by "
                                         r"1.73"):
        read_mask(path, reference, case="P03")


def test_mask_geometry_tolerance(tmp_path):
    reference = oblique_image()
    mask = sitk.Cast(reference > 1, sitk.sitkUInt8)
    mask.SetOrigin(tuple(np.add(reference.GetOrigin(), (1e-5, 0, 0))))  # float32-rounding size: accepted
    out = read_mask(write_image(mask, tmp_path / "ok.nrrd"), reference)
    assert out.GetOrigin() == reference.GetOrigin() and out.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(out).sum() == 1
    mask.SetOrigin(tuple(np.add(reference.GetOrigin(), (0, 0.3, 0))))
    with pytest.raises(InputError, match=r"origin \(10, -19.7, 30\) vs PET \(10, -20, 30\) mm \(differs by 0.3"):
        read_mask(write_image(mask, tmp_path / "shifted.nrrd"), reference)
    with pytest.raises(InputError, match=r"size \(8, 7, 5\) vs PET \(8, 7, 6\) voxels"):
        read_mask(write_image(mask[:, :, :5], tmp_path / "small.nrrd"), reference)


def test_multi_label_mask_merged_with_warning_or_one_label_picked(tmp_path):
    reference = oblique_image()
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1, 1, 1], labels[2, 2, 2:4] = 1, 2
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    path = write_image(image, tmp_path / "labels.nii.gz")
    with pytest.warns(UserWarning, match=r"labels \[1, 2\] merged"):
        merged = sitk.GetArrayFromImage(read_mask(path, reference))
    assert merged.sum() == 3 and merged.max() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sitk.GetArrayFromImage(read_mask(path, reference, label=2)).sum() == 2
    with pytest.raises(InputError, match="no voxel with label 3"):
        read_mask(path, reference, label=3)


def test_rtstruct_rasterized_onto_the_pet_grid_matches_the_expert_mask(sts, shared_data):
    image = read_pet(sts / "image")
    mask = read_mask(sts / "mask" / "RS.dcm", image, label="GTV_Mass_PET")
    expert = sitk.GetArrayFromImage(read_mask(shared_data / "sts_pet" / "STS_001" / "PET_mask.nii.gz", image))
    ours = sitk.GetArrayFromImage(mask)
    assert mask.GetPixelID() == sitk.sitkUInt8 and same_grid(mask, image)
    # Both come from the same 32 contours; a Dice below 0.98 would mean a slice or axis mix-up (a one-slice shift
    # of this 5095-voxel tumour already gives ~0.9). Measured: 1.0.
    dice = 2 * np.sum(ours & expert) / (ours.sum() + expert.sum())
    assert dice >= 0.98
    with pytest.raises(InputError, match="no ROI 'Liver'"):
        read_mask(sts / "mask" / "RS.dcm", image, label="Liver")


# ------------------------------------------------------------------------------------- atomic writes
def test_atomic_write_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".csv") and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_write_image_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "pet.unknownformat"
    target.write_text("keep me")
    with pytest.raises(RuntimeError):
        write_image(oblique_image(), target)
    assert target.read_text() == "keep me" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_voxels_in_a_nifti_are_found_not_read_as_zero(tmp_path, value):
    """SimpleITK's NIfTI reader turns NaN into 0; the stored values are checked with nibabel (image and mask)."""
    array = np.ones((6, 7, 8), np.float32)
    array[2, 3, 4:6] = value
    image = sitk.GetImageFromArray(array)
    sitk.WriteImage(image, str(tmp_path / "pet.nii.gz"))
    with pytest.raises(InputError, match=r"pet.nii.gz has 2 non-finite voxel\(s\) \(NaN/inf\) of 336") as err:
        read_pet(tmp_path / "pet.nii.gz", case="P3")
    assert str(err.value).startswith("P3: ")
    with pytest.raises(InputError, match="non-finite"):
        read_mask(tmp_path / "pet.nii.gz", sitk.GetImageFromArray(np.ones((6, 7, 8), np.float32)), case="P3")
    # NRRD keeps them as they are, for the case checks to report (io.validation)
    sitk.WriteImage(image, str(tmp_path / "pet.nrrd"))
    assert np.count_nonzero(~np.isfinite(sitk.GetArrayFromImage(read_image(tmp_path / "pet.nrrd")))) == 2
