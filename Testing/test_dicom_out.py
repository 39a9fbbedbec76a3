"""DICOM outputs of a prediction (reporting.dicom) and DICOM SEG masks (io.dicom_seg) on the real STS_001 DICOM PET
and its RTSTRUCT, read back with an independent reader: dcmqi's segimage2itkimage, tid1500reader and
paramap2itkimage (DCMTK-based), run from the venv's bin folder."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import PROJECT_ROOT

from DPETResponseLib import __version__
from DPETResponseLib.core.errors import InputError
from DPETResponseLib.features.petmetrics import pet_metrics
from DPETResponseLib.features.subregions import tumour_habitats
from DPETResponseLib.io import read_seg_mask
from DPETResponseLib.io.images import read_mask, read_pet
from DPETResponseLib.reporting.dicom import write_dicom_outputs
from DPETResponseLib.results import PredictionResult

BIN = Path(sys.executable).parent
CODES = {"SUVbw": ("126401", "DCM"), "Maximum": ("56851009", "SCT"), "Mean": ("373098007", "SCT"),
         "Peak": ("126031", "DCM"), "MTV": ("126032", "DCM"), "TLG": ("126033", "DCM")}
#: metric -> (quantity, derivation, UCUM unit) expected in the SR
EXPECTED_SR = {"pet_SUVmax": ("SUVbw", "Maximum", "g/ml{SUVbw}"), "pet_SUVmean": ("SUVbw", "Mean", "g/ml{SUVbw}"),
               "pet_SUVpeak": ("SUVbw", "Peak", "g/ml{SUVbw}"), "pet_MTV": ("MTV", None, "ml"),
               "pet_TLG": ("TLG", None, "g{SUVbw}")}


def dcmqi(tool: str, *args) -> subprocess.CompletedProcess:
    run = subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def code(item: dict) -> tuple[str, str]:
    return item["CodeValue"], item["CodingSchemeDesignator"]


def sr_groups(sr_path, tmp_path) -> list[dict]:
    """The measurement groups of a TID 1500 SR as dcmqi's tid1500reader reads them."""
    out = tmp_path / "sr.json"
    dcmqi("tid1500reader", "--inputDICOM", sr_path, "--outputMetadata", out)
    return json.loads(out.read_text())


def model_groups(report: dict) -> dict[str, dict]:
    """model name -> its measurement group (the groups whose algorithm has the parameter model=NAME)."""
    groups = {}
    for group in report["Measurements"]:
        parameters = group["measurementAlgorithmIdentification"].get("AlgorithmParameters", [])
        if parameters:
            groups[parameters[0].removeprefix("model=")] = group
    return groups


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory):
    """A PredictionResult on the real STS_001 DICOM PET (mask: its RTSTRUCT; subregions: k-means habitats; a
    Grad-CAM map: SUV / SUVmax; two models) and its DICOM outputs."""
    folder = shared_data / "pet_dicom" / "sts_001_suv"
    pet = read_pet(folder / "image")
    mask = read_mask(folder / "mask" / "RS.dcm", pet)
    subregions, _ = tumour_habitats(pet, mask, k=2)
    suv = sitk.GetArrayFromImage(pet)
    gradcam = sitk.GetImageFromArray((suv / suv.max()).astype(np.float32))
    gradcam.CopyInformation(pet)
    result = PredictionResult(
        case_id="STS_001", probabilities={"radiomics": 0.3123456789012, "fusion_feature_e2e": 0.71},
        decision={"radiomics": 0, "fusion_feature_e2e": 1}, thresholds={"radiomics": 0.41, "fusion_feature_e2e": 0.5},
        pet_metrics=pet_metrics(pet, mask), mask=mask, subregions=subregions, gradcam=gradcam)
    out = tmp_path_factory.mktemp("dicom_out")
    written = write_dicom_outputs(result, folder / "image", out)
    labels = sitk.GetArrayFromImage(subregions)
    segments = {"Tumour": sitk.GetArrayFromImage(mask) > 0, "Low uptake": labels == 1, "High uptake": labels == 2}
    return {"folder": folder, "pet": pet, "result": result, "out": out, "written": written, "segments": segments}


