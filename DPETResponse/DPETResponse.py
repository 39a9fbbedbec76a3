"""3D Slicer module: pCR prediction from a baseline breast PET with a DPETResponse model bundle.

Thin by design: the prediction runs in a separate process (`PythonSlicer -m DPETResponseLib.cli predict`), and the
scene work is DPETResponseLib.scene (tested outside Slicer with slicer-core). Heavy imports live inside methods.
Needs 3D Slicer 5.10 or later (Python 3.12): on an older Slicer, loading this file stops with one message saying so.
"""

from __future__ import annotations  # annotations stay text, so an older Slicer's Python gets as far as the check

import contextlib
import csv
import importlib.metadata
import importlib.util
import json
import logging
import os
import pathlib
import re
import shutil
import sys
import tempfile

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: The oldest 3D Slicer this module runs in (its Python is 3.12; Slicer 5.8 has 3.9).
MINIMUM_SLICER = "5.10"
if (slicer.app.majorVersion, slicer.app.minorVersion) < tuple(map(int, MINIMUM_SLICER.split("."))):
    raise ImportError(
        f"D-PET Response needs 3D Slicer {MINIMUM_SLICER} or later (Python 3.12); this is Slicer "
        f"{slicer.app.majorVersion}.{slicer.app.minorVersion} with Python {sys.version.split()[0]}. "
        "Install a newer 3D Slicer.")

#: pip requirements installed on first use (same versions as pyproject.toml). numpy and SimpleITK come with Slicer,
#: torch with the PyTorch extension; radiomics and shap are installed apart (RADIOMICS_REQUIREMENT, installShap).
#: xgboost-cpu has no macOS wheel; there the plain xgboost wheel is the CPU build (elsewhere it is a CUDA build that
#: pulls NVIDIA NCCL on Linux).
PIP_REQUIREMENTS = [
    "scipy>=1.11",
    "pandas>=2.1",
    "pydicom>=3.0",
    "highdicom>=0.26",
    "nibabel>=5.2",
    "PyWavelets>=1.4",
    "PyYAML>=6",
    "scikit-learn>=1.4",
    'xgboost-cpu>=2.0; sys_platform != "darwin"',
    'xgboost>=2.0; sys_platform == "darwin"',
    "monai>=1.4",
    "einops>=0.7",
    "safetensors>=0.4",
    "skops>=0.10",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "dask[distributed]>=2024.1",
    "psutil>=5.9",
]
#: Shipped with Slicer: checked, never installed here.
SLICER_REQUIREMENTS = ["numpy>=1.26", "SimpleITK>=2.3"]
#: Provided by the extensions this one depends on (EXTENSION_DEPENDS): package -> extension.
EXTENSION_REQUIREMENTS = {"torch": "PyTorch"}
#: pyradiomics, installed only where no `radiomics` can be imported: SlicerRadiomics' copy is used where it is
#: installed (not a dependency: it does not exist for macOS), since a bundle checks its engine by recomputing its
#: probe features before every prediction. No pyradiomics wheel exists for Python 3.12, so pip builds this sdist.
RADIOMICS_REQUIREMENT = "pyradiomics-bhklab==3.1.4"
#: What to install when that build fails, per sys.platform.
COMPILER_HINTS = {"darwin": "the Xcode Command Line Tools (run `xcode-select --install` in a terminal)",
                  "win32": "Microsoft's Build Tools for Visual Studio (C++ build tools), or the SlicerRadiomics "
                           "extension", "linux": "a C compiler (e.g. gcc), or the SlicerRadiomics extension"}
#: The oldest torch the PyTorch extension may install or leave in place: that of MONAI 1.5, the oldest MONAI that
#: takes numpy 2 (MONAI 1.4 needs numpy < 2; Slicer 5.10 ships numpy 2.0), which pip picks while torch < 2.8.
TORCH_REQUIREMENT = "torch>=2.4.1"
#: shap, installed with --no-deps: its dependencies without the PyPI `slicer` package, which would shadow Slicer's.
SHAP_REQUIREMENT = "shap>=0.46"
SHAP_DEPENDENCIES = ["numba", "cloudpickle", "packaging>20.9", "typing-extensions"]
#: The PyPI `slicer` package that shap imports, installed into a private folder passed as DPET_SHAP_SLICER_DIR.
SHAP_SLICER_PACKAGE = "slicer==0.0.8"
#: Size of the synthetic cohort behind the sample data case (and the self-test's bundle).
SYNTHETIC_CASES = 40
#: What a clinical field shows, and the prediction does, for a value not known.
CLINICAL_UNKNOWN = "unknown"
CLINICAL_HELP = ("A value left unknown is imputed from the training cases (their median, or most frequent "
                 "category); the results table names each model that used one under 'imputed inputs'.")
#: The body mask's segment: the one used when none is chosen, and the one processFiles makes (name, colour).
BODY_SEGMENT = "Body"
BODY_SEGMENT_COLOR = (0.85, 0.7, 0.6)


#
# Module
#


