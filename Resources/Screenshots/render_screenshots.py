r"""Render the extension's screenshots off-screen with Slicer's own rendering (slicer-core), from a prediction's nodes.

Runs one prediction through the library, builds its output nodes with ``DPETResponseLib.scene.show_prediction`` on a
slicer-core scene and shows them as the module does (``DPETResponseLogic.showResults``: PET as the background layer,
Grad-CAM as the foreground at 50 % opacity), then renders:

- ``DPETResponse-1.png``: Slicer's Red (axial), Yellow (sagittal) and Green (coronal) slice views through the tumour's
  SUVmax voxel, with Slicer's default orientation presets (patient right on screen left). Per view a
  ``vtkMRMLSliceLogic`` reslices and blends the layers (PET by its display node's auto window/level and grey table,
  Grad-CAM by its colour table and threshold, the composite node's opacity), and the displayable managers that
  Slicer's slice views load (``qMRMLSliceView``'s and the Segmentations and Colors modules') draw the rest:
  ``vtkMRMLSegmentationsDisplayableManager2D`` the segments (the display node's defaults: 50 % fill and outline, in
  segment order, so later segments cover earlier ones), ``vtkMRMLRulerDisplayableManager`` the ruler,
  ``vtkMRMLOrientationMarkerDisplayableManager`` the axes marker, ``vtkMRMLColorLegendDisplayableManager`` the
  Grad-CAM colour legend. The blended slice image is the renderer's first prop, a ``vtkImageMapper`` actor (as CTK's
  vtkLightBoxRendererManager shows it in Slicer, and as trame-slicer drives slice views from Python); each view is an
  off-screen ``vtkRenderWindow`` read back with ``vtkWindowToImageFilter``.
  Set here, not by the module: the zoom to the tumour; the ruler and axes marker (view options a user switches
  on); the size of the module's Grad-CAM colour legend (0.08 x 0.3 of the view, not its default 0.15 x 0.5); the
  lower-left corner text as Slicer's Data Probe writes it (``F:``/``B:`` layers, foreground opacity). Slicer's Qt
  view-controller bars are not drawn: a strip with each view's label, colour and slice offset stands in their place.
  slicer-core ships none of Slicer's colour files, so the Grad-CAM map gets the table it gets in Slicer
  (ColdToHotRainbow) only with ``--color-files``; without it, the first heat table slicer-core has (PET-Heat).
- ``DPETResponse-2.png``: the SHAP chart, its table, the prediction table and the PET-metrics table. The module's
  layout shows the chart in the plot view and the prediction table in the table view; the other two are the table
  nodes a user opens in a table view. Slicer's plot view (``qMRMLPlotView``) and table view (``qMRMLTableView``) are Qt
  widgets, not in slicer-core. The chart is VTK's ``vtkChartXY``, the chart qMRMLPlotView hosts, filled from the plot
  chart, series and table nodes by that widget's rules (a ``vtkPlotBar`` per bar series on an indexed x axis, the
  series colour, the chart node's titles, font sizes and grid, the widget's background colour): so, as in Slicer, the
  bars are black, numbered from 0, and the feature names are not on the axis (qMRMLPlotView shows them as tooltips
  only). The tables are drawn with VTK's 2D context by the rules of ``qMRMLTableModel``/``qMRMLTableView`` (column
  headers A, B, ...; the column names as a bold first row; rows numbered from 1; each cell as ``vtkVariant::ToString``
  writes it; columns sized to their contents, at least 60 px); fonts, grid and header colours only approximate Qt's.
  Grey strips naming each view's node stand in for the views' Qt controller bars.

Rendering needs an OpenGL context: an X display or, without one, EGL (Debian: libegl1, libegl-mesa0,
libgl1-mesa-dri; Mesa renders in software), which is chosen here when ``DISPLAY`` is unset; no Xvfb is needed.

Usage (from the checkout, slicer-core installed)::

    .venv/bin/python Resources/Screenshots/render_screenshots.py --bundle BUNDLE --image PET.nii.gz --mask MASK.nii.gz \
        [--color-files SLICER_COLORFILES_FOLDER]

The committed PNGs came from the commands below, /tmp/slicer-colors holding ColdToHotRainbow.txt as Slicer's source has
it (Base/Logic/Resources/ColorFiles in the Slicer/Slicer repository; a Slicer installation's
share/Slicer-5.x/ColorFiles folder works the same); about 20 s for the script, 5 min for the training, on 2 cores::

    dpet-response synth /tmp/shots/cohort --n 40 --seed 0
    dpet-response train /tmp/shots/cohort/manifest.csv --out /tmp/shots/bundle --fast
    python Resources/Screenshots/render_screenshots.py --bundle /tmp/shots/bundle \
        --image /tmp/shots/cohort/images/DPET003_pet.nii.gz --mask /tmp/shots/cohort/masks/DPET003_mask.nii.gz \
        --clinical age=29 cT=2 cN=1 grade=2 ki67=53 regimen=TCHP hr_status=positive --color-files /tmp/slicer-colors
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

#: Slice views as in Slicer's layouts: (layout name, orientation, label, colour).
SLICE_VIEWS = (("Red", "Axial", "R", "#F34A33"), ("Yellow", "Sagittal", "Y", "#EDD54C"),
               ("Green", "Coronal", "G", "#6EB04B"))
#: The displayable managers of a Slicer slice view: qMRMLSliceView's own, then the Segmentations and Colors modules'.
SLICE_DISPLAYABLE_MANAGERS = (
    "vtkMRMLVolumeGlyphSliceDisplayableManager", "vtkMRMLModelSliceDisplayableManager",
    "vtkMRMLCrosshairDisplayableManager", "vtkMRMLOrientationMarkerDisplayableManager",
    "vtkMRMLRulerDisplayableManager", "vtkMRMLScalarBarDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLColorLegendDisplayableManager",
)
#: Foreground opacity of the Grad-CAM layer, as DPETResponseLogic.showResults sets it.
GRADCAM_OPACITY = 0.5
#: Colour legend width and height, fractions of the view (the node's default 0.15, 0.5 fills a third of the view).
LEGEND_SIZE = (0.08, 0.3)
VIEW_SIZE = 460  # px, each slice view (square)
STRIP_HEIGHT = 22  # px, the label strip above each view
#: Field of view around the tumour: its extent plus this margin on each side, at least MIN_HALF_FOV_MM from SUVmax.
MARGIN_MM = 15.0
MIN_HALF_FOV_MM = 25.0


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5))


def application_logic(scene):
    """The application logic Slicer's views expect (slice logics, crosshair, orientation presets) on ``scene``."""
    import slicer
    import vtk

    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.SetSliceLogics(vtk.vtkCollection())
    app.SetViewLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance().SetMRMLApplicationLogic(app)
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)  # patient right is screen left
    return app