# ------------------------------------------------------------------------------------------------ SEG
def test_seg_segments_equal_the_masks_as_dcmqi_reads_them(case, tmp_path):
    """segimage2itkimage writes each segment on (a crop of) the PET grid; placed on the PET grid each equals the
    mask voxel for voxel, with the labels, codes and algorithm written."""
    assert case["written"] == {part: case["out"] / f"{part}.dcm" for part in ("seg", "sr", "gradcam")}
    dcmqi("segimage2itkimage", "--inputDICOM", case["written"]["seg"], "--outputDirectory", tmp_path, "-t", "nrrd")
    meta = json.loads((tmp_path / "meta.json").read_text())
    pet = case["pet"]
    labels = []
    for number, (attributes,) in enumerate(meta["segmentAttributes"], start=1):
        label = attributes["SegmentLabel"]
        labels.append(label)
        assert code(attributes["SegmentedPropertyCategoryCodeSequence"]) == ("49755003", "SCT")
        assert code(attributes["SegmentedPropertyTypeCodeSequence"]) == ("108369006", "SCT")
        assert attributes["SegmentAlgorithmName"] == "DPETResponse"
        assert attributes["SegmentAlgorithmType"] == ("SEMIAUTOMATIC" if label == "Tumour" else "AUTOMATIC")
        image = sitk.ReadImage(str(tmp_path / f"{number}.nrrd"))
        # dcmqi's grid must be the PET's, cropped: same spacing and axes, origin on a PET voxel centre
        np.testing.assert_allclose(image.GetSpacing(), pet.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), pet.GetDirection(), atol=1e-6)
        index = np.array(pet.TransformPhysicalPointToContinuousIndex(image.GetOrigin()))
        np.testing.assert_allclose(index, np.rint(index), atol=1e-3)
        placed = sitk.GetArrayFromImage(sitk.Resample(image, pet, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
        expected = case["segments"][label]
        assert (sitk.GetArrayFromImage(image) != 0).sum() == expected.sum() > 0, label
        np.testing.assert_array_equal(placed != 0, expected, err_msg=label)
    assert labels == ["Tumour", "Low uptake", "High uptake"]


def test_seg_frames_reference_the_pet_slice_at_their_position(case):
    """Each SEG frame's source image (DerivationImageSequence) is the PET file whose ImagePositionPatient is the
    frame's own: frames are mapped by position, whatever the file order."""
    positions = {}
    for path in (case["folder"] / "image").iterdir():
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        positions[ds.SOPInstanceUID] = [float(v) for v in ds.ImagePositionPatient]
    seg = pydicom.dcmread(str(case["written"]["seg"]))
    assert seg.FrameOfReferenceUID == ds.FrameOfReferenceUID and seg.StudyInstanceUID == ds.StudyInstanceUID
    assert len(seg.PerFrameFunctionalGroupsSequence) > 3
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        own = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(own, positions[source], atol=1e-4)


# ------------------------------------------------------------------------------------------------ SR
def test_sr_measurements_as_tid1500reader_reads_them(case, tmp_path):
    """tid1500reader: one group of PET metrics on the SEG's Tumour segment with the standard codes and UCUM units,
    values equal to the result's (DS precision); one group per model with its probability, threshold and decision;
    the PET images as evidence."""
    result = case["result"]
    report = sr_groups(case["written"]["sr"], tmp_path)
    seg = pydicom.dcmread(str(case["written"]["seg"]), stop_before_pixels=True)
    assert all(g["ReferencedSegment"] == 1 and g["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
               and g["TrackingIdentifier"] == "Tumour" for g in report["Measurements"])
    assert len({g["TrackingUniqueIdentifier"] for g in report["Measurements"]}) == 1
    metrics = next(g for g in report["Measurements"]
                   if "AlgorithmParameters" not in g["measurementAlgorithmIdentification"])
    assert metrics["measurementAlgorithmIdentification"] == {"AlgorithmName": "DPETResponse",
                                                             "AlgorithmVersion": __version__}
    found = {}
    for item in metrics["measurementItems"]:
        derivation = code(item["derivationModifier"]) if "derivationModifier" in item else None
        found[(code(item["quantity"]), derivation)] = (float(item["value"]), code(item["units"]))
    assert len(found) == len(EXPECTED_SR)
    for key, (quantity, derivation, unit) in EXPECTED_SR.items():
        value, units = found[(CODES[quantity], CODES[derivation] if derivation else None)]
        assert value == pytest.approx(result.pet_metrics[key], rel=1e-9), key
        assert units == (unit, "UCUM"), key

    models = model_groups(report)
    assert set(models) == set(result.probabilities)
    for model, group in models.items():
        items = {code(i["quantity"]): (float(i["value"]), code(i["units"])) for i in group["measurementItems"]}
        assert items == {("PCR-PROB", "99DPET"): (pytest.approx(result.probabilities[model], rel=1e-9), ("1", "UCUM")),
                         ("122411", "DCM"): (pytest.approx(result.thresholds[model], rel=1e-9), ("1", "UCUM"))}
        (evaluation,) = group["qualitativeEvaluations"]
        assert code(evaluation["conceptCode"]) == ("PCR-PRED", "99DPET")
        assert code(evaluation["conceptValue"]) == ({1: "373066001", 0: "373067005"}[result.decision[model]], "SCT")
    pet_uids = {pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID
                for p in (case["folder"] / "image").iterdir()}
    assert set(report["imageLibrary"]) == pet_uids
    assert report["compositeContext"] == [seg.SOPInstanceUID]
    schemes = pydicom.dcmread(str(case["written"]["sr"])).CodingSchemeIdentificationSequence
    assert [(s.CodingSchemeDesignator, s.CodingSchemeName) for s in schemes] == [
        ("99DPET", "DPETResponse private codes")]


# ------------------------------------------------------------------------------------------------ parametric map
def test_gradcam_parametric_map_as_paramap2itkimage_reads_it(case, tmp_path):
    """paramap2itkimage reads the map back bit for bit (float32) with the Grad-CAM quantity code. dcmqi 1.5.7
    stacks the frames in file order (highdicom stores them head first) without looking at their positions, so each
    of its slices is compared with the Grad-CAM slice at that frame's ImagePositionPatient."""
    dcmqi("paramap2itkimage", "--inputDICOM", case["written"]["gradcam"], "--outputDirectory", tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert code(meta["QuantityValueCode"]) == ("130403", "DCM")
    assert code(meta["MeasurementUnitsCode"]) == ("1", "UCUM")
    image = sitk.ReadImage(str(tmp_path / "pmap.nrrd"))
    pet, gradcam = case["pet"], sitk.GetArrayFromImage(case["result"].gradcam)
    assert image.GetSize() == pet.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), pet.GetOrigin(), atol=1e-3)
    values = sitk.GetArrayFromImage(image)
    frames = pydicom.dcmread(str(case["written"]["gradcam"]), stop_before_pixels=True).PerFrameFunctionalGroupsSequence
    slices = [pet.TransformPhysicalPointToIndex([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient])[2]
              for f in frames]
    assert sorted(slices) == list(range(pet.GetSize()[2]))
    np.testing.assert_array_equal(values, gradcam[slices])


# ------------------------------------------------------------------------------------------------ SEG as mask input
def test_read_seg_mask_gives_back_each_segment(case):
    """read_seg_mask of the written SEG: each segment, by number and by label, equals its mask on the PET grid;
    without a label all segments are merged, with a warning naming them."""
    seg, pet = case["written"]["seg"], case["pet"]
    for number, (label, expected) in enumerate(case["segments"].items(), start=1):
        for key in (number, label):
            mask = read_seg_mask(seg, pet, case="STS_001", label=key)
            assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == pet.GetSize()
            assert mask.GetOrigin() == pet.GetOrigin() and mask.GetSpacing() == pet.GetSpacing()
            np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected, err_msg=str(key))
    with pytest.warns(UserWarning, match=r"STS_001: SEG segments \['Tumour', 'Low uptake', 'High uptake'\] merged"):
        merged = read_seg_mask(seg, pet, case="STS_001")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(merged), np.logical_or.reduce(list(case["segments"].values())))


