"""SUV conversion by the IBSI-SUV manual: the shared digital reference objects (DROs), and DROs built here from
them with pydicom for every other rule of the manual (each with values computed in the test from the physics)."""

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import edit_dicom_tags

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.io.images import read_pet, read_pet_with_provenance

TARGETS = (0.20, 1.00, 4.00)  # min, median, max SUVbw inside every DRO's mask
# The DROs' patient and tracer (tags of every shared DRO): 70 kg, 1.75 m, F-18, 368.08 MBq at 10:00, scan 11:00.
WEIGHT_G, HEIGHT_CM, DOSE_BQ, HALF_LIFE_S = 70000.0, 175.0, 368080000.0, 6586.2
DECAY = math.log(2) / HALF_LIFE_S
UPTAKE_S = 3600.0
# Normalisers for 70 kg, 175 cm, by hand from the manual's formulas (kg or m^2):
#   LBM Morgan M: 1.10*70 - 120*(70/175)^2 = 77 - 19.2 = 57.8;  F: 1.07*70 - 148*0.16 = 74.9 - 23.68 = 51.22
#   LBM James M: 77 - 128*0.16 = 56.52;  F: 51.22 (same female formula)
#   LBM Janmahasatian: BMI = 70/1.75^2 = 22.857143; M: 9270*70/(6680+216*BMI) = 648900/11617.143 = 55.85784
#                      F: 648900/(8780+244*BMI) = 648900/14357.143 = 45.19701
#   IBW M: 48 + 1.06*23 = 72.38;  F: 45.5 + 0.91*23 = 66.43
#   BSA Du Bois: 0.007184 * 175^0.725 * 70^0.425 = 1.848143 m^2
NORMALISERS_KG = {
    "LBM": {"M": 57.8, "F": 51.22}, "LBMJAMES128": {"M": 56.52, "F": 51.22},
    "LBMJANMA": {"M": 55.85784, "F": 45.19701}, "IBW": {"M": 72.38, "F": 66.43},
}
BSA_M2 = 1.848143


@pytest.fixture(scope="module")
def dros(shared_data):
    return shared_data / "suv_dro"


def dro_stats(folder: Path, mask_path: Path, suv_type: str = "bw") -> tuple[float, float, float]:
    suv = sitk.GetArrayFromImage(read_pet(folder, suv_type=suv_type))
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path))) > 0
    values = suv[inside]
    return float(values.min()), float(np.median(values)), float(values.max())


def truth_suvbw(dros) -> list[np.ndarray]:
    """The DROs' true SUVbw per slice, independently of the library: DRO_2_0 stores SUVbw as integers x 0.1."""
    files = sorted((dros / "DRO_2_0" / "PT").glob("*.dcm"))
    return [pydicom.dcmread(str(f)).pixel_array.astype(float) * 0.1 for f in files]


def build_dro(dros, out: Path, values, slice_tags=None, **tags) -> Path:
    """A DRO built from DRO_2_0's files: each slice k holds ``values(k, suvbw)`` (float) stored as int16 with its own
    RescaleSlope; ``tags`` edit every slice (None deletes; ``Radio_<kw>`` edits the radiopharmaceutical item),
    ``slice_tags(k)`` returns per-slice edits. Returns the PT folder."""
    folder = out / "PT"
    folder.mkdir(parents=True)
    files = sorted((dros / "DRO_2_0" / "PT").glob("*.dcm"))
    private = tags.pop("private", {})
    for k, (f, suvbw) in enumerate(zip(files, truth_suvbw(dros))):
        ds = pydicom.dcmread(str(f))
        stored = values(k, suvbw)
        slope = float(np.abs(stored).max()) / 30000.0 or 1.0
        ds.PixelData = np.round(stored / slope).astype(np.int16).tobytes()
        ds.RescaleSlope = f"{slope:.10g}"
        edit_dicom_tags(ds, {"SUVType": None, **tags, **(slice_tags(k) if slice_tags else {})})
        for tag, (vr, value) in private.items():
            ds.add_new(tag, vr, value)
        ds.save_as(str(folder / f.name))
    return folder


