"""The Slicer module checked without Slicer: UI names and classes, parameter bindings, packaging, import hygiene."""

import ast
import re
import struct
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from packaging.requirements import Requirement

PROJECT_ROOT = Path(__file__).resolve().parents[1]

MODULE_PY = PROJECT_ROOT / "DPETResponse" / "DPETResponse.py"
MODULE_UI = PROJECT_ROOT / "DPETResponse" / "Resources" / "UI" / "DPETResponse.ui"
MODULE_CMAKE = PROJECT_ROOT / "DPETResponse" / "CMakeLists.txt"
TOP_CMAKE = PROJECT_ROOT / "CMakeLists.txt"
LIB = PROJECT_ROOT / "DPETResponseLib"

#: Widget class expected for each name suffix used in the module (Qt Designer names say what they are).
CLASS_BY_SUFFIX = {
    "CollapsibleButton": "ctkCollapsibleButton",
    "Selector": "qMRMLNodeComboBox",
    "SegmentSelector": "qMRMLSegmentSelectorWidget",
    "PlaceWidget": "qSlicerMarkupsPlaceWidget",
    "PathLineEdit": "ctkPathLineEdit",
    "CheckBox": "QCheckBox",
    "Button": "QPushButton",
    "ProgressBar": "QProgressBar",
    "TextEdit": "QPlainTextEdit",
    "Label": "QLabel",
    "Frame": "QFrame",
}
#: Module-level imports DPETResponse.py may have: the standard library it uses and what Slicer itself provides.
ALLOWED_TOP_IMPORTS = {"__future__", "contextlib", "csv", "importlib", "json", "logging", "os", "pathlib", "re",
                       "shutil", "sys", "tempfile", "qt", "ctk", "vtk", "slicer"}
HEAVY = {"torch", "monai", "radiomics", "shap", "SimpleITK", "numpy", "pandas", "sklearn", "scipy", "dask",
         "matplotlib", "xgboost", "skops", "safetensors", "pydicom", "DPETResponseLib"}


@pytest.fixture(scope="module")
def module_tree():
    return ast.parse(MODULE_PY.read_text(), filename=str(MODULE_PY))


@pytest.fixture(scope="module")
def ui_widgets():
    """name -> (class, {property: text}) for every widget in the .ui file."""
    root = ET.parse(MODULE_UI).getroot()
    widgets = {}
    for w in root.iter("widget"):
        props = {p.get("name"): "".join(p.itertext()).strip() for p in w.findall("property")}
        widgets[w.get("name")] = (w.get("class"), props)
    return widgets


def suffix_class(name):
    suffix = max((s for s in CLASS_BY_SUFFIX if name.lower().endswith(s.lower())), key=len, default=None)
    return CLASS_BY_SUFFIX.get(suffix)


