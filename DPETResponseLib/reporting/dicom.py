"""DICOM outputs of a prediction made from a DICOM PET, built with highdicom on the PET's frame of reference.

- ``seg.dcm``: a Segmentation (BINARY, overlapping segments) of the tumour and its low- and high-uptake subregions;
- ``sr.dcm``: a Comprehensive 3D SR holding a TID 1500 Measurement Report: the tumour's PET metrics and each
  model's pCR probability, threshold and decision, referencing the SEG's Tumour segment and the PET images;
- ``gradcam.dcm``: the Grad-CAM map as a Parametric Map (only when the prediction has one). highdicom 0.28 leaves
  out its mandatory Frame Anatomy functional group (PS3.3 A.75), without which DCMTK-based readers (dcmqi) refuse
  the file, so it is added to highdicom's object (`_parametric_map`).

Every frame is placed on the PET slice whose ImagePositionPatient it shares, never by file order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .. import __version__
from ..core.errors import InputError
from ..core.files import atomic_write
from ..core.names import REGION_LABELS, SUBREGION_SEGMENTS, TUMOUR_SEGMENT
from ..io.geometry import grid_differences, require_same_grid

DICOM_OUTPUTS = {"seg": "seg.dcm", "sr": "sr.dcm", "gradcam": "gradcam.dcm"}
MANUFACTURER, MODEL_NAME = "DPETResponse", "DPETResponseLib"
#: Series numbers of the derived series, beyond those scanners give their own.
SERIES_NUMBERS = {"seg": 901, "sr": 902, "gradcam": 903}
#: The Enhanced General Equipment module of the SEG and the map: it requires a serial number, which a program lacks.
DEVICE = {"manufacturer_model_name": MODEL_NAME, "software_versions": __version__, "device_serial_number": "0"}

# Codes and units, each checked in pydicom's `codes` (generated from DICOM PS3.16) unless said otherwise.
# PET metrics: SUVbw (126401, DCM; CID 7180) with the derivation Maximum (56851009, SCT), Mean (373098007, SCT) or
# Peak Value Within ROI (126031, DCM) of CID 7464; Metabolic Volume (126032, DCM) and Total Lesion Glycolysis
# (126033, DCM) of CID 7466. Units (UCUM): g/ml{SUVbw} as CID 85 has it in pydicom 3.0 (older examples, dcmqi's
# among them, wrote {SUVbw}g/ml, the annotation before the unit); ml; and for TLG = SUVmean x MTV g{SUVbw}, which
# no context group lists.
SUV_UNIT = codes.UCUM.StandardizedUptakeValueBodyWeight
ML_UNIT = Code("ml", "UCUM", "milliliter")
TLG_UNIT = Code("g{SUVbw}", "UCUM", "Standardized Uptake Value body weight x milliliter")
#: `PredictionResult.pet_metrics` key -> (concept name, derivation, unit) of its TID 300 measurement.
PET_MEASUREMENTS = {
    "pet_SUVmax": (codes.DCM.Suvbw, codes.SCT.Maximum, SUV_UNIT),
    "pet_SUVmean": (codes.DCM.Suvbw, codes.SCT.Mean, SUV_UNIT),
    "pet_SUVpeak": (codes.DCM.Suvbw, codes.DCM.PeakValueWithinROI, SUV_UNIT),
    "pet_MTV": (codes.DCM.MetabolicVolume, None, ML_UNIT),
    "pet_TLG": (codes.DCM.TotalLesionGlycolysis, None, TLG_UNIT),
}
# No standard code names the probability of a pathological complete response or the decision taken from it: a
# private coding scheme ("99" prefix, PS3.16 section 8), described in the SR's Coding Scheme Identification
# Sequence. The threshold is Threshold Value (122411, DCM), the decision's value Yes (373066001, SCT) or No
# (373067005, SCT), probabilities and thresholds in UCUM "1" (no units).
PRIVATE_SCHEME = "99DPET"
PCR_PROBABILITY = Code("PCR-PROB", PRIVATE_SCHEME, "Probability of pathological complete response")
PCR_PREDICTED = Code("PCR-PRED", PRIVATE_SCHEME, "Pathological complete response predicted")


def dicom_pet_datasets(pet_source, case=None) -> list:
    """The headers (pydicom) of the PET slices in ``pet_source`` (`io.images.pet_dicom_headers`: a DICOM folder's PT
    series, the files `io.images.read_pet` reads, or one DICOM file). InputError when it is not a DICOM PET."""
    from ..io.images import pet_dicom_headers

    datasets = pet_dicom_headers(pet_source, case)
    if datasets is None:
        raise InputError(f"{pet_source} is neither a DICOM folder nor a DICOM file: DICOM outputs (SEG, SR, "
                         "parametric map) need the DICOM PET the prediction is made from", case=case)
    return datasets


def _slice_indices(datasets, grid: sitk.Image, case) -> list[int]:
    """Index along ``grid``'s third axis of the slice each PET dataset shows, found from its ImagePositionPatient.

    InputError unless each dataset's pixel grid is one slice of ``grid`` (`io.geometry`'s rule) and every slice has
    exactly one dataset."""
    size_z = grid.GetSize()[2]
    indices = []
    for ds in datasets:
        if ds.get("ImagePositionPatient") is None or ds.get("ImageOrientationPatient") is None:
            raise InputError(f"PET file {ds.filename} has no ImagePositionPatient/ImageOrientationPatient (a "
                             "multi-frame PET is not supported for DICOM outputs)", case=case)
        position = [float(v) for v in ds.ImagePositionPatient]
        row, column = np.asarray(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
        plane = sitk.Image([int(ds.Columns), int(ds.Rows), 1], sitk.sitkUInt8)
        plane.SetOrigin(position)
        plane.SetSpacing([float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0]), grid.GetSpacing()[2]])
        plane.SetDirection(np.column_stack([row, column, np.cross(row, column)]).ravel().tolist())
        k = int(round(grid.TransformPhysicalPointToContinuousIndex(position)[2]))
        differences = grid_differences(grid[:, :, k:k + 1], plane) if 0 <= k < size_z else ["outside the image"]
        if differences:
            raise InputError(f"PET file {ds.filename} is not a slice of the prediction's images (slice {k}): "
                             + "; ".join(differences), case=case)
        indices.append(k)
    if sorted(indices) != list(range(size_z)):
        raise InputError(f"the PET series' {len(datasets)} slices lie at slice indices {sorted(indices)} of the "
                         f"prediction's {size_z}: not the PET the prediction was made from", case=case)
    return indices


def _segments(result, case) -> list[tuple[str, np.ndarray, str]]:
    """(label, [z, y, x] 0/1 array, algorithm type) of each segment.

    Tumour is the mask the prediction was made on (given, or segmented from the user's seed point):
    SEMIAUTOMATIC. The subregions are k-means habitats (AUTOMATIC): label 1 is Low uptake, the highest label High
    uptake; with K > 2 habitats (which the analysis refuses today) the labels between are in neither segment.
    """
    segments = [(TUMOUR_SEGMENT, sitk.GetArrayFromImage(result.mask) != 0, "SEMIAUTOMATIC")]
    if result.subregions is not None:
        require_same_grid(result.mask, result.subregions, what="subregion image", case=case)
        labels = sitk.GetArrayFromImage(result.subregions)
        low, high = REGION_LABELS["low"], max(REGION_LABELS["high"], int(labels.max()))
        segments += [(SUBREGION_SEGMENTS[low], labels == low, "AUTOMATIC"),
                     (SUBREGION_SEGMENTS[REGION_LABELS["high"]], labels == high, "AUTOMATIC")]
    return segments


def _series(kind: str) -> dict:
    import highdicom as hd

    return dict(series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS[kind], sop_instance_uid=hd.UID(),
                instance_number=1, manufacturer=MANUFACTURER)


def _segmentation(result, datasets, indices, case):
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(name=MANUFACTURER, version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    segments = _segments(result, case)
    # Category Morphologically Abnormal Structure (49755003, SCT; CID 7150), type Neoplasm (108369006, SCT; CID
    # 7151). The subregions are parts of the same neoplasm: the same codes, told apart by their labels (no standard
    # code names an uptake habitat).
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm, algorithm_type=kind, algorithm_identification=algorithm,
        tracking_uid=hd.UID(), tracking_id=label) for number, (label, _, kind) in enumerate(segments, start=1)]
    stacked = np.stack([array for _, array, _ in segments], axis=-1).astype(np.uint8)  # [z, y, x, segment]
    # Frame i is the slice of source dataset i (highdicom takes the i-th frame to be the i-th source image's).
    return hd.seg.Segmentation(
        source_images=datasets, pixel_array=stacked[indices], segmentation_type="BINARY",
        segment_descriptions=descriptions, content_label="TUMOUR",
        content_description=f"DPETResponse tumour and uptake subregions of {result.case_id}", **_series("seg"),
        **DEVICE)


def _measurement_report(result, seg, datasets):
    """TID 1500: one volumetric ROI group of PET metrics on the SEG's Tumour segment, one per model with its pCR
    probability, threshold and decision on the same tumour (same tracking identifier and UID; the model is the
    algorithm's parameter)."""
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    tumour = hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=1)  # and the PET images it came from
    tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=TUMOUR_SEGMENT)
    metrics = [hd.sr.Measurement(name=name, value=float(result.pet_metrics[key]), unit=unit, derivation=derivation)
               for key, (name, derivation, unit) in PET_MEASUREMENTS.items()]
    groups = [hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_segment=tumour, measurements=metrics,
        algorithm_id=hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=__version__))]
    for model, probability in result.probabilities.items():
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, referenced_segment=tumour,
            algorithm_id=hd.sr.AlgorithmIdentification(name=MANUFACTURER, version=__version__,
                                                       parameters=[f"model={model}"]),
            measurements=[
                hd.sr.Measurement(name=PCR_PROBABILITY, value=float(probability), unit=codes.UCUM.NoUnits),
                hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=float(result.thresholds[model]),
                                  unit=codes.UCUM.NoUnits)],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                name=PCR_PREDICTED, value=codes.SCT.Yes if result.decision[model] else codes.SCT.No)]))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=MODEL_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.cid100.PETUnspecifiedBodyRegion, imaging_measurements=groups)
    scheme = CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name="DPETResponse private codes",
                                            version=__version__, responsible_organization=MANUFACTURER)
    return hd.sr.Comprehensive3DSR(evidence=[*datasets, seg], content=report, is_complete=True,
                                   coding_schemes=[scheme], **_series("sr"))