def bqml_at(seconds_after_injection: float):
    """SUVbw -> Bq/ml for images decay corrected to ``seconds_after_injection``."""
    return lambda k, suvbw: suvbw * DOSE_BQ * math.exp(-DECAY * seconds_after_injection) / WEIGHT_G


def assert_targets(folder: Path, dros, suv_type: str = "bw", scale: float = 1.0):
    stats = dro_stats(folder, dros / "DRO_2_0" / "mask" / "DRO_mask.nii.gz", suv_type)
    np.testing.assert_allclose(stats, np.array(TARGETS) * scale, rtol=2e-3)


# ----------------------------------------------------------------------------------------------------- shared DROs
def test_every_shared_dro_gives_the_reference_values_to_two_decimals(dros):
    """All shared DROs but DRO_2_3 (next test) give 0.20 / 1.00 / 4.00 rounded to two decimals."""
    rows = list(csv.DictReader(open(dros / "DRO_list.csv", encoding="utf-8")))
    assert len(rows) == 11
    for row in rows:
        if row["ID"] == "DRO_2_3":
            continue
        expected = tuple(float(row[f"SUV{s}_expected"]) for s in ("min", "med", "max"))
        stats = dro_stats(dros / row["ID"] / "PT", dros / row["ID"] / "mask" / "DRO_mask.nii.gz")
        assert tuple(round(v, 2) for v in stats) == expected, (row["ID"], row["Description"], stats)


def test_dro_2_3_cm2ml_is_read_exactly_but_its_stored_values_are_truncated(dros):
    """DRO_2_3 (Units CM2ML) stores SUVbsa as integers x 0.01: 5, 26, 105 where the exact values are 5.28, 26.40,
    105.61 (truncated, not rounded). With Du Bois' BSA (1.848143 m^2) they read 0.1894 / 0.9848 / 3.9770, which no
    correct reading can round to 0.20 / 1.00 / 4.00: the maximum needs a factor in [3.8048, 3.8143), the minimum one
    in [3.9, 4.1). The reading is checked against the stored integers instead, and the manual's BSA rule against a
    DRO with a finer RescaleSlope (test_gml_and_cm2ml_suv_types_convert_back_to_body_weight)."""
    to_bw = WEIGHT_G / (BSA_M2 * 1e4)
    stats = dro_stats(dros / "DRO_2_3" / "PT", dros / "DRO_2_3" / "mask" / "DRO_mask.nii.gz")
    np.testing.assert_allclose(stats, np.array([5, 26, 105]) * 0.01 * to_bw, rtol=1e-5)
    np.testing.assert_allclose(np.floor(np.array(TARGETS) / to_bw / 0.01), [5, 26, 105])
    assert 4.005 / 1.05 < 0.195 / 0.05  # the factor intervals above are disjoint


# ----------------------------------------------------------------------------------------------------- units
def test_rescale_slope_is_applied_per_slice(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "slopes", lambda k, s: bqml_at(UPTAKE_S)(k, s) * (1 + k % 3),
                       Units="BQML")
    # each slice's own slope differs (values x1, x2, x3 over the same int16 range); undo the x(1 + k%3) per slice
    slopes = [float(pydicom.dcmread(str(f)).RescaleSlope) for f in sorted(folder.glob("*.dcm"))]
    assert len({round(s, 6) for s in slopes}) >= 3
    for f in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(str(f))
        k = int(f.stem[-3:])
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / (1 + k % 3):.10g}"
        ds.save_as(str(f))
    assert_targets(folder, dros)


@pytest.mark.parametrize("suv_type", ["LBM", "LBMJAMES128", "LBMJANMA", "IBW"])
@pytest.mark.parametrize("sex", ["M", "F", "O"])
def test_gml_and_cm2ml_suv_types_convert_back_to_body_weight(dros, tmp_path, suv_type, sex):
    norm = NORMALISERS_KG[suv_type]
    kg = (norm["M"] + norm["F"]) / 2 if sex == "O" else norm[sex]
    folder = build_dro(dros, tmp_path / "gml", lambda k, s: s * kg * 1000 / WEIGHT_G, Units="GML",
                       SUVType=suv_type, PatientSex=sex)
    assert_targets(folder, dros)


