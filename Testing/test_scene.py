"""MRML <-> SimpleITK adapters on real MRML nodes (slicer-core wheel, no Slicer application)."""

import math

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # the slicer-core wheel (pyproject [test]): real MRML nodes without the application

from DPETResponseLib import scene as S
from DPETResponseLib.core.errors import InputError
from DPETResponseLib.features.peritumoural import peritumoural_shell
from DPETResponseLib.results import PREDICTION_FILES, PredictionResult

COS30, SIN30 = math.cos(math.radians(30)), math.sin(math.radians(30))




@pytest.fixture
def scene():
    return S.standalone_scene()


@pytest.fixture
def oblique_pet():
    """6x5x4 voxels, anisotropic spacing, rotated 30 degrees about z then 10 degrees about x (oblique)."""
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) / 10.0)
    image.SetSpacing((1.5, 2.0, 3.3))
    image.SetOrigin((10.0, -20.0, 30.0))
    rz = np.array([[COS30, -SIN30, 0], [SIN30, COS30, 0], [0, 0, 1]])
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    image.SetDirection(tuple((rz @ rx).ravel()))
    return image


def ras_to_ijk(node, ras):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetRASToIJKMatrix(matrix)
    return np.array(matrix.MultiplyPoint([*ras, 1.0])[:3])


def node_matrix(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_volume_round_trip_oblique_anisotropic(scene, oblique_pet):
    node = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    # RAS = -LPS for x and y: origin (10, -20, 30) LPS is (-10, 20, 30) RAS.
    assert node.GetOrigin() == pytest.approx((-10.0, 20.0, 30.0))
    assert node.GetSpacing() == pytest.approx((1.5, 2.0, 3.3))
    # Voxel (2, 0, 0), hand-computed: LPS = origin + 2 * 1.5 * first column of Rz(30) Rx(10) = (cos30, sin30, 0)
    #   = (10 + 3 * 0.8660, -20 + 3 * 0.5, 30) = (12.598, -18.5, 30)  ->  RAS (-12.598, 18.5, 30).
    lps = oblique_pet.TransformIndexToPhysicalPoint((2, 0, 0))
    assert lps == pytest.approx((12.598, -18.5, 30.0), abs=1e-3)
    assert ras_to_ijk(node, (-12.598, 18.5, 30.0)) == pytest.approx((2, 0, 0), abs=1e-3)
    for index in [(0, 0, 0), (5, 4, 3), (3, 1, 2), (1, 4, 0)]:
        p = oblique_pet.TransformIndexToPhysicalPoint(index)
        assert oblique_pet.TransformPhysicalPointToIndex(p) == index
        assert ras_to_ijk(node, (-p[0], -p[1], p[2])) == pytest.approx(index, abs=1e-6)
    # voxel values: vtk scalars are i-fastest, like the (k, j, i) numpy view of the SimpleITK image
    from vtkmodules.util import numpy_support

    scalars = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).reshape(4, 5, 6)
    assert scalars[3, 1, 2] == pytest.approx(oblique_pet[2, 1, 3])
    back = S.volume_node_to_sitk(node)
    assert back.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(oblique_pet))
    np.testing.assert_allclose(back.GetOrigin(), oblique_pet.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), oblique_pet.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), oblique_pet.GetDirection(), atol=1e-9)


def test_volume_update_in_place_and_labelmap_class(scene, oblique_pet):
    node = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    doubled = sitk.Cast(oblique_pet * 2.0, sitk.sitkFloat32)
    same = S.sitk_to_volume_node(doubled, scene, node=node)
    assert same is node and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert S.volume_node_to_sitk(node)[5, 4, 3] == pytest.approx(2 * 11.9)
    mask = sitk.Cast(oblique_pet > 6.0, sitk.sitkUInt8)
    label_node = S.sitk_to_volume_node(mask, scene, name="mask", class_name="vtkMRMLLabelMapVolumeNode")
    assert label_node.IsA("vtkMRMLLabelMapVolumeNode")
    back = S.volume_node_to_sitk(label_node)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert int(sitk.GetArrayFromImage(back).sum()) == 120 - 61  # values 0.0..11.9 step 0.1; > 6.0 from 6.1