class DPETResponse(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "D-PET Response"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["DPETResponse developers"]
        self.parent.helpText = """
Predicts pathological complete response (pCR) to neoadjuvant chemotherapy from a baseline breast PET, the way
the D-PET study did: radiomics of the whole tumour and of its low- and high-uptake subregions, a 3D CNN, an
intratumoural heterogeneity score, clinical data, and their fusion.<br>
<b>Inputs:</b> a PET volume in SUV (or a DICOM PET to convert), the tumour as a segmentation or one seed point,
a model bundle folder made by <code>dpet-response train</code>, and the patient's clinical values that the bundle's
models take (a value left unknown is imputed from the training cases; the table names the models that used one).
A bundle trained with body masks also needs the body or breast segment (Body mask), which keeps its peritumoural
shell inside the body.<br>
<b>Outputs</b> (under the PET's study): segments Tumour / Low uptake / High uptake / Peritumoural shell; the
Grad-CAM heat map over the PET; a table of the pCR probability, threshold and decision of every model, and the
PET metrics (SUVmax, SUVmean, SUVpeak, MTV, TLG); a SHAP bar chart of the features that moved this prediction.<br>
Needs 3D Slicer 5.10 or later. For research only; not a medical device.
"""
        self.parent.acknowledgementText = """
Method: the D-PET pCR study (baseline dedicated breast PET of 147 HER2-positive patients; radiomics, deep
learning, heterogeneity and their fusion), Cancers 2026, 18(10):1581.
Built on 3D Slicer, SimpleITK, pyradiomics (van Griethuysen et al., Cancer Res 2017), MONAI, PyTorch,
scikit-learn, XGBoost, SHAP (Lundberg and Lee, NeurIPS 2017), pydicom, skops, safetensors and Dask.
"""
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """A synthetic D-PET case (PET in SUV + tumour) in Sample Data, generated locally on first use (no download)."""
    import SampleData

    # The files are written by customDownloader on the first click (scripts: DPETResponseLogic().loadSyntheticCase());
    # the uri only names the cohort's manifest in the local cache.
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="DPETResponse",
        sampleName="DPETSyntheticCase",
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "DPETResponse.png"),
        uris=(DPETResponseLogic.syntheticCohortDir() / "manifest.csv").as_uri(),
        fileNames="manifest.csv",
        nodeNames=None,
        loadFileType=None,
        loadFiles=False,
        customDownloader=loadSampleCase,
    )


def loadSampleCase(source=None):
    """SampleData's customDownloader: make (once) and load the synthetic case, after the dependency check."""
    with slicer.util.tryWithErrorDisplay("Could not make the synthetic D-PET case.", waitCursor=True):
        logic = DPETResponseLogic()
        if logic.checkDependencies(askConfirmation=True):
            return logic.loadSyntheticCase()


#
# Parameter node
#