def test_cm2ml_bsa_converts_back_to_body_weight(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "bsa", lambda k, s: s * BSA_M2 * 1e4 / WEIGHT_G, Units="CM2ML",
                       SUVType="BSA")
    assert_targets(folder, dros)
    bad = build_dro(dros, tmp_path / "bad", lambda k, s: s, Units="CM2ML", SUVType="BW")
    with pytest.raises(InputError, match="Units=CM2ML with SUVType=BW"):
        read_pet(bad, case="P1")


@pytest.mark.parametrize("suv_type, kg", [("lbm", 45.19701), ("lbmjames128", 51.22), ("ibw", 66.43)])
def test_any_suv_type_out_of_bqml(dros, tmp_path, suv_type, kg):
    """SUVbw x normaliser / body weight, for a female patient."""
    folder = build_dro(dros, tmp_path / "bq", bqml_at(UPTAKE_S), Units="BQML", PatientSex="F")
    assert_targets(folder, dros, suv_type=suv_type, scale=kg * 1000 / WEIGHT_G)
    assert_targets(folder, dros, suv_type="bsa", scale=BSA_M2 * 1e4 / WEIGHT_G)


def test_lean_body_mass_needs_sex_and_a_height_in_metres(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "a", lambda k, s: s, Units="GML", SUVType="LBMJAMES128", PatientSex=None)
    with pytest.raises(InputError, match="PatientSex"):
        read_pet(folder, case="P1")
    folder = build_dro(dros, tmp_path / "b", lambda k, s: s, Units="GML", SUVType="IBW", PatientSize=175)
    with pytest.raises(InputError, match="PatientSize=175 is not a height in metres"):
        read_pet(folder, case="P1")


def test_cnts_with_philips_suv_or_activity_factor_or_neither(dros, tmp_path):
    suv_factor = {(0x7053, 0x1000): ("DS", "0.0005")}
    folder = build_dro(dros, tmp_path / "suv", lambda k, s: s / 0.0005, Units="CNTS", private=suv_factor)
    assert_targets(folder, dros)
    both = {(0x7053, 0x1000): ("DS", "0"), (0x7053, 0x1009): ("DS", "2.5")}  # SUV factor 0: not convertible
    folder = build_dro(dros, tmp_path / "act", lambda k, s: bqml_at(UPTAKE_S)(k, s) / 2.5, Units="CNTS",
                       private=both)
    assert_targets(folder, dros)
    # neither factor: counts / frame duration (300 s) = CPS; dose calibrated (DCAL): / voxel volume (0.064 ml)
    corrected = ["NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN", "DCAL"]
    folder = build_dro(dros, tmp_path / "cnts", lambda k, s: bqml_at(UPTAKE_S)(k, s) * 0.064 * 300, Units="CNTS",
                       CorrectedImage=corrected)
    assert_targets(folder, dros)
    # CPS not dose calibrated: x DoseCalibrationFactor
    folder = build_dro(dros, tmp_path / "cps", lambda k, s: bqml_at(UPTAKE_S)(k, s) * 0.064 / 1.7, Units="CPS",
                       DoseCalibrationFactor="1.7")
    assert_targets(folder, dros)
    folder = build_dro(dros, tmp_path / "cps_bad", lambda k, s: s, Units="CPS")
    with pytest.raises(InputError, match="DoseCalibrationFactor"):
        read_pet(folder, case="P1")


@pytest.mark.parametrize("units", ["PROPCNTS", "PROPCPS", "1CM", "HU"])
def test_units_the_manual_cannot_convert_are_refused(dros, tmp_path, units):
    folder = build_dro(dros, tmp_path / "x", lambda k, s: s, Units=units)
    with pytest.raises(InputError, match=f"Units={units}: SUV cannot be computed") as err:
        read_pet(folder, case="P7")
    assert str(err.value).startswith("P7: ")


def test_multi_frame_pet_is_refused(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "x", bqml_at(UPTAKE_S), Units="BQML", NumberOfFrames="1")
    read_pet(folder)  # one frame per file is the ordinary case
    ds = pydicom.dcmread(str(next(folder.glob("*.dcm"))))
    ds.NumberOfFrames = "20"
    ds.save_as(str(tmp_path / "enhanced.dcm"))
    with pytest.raises(InputError, match="multi-frame .* 20 frames is not supported"):
        read_pet(tmp_path / "enhanced.dcm", case="P1")