def test_volume_errors_name_the_node(scene):
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty PET")
    with pytest.raises(InputError, match="Empty PET.*no voxels"):
        S.volume_node_to_sitk(empty)


def subregion_labels(pet):
    """0 background, 1 where 6.0 < value <= 9.0, 2 where value > 9.0 (59 tumour voxels: 30 low, 29 high)."""
    return sitk.Cast(pet > 6.0, sitk.sitkUInt8) + sitk.Cast(pet > 9.0, sitk.sitkUInt8)


def test_segmentation_from_labelmap_and_back(scene, oblique_pet):
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    labels = subregion_labels(oblique_pet)
    seg = S.labelmap_to_segmentation(labels, scene, pet, *S.SUBREGION_SEGMENTS)
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()] == ["Low uptake",
                                                                                             "High uptake"]
    high_id = segmentation.GetSegmentIdBySegmentName("High uptake")
    assert segmentation.GetSegment(high_id).GetColor() == pytest.approx((1.0, 0.25, 0.2))
    back = S.segmentation_to_labelmap(seg, pet)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))
    np.testing.assert_allclose(back.GetDirection(), oblique_pet.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(back.GetOrigin(), oblique_pet.GetOrigin(), atol=1e-9)
    high = sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg, pet, high_id))
    assert high.sum() == 29 and set(np.unique(high)) == {0, 1}
    # re-running on the same node overwrites the segments in place (same ids, no new segments)
    ids_before = list(segmentation.GetSegmentIDs())
    S.labelmap_to_segmentation(sitk.Cast(labels == 2, sitk.sitkUInt8) * 2, scene, pet, *S.SUBREGION_SEGMENTS,
                               segmentation_node=seg)
    assert list(segmentation.GetSegmentIDs()) == ids_before
    assert sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg, pet)).tolist() == \
        (sitk.GetArrayFromImage(labels == 2) * 2).tolist()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # the export's temporary node is gone


def test_segmentation_export_leaves_no_node_behind(scene, oblique_pet):
    """Each export left the labelmap's display node and a `<segmentation>_ColorTable` in the scene: one more colour
    table per Apply with a segmentation in the module."""
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    seg = S.labelmap_to_segmentation(subregion_labels(oblique_pet), scene, pet, *S.SUBREGION_SEGMENTS)
    colors, nodes = scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode"), scene.GetNumberOfNodes()
    high_id = seg.GetSegmentation().GetSegmentIdBySegmentName("High uptake")
    for _ in range(2):
        assert int(sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg, pet)).max()) == 2
        assert int(sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg, pet, high_id)).sum()) == 29
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == colors
    assert scene.GetNumberOfNodes() == nodes


def test_segmentation_errors(scene, oblique_pet):
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    shifted = subregion_labels(oblique_pet)
    shifted.SetOrigin((11.0, -20.0, 30.0))
    with pytest.raises(InputError, match=r"node 'PET': the label image is not on the PET grid: origin \(11, -20, 30\)"):
        S.labelmap_to_segmentation(shifted, scene, pet, *S.SUBREGION_SEGMENTS)
    seg = S.labelmap_to_segmentation(subregion_labels(oblique_pet), scene, pet, *S.SUBREGION_SEGMENTS)
    with pytest.raises(InputError, match="no segment with id 'nope'"):
        S.segmentation_to_labelmap(seg, pet, "nope")


def test_table_values(scene):
    rows = [{"model": "radiomics", "p": 0.25, "n": 3}, {"model": "deep", "p": 0.75, "note": "x"}]
    node = S.dict_to_table_node(rows, scene)
    table = node.GetTable()
    assert [table.GetColumnName(i) for i in range(4)] == ["model", "p", "n", "note"]
    assert node.GetNumberOfRows() == 2
    assert table.GetValueByName(1, "p").ToDouble() == 0.75
    assert math.isnan(table.GetValueByName(1, "n").ToDouble())  # missing number -> NaN
    assert table.GetColumnByName("model").IsA("vtkStringArray")
    assert table.GetColumnByName("n").IsA("vtkDoubleArray")
    assert node.GetCellText(0, 3) == ""
    again = S.dict_to_table_node([{"model": "fusion", "p": 0.5}], scene, node=node)
    assert again is node and node.GetNumberOfRows() == 1 and node.GetCellText(0, 0) == "fusion"