def load_file_colour_table(scene, path: Path):
    """A colour-table file as Slicer's Colors module loads its default tables (same singleton tag, so the same ID)."""
    import slicer

    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToFile()
    node.SaveWithSceneOff()
    node.HideFromEditorsOn()
    node.SetScene(scene)
    storage = slicer.vtkMRMLColorTableStorageNode()
    storage.SaveWithSceneOff()
    scene.AddNode(storage)
    node.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(path))
    node.SetName(path.stem)
    if not storage.ReadData(node):
        raise SystemExit(f"could not read the colour table {path}")
    node.SetSingletonTag(slicer.vtkMRMLColorLogic.GetFileColorNodeSingletonTag(str(path)))
    return scene.AddNode(node)


def slicer_heat_tables(scene, color_files: Path | None) -> None:
    """Load the file colour tables that the module prefers for Grad-CAM (``scene.HEAT_COLOR_NODE_IDS``) from Slicer's
    ColorFiles folder: slicer-core ships no colour files, the Slicer application loads them at start-up."""
    from DPETResponseLib import scene as S

    if color_files is None:
        return
    prefix = "vtkMRMLColorTableNodeFile"
    for node_id in S.HEAT_COLOR_NODE_IDS:
        if node_id.startswith(prefix):
            path = color_files / node_id.removeprefix(prefix)
            if not path.is_file():
                raise SystemExit(f"{path} not found: --color-files wants Slicer's ColorFiles folder")
            load_file_colour_table(scene, path)


def predict_into_scene(bundle, image_path, mask_path, clinical: dict | None = None, color_files: Path | None = None):
    """Predict with the library, put the PET and every output node into a new scene.

    Returns (application logic, PET node, {role: node}).
    """
    from DPETResponseLib import scene as S
    from DPETResponseLib.io import read_pet
    from DPETResponseLib.protocol import predict_files

    result = predict_files(bundle, image_path, mask=mask_path, clinical=clinical)
    scene = S.standalone_scene()
    app = application_logic(scene)
    slicer_heat_tables(scene, color_files)
    pet_node = S.sitk_to_volume_node(read_pet(image_path, case=result.case_id), scene, name=result.case_id)
    nodes = S.show_prediction(result, scene, pet_node)
    return app, pet_node, nodes


