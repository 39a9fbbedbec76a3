"""MRML <-> SimpleITK adapters: volumes, segmentations, tables, plots and the Grad-CAM overlay; and what the module's
clinical form offers for a bundle (`clinical_schema`).

Every function takes the MRML scene or nodes as arguments and imports Slicer's ``slicer``/VTK inside itself, so the
library stays importable without Slicer; the same code runs inside 3D Slicer and with the slicer-core wheel.
Images in the library are in LPS (ITK, DICOM); MRML nodes are in RAS: the first two axes of the origin and of every
direction vector change sign. Passing an existing ``node`` updates it instead of adding a new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .core import names
from .core.errors import BundleError, InputError
from .io.geometry import require_same_grid, same_grid

#: Colour tables for the Grad-CAM overlay, by preference; the first one the scene holds is used.
HEAT_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",
    "vtkMRMLPETProceduralColorNodePET-Heat",
    "vtkMRMLColorTableNodeRainbow",
)
#: Grad-CAM values at or below this are transparent when the overlay is shown as the foreground volume.
HEAT_TRANSPARENT_BELOW = 0.05

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _node_label(node) -> str:
    return f"node '{node.GetName()}'" if node is not None else "node None"


def _node_ids(scene, class_name: str) -> set[str]:
    nodes = scene.GetNodesByClass(class_name)
    return {nodes.GetItemAsObject(i).GetID() for i in range(nodes.GetNumberOfItems())}


def _ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of an LPS SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return matrix


def _vtk_matrix(matrix: np.ndarray):
    import vtk

    out = vtk.vtkMatrix4x4()
    for row in range(4):
        for col in range(4):
            out.SetElement(row, col, float(matrix[row, col]))
    return out


def _vtk_image_data(image: sitk.Image, target=None):
    """Voxels of a scalar SimpleITK image as vtkImageData (origin 0, spacing 1, as MRML volume nodes expect)."""
    from vtkmodules.util import numpy_support

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a 3D scalar image, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if target is None:
        import vtk

        target = vtk.vtkImageData()
    target.SetDimensions(*image.GetSize())
    target.SetOrigin(0.0, 0.0, 0.0)
    target.SetSpacing(1.0, 1.0, 1.0)
    target.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    target.Modified()
    return target


def standalone_scene():
    """A scene outside the Slicer application (slicer-core: tests, headless rendering) set up as the application
    sets it up for what this module uses: colour tables, colour legends and the segmentations logic."""
    import slicer

    scene = slicer.vtkMRMLScene()
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())  # the Colors module registers it in Slicer
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    scene._dpet_logics = (colors, segmentations)  # the logics must live as long as the scene
    return scene


def volume_node_to_sitk(node) -> sitk.Image:
    """A scalar volume (or labelmap) node as a SimpleITK image in LPS with the node's geometry and voxel type."""
    from vtkmodules.util import numpy_support

    if node is None or node.GetImageData() is None:
        raise InputError("the volume has no voxels", case=_node_label(node))
    if node.GetParentTransformNode() is not None:
        raise InputError("the volume is under a transform; harden the transform first (Data module)",
                         case=_node_label(node))
    image_data = node.GetImageData()
    if image_data.GetNumberOfScalarComponents() != 1:
        raise InputError(f"expected a scalar volume, got {image_data.GetNumberOfScalarComponents()} components",
                         case=_node_label(node))
    size = image_data.GetDimensions()
    array = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(size[::-1])
    image = sitk.GetImageFromArray(array.copy())
    import vtk

    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras_dir = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    image.SetSpacing(node.GetSpacing())
    image.SetOrigin(tuple(_LPS_TO_RAS @ np.asarray(node.GetOrigin())))
    image.SetDirection(tuple((_LPS_TO_RAS @ ras_dir).ravel()))
    return image


def sitk_to_volume_node(image: sitk.Image, scene, name: str | None = None, node=None,
                        class_name: str = "vtkMRMLScalarVolumeNode"):
    """Put an LPS SimpleITK image into a volume node of ``scene`` (a new ``class_name`` node unless ``node``)."""
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name or "Volume")
    elif name:
        node.SetName(name)
    matrix = _ijk_to_ras(image)
    image_data = _vtk_image_data(image)
    was_modifying = node.StartModify()
    node.SetIJKToRASMatrix(_vtk_matrix(matrix))
    node.SetAndObserveImageData(image_data)
    node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _oriented_image(image: sitk.Image):
    """An LPS SimpleITK binary image as the vtkOrientedImageData that segmentations store."""
    import slicer

    oriented = slicer.vtkOrientedImageData()
    _vtk_image_data(image, target=oriented)
    oriented.SetImageToWorldMatrix(_vtk_matrix(_ijk_to_ras(image)))
    return oriented