def test_bar_chart_nodes_are_linked_and_updated_in_place(scene):
    chart = S.bar_chart(scene, ["a", "b", "c"], [0.3, -0.1, 0.05], "SHAP")
    series = chart.GetPlotSeriesNode()
    assert chart.GetNumberOfPlotSeriesNodes() == 1 and series.GetPlotType() == series.PlotTypeScatterBar
    table_node = series.GetTableNode()
    assert series.GetLabelColumnName() == "name" and series.GetYColumnName() == "value"
    assert series.GetXColumnName() == "rank" and series.GetColor() == pytest.approx(S.BAR_COLOR)  # not black
    assert [table_node.GetCellText(i, 1) for i in range(3)] == ["a", "b", "c"]
    assert [table_node.GetTable().GetValueByName(i, "rank").ToInt() for i in range(3)] == [1, 2, 3]
    assert table_node.GetTable().GetValueByName(1, "value").ToDouble() == pytest.approx(-0.1)
    assert chart.GetTitle() == "SHAP"
    same = S.bar_chart(scene, ["z"], [1.5], "SHAP 2", node=chart)
    assert same is chart and same.GetPlotSeriesNode() is series and series.GetTableNode() is table_node
    assert table_node.GetNumberOfRows() == 1 and table_node.GetTable().GetValueByName(0, "value").ToDouble() == 1.5
    for cls in ("vtkMRMLPlotChartNode", "vtkMRMLPlotSeriesNode", "vtkMRMLTableNode"):
        assert scene.GetNumberOfNodesByClass(cls) == 1
    with pytest.raises(InputError, match="2 names but 1 values"):
        S.bar_chart(scene, ["a", "b"], [1.0], "bad")


def test_heatmap_geometry_equals_pet_and_display(scene, oblique_pet):
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    # a map on a coarser grid (2x spacing, same origin and direction), 0.7 everywhere: resampled onto the PET's
    coarse = sitk.Image([3, 3, 2], sitk.sitkFloat32) + 0.7
    coarse.SetSpacing([3.0, 4.0, 6.6])
    coarse.SetOrigin(oblique_pet.GetOrigin())
    coarse.SetDirection(oblique_pet.GetDirection())
    heat = S.heatmap_volume(coarse, scene, pet)
    np.testing.assert_array_equal(node_matrix(heat), node_matrix(pet))
    assert heat.GetImageData().GetDimensions() == pet.GetImageData().GetDimensions()
    values = sitk.GetArrayFromImage(S.volume_node_to_sitk(heat))
    assert values[0, 0, 0] == pytest.approx(0.7) and values[2, 2, 2] == pytest.approx(0.7)
    display = heat.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"  # the first one slicer-core has
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(S.HEAT_TRANSPARENT_BELOW)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    same = S.heatmap_volume(sitk.Cast(oblique_pet / 11.9, sitk.sitkFloat32), scene, pet, node=heat)
    assert same is heat and S.volume_node_to_sitk(heat)[5, 4, 3] == pytest.approx(1.0)


