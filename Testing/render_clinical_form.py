"""Render the Slicer module's clinical form for a bundle with a real Qt (PySide6, offscreen) to a PNG.

The form is built by the module's own `clinicalForm` (DPETResponse/DPETResponse.py, loaded with PySide6 as its `qt`
and the stand-ins of Testing/standins as `slicer`, `vtk` and `ctk`), under a group box titled as the module's
"Clinical data" section with the same help text. A script, not a test:

    pip install --target /tmp/qtlib PySide6-Essentials   # once, outside the project's environment
    QT_QPA_PLATFORM=offscreen PYTHONPATH=/tmp/qtlib .venv/bin/python Testing/render_clinical_form.py BUNDLE \\
        --out /tmp/dpet-clinical-form.png age=56 regimen=TCHP

Values are given as `dpet-response predict --clinical` takes them; those left out show "unknown".
"""

import argparse
import importlib.util
import os
import sys
import types
from pathlib import Path

TESTING = Path(__file__).resolve().parent
PROJECT_ROOT = TESTING.parent


def qt_namespace():
    """PySide6's widgets, core and GUI classes as one module, the way PythonQt's `qt` holds them."""
    from PySide6 import QtCore, QtGui, QtWidgets

    qt = types.ModuleType("qt")
    for part in (QtCore, QtGui, QtWidgets):
        qt.__dict__.update({name: getattr(part, name) for name in dir(part) if name.startswith("Q")})
    return qt


def load_module_with(qt):
    """DPETResponse.py with ``qt`` as its `qt` and the stand-ins for the rest of Slicer."""
    sys.modules["qt"] = qt
    sys.path.insert(0, str(TESTING / "standins"))  # `qt` is taken from sys.modules first
    spec = importlib.util.spec_from_file_location("DPETResponse", PROJECT_ROOT / "DPETResponse" / "DPETResponse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["DPETResponse"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("values", nargs="*", metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=Path("/tmp/dpet-clinical-form.png"))
    parser.add_argument("--width", type=int, default=420, help="pixels (the module panel's usual width)")
    args = parser.parse_intermixed_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.path.insert(0, str(PROJECT_ROOT))
    from DPETResponseLib.cli import _clinical_values
    from DPETResponseLib.scene import clinical_schema

    qt = qt_namespace()
    app = qt.QApplication([])
    module = load_module_with(qt)
    schema = clinical_schema(args.bundle)
    given = _clinical_values(args.bundle, args.values)
    values = module.validClinicalValues(schema, given)
    if values.keys() != given.keys():
        print(f"not shown (not a column of the bundle, outside the training range or category): "
              f"{sorted(set(given) - set(values))}", file=sys.stderr)

    panel = qt.QWidget()
    box = qt.QGroupBox("Clinical data", panel)
    outer = qt.QVBoxLayout(panel)
    outer.addWidget(box)
    inner = qt.QVBoxLayout(box)
    help_label = qt.QLabel(module.CLINICAL_HELP)
    help_label.setWordWrap(True)
    inner.addWidget(help_label)
    form, fields = module.clinicalForm(schema, values)
    inner.addWidget(form)
    panel.resize(args.width, panel.heightForWidth(args.width) if panel.hasHeightForWidth() else
                 panel.sizeHint().height())
    panel.setFocusPolicy(qt.Qt.StrongFocus)  # no text cursor in the first field
    panel.show()
    panel.setFocus()
    app.processEvents()
    for column, field in fields.items():
        shown = field.text() if isinstance(field, qt.QDoubleSpinBox) else field.currentText()
        print(f"{column}: {shown}")
    if not panel.grab().save(str(args.out)):
        print(f"could not write {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({panel.width()}x{panel.height()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