@parameterNodeWrapper
class DPETResponseParameterNode:
    """The module's settings, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    useSeedPoint: bool = False
    tumourSegmentation: vtkMRMLSegmentationNode
    tumourSegmentId: str = ""
    seedPoint: vtkMRMLMarkupsFiducialNode
    #: Kept in step with bodySegmentSelector by the widget (parameterNodeWrapper has no connector to it); optional
    bodySegmentation: vtkMRMLSegmentationNode
    bodySegmentId: str = ""
    #: Kept in step with bundlePathLineEdit by the widget: bound as a pathlib.Path, an empty field would show "."
    bundlePath: str = ""
    #: JSON {PET volume node ID: {clinical column: value}}: the values belong to the patient, kept by hand (the
    #: form's fields come from the bundle)
    clinicalValues: str = ""
    useGPU: bool = False
    showSegments: bool = True
    showGradCam: bool = True
    showTable: bool = True
    showShapChart: bool = True


#
# Clinical form: one field per clinical column of the bundle (DPETResponseLib.scene.clinical_schema)
#


def _numberStep(spec: dict) -> float:
    return 10.0 ** -spec["decimals"]


def _numberUnknown(spec: dict) -> float:
    """The value of a number field that reads "unknown": one step below the training range (0 without one)."""
    return spec["min"] - _numberStep(spec) if spec["min"] is not None else 0.0


def clinicalField(spec: dict, value=None):
    """A spin box over the training range whose lowest value, one step below it, reads "unknown"; or a combo box
    of "unknown" and the training categories. Shows ``value`` (None: unknown). Built with setters only, which every
    Qt binding has (Testing/render_clinical_form.py builds it with PySide6)."""
    if spec["kind"] == "number":
        field = qt.QDoubleSpinBox()
        field.setDecimals(spec["decimals"])
        field.setSingleStep(_numberStep(spec))
        known = spec["min"] is not None
        field.setRange(_numberUnknown(spec), spec["max"] if known else 0.0)
        field.setSpecialValueText(CLINICAL_UNKNOWN)
        field.setToolTip(f"Training cases: {spec['min']:g} to {spec['max']:g}; {CLINICAL_UNKNOWN}: their median"
                         if known else "No training case had a value: always imputed.")
    else:
        field = qt.QComboBox()
        field.addItems([CLINICAL_UNKNOWN, *spec["values"]])
        field.setToolTip(f"Training categories: {', '.join(spec['values'])}; {CLINICAL_UNKNOWN}: the most frequent")
    setClinicalField(field, spec, value)
    return field


def setClinicalField(field, spec: dict, value) -> None:
    """Show ``value`` (a valid one, see validClinicalValues; None: unknown) in a field made by clinicalField."""
    if spec["kind"] == "number":
        field.setValue(_numberUnknown(spec) if value is None else value)
    else:
        field.setCurrentIndex(0 if value is None else 1 + spec["values"].index(value))


def clinicalFieldValue(field, spec: dict):
    """The value a field shows (a float or a category), None for unknown (PythonQt reads Qt properties)."""
    if spec["kind"] == "number":
        return None if field.value <= field.minimum else field.value
    return None if field.currentIndex <= 0 else field.currentText


def clinicalForm(schema: dict, values: dict):
    """A widget with one labelled field per column of ``schema`` showing ``values``; returns it and the fields."""
    form = qt.QWidget()
    layout = qt.QFormLayout(form)
    fields = {column: clinicalField(spec, values.get(column)) for column, spec in schema.items()}
    for column, field in fields.items():
        layout.addRow(f"{column}:", field)
    return form, fields


def validClinicalValues(schema: dict, values: dict) -> dict:
    """The values a form of ``schema`` can show, in its order: numbers in the training range (to the field's
    rounding), training categories."""
    valid = {}
    for column, spec in schema.items():
        value = values.get(column)
        if spec["kind"] == "number":
            if (isinstance(value, (int, float)) and not isinstance(value, bool) and spec["min"] is not None
                    and spec["min"] - _numberStep(spec) / 2 <= value <= spec["max"] + _numberStep(spec) / 2):
                valid[column] = float(value)
        elif value in spec["values"]:
            valid[column] = value
    return valid


def clinicalArguments(values: dict) -> list[str]:
    """`dpet-response predict --clinical NAME=VALUE ...` for ``values`` (nothing for none)."""
    return ["--clinical", *(f"{column}={value}" for column, value in values.items())] if values else []


def bundleTrainedWithBodyMasks(bundlePath: str) -> bool | None:
    """Whether the bundle's models were trained with body masks (bundle.json's "body_mask"); None where that file
    cannot be read."""
    if not bundlePath:
        return None
    try:
        with open(os.path.join(bundlePath, "bundle.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest.get("body_mask") is True if isinstance(manifest, dict) else None


def showSegment(selector, segmentationNode, segmentId: str) -> None:
    """Show a segmentation and one of its segments ("": none) in a qMRMLSegmentSelectorWidget. The arguments are
    read before the node is set, which makes the widget pick (and signal) a segment of its own."""
    selector.setCurrentNode(segmentationNode)
    selector.setCurrentSegmentID(segmentId)


#
# Widget
#


class DPETResponseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._clinicalBundle = None  # the bundle path the clinical form was built for
        self._clinicalSchema, self._clinicalFields, self._clinicalForm = {}, {}, None
        self._clinicalNeedsPackages = False
        self._showingClinicalValues = False
        self._bodyMaskBundle, self._bundleBodyMasks = None, None  # bundleTrainedWithBodyMasks of that path

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DPETResponse.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DPETResponseLogic()
        self._clinicalLayout = qt.QVBoxLayout(self.ui.clinicalFrame)

        self.ui.seedPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup
        self.ui.seedPointSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.seedPlaceWidget.setCurrentNode)
        self.ui.tumourSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.tumourSegmentSelector.connect("currentSegmentChanged(QString)", self.onSegmentChanged)
        self.ui.bodySegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onBodySegmentationChanged)
        self.ui.bodySegmentSelector.connect("currentSegmentChanged(QString)", self.onBodySegmentChanged)
        self.ui.bundlePathLineEdit.connect("currentPathChanged(QString)", self.onBundlePathChanged)
        self.ui.convertSuvButton.connect("clicked(bool)", self.onConvertSuv)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        if self.logic.isRunning():  # its inputs are being closed: nothing it returns could be shown with them
            self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            p = self._parameterNode
            showSegment(self.ui.tumourSegmentSelector, p.tumourSegmentation, p.tumourSegmentId)
            showSegment(self.ui.bodySegmentSelector, p.bodySegmentation, p.bodySegmentId)
            if self._parameterNode.bundlePath:
                self.ui.bundlePathLineEdit.currentPath = self._parameterNode.bundlePath
            elif self.ui.bundlePathLineEdit.currentPath:  # the bundle used last (the field's history)
                self._parameterNode.bundlePath = self.ui.bundlePathLineEdit.currentPath
            self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self._updateClinicalForm()
        self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self.logic.isRunning()
        self.ui.cancelButton.enabled = running
        if p is None:  # a scene is closing
            self.ui.applyButton.enabled = False
            return
        tumour = p.seedPoint if p.useSeedPoint else p.tumourSegmentation
        ready = bool(p.inputVolume and tumour and p.bundlePath)
        self.ui.applyButton.enabled = ready and not running
        if ready:
            advice = self._bodyMaskAdvice()
            self.ui.applyButton.toolTip = f"Predict pCR. {advice}" if advice else "Predict pCR"
        else:
            self.ui.applyButton.toolTip = "Select a PET, a tumour and a model bundle"
        self.ui.tumourSegmentationSelector.enabled = not p.useSeedPoint
        self.ui.tumourSegmentSelector.enabled = not p.useSeedPoint
        self.ui.seedPointSelector.enabled = p.useSeedPoint
        self.ui.seedPlaceWidget.enabled = p.useSeedPoint

    def onSegmentationChanged(self, node) -> None:
        self.ui.tumourSegmentSelector.setCurrentNode(node)

    def onSegmentChanged(self, segmentId) -> None:
        if self._parameterNode:
            self._parameterNode.tumourSegmentId = segmentId or ""

    def onBodySegmentationChanged(self, node) -> None:
        if self._parameterNode:
            self._parameterNode.bodySegmentation = node

    def onBodySegmentChanged(self, segmentId) -> None:
        if self._parameterNode:
            self._parameterNode.bodySegmentId = segmentId or ""

    def _bodyMaskAdvice(self) -> str:
        """The body mask the chosen bundle's CLI would refuse, as advice ("" for none): the CLI's refusal is the
        rule, Apply is not blocked. bundle.json is read when the bundle path changes."""
        p = self._parameterNode
        if p.bundlePath != self._bodyMaskBundle:
            self._bodyMaskBundle, self._bundleBodyMasks = p.bundlePath, bundleTrainedWithBodyMasks(p.bundlePath)
        if self._bundleBodyMasks is True and not p.bodySegmentation:
            return ("This bundle was trained with body masks: select the body or breast segment under Body mask, "
                    "or the prediction is refused.")
        if self._bundleBodyMasks is False and p.bodySegmentation:
            return "This bundle was trained without body masks: set Body mask to None, or the prediction is refused."
        return ""

    def onBundlePathChanged(self, path) -> None:
        if self._parameterNode:
            self._parameterNode.bundlePath = path

    # clinical values

    def _volumeKey(self) -> str:
        volume = self._parameterNode.inputVolume
        return volume.GetID() if volume else ""

    def _storedClinicalValues(self) -> dict:
        """{PET volume node ID: {column: value}} from the parameter node ({} if it does not hold that)."""
        try:
            stored = json.loads(self._parameterNode.clinicalValues or "{}")
        except json.JSONDecodeError:
            return {}
        return stored if isinstance(stored, dict) else {}

    def clinicalValues(self) -> dict:
        """The clinical values entered for the selected PET that the form's bundle takes."""
        if self._parameterNode is None:
            return {}
        return validClinicalValues(self._clinicalSchema, self._storedClinicalValues().get(self._volumeKey(), {}))

    def _updateClinicalForm(self) -> None:
        """The form of the bundle's clinical columns (rebuilt when the bundle changes) with the selected PET's
        values; enabled once a PET is selected."""
        if self._parameterNode is None:
            return
        if self._parameterNode.bundlePath != self._clinicalBundle:
            self._clinicalBundle = self._parameterNode.bundlePath
            self._buildClinicalForm()
        values = self.clinicalValues()
        self._showingClinicalValues = True
        try:
            for column, field in self._clinicalFields.items():
                setClinicalField(field, self._clinicalSchema[column], values.get(column))
                field.enabled = bool(self._parameterNode.inputVolume)
        finally:
            self._showingClinicalValues = False

    def _buildClinicalForm(self) -> None:
        if self._clinicalForm is not None:
            self._clinicalLayout.removeWidget(self._clinicalForm)
            self._clinicalForm.deleteLater()
        self._clinicalSchema, self._clinicalFields, self._clinicalForm = {}, {}, None
        self._clinicalNeedsPackages = False
        path = self._parameterNode.bundlePath
        if not path or not os.path.isdir(path):
            self.ui.clinicalStatusLabel.text = "Choose a model bundle: the clinical values its models take appear here."
            return
        if self.logic.packagesMissing():
            self._clinicalNeedsPackages = True
            self.ui.clinicalStatusLabel.text = ("The clinical form needs the module's Python packages: Apply "
                                                "installs them (it asks first), then shows the form.")
            return
        from DPETResponseLib import scene
        from DPETResponseLib.core.errors import DPETError

        try:
            self._clinicalSchema = scene.clinical_schema(path)
        except DPETError as error:
            self.ui.clinicalStatusLabel.text = f"No clinical values can be entered: {error}"
            return
        if not self._clinicalSchema:
            self.ui.clinicalStatusLabel.text = "This bundle's models take no clinical values."
            return
        self.ui.clinicalStatusLabel.text = CLINICAL_HELP
        self._clinicalForm, self._clinicalFields = clinicalForm(self._clinicalSchema, {})
        for column, field in self._clinicalFields.items():
            number = self._clinicalSchema[column]["kind"] == "number"
            field.connect("valueChanged(double)" if number else "currentIndexChanged(int)", self.onClinicalFieldChanged)
        self._clinicalLayout.addWidget(self._clinicalForm)

    def onClinicalFieldChanged(self, *_) -> None:
        """Save the fields' values for the selected PET (values of columns this bundle lacks are kept)."""
        if self._showingClinicalValues or self._parameterNode is None or not self._parameterNode.inputVolume:
            return
        stored = self._storedClinicalValues()
        kept = {c: v for c, v in stored.get(self._volumeKey(), {}).items() if c not in self._clinicalSchema}
        shown = {column: clinicalFieldValue(field, self._clinicalSchema[column])
                 for column, field in self._clinicalFields.items()}
        stored[self._volumeKey()] = {**kept, **{c: v for c, v in shown.items() if v is not None}}
        self._parameterNode.clinicalValues = json.dumps(stored, sort_keys=True)

    def addLog(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)
        # "[dpet-response] k/n step" lines of the CLI and tqdm's "| k/n [" move the bar
        match = re.search(r"(?:^\s*|\|\s*|\]\s+)(\d+)/(\d+)\b", text)
        if match and int(match.group(2)) > 0:
            self.ui.progressBar.setRange(0, int(match.group(2)))
            self.ui.progressBar.setValue(int(match.group(1)))

    def onConvertSuv(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not convert the PET to SUV.", waitCursor=True):
            self._parameterNode.inputVolume = self.logic.convertDicomPetToSuv(self._parameterNode.inputVolume)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not predict pCR.", waitCursor=True):
            if not self.logic.checkDependencies(askConfirmation=True):
                return
            if self._clinicalNeedsPackages:  # installed now: the form can be shown, and filled before the run
                self._clinicalBundle = None
                self._updateClinicalForm()
                if self._clinicalFields:
                    self.addLog("Enter the patient's clinical values (or leave them unknown), then Apply again.")
                    return
            p = self._parameterNode
            self.ui.bundlePathLineEdit.addCurrentPathToHistory()  # offered first next time
            self.ui.logTextEdit.clear()
            clinical = self.clinicalValues()
            unknown = [column for column in self._clinicalSchema if column not in clinical]
            if self._clinicalSchema:
                self.addLog("Clinical values: " + (", ".join(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}"
                                                             for c, v in clinical.items()) or "none")
                            + (f"; unknown, imputed from the training data: {', '.join(unknown)}" if unknown else ""))
            self.ui.progressBar.setRange(0, 0)  # busy until the CLI reports steps
            self.logic.processAsync(
                p.inputVolume, p.seedPoint if p.useSeedPoint else p.tumourSegmentation, p.bundlePath,
                segmentId=p.tumourSegmentId or None, useGPU=p.useGPU, outputs=self._outputs(),
                onLog=self.addLog, onFinished=self.onProcessFinished, clinical=clinical,
                bodySegmentation=p.bodySegmentation, bodySegmentId=p.bodySegmentId or None)
            self._checkCanApply()

    def _outputs(self) -> dict:
        p = self._parameterNode
        return {"segments": p.showSegments, "gradcam": p.showGradCam, "table": p.showTable,
                "shap_chart": p.showShapChart}

    def onProcessFinished(self, result, error) -> None:
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(1 if error is None else 0)
        self._checkCanApply()
        if error is not None:
            self.addLog(f"Failed: {error}")
            slicer.util.errorDisplay(f"Could not predict pCR.\n{error}")
            return
        for model, probability in result.probabilities.items():
            self.addLog(f"{model}: pCR probability {probability:.3f}")

    def onCancel(self) -> None:
        self.logic.cancel()
        self.addLog("Cancelled.")
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.setValue(0)
        self._checkCanApply()


