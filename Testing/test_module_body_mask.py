"""The Slicer module's optional body mask outside Slicer: what its logic writes and gives the CLI (on slicer-core's
MRML nodes, read back with the CLI's own parser), processFiles, and the widget keeping the body segment in its
parameter node and saying when the bundle's CLI will refuse the prediction (stand-ins: Testing/standins)."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from module_standins import load_module

from DPETResponseLib import scene as S
from DPETResponseLib.cli import build_parser

SHAPE = (6, 7, 8)  # z, y, x
#: Label values of the body segmentation: "Body" is not its first segment.
BODY_LABELS = {1: "Table", 2: "Body"}


@pytest.fixture
def loaded():
    return load_module()


@pytest.fixture
def case():
    """A PET (anisotropic, off the origin), its tumour segmentation and a body segmentation with segments Table
    (the top slice) and Body (x < 4 below it), on slicer-core's MRML scene."""
    scene = S.standalone_scene()
    image = sitk.GetImageFromArray(np.random.default_rng(0).random(SHAPE).astype(np.float32))
    image.SetSpacing((2.0, 1.5, 3.0))
    image.SetOrigin((-10.0, 5.0, 2.0))
    pet = S.sitk_to_volume_node(image, scene, name="PET")
    tumour = np.zeros(SHAPE, np.uint8)
    tumour[2:4, 3:5, 1:3] = 1
    labels = np.zeros(SHAPE, np.uint8)
    labels[-1] = 1
    labels[:-1, :, :4] = 2
    segmentations = {}
    for name, array, segments in (("Tumour", tumour, S.TUMOUR_SEGMENTS), ("Body", labels, (BODY_LABELS, {}))):
        label_image = sitk.GetImageFromArray(array)
        label_image.CopyInformation(image)
        segmentations[name] = S.labelmap_to_segmentation(label_image, scene, pet, *segments)
        segmentations[name].SetName(f"{name} segmentation")
    return {"scene": scene, "image": image, "pet": pet, "tumour": segmentations["Tumour"],
            "body": segmentations["Body"], "labels": labels}


def predict_arguments(inputs):
    return build_parser().parse_args(["predict", "bundle", *inputs])


def read_body_mask(path, image):
    """The written body mask's voxels, after checking it lies on ``image``'s grid."""
    written = sitk.ReadImage(str(path))
    assert written.GetSize() == image.GetSize()
    np.testing.assert_allclose(written.GetSpacing(), image.GetSpacing())
    np.testing.assert_allclose(written.GetOrigin(), image.GetOrigin())
    np.testing.assert_allclose(written.GetDirection(), image.GetDirection())
    return sitk.GetArrayFromImage(written)


def segment_id(segmentation_node, name):
    return segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(name)


def test_a_body_segmentation_becomes_the_body_mask_argument(loaded, case, tmp_path):
    """Its segment named Body by default, else the one given, written on the PET's grid as body.nii.gz (the
    segment's own labelmap) and passed last as --body-mask."""
    logic = loaded[0].DPETResponseLogic()
    body = case["body"]
    for given, label in ((None, 2), (segment_id(body, "Table"), 1)):
        inputs = logic.writeInputs(case["pet"], case["tumour"], str(tmp_path), bodySegmentation=body,
                                   bodySegmentId=given)
        path = tmp_path / "body.nii.gz"
        assert inputs[-2:] == ["--body-mask", str(path)]
        parsed = predict_arguments(inputs)
        assert parsed.body_mask == path and parsed.mask == tmp_path / "mask.nii.gz"
        written = read_body_mask(path, case["image"])
        np.testing.assert_array_equal(written, (case["labels"] == label).astype(np.uint8))
        expected = S.segmentation_to_labelmap(body, case["pet"], given or segment_id(body, "Body"))
        np.testing.assert_array_equal(written, sitk.GetArrayFromImage(expected))


def test_the_first_segment_is_the_body_where_none_is_named_body(loaded, case, tmp_path):
    body = case["body"]
    body.GetSegmentation().RemoveSegment(segment_id(body, "Body"))
    inputs = loaded[0].DPETResponseLogic().writeInputs(case["pet"], case["tumour"], str(tmp_path),
                                                       bodySegmentation=body)
    written = read_body_mask(predict_arguments(inputs).body_mask, case["image"])
    np.testing.assert_array_equal(written, (case["labels"] == 1).astype(np.uint8))


def test_without_a_body_segmentation_there_is_no_body_mask(loaded, case, tmp_path):
    inputs = loaded[0].DPETResponseLogic().writeInputs(case["pet"], case["tumour"], str(tmp_path))
    assert "--body-mask" not in inputs and predict_arguments(inputs).body_mask is None
    assert not (tmp_path / "body.nii.gz").exists()


def test_prepare_passes_the_body_segment_to_the_cli(loaded, case, tmp_path):
    """The arguments of a prediction (process and processAsync start from them), read by the CLI's parser."""
    logic = loaded[0].DPETResponseLogic()
    (tmp_path / "bundle").mkdir()
    table = segment_id(case["body"], "Table")
    args, out = logic._prepare(case["pet"], case["tumour"], tmp_path / "bundle", None, {"age": 50.0}, case["body"],
                               table)
    try:
        parsed = build_parser().parse_args(args[2:])
        assert (parsed.command, parsed.bundle, str(parsed.out), parsed.clinical) == (
            "predict", tmp_path / "bundle", out, ["age=50.0"])
        written = read_body_mask(parsed.body_mask, case["image"])
        np.testing.assert_array_equal(written, (case["labels"] == 1).astype(np.uint8))
    finally:
        logic._cleanup()


