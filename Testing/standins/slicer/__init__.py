"""Stand-in for Slicer's ``slicer`` (the part DPETResponse.py uses), for tests outside Slicer.

``app`` reports the Slicer version in the environment variable SLICER_STANDIN_VERSION (default 5.10).
"""

import os
import tempfile


class _App:
    def __init__(self):
        major, minor = os.environ.get("SLICER_STANDIN_VERSION", "5.10").split(".")[:2]
        self.majorVersion, self.minorVersion = int(major), int(minor)
        self.temporaryPath = tempfile.gettempdir()
        self.cachePath = os.path.join(tempfile.gettempdir(), "slicer-standin-cache")
        self.slicerRevisionUserSettingsFilePath = os.path.join(tempfile.gettempdir(), "slicer-standin", "Slicer.ini")

    def connect(self, signature, slot):
        pass

    def layoutManager(self):
        return None


class _ParameterNode:
    """The module's parameter node in the scene: its parameters as a dict."""

    def __init__(self):
        self.values = {}


class _Scene:
    StartCloseEvent, EndCloseEvent = 66000, 66001

    def __init__(self):
        self._parameterNodes = {}

    def parameterNode(self, moduleName):
        return self._parameterNodes.setdefault(moduleName, _ParameterNode())

    def GetFirstNodeByClass(self, className):
        return None

    def Clear(self):
        self._parameterNodes.clear()


app = _App()
mrmlScene = _Scene()


class vtkMRMLScalarVolumeNode:
    pass


class vtkMRMLSegmentationNode:
    pass


class vtkMRMLMarkupsFiducialNode:
    pass


class qSlicerMarkupsPlaceWidget:
    ForcePlaceSingleMarkup = 2
