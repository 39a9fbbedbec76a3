"""DPETResponse/DPETResponse.py loaded as Slicer loads it (importlib, under its module name), outside Slicer: its
`qt`, `ctk`, `vtk` and `slicer` are the stand-ins of Testing/standins (and `PyTorchUtils`, the PyTorch extension's
module, which it imports when it runs)."""

import contextlib
import importlib.util
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODULE_PY = PROJECT_ROOT / "DPETResponse" / "DPETResponse.py"
STANDINS = Path(__file__).resolve().parent / "standins"
STANDIN_PACKAGES = ("qt", "ctk", "vtk", "slicer", "PyTorchUtils")

#: The same steps as Slicer's qSlicerScriptedUtils::loadSourceAsModule; argv[1] is the file. For other interpreters.
LOAD_SOURCE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("DPETResponse", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["DPETResponse"] = module
spec.loader.exec_module(module)
"""


def _standin_names():
    return [name for name in sys.modules if name.split(".")[0] in STANDIN_PACKAGES]


def load_module():
    """Execute the module file with fresh stand-ins; returns (module, {name: stand-in module}).

    The modules those names had before (slicer-core's `slicer`, VTK's `vtk`) are put back afterwards; the module
    keeps its stand-ins. SLICER_STANDIN_VERSION in the environment sets the Slicer version they report.
    """
    saved = {name: sys.modules.pop(name) for name in _standin_names()}
    sys.path.insert(0, str(STANDINS))
    try:
        spec = importlib.util.spec_from_file_location("DPETResponse", MODULE_PY)
        module = importlib.util.module_from_spec(spec)
        sys.modules["DPETResponse"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["DPETResponse"]
            raise
        standins = {name: sys.modules[name] for name in _standin_names()}
    finally:
        sys.path.remove(str(STANDINS))
        for name in _standin_names():
            del sys.modules[name]
        sys.modules.update(saved)
    return module, standins


@contextlib.contextmanager
def standin_imports(standins: dict):
    """The stand-ins as what the module imports while it runs (``import PyTorchUtils``, ``import
    slicer.packaging``), added to ``standins``; the modules those names had before are put back afterwards."""
    saved = {name: sys.modules.pop(name) for name in _standin_names()}
    sys.modules.update(standins)
    sys.path.insert(0, str(STANDINS))
    try:
        yield
    finally:
        sys.path.remove(str(STANDINS))
        for name in _standin_names():
            standins[name] = sys.modules.pop(name)
        sys.modules.update(saved)
