"""Stand-in for ``slicer.ScriptedLoadableModule``: the base classes of a scripted module."""

import os
import sys
import types

import qt

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else types.SimpleNamespace(isEntered=True)
        self.layout = qt.QWidget("QVBoxLayout")

    def setup(self):
        pass

    def resourcePath(self, filename):
        moduleFile = sys.modules[type(self).__module__].__file__
        return os.path.join(os.path.dirname(moduleFile), "Resources", filename)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        return slicer.mrmlScene.parameterNode(self.moduleName)


class ScriptedLoadableModuleTest:
    pass