class SliceView:
    """One off-screen Slicer slice view: a slice logic, the slice displayable managers and a render window."""

    def __init__(self, app, layout_name: str, orientation: str, label: str, colour: str, size: tuple[int, int]):
        import slicer
        import vtk

        scene = app.GetMRMLScene()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*size)
        self.renderer = vtk.vtkRenderer()
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        self.window.AddRenderer(self.renderer)
        # the blended slice image (8-bit RGBA from the slice logic) as the renderer's first prop, before any manager
        # adds its actors: 2D actors are drawn in the order they were added, so the managers' translucent segment
        # fills blend over the image (added after them, it would be drawn over them)
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255)
        self.mapper.SetColorLevel(127.5)
        self.actor = vtk.vtkActor2D()
        self.actor.SetMapper(self.mapper)
        self.actor.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.actor)
        self.interactor = vtk.vtkRenderWindowInteractor()  # the managers need one (they crash without it)
        self.interactor.SetRenderWindow(self.window)
        self.interactor.Initialize()
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        for name in SLICE_DISPLAYABLE_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.Initialize(factory, self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app)
        self.logic.SetMRMLScene(scene)
        app.GetSliceLogics().AddItem(self.logic)
        self.node = self.logic.AddSliceNode(layout_name)
        self.node.SetOrientation(orientation)
        self.node.SetLayoutLabel(label)
        self.node.SetLayoutColor(*_rgb(colour))
        self.managers.SetMRMLDisplayableNode(self.node)
        self.logic.ResizeSliceNode(*size)

    def show(self, background, foreground, foreground_opacity: float) -> None:
        """Set the layers as ``slicer.util.setSliceViewerLayers`` does."""
        composite = self.logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(background.GetID() if background is not None else None)
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(foreground_opacity)

    def centre_on(self, ras, half_fov_mm: float, bounds) -> None:
        """Slice through ``ras``, a square field of view around it, shifted to stay inside RAS ``bounds`` if it fits."""
        centre = []
        for value, low, high in zip(ras, bounds[0::2], bounds[1::2]):
            if high - low <= 2 * half_fov_mm:
                centre.append((low + high) / 2)
            else:
                centre.append(min(max(value, low + half_fov_mm), high - half_fov_mm))
        self.node.JumpSliceByCentering(*centre)
        self.node.JumpSliceByOffsetting(*ras)  # the slice plane through ras, the view's centre kept
        self.node.SetFieldOfView(2 * half_fov_mm, 2 * half_fov_mm, self.node.GetFieldOfView()[2])

    def corner_text(self, text: str):
        """Lower-left corner text in the font Slicer's Data Probe uses for its slice annotations (Times, 14)."""
        import vtk

        annotation = vtk.vtkCornerAnnotation()
        annotation.SetMaximumFontSize(14)
        annotation.SetMinimumFontSize(14)
        annotation.SetNonlinearFontScaleFactor(1)
        annotation.GetTextProperty().SetFontFamilyToTimes()
        annotation.SetText(0, text)
        self.renderer.AddViewProp(annotation)
        self.annotation = annotation

    def strip(self) -> np.ndarray:
        """The label strip: view label, orientation and slice offset as Slicer's controller bar writes them."""
        matrix = self.node.GetSliceToRAS()
        normal = [matrix.GetElement(row, 2) for row in range(3)]
        text = (f"{self.node.GetLayoutLabel()}   {self.node.GetOrientation()}   "
                f"{self.node.GetDirectionLabel(normal, True)}: {self.logic.GetSliceOffset():.1f} mm")
        return label_strip(text, self.window.GetSize()[0], self.node.GetLayoutColor())

    def image(self) -> np.ndarray:
        """The rendered view as an (rows, columns, 3) uint8 array, top row first."""
        # the slice logic's output changes with the layers: connect it now (trame-slicer follows its Modified events)
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        self.window.Render()
        return _read_window(self.window)


def _read_window(window) -> np.ndarray:
    import vtk
    from vtkmodules.util import numpy_support

    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.ReadFrontBufferOff()
    grab.Update()
    image = grab.GetOutput()
    columns, rows, _ = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, 3)
    return array[::-1].copy()


