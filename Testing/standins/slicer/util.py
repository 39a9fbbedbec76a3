"""Stand-in for ``slicer.util``: a .ui file read into stand-in widgets; errors are raised to the test instead of
being shown in a dialog; pip_install and the confirmation dialog are recorded (and answered by ``answers``)."""

import contextlib
import os
import types
import xml.etree.ElementTree as ET

import ctk
import qt

#: Messages errorDisplay would have shown.
errors = []
#: pip_install's arguments, call by call, and the text of each constraints file (-c) when it was called.
pip_installs, constraints = [], []
#: Texts of the confirmation dialogs shown; the answers they get, in turn (OK when none is left).
confirmations, answers = [], []


def loadUI(path):
    """The .ui file's top widget; ``children`` holds every other widget, with its class name and properties."""
    widgets = []
    for element in ET.parse(path).getroot().iter("widget"):
        properties = {p.get("name"): "".join(p.itertext()).strip() for p in element.findall("property")}
        widgetClass = ctk.ctkPathLineEdit if element.get("class") == "ctkPathLineEdit" else qt.QWidget
        widgets.append(widgetClass(element.get("class"), element.get("name"), properties))
    top = widgets[0]
    top.children = widgets[1:]
    return top


def childWidgetVariables(widget):
    return types.SimpleNamespace(**{child.objectName: child for child in widget.children})


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    yield


def errorDisplay(text, *args, **kwargs):
    errors.append(text)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs):
    confirmations.append(text)
    return answers.pop(0) if answers else True


def pip_install(requirements):
    """Slicer 5.10's signature: a string or a list of pip's command-line arguments."""
    if not isinstance(requirements, (str, list)):
        raise ValueError("pip_install requirement input must be string or list")
    pip_installs.append(requirements)
    if "-c" in requirements:
        with open(requirements[requirements.index("-c") + 1]) as f:
            constraints.append(f.read())


def startupEnvironment():
    return dict(os.environ)


class VTKObservationMixin:
    def __init__(self):
        self.observations = []

    def addObserver(self, obj, event, method, *args, **kwargs):
        self.observations.append((obj, event, method))

    def removeObserver(self, obj, event, method):
        self.observations = [o for o in self.observations if o != (obj, event, method)]

    def removeObservers(self, method=None):
        self.observations = []