def labelmap_to_segmentation(label_image: sitk.Image, scene, reference_volume_node, segment_names: dict[int, str],
                             colors: dict[int, tuple[float, float, float]], segmentation_node=None):
    """One named, coloured segment per label value of ``label_image`` (on the reference volume's grid).

    A segment that already has the name is overwritten in place (same segment id), so re-running updates it.
    Colours are (r, g, b) in 0..1.
    """
    import slicer

    reference = volume_node_to_sitk(reference_volume_node)
    require_same_grid(reference, label_image, what="label image", case=_node_label(reference_volume_node))
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = segmentation_node.GetSegmentation()
    labels = sitk.Cast(label_image, sitk.sitkUInt16)
    for value, segment_name in segment_names.items():
        segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
        if not segment_id:
            segment_id = segmentation.AddEmptySegment("", segment_name, list(colors.get(value, (0.5, 0.5, 0.5))))
        segmentation.GetSegment(segment_id).SetColor(*colors.get(value, (0.5, 0.5, 0.5)))
        binary = sitk.Cast(labels == int(value), sitk.sitkUInt8)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            _oriented_image(binary), segmentation_node, segment_id,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return segmentation_node


def segmentation_to_labelmap(segmentation_node, reference_volume_node, segment_id: str | None = None) -> sitk.Image:
    """Segments as a UInt8 label image on the reference volume's grid.

    With ``segment_id``: that segment as a 0/1 mask. Without: every segment, labelled 1..n in segment order.
    """
    import slicer

    segmentation = segmentation_node.GetSegmentation() if segmentation_node is not None else None
    if segmentation is None or segmentation.GetNumberOfSegments() == 0:
        raise InputError("the segmentation has no segments", case=_node_label(segmentation_node))
    if segment_id is not None and segmentation.GetSegment(segment_id) is None:
        raise InputError(f"no segment with id '{segment_id}'", case=_node_label(segmentation_node))
    ids = [segment_id] if segment_id is not None else list(segmentation.GetSegmentIDs())
    if len(ids) > 255:
        raise InputError(f"{len(ids)} segments do not fit a UInt8 label image", case=_node_label(segmentation_node))
    scene = segmentation_node.GetScene()
    colors_before = _node_ids(scene, "vtkMRMLColorTableNode")
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__dpet_export")
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap_node, reference_volume_node):
            raise InputError("could not export the segments to a labelmap", case=_node_label(segmentation_node))
        return sitk.Cast(volume_node_to_sitk(labelmap_node), sitk.sitkUInt8)
    finally:
        # the export gives the labelmap a display node and a new "<segmentation>_ColorTable": remove them too
        displays = [labelmap_node.GetNthDisplayNode(i) for i in range(labelmap_node.GetNumberOfDisplayNodes())]
        new_colors = [d.GetColorNode() for d in displays
                      if d is not None and d.GetColorNodeID() and d.GetColorNodeID() not in colors_before]
        for node in (labelmap_node, *displays, *new_colors):
            if node is not None and node.GetScene() is not None:
                scene.RemoveNode(node)


def dict_to_table_node(rows: list[dict], scene, node=None):
    """A table node with one row per dict; columns in first-seen key order.

    A column whose values are all numbers (or None, stored as NaN) is numeric; any other column holds text.
    """
    import vtk

    columns: dict[str, list] = {}
    for row in rows:
        for key in row:
            columns.setdefault(str(key), [])
    for row in rows:
        for key in columns:
            columns[key].append(row.get(key))
    table = vtk.vtkTable()
    for key, values in columns.items():
        numeric = all(v is None or (isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)))
                      for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(key)
        for value in values:
            if numeric:
                array.InsertNextValue(float("nan") if value is None else float(value))
            else:
                array.InsertNextValue("" if value is None else str(value))
        table.AddColumn(array)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", "Table")
    node.SetAndObserveTable(table)
    return node