#
# Logic
#


class DPETResponseLogic(ScriptedLoadableModuleLogic):
    """Prediction for one PET in Slicer's scene; usable from the Python console and batch scripts.

    ``process`` blocks (console, batch); ``processAsync`` returns at once (GUI) and calls back when done.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._process = None
        self._workDir = None
        # The library's module loggers propagate to Python's root logger, which Slicer shows in its log; its INFO
        # messages (the steps of a run in this process) are wanted there too.
        logging.getLogger("DPETResponseLib").setLevel(logging.INFO)

    def getParameterNode(self):
        return DPETResponseParameterNode(super().getParameterNode())

    # dependencies

    @staticmethod
    def _missing(requirements: list[str]) -> list[str]:
        """Those of ``requirements`` not met here (a requirement whose marker excludes this platform never is)."""
        from packaging.requirements import Requirement

        missing = []
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate():
                continue
            try:
                version = importlib.metadata.version(requirement.name)
            except importlib.metadata.PackageNotFoundError:
                missing.append(text)
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                missing.append(text)
        return missing

    @classmethod
    def packagesMissing(cls) -> bool:
        """Whether a pip requirement is still to install (the library cannot be imported in Slicer before)."""
        return bool(cls._missing(PIP_REQUIREMENTS))

    @staticmethod
    def _downgrades(requirements: list[str]) -> list[str]:
        """Those of ``requirements`` that only an older version than the one installed would meet."""
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion, Version

        found = []
        for text in requirements:
            requirement = Requirement(text)
            try:
                installed = Version(importlib.metadata.version(requirement.name))
                # an upper bound it exceeds: "<", "<=", or "==" / "~=" a lower version
                if any(not s.contains(installed, prereleases=True) and (s.operator in ("<", "<=") or (
                        s.operator in ("==", "~=") and installed > Version(s.version.removesuffix(".*"))))
                       for s in requirement.specifier):
                    found.append(f"{text} (installed: {installed})")
            except (importlib.metadata.PackageNotFoundError, InvalidVersion):
                continue
        return found

    @staticmethod
    def pipConstraints() -> list[str]:
        """pip constraints that keep every installed package at its version or newer, so that nothing installed
        here downgrades a package Slicer (or another extension) brought, and torch at its version (the PyTorch
        extension installs the build for the GPU; a dependency must not swap it for PyPI's)."""
        from packaging.utils import canonicalize_name
        from packaging.version import InvalidVersion, Version

        importlib.invalidate_caches()  # torch may have been installed a moment ago
        constraints = {}
        for distribution in importlib.metadata.distributions():  # in import order: the first of a name is used
            name = canonicalize_name(distribution.metadata["Name"] or "")
            if not name or name in constraints:
                continue
            try:
                Version(distribution.version)
            except (InvalidVersion, TypeError):
                continue
            constraints[name] = f"{name}{'==' if name == 'torch' else '>='}{distribution.version}"
        return sorted(constraints.values())

    @staticmethod
    def shapSlicerDir() -> str:
        """Private folder of the PyPI `slicer` package shap needs (never on sys.path of Slicer itself)."""
        return os.path.join(os.path.dirname(slicer.app.slicerRevisionUserSettingsFilePath), "DPETResponse",
                            "shap-slicer")

    def checkDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what the prediction needs, after asking. Returns False if the user declined."""
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("The PyTorch extension is missing: install it from the Extension Manager, then "
                               "restart Slicer.") from None
        outdated = self._missing(SLICER_REQUIREMENTS)
        if outdated:
            raise RuntimeError(f"This Slicer's Python lacks {outdated}: use 3D Slicer {MINIMUM_SLICER} or later.")
        if self._missing([TORCH_REQUIREMENT]):  # absent, or older than the minimum
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if torchLogic.installTorch(askConfirmation=askConfirmation,
                                       torchVersionRequirement=TORCH_REQUIREMENT.removeprefix("torch")) is None:
                return False
        missing = self._missing(PIP_REQUIREMENTS)
        if importlib.util.find_spec("radiomics") is None:
            missing.append(RADIOMICS_REQUIREMENT)
        shapMissing = bool(self._missing([SHAP_REQUIREMENT])) or not os.path.isdir(
            os.path.join(self.shapSlicerDir(), "slicer"))
        if not missing and not shapMissing:
            return True
        downgrades = self._downgrades(missing)
        if downgrades:
            raise RuntimeError("D-PET Response would have to downgrade Python packages already installed (Slicer or "
                               "another extension may need them), so nothing was installed: " + "; ".join(downgrades))
        wanted = missing + ([SHAP_REQUIREMENT] if shapMissing else [])
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                "D-PET Response needs these Python packages, which will be downloaded and installed now (no package "
                "already installed is downgraded):\n" + "\n".join(wanted), "Install Python packages"):
            return False
        with tempfile.TemporaryDirectory(dir=slicer.app.temporaryPath) as folder:
            constraints = os.path.join(folder, "constraints.txt")
            with open(constraints, "w") as f:
                f.write("\n".join(self.pipConstraints()) + "\n")
            if missing:
                try:
                    self.pipInstall(missing, constraints)
                except Exception as err:
                    if RADIOMICS_REQUIREMENT in missing and importlib.util.find_spec("radiomics") is None:
                        hint = COMPILER_HINTS.get(sys.platform, "a C compiler")
                        raise RuntimeError(f"Installing {RADIOMICS_REQUIREMENT} failed ({err}): no pyradiomics wheel "
                                           f"exists for Python 3.12, so it is built here, which needs {hint}. "
                                           "Install that, restart Slicer and Apply again.") from err
                    raise
            if shapMissing:
                self.installShap(constraints)
        return True

    @staticmethod
    def pipInstall(requirements: list[str], constraints: str) -> None:
        """pip install under a constraints file: slicer.packaging.pip_ensure where this Slicer has it (5.12: a
        progress dialog, and a restart offered when a package already imported was updated), else
        slicer.util.pip_install."""
        try:
            import slicer.packaging as slicerPackaging
        except ImportError:  # Slicer 5.10
            slicer.util.pip_install([*requirements, "-c", constraints])
        else:
            slicerPackaging.pip_ensure(requirements, constraints=constraints, prompt_install=False,
                                       requester="D-PET Response", skip_in_testing=False)

    def installShap(self, constraints: str) -> None:
        """shap without its `slicer` dependency (which would shadow Slicer's), that package in a private folder."""
        slicer.util.pip_install(["--no-deps", SHAP_REQUIREMENT, "-c", constraints])
        slicer.util.pip_install([*SHAP_DEPENDENCIES, "-c", constraints])
        slicer.util.pip_install(["--target", self.shapSlicerDir(), "--no-deps", "--upgrade", SHAP_SLICER_PACKAGE])

    # running the prediction

    @staticmethod
    def libraryDir() -> str:
        """Where DPETResponseLib is installed (next to this file in the extension)."""
        return os.path.dirname(os.path.abspath(__file__))

    def environment(self, useGPU: bool) -> dict:
        env = slicer.util.startupEnvironment()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.libraryDir(), env.get("PYTHONPATH", "")) if p)
        env["DPET_SHAP_SLICER_DIR"] = self.shapSlicerDir()
        if not useGPU:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    @staticmethod
    def pythonSlicer() -> str:
        path = shutil.which("PythonSlicer")
        if not path:
            raise RuntimeError("PythonSlicer was not found next to Slicer; reinstall Slicer.")
        return path

    def writeInputs(self, petVolumeNode, tumour, workDir: str, segmentId=None, bodySegmentation=None,
                    bodySegmentId=None) -> list[str]:
        """PET, tumour mask and body mask (if ``bodySegmentation``) as NIfTI in ``workDir``; returns the CLI's input
        arguments (LPS seed for a point). A segment not given: the one named Tumour / Body, else the first."""
        import SimpleITK as sitk

        from DPETResponseLib import scene

        if petVolumeNode is None:
            raise ValueError("Select a PET volume.")
        if tumour is None:
            raise ValueError("Select the tumour: a segmentation, or a seed point.")
        petPath = os.path.join(workDir, "pet.nii.gz")
        sitk.WriteImage(scene.volume_node_to_sitk(petVolumeNode), petPath)
        args = ["--image", petPath]
        if tumour.IsA("vtkMRMLSegmentationNode"):
            maskPath = os.path.join(workDir, "mask.nii.gz")
            self._writeSegment(tumour, segmentId, "Tumour", petVolumeNode, maskPath)
            args += ["--mask", maskPath]
        elif tumour.IsA("vtkMRMLMarkupsNode"):
            # one token: argparse reads a separate value that starts with "-" (a negative x) as an option
            args.append("--seed=" + ",".join(f"{v:.4f}" for v in scene.control_point_lps(tumour)))
        else:
            raise ValueError(f"'{tumour.GetName()}' is neither a segmentation nor a point list.")
        if bodySegmentation is not None:
            bodyPath = os.path.join(workDir, "body.nii.gz")
            self._writeSegment(bodySegmentation, bodySegmentId, BODY_SEGMENT, petVolumeNode, bodyPath)
            args += ["--body-mask", bodyPath]
        return args

    @staticmethod
    def _writeSegment(segmentationNode, segmentId, defaultName: str, petVolumeNode, path: str) -> None:
        """One segment as a 0/1 label image on the PET's grid: ``segmentId``, else the segment named
        ``defaultName``, else the first."""
        import SimpleITK as sitk

        from DPETResponseLib import scene

        segmentation = segmentationNode.GetSegmentation()
        segmentId = (segmentId or segmentation.GetSegmentIdBySegmentName(defaultName)
                     or (segmentation.GetNthSegmentID(0) if segmentation.GetNumberOfSegments() else None))
        if not segmentId:
            raise ValueError(f"{defaultName} segmentation '{segmentationNode.GetName()}' has no segments.")
        sitk.WriteImage(scene.segmentation_to_labelmap(segmentationNode, petVolumeNode, segmentId), path)

    def _prepare(self, petVolumeNode, tumour, bundlePath, segmentId, clinical=None, bodySegmentation=None,
                 bodySegmentId=None) -> tuple[list[str], str]:
        bundlePath = pathlib.Path(bundlePath)
        if not bundlePath.is_dir():
            raise ValueError(f"Model bundle folder not found: {bundlePath}")
        self._workDir = tempfile.mkdtemp(prefix="DPETResponse-", dir=slicer.app.temporaryPath)
        outDir = os.path.join(self._workDir, "result")
        inputs = self.writeInputs(petVolumeNode, tumour, self._workDir, segmentId, bodySegmentation, bodySegmentId)
        return (["-m", "DPETResponseLib.cli", "predict", str(bundlePath), *inputs, *clinicalArguments(clinical or {}),
                 "--out", outDir], outDir)

    def _cleanup(self) -> None:
        if self._workDir:
            shutil.rmtree(self._workDir, ignore_errors=True)
        self._workDir = None
        self._process = None

    def runCli(self, args: list[str], useGPU: bool = False, log=logging.info) -> None:
        """Run `PythonSlicer -m DPETResponseLib.cli ...` and wait; raises RuntimeError with the CLI's error line."""
        proc = slicer.util.launchConsoleProcess([self.pythonSlicer(), *args], useStartupEnvironment=True,
                                                updateEnvironment=self.environment(useGPU))
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip())
            log(lines[-1])
        if proc.wait() != 0:
            raise RuntimeError(_lastError(lines) or f"the prediction process ended with code {proc.returncode}")

    def process(self, petVolumeNode, tumour, bundlePath, segmentId=None, useGPU: bool = False,
                outputs: dict | None = None, clinical: dict | None = None, bodySegmentation=None,
                bodySegmentId=None):
        """Predict pCR (blocking). ``tumour``: segmentation node (+ ``segmentId``) or markups point list;
        ``clinical``: {column: value} (the others are imputed from the training data); ``bodySegmentation`` (+
        ``bodySegmentId``): the body or breast, for a bundle trained with body masks (which needs it).

        Returns the PredictionResult; the output nodes are created or updated in the scene.
        """
        if self.isRunning():
            raise RuntimeError("A prediction is already running.")
        try:
            args, outDir = self._prepare(petVolumeNode, tumour, bundlePath, segmentId, clinical, bodySegmentation,
                                         bodySegmentId)
            self.runCli(args, useGPU)
            return self.loadResults(petVolumeNode, outDir, outputs)
        finally:
            self._cleanup()

    def processAsync(self, petVolumeNode, tumour, bundlePath, segmentId=None, useGPU: bool = False,
                     outputs: dict | None = None, onLog=logging.info, onFinished=None,
                     clinical: dict | None = None, bodySegmentation=None, bodySegmentId=None) -> None:
        """Start the prediction (inputs as for ``process``) in a QProcess; ``onFinished(result, error)`` runs on the
        main thread at the end."""
        if self.isRunning():
            raise RuntimeError("A prediction is already running.")
        program = self.pythonSlicer()
        args, outDir = self._prepare(petVolumeNode, tumour, bundlePath, segmentId, clinical, bodySegmentation,
                                     bodySegmentId)
        process = qt.QProcess()
        environment = qt.QProcessEnvironment()
        for key, value in self.environment(useGPU).items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.setProcessChannelMode(qt.QProcess.MergedChannels)
        lines, partial = [], [""]

        def readOutput(final=False):
            # output arrives in chunks: keep an unfinished last line (tqdm ends its updates with \r) for the next
            parts = re.split(r"[\r\n]+", partial[0] + process.readAllStandardOutput().data().decode(errors="replace"))
            partial[0] = "" if final else parts.pop()
            for line in filter(None, parts):
                lines.append(line)
                onLog(line)

        def end(error=None):
            result = None
            try:
                if error is None:
                    result = self.loadResults(petVolumeNode, outDir, outputs)
            except Exception as exc:  # reported to the GUI, which shows it
                error = exc
            finally:
                self._cleanup()
            if onFinished:
                onFinished(result, error)

        def finished(exitCode, exitStatus):
            if self._process is not process:  # cancelled
                return
            readOutput(final=True)
            failed = exitStatus != qt.QProcess.NormalExit or exitCode != 0
            end(RuntimeError(_lastError(lines) or f"the prediction process ended with code {exitCode}")
                if failed else None)

        def errorOccurred(error):
            # a process that never started emits no finished(); the other errors are followed by finished()
            if error == qt.QProcess.FailedToStart and self._process is process:
                end(RuntimeError(f"could not start {program}: {process.errorString()}"))

        process.connect("readyReadStandardOutput()", readOutput)
        process.connect("finished(int,QProcess::ExitStatus)", finished)
        process.connect("errorOccurred(QProcess::ProcessError)", errorOccurred)
        self._process = process
        process.start(program, args)

    def isRunning(self) -> bool:
        return self._process is not None

    def cancel(self) -> None:
        """Kill a running prediction (the PythonSlicer launcher and the Python under it); nothing is added to the
        scene and its working folder is removed."""
        if self._process is not None:
            process, self._process = self._process, None
            killProcessTree(process.processId())
            process.waitForFinished(5000)
            self._cleanup()

    def loadResults(self, petVolumeNode, outDir: str, outputs: dict | None = None):
        """Read what the CLI wrote into ``outDir``, show it in the scene and the layout; returns the result."""
        from DPETResponseLib import scene
        from DPETResponseLib.results import PredictionResult

        result = PredictionResult.read(outDir)
        for warning in result.warnings:
            logging.warning(f"DPETResponse: {warning}")
        nodes = scene.show_prediction(result, slicer.mrmlScene, petVolumeNode, **(outputs or {}))
        self.showResults(petVolumeNode, nodes)
        return result

    @staticmethod
    def showResults(petVolumeNode, nodes: dict) -> None:
        """Four-up view with plot and table: PET with the Grad-CAM overlay, segments, SHAP chart, probabilities."""
        if slicer.app.layoutManager() is None:  # no main window (batch)
            return
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        gradcam = nodes.get("gradcam")
        slicer.util.setSliceViewerLayers(background=petVolumeNode, foreground=gradcam,
                                         foregroundOpacity=0.5 if gradcam else None, fit=True)
        if "prediction_table" in nodes:
            selection = slicer.app.applicationLogic().GetSelectionNode()
            selection.SetActiveTableID(nodes["prediction_table"].GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
        if "shap_chart" in nodes:
            slicer.modules.plots.logic().ShowChartInLayout(nodes["shap_chart"])

    # batch use and helpers

    def processFiles(self, petPath, maskPath, bundlePath, useGPU: bool = False, outputs: dict | None = None,
                     clinical: dict | None = None, bodyMaskPath=None):
        """Load a PET (SUV), tumour mask and body mask (optional; label images on the PET's grid) from files into
        the scene and predict; for loops over a folder."""
        import SimpleITK as sitk

        from DPETResponseLib import scene

        pet = slicer.util.loadVolume(str(petPath))
        mask = sitk.ReadImage(str(maskPath))
        segmentation = scene.labelmap_to_segmentation(sitk.Cast(mask > 0, sitk.sitkUInt8), slicer.mrmlScene, pet,
                                                      *scene.TUMOUR_SEGMENTS)
        segmentation.SetName(f"{pet.GetName()} tumour")
        body = None
        if bodyMaskPath is not None:
            bodyMask = sitk.Cast(sitk.ReadImage(str(bodyMaskPath)) > 0, sitk.sitkUInt8)
            body = scene.labelmap_to_segmentation(bodyMask, slicer.mrmlScene, pet, {1: BODY_SEGMENT},
                                                  {1: BODY_SEGMENT_COLOR})
            body.SetName(f"{pet.GetName()} body")
        return self.process(pet, segmentation, bundlePath, useGPU=useGPU, outputs=outputs, clinical=clinical,
                            bodySegmentation=body)

    def convertDicomPetToSuv(self, volumeNode):
        """A new volume in body-weight SUV from the DICOM PET series the node was loaded from."""
        from DPETResponseLib import scene
        from DPETResponseLib.io.images import read_pet

        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode else []
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        if not files or not all(files):
            raise ValueError("The selected volume was not loaded from the DICOM database; load the PET series "
                             "with the DICOM module first (a NIfTI/NRRD PET is taken to be in SUV already).")
        with tempfile.TemporaryDirectory(dir=slicer.app.temporaryPath) as folder:
            for i, path in enumerate(files):
                shutil.copy(path, os.path.join(folder, f"{i:05d}.dcm"))
            image = read_pet(folder, case=volumeNode.GetName())
        suv = scene.sitk_to_volume_node(image, slicer.mrmlScene, name=f"{volumeNode.GetName()} SUV")
        scene.place_under_study(slicer.mrmlScene, volumeNode, [suv])
        return suv

    @staticmethod
    def syntheticCohortDir() -> pathlib.Path:
        return pathlib.Path(slicer.app.cachePath) / "DPETResponse" / "synthetic"

    def syntheticCasePaths(self) -> tuple[str, str]:
        """PET and mask files of the first synthetic case, made (once) by DPETResponseLib.synthetic.make_cohort."""
        cohort = self.syntheticCohortDir()
        manifest = cohort / "manifest.csv"
        if not manifest.is_file():
            from DPETResponseLib.synthetic import make_cohort

            manifest = pathlib.Path(make_cohort(cohort, n=SYNTHETIC_CASES, seed=0))
        with open(manifest, newline="") as f:
            row = next(csv.DictReader(f))
        return tuple(str((manifest.parent / row[column]).resolve()) for column in ("image", "mask"))

    def loadSyntheticCase(self):
        """Load the synthetic sample case: returns (PET volume node, tumour segmentation node)."""
        import SimpleITK as sitk

        from DPETResponseLib import scene

        petPath, maskPath = self.syntheticCasePaths()
        pet = slicer.util.loadVolume(petPath, {"name": "DPET synthetic PET"})
        mask = sitk.Cast(sitk.ReadImage(maskPath) > 0, sitk.sitkUInt8)
        segmentation = scene.labelmap_to_segmentation(mask, slicer.mrmlScene, pet, *scene.TUMOUR_SEGMENTS)
        segmentation.SetName("DPET synthetic tumour")
        return pet, segmentation


def killProcessTree(pid: int, timeout: float = 3.0) -> None:
    """End process ``pid`` and every process under it: PythonSlicer is a launcher, and killing it alone (what
    QProcess.kill does) leaves the Python it started running. Descendants first, then ``pid``; those still alive
    after ``timeout`` seconds are killed. ``pid`` itself is left for its owner to reap (QProcess.waitForFinished)."""
    import psutil

    if pid <= 0:  # not running (QProcess.processId() is 0); psutil would take 0 for every process of the group
        return
    try:
        parent = psutil.Process(pid)
        descendants = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for process in [*descendants, parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, survivors = psutil.wait_procs(descendants, timeout=timeout)
    for process in [*survivors, parent]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _lastError(lines: list[str]) -> str:
    """The CLI's one-line error (`dpet-response predict: error: ...`), else the last non-empty line."""
    for line in reversed(lines):
        if ": error: " in line:
            return line.split(": error: ", 1)[1]
    return next((line for line in reversed(lines) if line.strip()), "")


#
# Test
#


class DPETResponseTest(ScriptedLoadableModuleTest):
    """The whole flow on the synthetic sample case: a fast bundle is trained once (cached), then predicted."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DPETResponse_segmentation_and_seed()

    def test_DPETResponse_segmentation_and_seed(self):
        import numpy as np
        import SimpleITK as sitk

        from DPETResponseLib import scene

        logic = DPETResponseLogic()
        self.assertTrue(logic.checkDependencies(askConfirmation=False))
        self.delayDisplay("Loading the synthetic sample case")
        pet, segmentation = logic.loadSyntheticCase()
        bundle = logic.syntheticCohortDir() / "bundle"
        if not bundle.is_dir():
            self.delayDisplay("Training a fast model bundle on the synthetic cohort (once)")
            logic.runCli(["-m", "DPETResponseLib.cli", "train", str(logic.syntheticCohortDir() / "manifest.csv"),
                          "--out", str(bundle), "--fast"])

        self.delayDisplay("Predicting from the segmentation")
        result = logic.process(pet, segmentation, bundle)
        for model, probability in result.probabilities.items():
            self.assertTrue(0.0 <= probability <= 1.0)
            self.assertEqual(result.decision[model], int(probability >= result.thresholds[model]))
        outputs = {role: pet.GetNodeReference(f"DPETResponse.{role}") for role in scene.OUTPUT_ROLES}
        segments = outputs["segmentation"].GetSegmentation()
        names = [segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())]
        self.assertEqual(names, ["Tumour", "Low uptake", "High uptake", "Peritumoural shell"])
        # the tumour went through NIfTI and the CLI and came back voxel for voxel
        given = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(segmentation, pet))
        returned = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(
            outputs["segmentation"], pet, segments.GetSegmentIdBySegmentName("Tumour")))
        np.testing.assert_array_equal(given, returned)
        low = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(
            outputs["segmentation"], pet, segments.GetSegmentIdBySegmentName("Low uptake")))
        high = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(
            outputs["segmentation"], pet, segments.GetSegmentIdBySegmentName("High uptake")))
        self.assertEqual(int(low.sum() + high.sum()), int(given.sum()))  # the habitats partition the tumour
        shell = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(
            outputs["segmentation"], pet, segments.GetSegmentIdBySegmentName("Peritumoural shell")))
        self.assertGreater(int(shell.sum()), 0)
        self.assertEqual(int((shell * given).sum()), 0)  # around the tumour, not in it
        self.assertEqual(outputs["prediction_table"].GetNumberOfRows(), len(result.probabilities))
        if result.gradcam is not None:
            self.assertEqual(outputs["gradcam"].GetImageData().GetDimensions(), pet.GetImageData().GetDimensions())

        self.delayDisplay("Predicting again from a seed point at the tumour's brightest voxel")
        suv = sitk.GetArrayFromImage(scene.volume_node_to_sitk(pet))
        k, j, i = np.unravel_index(np.argmax(np.where(given > 0, suv, -np.inf)), suv.shape)
        ijkToRas = vtk.vtkMatrix4x4()
        pet.GetIJKToRASMatrix(ijkToRas)
        ras = ijkToRas.MultiplyPoint([float(i), float(j), float(k), 1.0])[:3]
        seed = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
        seed.AddControlPoint(*ras)
        nodeCount = slicer.mrmlScene.GetNumberOfNodes()
        seeded = logic.process(pet, seed, bundle)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodeCount)  # the same output nodes were updated
        auto = sitk.GetArrayFromImage(scene.segmentation_to_labelmap(
            outputs["segmentation"], pet, segments.GetSegmentIdBySegmentName("Tumour"))) > 0
        dice = 2 * np.logical_and(auto, given > 0).sum() / (auto.sum() + (given > 0).sum())
        self.assertGreater(dice, 0.9)  # 0.974 for this case with segment_from_seed outside Slicer
        self.assertEqual(set(seeded.probabilities), set(result.probabilities))
        self.delayDisplay("Test passed")