def _parametric_map(result, datasets, indices):
    import highdicom as hd
    from pydicom.dataset import Dataset

    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM", lut_explanation="Grad-CAM of the CNN's pCR output", unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0), slope=1.0, intercept=0.0,
        quantity_definition=codes.DCM.GradientWeightedClassActivation)  # 130403, DCM; CID 7180
    values = sitk.GetArrayFromImage(result.gradcam).astype(np.float32)[indices]
    pmap = hd.pm.ParametricMap(
        source_images=datasets, pixel_array=values, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping], content_label="GRADCAM",
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_description=f"DPETResponse Grad-CAM of {result.case_id}", **_series("gradcam"), **DEVICE)
    # The Frame Anatomy functional group highdicom leaves out: the library knows no anatomy, so the least specific
    # region, Entire body (38266002, SCT; CID 4), laterality U (unpaired).
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [hd.sr.CodedConcept.from_code(codes.SCT.EntireBody)]
    anatomy.FrameLaterality = "U"
    pmap.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    return pmap


def write_dicom_outputs(result, pet_source, out_dir, case=None) -> dict[str, Path]:
    """Write `DICOM_OUTPUTS` of ``result`` (a `PredictionResult`) to ``out_dir``: the SEG, the SR and, when the
    prediction has a Grad-CAM map, the parametric map. Returns part -> path.

    ``pet_source`` is the DICOM PET (folder or file) the prediction was made from. InputError when it is not DICOM
    or its slices are not those of the prediction's images. Everything is built before the first file is written.
    """
    case = case or result.case_id
    datasets = dicom_pet_datasets(pet_source, case)
    if result.mask is None:
        raise InputError("the prediction has no tumour mask: no DICOM outputs can be made", case=case)
    indices = _slice_indices(datasets, result.mask, case)
    seg = _segmentation(result, datasets, indices, case)
    objects = {"seg": seg, "sr": _measurement_report(result, seg, datasets)}
    if result.gradcam is not None:
        require_same_grid(result.mask, result.gradcam, what="Grad-CAM map", case=case)
        objects["gradcam"] = _parametric_map(result, datasets, indices)
    written = {}
    for part, dataset in objects.items():
        written[part] = Path(out_dir) / DICOM_OUTPUTS[part]
        with atomic_write(written[part]) as tmp:
            dataset.save_as(tmp)
    return written