def label_strip(text: str, width: int, rgb, height: int = STRIP_HEIGHT) -> np.ndarray:
    """A strip in the view's colour with its label (stands in for Slicer's Qt view-controller bar)."""
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(width, height)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(*rgb)
    window.AddRenderer(renderer)
    actor = vtk.vtkTextActor()
    actor.SetInput(text)
    prop = actor.GetTextProperty()
    prop.SetFontFamilyToArial()
    prop.SetFontSize(14)
    prop.SetColor(0, 0, 0)
    prop.SetVerticalJustificationToCentered()
    actor.SetPosition(6, height / 2)
    renderer.AddViewProp(actor)
    window.Render()
    return _read_window(window)


def suvmax_ras(pet_node, segmentation_node) -> tuple[np.ndarray, float]:
    """RAS of the Tumour segment's SUVmax voxel centre and the half field of view around it (mm)."""
    import SimpleITK as sitk

    from DPETResponseLib import scene as S
    from DPETResponseLib.core import names

    pet = S.volume_node_to_sitk(pet_node)
    tumour_id = segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(names.TUMOUR_SEGMENT)
    tumour = sitk.GetArrayFromImage(S.segmentation_to_labelmap(segmentation_node, pet_node, segment_id=tumour_id)) > 0
    array = sitk.GetArrayViewFromImage(pet)
    k, j, i = np.unravel_index(np.argmax(np.where(tumour, array, -np.inf)), array.shape)
    index_to_lps = np.asarray(pet.GetDirection()).reshape(3, 3) * np.asarray(pet.GetSpacing())
    lps = np.asarray(pet.GetOrigin()) + index_to_lps @ np.array([i, j, k], dtype=float)
    points = np.asarray(pet.GetOrigin()) + np.argwhere(tumour)[:, ::-1] @ index_to_lps.T
    half = max(MIN_HALF_FOV_MM, float(np.abs(points - lps).max()) + MARGIN_MM)
    half = min(half, min(np.asarray(pet.GetSize()) * pet.GetSpacing()) / 2)  # no wider than the image
    return lps * np.array([-1.0, -1.0, 1.0]), half


def fit_colour_legend(volume_node) -> None:
    """The colour legend the module made for the volume, sized for the screenshot. The views' legend manager makes
    its actor when a legend node is added, and the views are made after the module's nodes: the node is added
    again."""
    import slicer

    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(volume_node)
    scene = legend.GetScene()
    scene.RemoveNode(legend)
    scene.AddNode(legend)
    volume_node.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetSize(*LEGEND_SIZE)


def render_slice_views(app, pet_node, nodes: dict, path: Path) -> None:
    """DPETResponse-1.png: Red, Yellow and Green slice views through SUVmax, layers as the module sets them."""
    gradcam = nodes.get("gradcam")
    centre, half = suvmax_ras(pet_node, nodes["segmentation"])
    bounds = [0.0] * 6
    pet_node.GetRASBounds(bounds)
    views = []
    for layout_name, orientation, label, colour in SLICE_VIEWS:
        view = SliceView(app, layout_name, orientation, label, colour, (VIEW_SIZE, VIEW_SIZE))
        view.node.SetRulerType(view.node.RulerTypeThin)
        view.node.SetOrientationMarkerType(view.node.OrientationMarkerTypeAxes)
        view.node.SetOrientationMarkerSize(view.node.OrientationMarkerSizeSmall)
        view.show(pet_node, gradcam, GRADCAM_OPACITY)
        view.centre_on(centre, half, bounds)
        lines = []
        if gradcam is not None:
            lines.append(f"F: {gradcam.GetName()} ({GRADCAM_OPACITY * 100:.0f}%)")
        lines.append(f"B: {pet_node.GetName()}")
        view.corner_text("\n".join(lines))
        views.append(view)
    if gradcam is not None:  # after the views: the legend's manager makes its actor when the legend node is added
        fit_colour_legend(gradcam)
    panels = [np.vstack([view.strip(), view.image()]) for view in views]
    gap = np.full((panels[0].shape[0], 3, 3), 90, dtype=np.uint8)
    write_png(np.hstack([panels[0], gap, panels[1], gap, panels[2]]), path)


# --- DPETResponse-2.png: plot view and table views -------------------------------------------------------------------