#: Bar colour of charts (Slicer's default series colour is black).
BAR_COLOR = (0.2, 0.45, 0.75)


def bar_chart(scene, names: list[str], values: list[float], title: str, node=None):
    """A bar chart (plot chart node -> bar series node -> table node with `name`, `value` columns).

    With ``node`` (a chart made here before) its series and table are updated in place.
    """
    import slicer

    if len(names) != len(values):
        raise InputError(f"bar chart '{title}': {len(names)} names but {len(values)} values")
    series = node.GetPlotSeriesNode() if node is not None else None
    table_node = series.GetTableNode() if series is not None else None
    table_node = dict_to_table_node([{"rank": i + 1, "name": n, "value": float(v)}
                                     for i, (n, v) in enumerate(zip(names, values))], scene, node=table_node)
    table_node.SetName(f"{title} table")
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", title)
    series.SetName(title)
    series.SetAndObserveTableNodeID(table_node.GetID())
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatterBar)  # a plain bar plot ignores the x column
    series.SetLabelColumnName("name")  # the plot view shows it as the bar's tooltip
    series.SetXColumnName("rank")  # bars at 1..n, the rows of the table beside the chart
    series.SetYColumnName("value")
    series.SetColor(*BAR_COLOR)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", title)
        node.AddAndObservePlotSeriesNodeID(series.GetID())
    node.SetName(title)
    node.SetTitle(title)
    node.SetXAxisTitle("rank (names in the table)")
    node.SetYAxisTitle("value")
    node.SetLegendVisibility(False)
    return node


def heatmap_volume(cam_image: sitk.Image, scene, reference, node=None, name: str = "Grad-CAM"):
    """Grad-CAM as a scalar volume on the reference volume's grid, coloured as a heat map.

    A map on another grid is resampled (linear) onto the reference's. Display: window 0..1, values at or below
    ``HEAT_TRANSPARENT_BELOW`` thresholded away (transparent as the foreground layer); a colour legend titled
    Grad-CAM.
    """
    import slicer

    reference_image = volume_node_to_sitk(reference)
    cam = sitk.Cast(cam_image, sitk.sitkFloat32)
    if not same_grid(reference_image, cam):
        cam = sitk.Resample(cam, reference_image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    node = sitk_to_volume_node(cam, scene, name=name, node=node)
    node.CopyOrientation(reference)  # bit-identical geometry, not just equal to rounding
    display = node.GetDisplayNode()
    color_id = next((cid for cid in HEAT_COLOR_NODE_IDS if scene.GetNodeByID(cid) is not None), None)
    if color_id is None:
        raise InputError(f"none of the heat colour tables {HEAT_COLOR_NODE_IDS} is in the scene")
    display.SetAndObserveColorNodeID(color_id)
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetLowerThreshold(HEAT_TRANSPARENT_BELOW)
    display.SetUpperThreshold(max(1.0, float(np.max(sitk.GetArrayViewFromImage(cam)))))
    display.ApplyThresholdOn()
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(node)  # the one made before, if any
    legend.SetTitleText("Grad-CAM")
    legend.SetNumberOfLabels(3)  # 0, 0.5, 1
    legend.SetVisibility(True)
    return node


def place_under_study(scene, reference_node, nodes, folder_name: str | None = None) -> int:
    """Move ``nodes`` into the subject-hierarchy parent of ``reference_node`` (its study), optionally in a folder.

    Returns the subject-hierarchy item id they were placed under.
    """
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)

    def item_of(node) -> int:
        # Slicer adds an item for each data node; a bare scene (slicer-core, batch scripts) may not have one yet.
        return hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)

    parent = hierarchy.GetItemParent(item_of(reference_node))
    if folder_name:
        folder = hierarchy.GetItemChildWithName(parent, folder_name)
        if not folder:
            folder = hierarchy.CreateFolderItem(parent, folder_name)
        parent = folder
    for node in nodes:
        if node is not None:
            hierarchy.SetItemParent(item_of(node), parent)
    return parent


def control_point_lps(markups_node, index: int = 0) -> tuple[float, float, float]:
    """A markups control point (world RAS, so parent transforms are applied) as LPS x, y, z in mm."""
    if markups_node is None or markups_node.GetNumberOfControlPoints() <= index:
        raise InputError(f"no control point {index + 1} to use as the tumour seed", case=_node_label(markups_node))
    ras = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(index, ras)
    return tuple(float(v) for v in _LPS_TO_RAS @ np.asarray(ras))