def test_rescale_intercept_must_be_zero(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "x", bqml_at(UPTAKE_S), Units="BQML", RescaleIntercept="5")
    with pytest.raises(InputError, match="RescaleIntercept=5"):
        read_pet(folder, case="P1")


# ----------------------------------------------------------------------------------------------------- dose and times
def test_weight_in_grams_is_recognised(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "g", bqml_at(UPTAKE_S), Units="BQML", PatientWeight="70000")
    assert_targets(folder, dros)
    _, record = read_pet_with_provenance(folder)
    assert any("taken as grams" in note for note in record["notes"])


def test_each_note_is_recorded_once(dros, tmp_path):
    """Weight and sex are read for body weight and for the SUV type: their notes appear once each."""
    kg = (NORMALISERS_KG["IBW"]["M"] + NORMALISERS_KG["IBW"]["F"]) / 2
    folder = build_dro(dros, tmp_path / "g", lambda k, s: s * kg * 1000 / WEIGHT_G, Units="GML", SUVType="IBW",
                       PatientSex="O", PatientWeight="70000")
    _, record = read_pet_with_provenance(folder, suv_type="ibw")
    assert len(record["notes"]) == len(set(record["notes"])) == 2, record["notes"]


def test_decay_correction_admin_uses_the_injected_dose(dros, tmp_path):
    folder = build_dro(dros, tmp_path / "admin", bqml_at(0.0), Units="BQML", DecayCorrection="ADMIN")
    assert_targets(folder, dros)


def test_decay_correction_none_corrects_each_slice_over_its_frame(dros, tmp_path):
    """Slice k acquired 10 + k min after the series start over 120 s, not decay corrected: it holds the mean activity
    over its frame, A(t_k) (1 - exp(-lambda T)) / (lambda T)."""
    def values(k, suvbw):
        start, frame = UPTAKE_S + 600 * k, 120.0
        return (bqml_at(start)(k, suvbw) * -math.expm1(-DECAY * frame) / (DECAY * frame))

    folder = build_dro(dros, tmp_path / "none", values, Units="BQML", DecayCorrection="NONE",
                       slice_tags=lambda k: {"AcquisitionTime": f"{11 + k // 6:02d}{(10 * k) % 60:02d}00",
                                             "ActualFrameDuration": "120000"})
    assert_targets(folder, dros)
    folder = build_dro(dros, tmp_path / "none_bad", values, Units="BQML", DecayCorrection="NONE",
                       ActualFrameDuration=None)
    with pytest.raises(InputError, match="ActualFrameDuration is missing"):
        read_pet(folder, case="P1")


def test_series_time_after_acquisition_is_replaced_by_the_back_computed_reference(dros, tmp_path):
    """SeriesTime rewritten to 11:30 after post-processing; the slices were acquired from 11:00 in 30-s steps of
    frames of 300 s, decay corrected to 11:00. FrameReferenceTime (from the series start to where the frame's
    activity equals its mean): (t_k - 11:00) + T_ave with T_ave = ln(lambda T / (1 - exp(-lambda T))) / lambda."""
    frame = 300.0
    t_ave = math.log(DECAY * frame / -math.expm1(-DECAY * frame)) / DECAY
    # the real ACRIN-FLT-Breast slice 1.dcm stores FrameReferenceTime 149605.34445734 ms for its 300-s frame
    assert t_ave * 1000 == pytest.approx(149605.34445734, abs=1e-3)

    def slice_tags(k):
        seconds = 30 * (k % 2)
        return {"AcquisitionTime": f"1100{seconds:02d}", "FrameReferenceTime": f"{(seconds + t_ave) * 1000:.4f}"}

    folder = build_dro(dros, tmp_path / "late", bqml_at(UPTAKE_S), Units="BQML", SeriesTime="113000",
                       slice_tags=slice_tags)
    _, record = read_pet_with_provenance(folder)
    assert record["values"]["reference_time_from"].startswith("back-computed")
    assert record["values"]["reference_time"] == "2025-01-01T11:00:00"
    assert_targets(folder, dros)
    # without frame times: the earliest acquisition (11:00:00 here), with a warning
    folder = build_dro(dros, tmp_path / "late2", bqml_at(UPTAKE_S), Units="BQML", SeriesTime="113000",
                       FrameReferenceTime=None, slice_tags=lambda k: {"AcquisitionTime": f"1100{30 * (k % 2):02d}"})
    with pytest.warns(UserWarning, match="earliest AcquisitionDate/Time"):
        assert_targets(folder, dros)