def chart_from_nodes(chart_node):
    """A vtkChartXY filled from a plot chart node by qMRMLPlotView's rules (bar and line series, titles, axes)."""
    import slicer
    import vtk

    chart = vtk.vtkChartXY()
    chart.GetBackgroundBrush().SetColor(255, 253, 246, 255)  # qMRMLPlotView's background
    for n in range(chart_node.GetNumberOfPlotSeriesNodes()):
        series = chart_node.GetNthPlotSeriesNode(n)
        table = series.GetTableNode().GetTable()
        y_name = series.GetYColumnName()
        is_bar = series.GetPlotType() in (slicer.vtkMRMLPlotSeriesNode.PlotTypeBar,
                                          slicer.vtkMRMLPlotSeriesNode.PlotTypeScatterBar)
        plot = vtk.vtkPlotBar() if is_bar else vtk.vtkPlotLine()
        plot.SetWidth(series.GetLineWidth())
        plot.SetColorF(*series.GetColor())
        plot.SetOpacity(series.GetOpacity())
        plot.GetPen().SetOpacityF(series.GetOpacity())
        if is_bar:
            plot.GetPen().SetLineType(vtk.vtkPen.SOLID_LINE)
        labels = table.GetColumnByName(series.GetLabelColumnName()) if series.GetLabelColumnName() else None
        plot.SetIndexedLabels(labels if isinstance(labels, vtk.vtkStringArray) else None)
        if series.IsXColumnRequired():
            plot.SetUseIndexForXSeries(False)
            plot.SetInputData(table, series.GetXColumnName(), y_name)
        else:
            plot.SetUseIndexForXSeries(True)
            plot.SetInputData(table, y_name, y_name)
        plot.SetLabel(series.GetName() or y_name)
        chart.AddPlot(plot)
    chart.SetTitle(chart_node.GetTitle() if chart_node.GetTitleVisibility() else "")
    font = chart.GetTitleProperties().GetFontFamilyFromString(chart_node.GetFontType() or "Arial")
    chart.GetTitleProperties().SetFontFamily(font)
    chart.GetTitleProperties().SetFontSize(chart_node.GetTitleFontSize())
    chart.SetShowLegend(chart_node.GetLegendVisibility())
    for axis_id in (vtk.vtkAxis.BOTTOM, vtk.vtkAxis.TOP, vtk.vtkAxis.LEFT, vtk.vtkAxis.RIGHT):
        axis = chart.GetAxis(axis_id)
        is_x = axis_id in (vtk.vtkAxis.BOTTOM, vtk.vtkAxis.TOP)
        visible = chart_node.GetXAxisTitleVisibility() if is_x else chart_node.GetYAxisTitleVisibility()
        title = chart_node.GetXAxisTitle() if is_x else chart_node.GetYAxisTitle()
        axis.SetTitle(title if visible and title else "")
        axis.SetBehavior(vtk.vtkAxis.AUTO)
        axis.SetGridVisible(chart_node.GetGridVisibility())
        for prop, size in ((axis.GetTitleProperties(), chart_node.GetAxisTitleFontSize()),
                           (axis.GetLabelProperties(), chart_node.GetAxisLabelFontSize())):
            prop.SetFontFamily(font)
            prop.SetFontSize(size)
            prop.SetBold(False)
    return chart


