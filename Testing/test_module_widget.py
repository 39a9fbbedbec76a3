"""The Slicer module's widget outside Slicer, on its real .ui file (stand-ins for qt, ctk and slicer, including
parameterNodeWrapper's defaults and GUI bindings: Testing/standins)."""

import sys

import psutil
import pytest
from module_standins import load_module


@pytest.fixture
def loaded():
    return load_module()


def new_widget(module):
    widget = module.DPETResponseWidget()
    widget.setup()
    return widget


def test_bundle_path_starts_empty_then_offers_the_bundle_used_last(loaded, tmp_path, monkeypatch):
    """The field showed "." at start: a pathlib.Path parameter defaults to Path(), bound as str(Path()) == "."."""
    module, standins = loaded
    widget = new_widget(module)
    field = widget.ui.bundlePathLineEdit
    assert field.currentPath == "" and widget._parameterNode.bundlePath == ""
    assert not widget.ui.applyButton.enabled

    bundle = str(tmp_path / "bundle")
    field.currentPath = bundle
    assert widget._parameterNode.bundlePath == bundle
    monkeypatch.setattr(widget.logic, "checkDependencies", lambda askConfirmation: True)
    monkeypatch.setattr(widget.logic, "processAsync", lambda *args, **kwargs: None)
    widget.onApplyButton()

    standins["slicer"].mrmlScene.Clear()  # a new scene: no parameter node yet
    again = new_widget(module)
    assert again.ui.bundlePathLineEdit.currentPath == bundle and again._parameterNode.bundlePath == bundle
    saved = str(tmp_path / "bundle of the saved scene")
    again._parameterNode.bundlePath = saved  # a loaded scene's parameter wins over the field's history
    again.setParameterNode(again.logic.getParameterNode())
    assert again.ui.bundlePathLineEdit.currentPath == saved


def test_a_run_that_ends_after_the_scene_closed(loaded):
    """A run ending with no parameter node (the scene closed under it) raised AttributeError in _checkCanApply."""
    module, standins = loaded
    widget = new_widget(module)
    widget.onSceneStartClose(None, None)
    widget.onProcessFinished(None, RuntimeError("the prediction process ended with code 1"))
    assert not widget.ui.applyButton.enabled and not widget.ui.cancelButton.enabled
    assert standins["slicer.util"].errors == ["Could not predict pCR.\nthe prediction process ended with code 1"]


def test_closing_the_scene_cancels_a_running_prediction(loaded, tmp_path, monkeypatch):
    module, _ = loaded
    widget = new_widget(module)
    logic = widget.logic
    monkeypatch.setattr(logic, "pythonSlicer", lambda: sys.executable)
    monkeypatch.setattr(logic, "_prepare", lambda *_: (["-c", "import time; time.sleep(300)"], str(tmp_path)))
    logic.processAsync(None, None, tmp_path)
    process = psutil.Process(logic._process.processId())
    try:
        widget.onSceneStartClose(None, None)
        assert not logic.isRunning() and widget._parameterNode is None and not process.is_running()
    finally:
        if process.is_running():
            process.kill()