#: Segment name and colour per label, for the tumour mask and for the subregion (habitat) labels.
TUMOUR_SEGMENTS = ({1: names.TUMOUR_SEGMENT}, {1: (0.95, 0.85, 0.2)})
SUBREGION_SEGMENTS = (dict(names.SUBREGION_SEGMENTS), {1: (0.25, 0.45, 1.0), 2: (1.0, 0.25, 0.2)})
PERITUMOURAL_SEGMENTS = ({1: names.PERITUMOURAL_SEGMENT}, {1: (0.3, 0.85, 0.45)})
#: Which model's SHAP values the bar chart shows, by preference (else the first model that has any).
SHAP_MODEL_PREFERENCE = ("radiomics", "fusion_feature", "fusion_decision")
#: Node-reference roles on the PET volume that remember the output nodes, so a re-run updates them.
OUTPUT_ROLES = ("segmentation", "gradcam", "prediction_table", "metrics_table", "shap_chart")


def _top_shap(shap: dict[str, dict[str, float]], top: int) -> tuple[str, list[str], list[float]] | None:
    models = [m for m in SHAP_MODEL_PREFERENCE if shap.get(m)] + [m for m in shap if shap[m]]
    if not models:
        return None
    model = models[0]
    ranked = sorted(shap[model].items(), key=lambda kv: -abs(kv[1]))[:top]
    return model, [k for k, _ in ranked], [float(v) for _, v in ranked]


#: 2D fill opacity of the subregion segments: the PET and the Grad-CAM stay visible through them.
SUBREGION_FILL_OPACITY = 0.35


def _outline_tumour_fill_subregions(segmentation_node) -> None:
    """In slice views the subregions cover the whole tumour: the Tumour segment is drawn as its outline only and
    the subregions as translucent fills without outlines, so that each is seen (by default every segment is a 50 %
    fill with an outline, and the subregions, drawn after it, hid the Tumour); the peritumoural shell as its
    outlines only, so that the uptake around the tumour stays visible. In 3D the shell is hidden (it would enclose
    the tumour)."""
    display = segmentation_node.GetDisplayNode()
    segmentation = segmentation_node.GetSegmentation()
    for segment_name in PERITUMOURAL_SEGMENTS[0].values():
        segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
        if segment_id:
            display.SetSegmentOpacity2DFill(segment_id, 0.0)
            display.SetSegmentOpacity2DOutline(segment_id, 1.0)
            display.SetSegmentVisibility3D(segment_id, False)
    for segment_name in TUMOUR_SEGMENTS[0].values():
        segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
        if segment_id:
            display.SetSegmentOpacity2DFill(segment_id, 0.0)
            display.SetSegmentOpacity2DOutline(segment_id, 1.0)
    for segment_name in SUBREGION_SEGMENTS[0].values():
        segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
        if segment_id:
            display.SetSegmentOpacity2DFill(segment_id, SUBREGION_FILL_OPACITY)
            display.SetSegmentOpacity2DOutline(segment_id, 0.0)