def table_cells(table_node) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a table node as qMRMLTableModel shows them with the node's default settings.

    Column headers A, B, ...; the column names as the first row; each value as vtkVariant::ToString writes it.
    """
    table = table_node.GetTable()
    n_columns = table.GetNumberOfColumns()
    headers = []
    for c in range(n_columns):
        name, index = "", c
        while index >= 0:
            name = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[index % 26] + name
            index = index // 26 - 1
        headers.append(name)
    rows = [[table.GetColumnName(c) for c in range(n_columns)]]
    rows += [[table.GetValue(r, c).ToString() for c in range(n_columns)] for r in range(table.GetNumberOfRows())]
    return headers, rows


class TableItem:
    """A vtkPythonItem painter: a table node in the layout of Slicer's table view (see the module docstring)."""

    ROW_HEIGHT = 24
    FONT_SIZE = 13
    MIN_COLUMN_WIDTH = 60
    PADDING = 8

    def __init__(self, table_node, x: float, top: float, pane_width: float, pane_height: float):
        self.headers, self.rows = table_cells(table_node)
        self.x, self.top, self.pane_width, self.pane_height = x, top, pane_width, pane_height

    def Initialize(self, vtk_self):
        return True

    def _text(self, context, bold=False, grey=False):
        prop = context.GetTextProp()
        prop.SetFontFamilyToArial()
        prop.SetFontSize(self.FONT_SIZE)
        prop.SetBold(bold)
        prop.SetColor(*((0.35, 0.35, 0.35) if grey else (0.0, 0.0, 0.0)))
        prop.SetVerticalJustificationToCentered()
        prop.SetJustificationToLeft()

    def _width(self, context, text, bold=False):
        self._text(context, bold)
        bounds = [0.0, 0.0, 0.0, 0.0]
        context.ComputeStringBounds(text, bounds)
        return bounds[2]

    def Paint(self, vtk_self, context):
        row_labels = [str(n + 1) for n in range(len(self.rows))]
        label_width = max(30, max(self._width(context, t) for t in row_labels) + 2 * self.PADDING)
        widths = [max(self.MIN_COLUMN_WIDTH, self._width(context, h) + 2 * self.PADDING,
                      *(self._width(context, row[c], bold=(r == 0)) + 2 * self.PADDING
                        for r, row in enumerate(self.rows)))
                  for c, h in enumerate(self.headers)]
        h = self.ROW_HEIGHT
        lefts = np.concatenate([[self.x + label_width], self.x + label_width + np.cumsum(widths)])
        total_width = lefts[-1] - self.x
        n_lines = len(self.rows) + 1
        bottom = self.top - n_lines * h
        pen, brush = context.GetPen(), context.GetBrush()
        pen.SetColor(255, 255, 255)
        brush.SetColor(255, 255, 255)  # the view's empty area
        context.DrawRect(self.x, self.top - self.pane_height, self.pane_width, self.pane_height)
        pen.SetColor(205, 205, 205)
        brush.SetColor(239, 239, 239)  # header row and row-number column
        context.DrawRect(self.x, self.top - h, total_width, h)
        context.DrawRect(self.x, bottom, label_width, n_lines * h)
        for line in range(n_lines + 1):
            context.DrawLine(self.x, bottom + line * h, self.x + total_width, bottom + line * h)
        for left in [self.x, *lefts]:
            context.DrawLine(left, bottom, left, self.top)
        for c, header in enumerate(self.headers):
            self._text(context, grey=True)
            context.GetTextProp().SetJustificationToCentered()
            context.DrawString((lefts[c] + lefts[c + 1]) / 2, self.top - h / 2, header)
        for r, row in enumerate(self.rows):
            y = self.top - (r + 1.5) * h
            self._text(context, grey=True)
            context.GetTextProp().SetJustificationToCentered()
            context.DrawString(self.x + label_width / 2, y, row_labels[r])
            for c, cell in enumerate(row):
                self._text(context, bold=(r == 0))
                context.DrawString(lefts[c] + self.PADDING, y, cell)
        return True


class StripItem:
    """A vtkPythonItem painter: a grey strip naming what a view shows (stands in for Slicer's Qt controller bar)."""

    def __init__(self, text: str, x: float, y: float, width: float, height: float = STRIP_HEIGHT):
        self.text, self.x, self.y, self.width, self.height = text, x, y, width, height

    def Initialize(self, vtk_self):
        return True

    def Paint(self, vtk_self, context):
        context.GetPen().SetColor(200, 200, 200)
        context.GetBrush().SetColor(225, 225, 225)
        context.DrawRect(self.x, self.y, self.width, self.height)
        prop = context.GetTextProp()
        prop.SetFontFamilyToArial()
        prop.SetFontSize(13)
        prop.SetBold(False)
        prop.SetColor(0, 0, 0)
        prop.SetJustificationToLeft()
        prop.SetVerticalJustificationToCentered()
        context.DrawString(self.x + 6, self.y + self.height / 2, self.text)
        return True