def test_ge_private_scan_datetime_overrides_the_series_time(dros, tmp_path):
    """GE's PET scan date-time (0009,100D) is the decay reference when present (the manual); under another
    creator the element is not GE's and is ignored."""
    ge = {(0x0009, 0x0010): ("LO", "GEMS_PETD_01"), (0x0009, 0x100D): ("DT", "20250101110000")}
    folder = build_dro(dros, tmp_path / "ge", bqml_at(UPTAKE_S), Units="BQML", SeriesTime="112000",
                       AcquisitionTime="112000", private=ge)
    assert_targets(folder, dros)
    other = {(0x0009, 0x0010): ("LO", "SOMEONE_ELSE"), (0x0009, 0x100D): ("DT", "20250101110000")}
    folder = build_dro(dros, tmp_path / "other", bqml_at(UPTAKE_S), Units="BQML", SeriesTime="112000",
                       AcquisitionTime="112000", private=other)
    assert dro_stats(folder, dros / "DRO_2_0" / "mask" / "DRO_mask.nii.gz")[2] == pytest.approx(
        4.0 * math.exp(DECAY * 1200), rel=2e-3)  # decayed to 11:20 instead: 13.5 % higher


def test_injection_time_variants(dros, tmp_path):
    # only RadiopharmaceuticalStartTime, the date taken from the scan
    folder = build_dro(dros, tmp_path / "time", bqml_at(UPTAKE_S), Units="BQML",
                       Radio_RadiopharmaceuticalStartDateTime=None)
    assert_targets(folder, dros)
    # a scan after midnight: injection 23:30 on 1 January, series 00:30 on 2 January
    folder = build_dro(dros, tmp_path / "midnight", bqml_at(UPTAKE_S), Units="BQML", SeriesDate="20250102",
                       AcquisitionDate="20250102", SeriesTime="003000", AcquisitionTime="003000",
                       Radio_RadiopharmaceuticalStartDateTime=None, Radio_RadiopharmaceuticalStartTime="233000")
    assert_targets(folder, dros)
    _, record = read_pet_with_provenance(folder)
    assert record["values"]["injection_time"] == "2025-01-01T23:30:00"
    # a date-time in UTC (09:00), the series in UTC+1 (10:00 local)
    folder = build_dro(dros, tmp_path / "tz", bqml_at(UPTAKE_S), Units="BQML", TimezoneOffsetFromUTC="+0100",
                       Radio_RadiopharmaceuticalStartDateTime="20250101090000+0000")
    assert_targets(folder, dros)
    # no injection time at all
    folder = build_dro(dros, tmp_path / "none", bqml_at(UPTAKE_S), Units="BQML",
                       Radio_RadiopharmaceuticalStartDateTime=None, Radio_RadiopharmaceuticalStartTime=None)
    with pytest.raises(InputError, match="injection time is missing"):
        read_pet(folder, case="P1")
    # injection after the scan start
    folder = build_dro(dros, tmp_path / "after", bqml_at(UPTAKE_S), Units="BQML",
                       Radio_RadiopharmaceuticalStartDateTime="20250101113000")
    with pytest.raises(InputError, match="injection .* is after the decay reference time"):
        read_pet(folder, case="P1")