def show_prediction(result, scene, pet_node, segments: bool = True, gradcam: bool = True, table: bool = True,
                    shap_chart: bool = True, top_features: int = 10) -> dict:
    """Create or update the output nodes of one prediction, next to the PET in the subject hierarchy.

    Returns {role: node} for the roles in ``OUTPUT_ROLES`` that were made. The nodes are remembered as node
    references on ``pet_node`` (role ``DPETResponse.<role>``), so running again updates the same nodes.
    """
    def previous(role):
        return pet_node.GetNodeReference(f"DPETResponse.{role}")

    name = pet_node.GetName()
    out = {}
    if segments and result.mask is not None:
        seg = labelmap_to_segmentation(result.mask, scene, pet_node, *TUMOUR_SEGMENTS,
                                       segmentation_node=previous("segmentation"))
        if result.subregions is not None:
            labelmap_to_segmentation(result.subregions, scene, pet_node, *SUBREGION_SEGMENTS, segmentation_node=seg)
        if result.peritumoural is not None:
            labelmap_to_segmentation(result.peritumoural, scene, pet_node, *PERITUMOURAL_SEGMENTS,
                                     segmentation_node=seg)
        elif stale := seg.GetSegmentation().GetSegmentIdBySegmentName(names.PERITUMOURAL_SEGMENT):
            seg.GetSegmentation().RemoveSegment(stale)  # an earlier prediction's, by a bundle with a shell
        _outline_tumour_fill_subregions(seg)
        seg.SetName(f"{name} tumour and subregions")
        out["segmentation"] = seg
    if gradcam and result.gradcam is not None:
        out["gradcam"] = heatmap_volume(result.gradcam, scene, pet_node, node=previous("gradcam"),
                                        name=f"{name} Grad-CAM")
    if table:
        rows = [{"model": m, "pCR probability": float(p), "threshold": result.thresholds.get(m),
                 "decision": {1: "pCR", 0: "no pCR"}.get(result.decision.get(m), ""),
                 "imputed inputs": ", ".join(result.imputed_inputs.get(m, []))}
                for m, p in result.probabilities.items()]
        out["prediction_table"] = dict_to_table_node(rows, scene, node=previous("prediction_table"))
        out["prediction_table"].SetName(f"{name} pCR prediction")
        metric_rows = [{"metric": k, "value": v} for k, v in result.pet_metrics.items()]
        out["metrics_table"] = dict_to_table_node(metric_rows, scene, node=previous("metrics_table"))
        out["metrics_table"].SetName(f"{name} PET metrics")
    top = _top_shap(result.shap, top_features) if shap_chart else None
    if top is not None:
        model, features, values = top
        out["shap_chart"] = bar_chart(scene, features, values, f"{name} SHAP ({model})", node=previous("shap_chart"))
        out["shap_chart"].SetYAxisTitle("SHAP value (log-odds)")
    for role, node in out.items():
        pet_node.SetNodeReferenceID(f"DPETResponse.{role}", node.GetID())
    placed = list(out.values())
    if "shap_chart" in out:
        series = out["shap_chart"].GetPlotSeriesNode()
        placed += [series, series.GetTableNode()]
    place_under_study(scene, pet_node, placed, folder_name=f"{name} pCR prediction")
    return out


#: The most decimals a clinical number is entered with (fewer where every training value has fewer).
CLINICAL_MAX_DECIMALS = 3


def clinical_schema(bundle) -> dict[str, dict]:
    """The clinical columns of a model bundle as the values a form may offer, from its training cases: a number
    column as ``{"kind": "number", "min", "max", "decimals"}`` (range of the training values; None and None where no
    training case had one; the decimals every training value fits in, at most `CLINICAL_MAX_DECIMALS`), any
    other column as ``{"kind": "category", "values": [...]}`` (the training categories as text, sorted). In the
    bundle's column order; a bundle that harmonises by site adds its site column last (its training sites), which
    `predict` takes from the clinical values.

    Reads bundle.json and the training table StudyModel.save wrote beside it (no estimator, no torch); the bundle's
    checksums are verified when it is loaded to predict.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(bundle)
    if not (path / "bundle.json").is_file():
        raise BundleError(f"{path}: not a model bundle (no bundle.json)")
    try:
        manifest = json.loads((path / "bundle.json").read_text(encoding="utf-8"))
        columns, background = manifest["clinical_columns"], manifest["background"]
        numeric = load_file(path / manifest["tensors"]["background"])["values"]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise BundleError(f"{path}: cannot read its clinical columns ({type(err).__name__}: {err})") from None
    schema = {}
    for column in columns:
        if column in background["numeric_columns"]:
            values = numeric[:, background["numeric_columns"].index(column)]
            values = values[np.isfinite(values)]
            decimals = next((d for d in range(CLINICAL_MAX_DECIMALS) if np.allclose(values, values.round(d),
                                                                                    rtol=0, atol=1e-9)),
                            CLINICAL_MAX_DECIMALS)
            schema[column] = {"kind": "number", "min": float(values.min()) if len(values) else None,
                              "max": float(values.max()) if len(values) else None, "decimals": decimals}
        elif column in background["other"]:
            values = {str(v) for v in background["other"][column] if v is not None}
            schema[column] = {"kind": "category", "values": sorted(values)}
        else:
            raise BundleError(f"{path}: clinical column {column!r} is not in its training table")
    harmonisation = manifest.get("harmonisation") or {}
    if harmonisation.get("site_column"):
        schema[harmonisation["site_column"]] = {"kind": "category", "values": list(harmonisation["sites"])}
    return schema