def test_every_ui_name_used_exists_with_the_expected_class(module_tree, ui_widgets):
    used = {node.attr for node in ast.walk(module_tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert len(used) >= 8, sorted(used)  # the rest are bound through the parameter node
    missing = sorted(used - set(ui_widgets))
    assert not missing, f"self.ui names not in {MODULE_UI.name}: {missing}"
    wrong = {n: (ui_widgets[n][0], suffix_class(n)) for n in used if ui_widgets[n][0] != suffix_class(n)}
    assert not wrong, f"name -> (class in .ui, class expected from the name): {wrong}"
    assert ui_widgets["DPETResponse"][0] == "qMRMLWidget"


def parameter_fields(module_tree):
    cls = next(n for n in module_tree.body if isinstance(n, ast.ClassDef) and n.name == "DPETResponseParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: ast.unparse(n.annotation) for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_parameter_node_fields_are_bound_to_suitable_widgets(module_tree, ui_widgets):
    fields = parameter_fields(module_tree)
    for name in ("inputVolume", "tumourSegmentation", "seedPoint", "bundlePath", "useGPU"):
        assert name in fields
    bound = {props["SlicerParameterName"]: (cls, props) for cls, props in ui_widgets.values()
             if "SlicerParameterName" in props}
    assert set(bound) - set(fields) == set(), "widgets bound to parameters that do not exist"
    # by hand: tumourSegmentId, bodySegmentation and bodySegmentId (parameterNodeWrapper has no connector to a
    # qMRMLSegmentSelectorWidget), bundlePath (its connector to a ctkPathLineEdit takes a pathlib.Path only, whose
    # empty value shows ".") and clinicalValues (JSON of the fields the bundle's clinical columns make)
    by_hand = {"tumourSegmentId", "bodySegmentation", "bodySegmentId", "bundlePath", "clinicalValues"}
    assert set(fields) - set(bound) == by_hand
    assert (fields["clinicalValues"], fields["bodySegmentId"]) == ("str", "str")
    assert fields["bodySegmentation"] == "vtkMRMLSegmentationNode"
    text = MODULE_PY.read_text()
    assert all(f"_parameterNode.{name} =" in text for name in by_hand), by_hand
    assert ui_widgets["bundlePathLineEdit"][0] == "ctkPathLineEdit"
    assert "ctkPathLineEdit::Dirs" in ui_widgets["bundlePathLineEdit"][1]["filters"]
    for name, (cls, props) in bound.items():
        annotation = fields[name]
        if annotation.startswith("vtkMRML"):
            assert cls == "qMRMLNodeComboBox" and props["nodeTypes"] == annotation, name
        elif annotation == "bool":
            assert cls == "QCheckBox", name
        else:
            pytest.fail(f"no check for parameter {name}: {annotation}")


def test_every_mrml_widget_gets_the_scene(ui_widgets):
    root = ET.parse(MODULE_UI).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)" and c.findtext("sender") == "DPETResponse"}
    mrml = {n for n, (cls, _) in ui_widgets.items() if cls.startswith(("qMRML", "qSlicer")) and n != "DPETResponse"}
    assert mrml == {"inputVolumeSelector", "tumourSegmentationSelector", "tumourSegmentSelector", "seedPointSelector",
                    "seedPlaceWidget", "bodySegmentSelector"}
    assert receivers == mrml


def test_form_rows_are_numbered_in_order_with_their_labels():
    """Every QFormLayout's items lie on rows 0..n-1, each a label in column 0 (named <layout>Label<row>) and a
    field in column 1, or one item over both; the inputs end with the tumour, seed, body mask and bundle rows."""
    root = ET.parse(MODULE_UI).getroot()
    forms = {layout.get("name"): layout for layout in root.iter("layout") if layout.get("class") == "QFormLayout"}
    assert set(forms) == {"inputsFormLayout", "optionsFormLayout"}
    fields = {}
    for name, layout in forms.items():
        cells = {}
        for item in layout.findall("item"):
            cells.setdefault(int(item.get("row")), []).append(
                (int(item.get("column")), int(item.get("colspan", 1)), item.find("widget")))
        assert sorted(cells) == list(range(len(cells))), name
        for row, items in cells.items():
            items.sort(key=lambda cell: cell[0])
            assert [cell[:2] for cell in items] in ([(0, 1), (1, 1)], [(0, 2)]), (name, row)
            if len(items) == 2:
                assert items[0][2].get("name") == f"{name}Label{row}", (name, row)
            fields.setdefault(name, []).append((items[-1][2].get("name"), items[0][2].findtext("property/string")))
    assert fields["inputsFormLayout"][-5:] == [("tumourSegmentSelector", "Tumour segment:"),
                                               ("seedPointSelector", "Seed point:"), ("seedPlaceWidget", ""),
                                               ("bodySegmentSelector", "Body mask:"),
                                               ("bundlePathLineEdit", "Model bundle:")]


def test_segment_selectors(ui_widgets):
    """The tumour's segment selector follows the tumour segmentation selector; the body mask's picks its own
    segmentation. Both may be none (the body mask is optional; the tumour may come from a seed point)."""
    tumour, body = ui_widgets["tumourSegmentSelector"][1], ui_widgets["bodySegmentSelector"][1]
    assert (tumour["segmentationNodeSelectorVisible"], tumour["noneEnabled"]) == ("false", "true")
    assert (body["segmentationNodeSelectorVisible"], body["noneEnabled"]) == ("true", "true")
    assert body["toolTip"] == ("Optional: the body or breast segment. Needed by (and only by) a model bundle trained "
                               "with body masks: its peritumoural shell stays inside it.")


def test_module_cmake_installs_every_library_file():
    text = MODULE_CMAKE.read_text()
    listed = set(re.findall(r"^\s+(DPETResponseLib/\S+\.py)\s*$", text, flags=re.M))
    present = {p.relative_to(PROJECT_ROOT).as_posix() for p in LIB.rglob("*.py") if "__pycache__" not in p.parts}
    assert "DPETResponseLib/deep/__init__.py" in present and "DPETResponseLib/scene.py" in present
    missing = sorted(present - listed)
    assert not missing, f"add to DPETResponseLib_PYTHON_SCRIPTS in {MODULE_CMAKE}: {missing}"
    stale = sorted(listed - present)
    assert not stale, f"listed in {MODULE_CMAKE} but not in the source tree: {stale}"
    params = {p.name for p in (PROJECT_ROOT / "Resources" / "Parameters").iterdir() if p.suffix in (".yaml", ".py")}
    block = re.search(r"set\(DPETResponseLib_PARAMETER_FILES(.*?)\)", text, flags=re.S).group(1).split()
    assert "radiomics_pet.yaml" in params and set(block) == params
    assert "SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/.." in text
    for resource in ("DPETResponse.py", "Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource.replace("${MODULE_NAME}", "DPETResponse") in text.replace("${MODULE_NAME}", "DPETResponse")


def test_top_level_cmake_describes_the_extension():
    text = TOP_CMAKE.read_text()
    values = dict(re.findall(r'set\((EXTENSION_\w+)\s+"([^"]*)"\)', text))
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert values.get(key), key
    assert values["EXTENSION_ICONURL"].endswith("/Resources/Icons/DPETResponse.png")
    assert all("/Resources/Screenshots/" in u and u.endswith(".png")
               for u in values["EXTENSION_SCREENSHOTURLS"].split())
    for line in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(DPETResponse)",
                 "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text
    module = ast.parse(MODULE_PY.read_text())
    extension_requirements = _literal(module, "EXTENSION_REQUIREMENTS")
    # SlicerRadiomics is not built for macOS: a dependency on it would make the extension uninstallable there
    assert set(values["EXTENSION_DEPENDS"].split()) == set(extension_requirements.values()) == {"PyTorch"}


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", header[16:24])


def test_icons_are_128_pixel_pngs():
    for path in (PROJECT_ROOT / "Resources" / "Icons" / "DPETResponse.png",
                 PROJECT_ROOT / "DPETResponse" / "Resources" / "Icons" / "DPETResponse.png"):
        assert png_size(path) == (128, 128)


def test_module_imports_nothing_heavy_at_module_level(module_tree):
    top = set()
    for node in module_tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module.split(".")[0])
    assert "slicer" in top and "qt" in top
    assert not top & HEAVY and top <= ALLOWED_TOP_IMPORTS, sorted(top - ALLOWED_TOP_IMPORTS)
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in module_tree.body if isinstance(n, ast.ClassDef)}
    assert classes["DPETResponse"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in classes["DPETResponseWidget"]
    assert classes["DPETResponseLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["DPETResponseTest"] == ["ScriptedLoadableModuleTest"]
    text = MODULE_PY.read_text()
    assert "Cancers 2026, 18(10):1581" in text and "slicer.util.tryWithErrorDisplay" in text
    assert "pip_install" not in "".join(ast.unparse(n) for n in module_tree.body
                                        if not isinstance(n, (ast.ClassDef, ast.FunctionDef)))


def _literal(tree, name):
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned at module level")


#: Environment markers' variables for each platform 3D Slicer is released on.
PLATFORMS = {"linux": {"sys_platform": "linux", "platform_system": "Linux"},
             "win32": {"sys_platform": "win32", "platform_system": "Windows"},
             "darwin": {"sys_platform": "darwin", "platform_system": "Darwin"}}


def _applicable(requirements, platform):
    """{name: Requirement} of those whose marker holds on ``platform``."""
    found = {}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(PLATFORMS[platform]):
            assert requirement.name.lower() not in found, f"two requirements of {requirement.name} on {platform}"
            found[requirement.name.lower()] = requirement
    return found


def _pyproject_dependencies():
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


@pytest.mark.parametrize("platform", ["linux", "win32"])
def test_module_requirements_match_pyproject(module_tree, platform):
    declared = _applicable(_pyproject_dependencies(), platform)
    checked = [*_literal(module_tree, "PIP_REQUIREMENTS"), *_literal(module_tree, "SLICER_REQUIREMENTS"),
               _literal(module_tree, "SHAP_REQUIREMENT"), _literal(module_tree, "RADIOMICS_REQUIREMENT")]
    module = _applicable(checked, platform)
    extensions = {name.lower() for name in _literal(module_tree, "EXTENSION_REQUIREMENTS")}
    assert set(module) | extensions == set(declared)
    assert not set(module) & extensions
    for name, requirement in module.items():
        assert (requirement.specifier, requirement.extras) == (declared[name].specifier, declared[name].extras), name


def test_xgboost_is_the_cpu_build_on_every_platform(module_tree):
    """xgboost-cpu has wheels for Linux and Windows only (none for macOS: `pip download xgboost-cpu --platform
    macosx_12_0_arm64 --only-binary=:all:` finds no version); macOS's plain xgboost wheel is the CPU build, elsewhere
    the plain wheel is a CUDA build (Linux: with NVIDIA NCCL). One of them applies on each platform, with
    pyproject's version range."""
    declared = Requirement(next(r for r in _pyproject_dependencies() if Requirement(r).name == "xgboost-cpu"))
    for platform, expected in (("linux", "xgboost-cpu"), ("win32", "xgboost-cpu"), ("darwin", "xgboost")):
        found = [r for n, r in _applicable(_literal(module_tree, "PIP_REQUIREMENTS"), platform).items()
                 if n.startswith("xgboost")]
        assert [r.name for r in found] == [expected], platform
        assert found[0].specifier == declared.specifier, platform


def test_torch_minimum_admits_the_tested_torch(module_tree):
    """The module asks the PyTorch extension for torch >= its minimum (a version range, never a pin: the extension
    picks the build for the GPU driver); the torch the tests run on (pyproject's pin) must meet it."""
    minimum = Requirement(_literal(module_tree, "TORCH_REQUIREMENT"))
    pinned = Requirement(next(r for r in _pyproject_dependencies() if Requirement(r).name == "torch"))
    assert minimum.name == "torch" and [s.operator for s in minimum.specifier] == [">="]
    assert [s.operator for s in pinned.specifier] == ["=="]
    assert minimum.specifier.contains(next(iter(pinned.specifier)).version)


def test_library_modules_import_no_qt_ctk_slicer_or_vtk():
    modules = sorted(".".join(p.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)
    assert "DPETResponseLib.scene" in modules and "DPETResponseLib.deep" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qt', 'ctk', 'slicer', 'vtk', 'vtkmodules',"
        " 'slicer_core', 'PythonQt'))\n"
        "print(json.dumps(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