def render_plot_and_tables(nodes: dict, path: Path) -> None:
    """DPETResponse-2.png: the SHAP plot view beside its table, the prediction table beside the PET-metrics table."""
    import vtk
    from vtkmodules.vtkPythonContext2D import vtkPythonItem

    chart_node = nodes["shap_chart"]
    shap_table = chart_node.GetPlotSeriesNode().GetTableNode()
    width, left_width, gap, chart_height = 1440, 820, 10, 400
    right_width = width - left_width - 3 * gap

    def lines(table_node):
        return table_node.GetTable().GetNumberOfRows() + 2  # header, names row, values

    top_height = max(chart_height, lines(shap_table) * TableItem.ROW_HEIGHT)
    bottom_height = max(lines(nodes["prediction_table"]), lines(nodes["metrics_table"])) * TableItem.ROW_HEIGHT + 2
    height = 3 * gap + 2 * STRIP_HEIGHT + top_height + bottom_height
    view = vtk.vtkContextView()
    view.GetRenderWindow().SetOffScreenRendering(1)
    view.GetRenderWindow().SetSize(width, height)
    view.GetRenderer().SetBackground(0.35, 0.35, 0.35)  # the layout's splitters
    keep = []  # the painters must outlive the render

    def add(painter):
        item = vtkPythonItem()
        item.SetPythonObject(painter)
        view.GetScene().AddItem(item)
        keep.append((item, painter))

    top = height - gap
    add(StripItem(f"P   {chart_node.GetName()}", gap, top - STRIP_HEIGHT, left_width))
    chart = chart_from_nodes(chart_node)
    chart.SetAutoSize(False)
    chart.SetSize(vtk.vtkRectf(gap, top - STRIP_HEIGHT - top_height, left_width, top_height))
    view.GetScene().AddItem(chart)
    right = 2 * gap + left_width
    add(StripItem(f"T   {shap_table.GetName()}", right, top - STRIP_HEIGHT, right_width))
    add(TableItem(shap_table, right, top - STRIP_HEIGHT, right_width, top_height))
    top -= STRIP_HEIGHT + top_height + gap
    for table_node, x, pane_width in ((nodes["prediction_table"], gap, left_width),
                                      (nodes["metrics_table"], right, right_width)):
        add(StripItem(f"T   {table_node.GetName()}", x, top - STRIP_HEIGHT, pane_width))
        add(TableItem(table_node, x, top - STRIP_HEIGHT, pane_width, bottom_height))
    view.GetRenderWindow().Render()
    write_png(_read_window(view.GetRenderWindow()), path)


def write_png(rgb: np.ndarray, path: Path) -> None:
    """Write an (rows, columns, 3) uint8 array as PNG (temporary name, then renamed)."""
    import vtk
    from vtkmodules.util import numpy_support

    rows, columns, _ = rgb.shape
    image = vtk.vtkImageData()
    image.SetDimensions(columns, rows, 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3),
                                                               deep=True))
    tmp = path.with_name(f".{path.name}.tmp.png")
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(tmp))
    writer.SetInputData(image)
    writer.Write()
    os.replace(tmp, path)


def _clinical_pair(item: str) -> tuple[str, object]:
    name, sep, value = item.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    try:
        return name, float(value)
    except ValueError:
        return name, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="model bundle folder (dpet-response train --out)")
    parser.add_argument("--image", required=True, help="PET image in SUV (NIfTI/NRRD)")
    parser.add_argument("--mask", required=True, help="tumour mask on the PET's grid")
    parser.add_argument("--clinical", nargs="*", default=[], type=_clinical_pair, metavar="NAME=VALUE",
                        help="the patient's clinical values by manifest column (as `dpet-response predict`)")
    parser.add_argument("--color-files", type=Path,
                        help="Slicer's ColorFiles folder (share/Slicer-5.x/ColorFiles of an installation, or "
                             "Base/Logic/Resources/ColorFiles of Slicer's source), so that Grad-CAM gets the colour "
                             "table it gets in Slicer; without it slicer-core's built-in tables are all there is")
    parser.add_argument("--out-dir", default=Path(__file__).resolve().parent, type=Path,
                        help="where the PNGs go (default: Resources/Screenshots)")
    args = parser.parse_args(argv)

    app, pet_node, nodes = predict_into_scene(args.bundle, args.image, args.mask, dict(args.clinical),
                                              args.color_files)
    if "gradcam" in nodes:
        print(f"Grad-CAM colour table: {nodes['gradcam'].GetDisplayNode().GetColorNode().GetName()}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    render_slice_views(app, pet_node, nodes, args.out_dir / "DPETResponse-1.png")
    render_plot_and_tables(nodes, args.out_dir / "DPETResponse-2.png")
    print(f"wrote {args.out_dir / 'DPETResponse-1.png'} and {args.out_dir / 'DPETResponse-2.png'}")


if __name__ == "__main__":
    main()