def test_read_seg_mask_on_a_cropped_reference(case):
    """A reference covering part of the SEG's frames gets its part; a segment reaching outside it is refused."""
    pet, tumour = case["pet"], case["segments"]["Tumour"]
    z = np.nonzero(tumour.any(axis=(1, 2)))[0]
    crop = pet[3:, 2:, int(z.min()):]
    mask = read_seg_mask(case["written"]["seg"], crop, label="Tumour")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), tumour[int(z.min()):, 2:, 3:])
    with pytest.raises(InputError, match=r"^STS_001: DICOM SEG .* \d+ voxels lie outside the PET image"):
        read_seg_mask(case["written"]["seg"], pet[:, :, int(z.max()):], case="STS_001", label="Tumour")


def test_read_seg_mask_refuses_bad_inputs(case, tmp_path):
    """Not a SEG, not DICOM, an unknown label, an empty segment, another grid (origin half a voxel off, other
    spacing): InputError naming the case and the problem."""
    seg, pet, result = case["written"]["seg"], case["pet"], case["result"]
    uniform = PredictionResult(case_id="STS_001", probabilities={}, decision={}, thresholds={},
                               pet_metrics=result.pet_metrics, mask=result.mask, subregions=result.mask)
    empty_high = write_dicom_outputs(uniform, case["folder"] / "image", tmp_path / "uniform")["seg"]
    with pytest.raises(InputError, match=r"^STS_001: DICOM SEG .* segment\(s\) \['High uptake'\] are empty"):
        read_seg_mask(empty_high, pet, case="STS_001", label="High uptake")
    pet_file = next((case["folder"] / "image").iterdir())
    with pytest.raises(InputError, match=rf"^STS_001: {pet_file} is a PT file \(tag Modality\), not a DICOM SEG"):
        read_seg_mask(pet_file, pet, case="STS_001")
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    with pytest.raises(InputError, match=r"^STS_001: cannot read .*notes.txt as DICOM"):
        read_seg_mask(text, pet, case="STS_001")
    with pytest.raises(InputError, match=r"^STS_001: DICOM SEG .* has no segment 'Necrosis' \(segments: \{1: "
                                         r"'Tumour', 2: 'Low uptake', 3: 'High uptake'\}\)"):
        read_seg_mask(seg, pet, case="STS_001", label="Necrosis")
    shifted = sitk.Image(pet)
    shifted.SetOrigin([pet.GetOrigin()[0] + pet.GetSpacing()[0] / 2, *pet.GetOrigin()[1:]])
    with pytest.raises(InputError, match=r"^STS_001: DICOM SEG .* is not on the PET grid: origin .* \(differs by "
                                         r"2\.34"):
        read_seg_mask(seg, shifted, case="STS_001", label=1)
    coarse = sitk.Resample(pet, [s // 2 for s in pet.GetSize()], sitk.Transform(), sitk.sitkLinear, pet.GetOrigin(),
                           [2 * s for s in pet.GetSpacing()], pet.GetDirection())
    with pytest.raises(InputError, match=r"^STS_001: DICOM SEG .* is not on the PET grid: spacing"):
        read_seg_mask(seg, coarse, case="STS_001", label=1)


# ------------------------------------------------------------------------------------------------ refusals
def test_dicom_outputs_need_the_dicom_pet_of_the_prediction(case, shared_data, tmp_path):
    """A NIfTI PET, or a prediction on another grid than the DICOM series, has no DICOM outputs: InputError, nothing
    written."""
    result = case["result"]
    nifti = shared_data / "sts_pet" / "STS_001" / "PET_image.nii.gz"
    with pytest.raises(InputError, match=rf"^STS_001: {nifti} is neither a DICOM folder nor a DICOM file"):
        write_dicom_outputs(result, nifti, tmp_path)
    cropped = PredictionResult(case_id="STS_001", probabilities={}, decision={}, thresholds={},
                               pet_metrics=result.pet_metrics, mask=result.mask[:, :, 1:])
    with pytest.raises(InputError, match=r"^STS_001: PET file .* is not a slice of the prediction's images"):
        write_dicom_outputs(cropped, case["folder"] / "image", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_dicom_out_for_a_nifti_image(shared_data, tmp_path):
    """`predict --dicom-out` with a NIfTI --image: exit 2 before any work, one line naming the option."""
    nifti = shared_data / "sts_pet" / "STS_001" / "PET_image.nii.gz"
    run = subprocess.run([sys.executable, "-m", "DPETResponseLib.cli", "predict", str(tmp_path / "no_bundle"),
                          "--image", str(nifti), "--mask", str(nifti.with_name("PET_mask.nii.gz")),
                          "--dicom-out", str(tmp_path / "dicom")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"dpet-response predict: error: --dicom-out needs a DICOM PET as --image: {nifti} is "
                          "neither a DICOM folder nor a DICOM file: DICOM outputs (SEG, SR, parametric map) need the "
                          "DICOM PET the prediction is made from\n")
    assert not (tmp_path / "dicom").exists()



def test_a_dicom_seg_is_a_mask_wherever_a_mask_is_read(case):
    """`io.images.read_mask` (the manifest's and predict's mask reader) hands a SEG to `read_seg_mask`."""
    tumour = read_mask(case["written"]["seg"], case["pet"], case="S1", label="Tumour")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(tumour), case["segments"]["Tumour"])