def test_storage_nodes_round_trip(tmp_path, oblique_pet):
    scene = S.standalone_scene()
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    labels = subregion_labels(oblique_pet)
    seg = S.labelmap_to_segmentation(labels, scene, pet, *S.SUBREGION_SEGMENTS)
    volume_storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    volume_storage.SetFileName(str(tmp_path / "pet.nrrd"))
    assert volume_storage.WriteData(pet)
    seg_storage = slicer.vtkMRMLSegmentationStorageNode()
    seg_storage.SetFileName(str(tmp_path / "subregions.seg.nrrd"))
    assert seg_storage.WriteData(seg)

    fresh = S.standalone_scene()
    pet2 = fresh.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "PET")
    reader = slicer.vtkMRMLVolumeArchetypeStorageNode()
    reader.SetFileName(str(tmp_path / "pet.nrrd"))
    assert reader.ReadData(pet2)
    seg2 = fresh.AddNewNodeByClass("vtkMRMLSegmentationNode", "subregions")
    seg_reader = slicer.vtkMRMLSegmentationStorageNode()
    seg_reader.SetFileName(str(tmp_path / "subregions.seg.nrrd"))
    assert seg_reader.ReadData(seg2)

    np.testing.assert_allclose(node_matrix(pet2), node_matrix(pet), atol=1e-6)
    pet_back = S.volume_node_to_sitk(pet2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pet_back), sitk.GetArrayFromImage(oblique_pet))
    segmentation = seg2.GetSegmentation()
    assert sorted(segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()) == \
        ["High uptake", "Low uptake"]
    low_id = segmentation.GetSegmentIdBySegmentName("Low uptake")
    high_id = segmentation.GetSegmentIdBySegmentName("High uptake")
    low = sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg2, pet2, low_id))
    high = sitk.GetArrayFromImage(S.segmentation_to_labelmap(seg2, pet2, high_id))
    expected = sitk.GetArrayFromImage(labels)
    np.testing.assert_array_equal(low, expected == 1)
    np.testing.assert_array_equal(high, expected == 2)


def test_control_point_lps(scene):
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    markups.AddControlPoint(12.5, -30.0, 40.0)
    assert S.control_point_lps(markups) == pytest.approx((-12.5, 30.0, 40.0))
    with pytest.raises(InputError, match="no control point 2"):
        S.control_point_lps(markups, 1)


def fake_result(pet_image):
    labels = subregion_labels(pet_image)
    return PredictionResult(
        case_id="case_007",
        probabilities={"radiomics": 0.62, "deep": 0.41, "fusion_decision": 0.71},
        decision={"radiomics": 1, "deep": 0, "fusion_decision": 1},
        thresholds={"radiomics": 0.5, "deep": 0.45, "fusion_decision": 0.55},
        pet_metrics={"pet_SUVmax": 11.9, "pet_MTV": 1.2},
        shap={"radiomics": {"f1": 0.2, "f2": -0.5, "f3": 0.05},
              "fusion_decision": {"radiomics": 0.9, "deep": -1.3, "ith": 0.01}},
        mask=sitk.Cast(labels > 0, sitk.sitkUInt8), subregions=labels,
        peritumoural=peritumoural_shell(sitk.Cast(labels > 0, sitk.sitkUInt8), 2.0),
        gradcam=sitk.Cast(pet_image / 11.9, sitk.sitkFloat32), warnings=["synthetic"],
        imputed_inputs={"fusion_decision": ["age", "ki67"]},
    )