def test_a_body_segmentation_without_segments_is_refused_by_name(loaded, case, tmp_path):
    empty = case["scene"].AddNewNodeByClass("vtkMRMLSegmentationNode", "Empty body")
    with pytest.raises(ValueError, match=r"^Body segmentation 'Empty body' has no segments\.$"):
        loaded[0].DPETResponseLogic().writeInputs(case["pet"], case["tumour"], str(tmp_path),
                                                  bodySegmentation=empty)


def test_process_files_loads_the_body_mask_into_a_body_segment(loaded, case, tmp_path, monkeypatch):
    module, _ = loaded
    scene = case["scene"]
    paths = {name: str(tmp_path / f"{name}.nii.gz") for name in ("pet", "mask", "body")}
    sitk.WriteImage(case["image"], paths["pet"])
    for name, array in (("mask", case["labels"] == 1), ("body", case["labels"] * 3)):  # any value > 0 is the mask
        label_image = sitk.GetImageFromArray(array.astype(np.uint8))
        label_image.CopyInformation(case["image"])
        sitk.WriteImage(label_image, paths[name])
    monkeypatch.setattr(module.slicer, "mrmlScene", scene)
    monkeypatch.setattr(module.slicer.util, "loadVolume",
                        lambda path: S.sitk_to_volume_node(sitk.ReadImage(path), scene, name="Case 7"), raising=False)
    logic = module.DPETResponseLogic()
    calls = []
    monkeypatch.setattr(logic, "process", lambda *args, **kwargs: calls.append((args, kwargs)))
    logic.processFiles(paths["pet"], paths["mask"], tmp_path, bodyMaskPath=paths["body"])
    logic.processFiles(paths["pet"], paths["mask"], tmp_path)
    (args, kwargs), (_, without) = calls
    body = kwargs["bodySegmentation"]
    assert body.GetName() == "Case 7 body" and body.GetSegmentation().GetNumberOfSegments() == 1
    written = S.segmentation_to_labelmap(body, args[0], segment_id(body, module.BODY_SEGMENT))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), (case["labels"] > 0).astype(np.uint8))
    assert without["bodySegmentation"] is None


# ------------------------------------------------------------------------------------------------ widget
def new_widget(module):
    widget = module.DPETResponseWidget()
    widget.setup()
    return widget


def test_the_widget_keeps_the_body_segment_in_its_parameter_node_and_passes_it(loaded, monkeypatch):
    """The selector's node and segment go to the parameter node, come back to a new widget's selector, and
    reach processAsync; "none" is passed as None."""
    module, standins = loaded
    widget = new_widget(module)
    selector, node = widget.ui.bodySegmentSelector, object()
    selector.emit("currentNodeChanged(vtkMRMLNode*)", node)
    selector.emit("currentSegmentChanged(QString)", "Segment_2")
    p = widget._parameterNode
    assert (p.bodySegmentation, p.bodySegmentId) == (node, "Segment_2")

    again = new_widget(module)
    assert again.ui.bodySegmentSelector.calls[-2:] == [("setCurrentNode", (node,)),
                                                       ("setCurrentSegmentID", ("Segment_2",))]

    runs = []
    monkeypatch.setattr(widget.logic, "checkDependencies", lambda askConfirmation: True)
    monkeypatch.setattr(widget.logic, "processAsync", lambda *args, **kwargs: runs.append(kwargs))
    widget.onApplyButton()
    selector.emit("currentSegmentChanged(QString)", "")
    selector.emit("currentNodeChanged(vtkMRMLNode*)", None)
    widget.onApplyButton()
    assert [(run["bodySegmentation"], run["bodySegmentId"]) for run in runs] == [(node, "Segment_2"), (None, None)]


@pytest.mark.parametrize("trained_with_body_masks", [True, False])
def test_apply_says_when_the_bundle_will_refuse_the_body_mask_choice(loaded, tmp_path, trained_with_body_masks):
    """From bundle.json's "body_mask"; Apply stays enabled (the CLI's refusal is the rule)."""
    module, _ = loaded
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"schema_version": 1, "body_mask": trained_with_body_masks}))
    widget = new_widget(module)
    p = widget._parameterNode
    p.inputVolume, p.tumourSegmentation = object(), object()
    widget.ui.bundlePathLineEdit.currentPath = str(bundle)
    advice = {True: "Predict pCR. This bundle was trained with body masks: select the body or breast segment "
                    "under Body mask, or the prediction is refused.",
              False: "Predict pCR"}
    widget._checkCanApply()
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == advice[trained_with_body_masks]
    p.bodySegmentation = object()
    widget._checkCanApply()
    advice = {True: "Predict pCR",
              False: "Predict pCR. This bundle was trained without body masks: set Body mask to None, or the "
                     "prediction is refused."}
    assert widget.ui.applyButton.enabled and widget.ui.applyButton.toolTip == advice[trained_with_body_masks]


def test_no_advice_where_bundle_json_cannot_be_read(loaded, tmp_path):
    module, _ = loaded
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bundle.json").write_text("{")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "bundle.json").write_text("[]")
    assert [module.bundleTrainedWithBodyMasks(str(path)) for path in (
        "", tmp_path / "missing", tmp_path / "broken", tmp_path / "list")] == [None] * 4