def test_any_radionuclide_half_life(dros, tmp_path):
    """Zr-89 (78.41 h): the decay over 1 h is small, but the half-life is the one used; the code names it."""
    zr = 282276.0
    values = lambda k, s: s * DOSE_BQ * math.exp(-math.log(2) / zr * UPTAKE_S) / WEIGHT_G  # noqa: E731
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "63360001", "SCT", "^89^Zirconium"
    folder = build_dro(dros, tmp_path / "zr", values, Units="BQML", Radio_RadionuclideHalfLife=str(zr),
                       Radio_RadionuclideCodeSequence=pydicom.Sequence([code]))
    assert_targets(folder, dros)
    # half-life missing: taken from the code; contradicting the code: refused
    folder = build_dro(dros, tmp_path / "zr2", values, Units="BQML", Radio_RadionuclideHalfLife=None,
                       Radio_RadionuclideCodeSequence=pydicom.Sequence([code]))
    assert_targets(folder, dros)
    folder = build_dro(dros, tmp_path / "zr3", values, Units="BQML", Radio_RadionuclideHalfLife="6586.2",
                       Radio_RadionuclideCodeSequence=pydicom.Sequence([code]))
    with pytest.raises(InputError, match="RadionuclideHalfLife=6586.2 s but RadionuclideCodeSequence names "
                                         "zirconium-89"):
        read_pet(folder, case="P1")
    # a time without a date is ambiguous for a nuclide imaged days after injection
    folder = build_dro(dros, tmp_path / "zr4", values, Units="BQML", Radio_RadionuclideHalfLife=str(zr),
                       Radio_RadionuclideCodeSequence=pydicom.Sequence([code]),
                       Radio_RadiopharmaceuticalStartDateTime=None)
    with pytest.raises(InputError, match="injection day is ambiguous"):
        read_pet(folder, case="P1")


# ----------------------------------------------------------------------------------------------------- plausibility
def test_implausible_suv_is_refused_never_passed_on(dros, tmp_path):
    # Bq/ml labelled as already SUV (Units GML): maximum ~19,000
    folder = build_dro(dros, tmp_path / "gml", bqml_at(UPTAKE_S), Units="GML")
    with pytest.raises(InputError, match="not a plausible SUV") as err:
        read_pet(folder, case="P9")
    assert str(err.value).startswith("P9: ") and "Units" in str(err.value)
    # a NIfTI in Bq/ml, taken as SUV
    image = sitk.GetImageFromArray(np.stack([bqml_at(UPTAKE_S)(0, s) for s in truth_suvbw(dros)]).astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / "bqml.nii.gz"))
    with pytest.raises(InputError, match="not a plausible SUV .* in Bq/ml"):
        read_pet(tmp_path / "bqml.nii.gz", case="P9")


def test_provenance_record_names_rule_tags_and_values(dros):
    image, record = read_pet_with_provenance(dros / "DRO_3_0" / "PT", case="D")
    assert record["source"] == "DICOM" and record["suv_type"] == "bw"
    assert "Units BQML" in record["rule"] and "DecayCorrection START" in record["rule"]
    assert record["tags"]["RadionuclideTotalDose"] == pytest.approx(368.08)
    assert record["values"]["dose_bq"] == pytest.approx(368.08e6)
    assert record["values"]["reference_time_from"] == "SeriesDate/SeriesTime"
    assert record["values"]["uptake_s"] == pytest.approx(3600.0)
    assert record["values"]["image_max"] == pytest.approx(float(sitk.GetArrayViewFromImage(image).max()))
    assert any("read as MBq" in note for note in record["notes"])


def test_no_stray_warnings_on_a_clean_dro(dros):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_pet(dros / "DRO_0_0" / "PT")



def test_cli_convert_writes_the_suv_image_and_its_provenance_sidecar(dros, tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "dro_3_0.nii.gz"
    run = subprocess.run([sys.executable, "-m", "DPETResponseLib.cli", "convert", str(dros / "DRO_3_0" / "PT"),
                          "--out", str(out)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    inside = sitk.GetArrayFromImage(sitk.ReadImage(str(dros / "DRO_3_0" / "mask" / "DRO_mask.nii.gz"))) > 0
    assert [round(float(f(image[inside])), 2) for f in (np.min, np.median, np.max)] == list(TARGETS)
    sidecar = json.loads((tmp_path / "dro_3_0.json").read_text())
    record = sidecar["suv_conversion"]
    assert record["values"]["dose_bq"] == pytest.approx(368.08e6) and record["tags"]["Units"] == "BQML"
    assert f"provenance: {tmp_path / 'dro_3_0.json'}" in run.stdout