def test_show_prediction_creates_then_updates_nodes_under_the_study(scene, oblique_pet):
    pet = S.sitk_to_volume_node(oblique_pet, scene, name="PET")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient"), "study")
    hierarchy.SetItemParent(hierarchy.CreateItem(hierarchy.GetSceneItemID(), pet), study)
    result = fake_result(oblique_pet)
    nodes = S.show_prediction(result, scene, pet)
    assert set(nodes) == set(S.OUTPUT_ROLES)
    segmentation = nodes["segmentation"].GetSegmentation()
    assert [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()] == \
        ["Tumour", "Low uptake", "High uptake", "Peritumoural shell"]
    tumour = sitk.GetArrayFromImage(S.segmentation_to_labelmap(
        nodes["segmentation"], pet, segmentation.GetSegmentIdBySegmentName("Tumour")))
    assert tumour.sum() == 59
    shell = sitk.GetArrayFromImage(S.segmentation_to_labelmap(
        nodes["segmentation"], pet, segmentation.GetSegmentIdBySegmentName("Peritumoural shell")))
    np.testing.assert_array_equal(shell, sitk.GetArrayFromImage(result.peritumoural))
    shell_id = segmentation.GetSegmentIdBySegmentName("Peritumoural shell")
    display = nodes["segmentation"].GetDisplayNode()
    assert (display.GetSegmentOpacity2DFill(shell_id), display.GetSegmentOpacity2DOutline(shell_id),
            display.GetSegmentVisibility3D(shell_id)) == (0.0, 1.0, False)
    table = nodes["prediction_table"]
    assert [table.GetCellText(i, 0) for i in range(3)] == ["radiomics", "deep", "fusion_decision"]
    assert table.GetTable().GetValueByName(2, "pCR probability").ToDouble() == pytest.approx(0.71)
    assert [table.GetCellText(i, 3) for i in range(3)] == ["pCR", "no pCR", "pCR"]
    # the imputed-input flag next to the decision it qualifies
    assert [table.GetCellText(i, 4) for i in range(3)] == ["", "", "age, ki67"]
    assert table.GetColumnName(4) == "imputed inputs"
    assert nodes["metrics_table"].GetTable().GetValueByName(0, "value").ToDouble() == pytest.approx(11.9)
    shap_table = nodes["shap_chart"].GetPlotSeriesNode().GetTableNode()
    # the radiomics model's features are preferred (the patient's top features); by decreasing |SHAP|
    assert [shap_table.GetCellText(i, 1) for i in range(3)] == ["f2", "f1", "f3"]
    # slice views: the Tumour as an outline over translucent subregion fills (each segment seen)
    display = nodes["segmentation"].GetDisplayNode()
    ids = {segmentation.GetSegment(i).GetName(): i for i in segmentation.GetSegmentIDs()}
    assert (display.GetSegmentOpacity2DFill(ids["Tumour"]), display.GetSegmentOpacity2DOutline(ids["Tumour"])) == \
        (0.0, 1.0)
    for name in ("Low uptake", "High uptake"):
        assert display.GetSegmentOpacity2DFill(ids[name]) == pytest.approx(S.SUBREGION_FILL_OPACITY)
        assert display.GetSegmentOpacity2DOutline(ids[name]) == 0.0
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(nodes["gradcam"])
    assert legend is not None and legend.GetTitleText() == "Grad-CAM" and legend.GetVisibility()
    assert "radiomics" in nodes["shap_chart"].GetTitle()
    folder = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(nodes["gradcam"]))
    assert hierarchy.GetItemParent(folder) == study
    for node in (nodes["segmentation"], nodes["shap_chart"].GetPlotSeriesNode(), shap_table):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == folder
    counts = {c: scene.GetNumberOfNodesByClass(c) for c in
              ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode", "vtkMRMLTableNode", "vtkMRMLPlotChartNode",
               "vtkMRMLColorLegendDisplayNode")}
    again = S.show_prediction(fake_result(oblique_pet), scene, pet)
    assert all(again[r] is nodes[r] for r in S.OUTPUT_ROLES)
    assert counts == {c: scene.GetNumberOfNodesByClass(c) for c in counts}
    assert counts == {"vtkMRMLSegmentationNode": 1, "vtkMRMLScalarVolumeNode": 2, "vtkMRMLTableNode": 3,
                      "vtkMRMLPlotChartNode": 1, "vtkMRMLColorLegendDisplayNode": 1}
    # a bundle without a shell: the earlier prediction's shell segment goes
    without = fake_result(oblique_pet)
    without.peritumoural = None
    S.show_prediction(without, scene, pet)
    assert [segmentation.GetSegment(i).GetName() for i in segmentation.GetSegmentIDs()] == \
        ["Tumour", "Low uptake", "High uptake"]


def test_prediction_folder_round_trip(tmp_path, oblique_pet):
    """What `PredictionResult.write` puts in a prediction folder, `read` gives back (the Slicer module reads the
    folder the CLI wrote); a folder without its JSON is an unfinished prediction."""
    result = fake_result(oblique_pet)
    result.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PREDICTION_FILES.values())
    (tmp_path / PREDICTION_FILES["gradcam"]).unlink()  # a bundle without a CNN writes no heat map
    read = PredictionResult.read(tmp_path)
    assert read.probabilities == result.probabilities and read.shap == result.shap and read.gradcam is None
    assert read.imputed_inputs == {"fusion_decision": ["age", "ki67"]}
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read.subregions), sitk.GetArrayFromImage(result.subregions))
    with pytest.raises(InputError, match="no prediction.json"):
        PredictionResult.read(tmp_path / "missing")
