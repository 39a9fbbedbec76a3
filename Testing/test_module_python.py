"""The Slicer module on the Pythons of the Slicers it meets: 3D Slicer 5.10 and later (Python 3.12) load it; an
older one (5.8, Python 3.9) stops at one clear message. Other interpreters are taken from PATH or pyenv."""

import ast
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from module_standins import LOAD_SOURCE, MODULE_PY, PROJECT_ROOT, STANDINS, load_module
from packaging.requirements import Requirement

LIB = PROJECT_ROOT / "DPETResponseLib"
#: Left out of the Python 3.12 environment: PyPI has no CPU build of torch (its wheel is a CUDA build of several
#: GB), monai needs torch; the library imports shap and radiomics only inside functions.
LEFT_OUT = {"torch": "torch", "monai": "monai", "shap": "shap", "pyradiomics-bhklab": "radiomics"}


def find_python(version: str) -> str | None:
    """An interpreter of Python ``version`` ("3.12") on PATH or among pyenv's versions, else None."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}"),
                  *sorted((str(p) for p in pyenv.glob(f"versions/{version}.*/bin/python{version}")), reverse=True)]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


def require_python(version: str) -> str:
    """find_python, or skip (fail on CI, whose machines have pyenv's interpreters)."""
    python = find_python(version)
    if python is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no Python {version} on PATH or in pyenv")
    return python


def run(python, *args, env=None, timeout=120):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (STANDINS, PROJECT_ROOT))),
                   "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.run([python, "-s", *args], capture_output=True, text=True, env=environment, cwd=PROJECT_ROOT,
                          timeout=timeout)


@pytest.fixture(scope="module")
def python312():
    """A Python 3.12 venv with the library's dependencies but LEFT_OUT: made once (30-45 s from PyPI, 0.9 GB)
    under ~/.cache/dpet-response, reused while pyproject's dependencies are the same."""
    base = require_python("3.12")
    dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = sorted(r for r in dependencies if Requirement(r).name not in LEFT_OUT)
    key = hashlib.sha256(json.dumps([base, wanted]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dpet-response"
    venv = cache / f"py312-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "py312.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be making it
        if not (venv / "complete").is_file():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
            done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--only-binary=:all:",
                                   *wanted], capture_output=True, text=True, timeout=1200)
            assert done.returncode == 0, done.stderr[-3000:]
            (venv / "complete").touch()
    return str(venv / "bin" / "python")


def test_module_file_reaches_its_version_check_on_python_3_9_syntax():
    """Slicer 5.8's Python (3.9) must parse the file and evaluate no annotation (``dict | None`` raised TypeError
    there) before the check of the Slicer version, which comes before any class or function."""
    tree = ast.parse(MODULE_PY.read_text(), feature_version=(3, 9))
    first = tree.body[1] if ast.get_docstring(tree) else tree.body[0]
    assert ast.unparse(first) == "from __future__ import annotations"
    body = [ast.unparse(node) for node in tree.body]
    check = next(i for i, text in enumerate(body) if text.startswith("if (slicer.app.majorVersion"))
    assert "raise ImportError(" in body[check] and "MINIMUM_SLICER" in body[check]
    first_definition = next(i for i, node in enumerate(tree.body) if isinstance(node, (ast.ClassDef, ast.FunctionDef)))
    assert check < first_definition


def test_older_slicer_gets_one_clear_message(monkeypatch):
    monkeypatch.setenv("SLICER_STANDIN_VERSION", "5.8")
    with pytest.raises(ImportError, match=r"needs 3D Slicer 5\.10 or later \(Python 3\.12\); this is Slicer 5\.8"):
        load_module()
    monkeypatch.setenv("SLICER_STANDIN_VERSION", "5.10")
    assert load_module()[0].MINIMUM_SLICER == "5.10"


def test_module_file_on_slicer_5_8_python_3_9():
    """Under Python 3.9 itself (Slicer 5.8's), loading stops at the version check with the message, not earlier."""
    done = run(require_python("3.9"), "-c", LOAD_SOURCE, str(MODULE_PY), env={"SLICER_STANDIN_VERSION": "5.8"})
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("ImportError: D-PET Response needs 3D Slicer 5.10"), done.stderr
    assert "with Python 3.9." in last


def test_library_and_module_compile_and_import_on_python_3_12(python312):
    """Every file compiles under 3.12 with warnings as errors (an invalid escape is a SyntaxWarning there); the
    module file loads and sets up its widget with the stand-ins; every library module imports, but those that
    need a package of LEFT_OUT (the CNN's, on torch)."""
    files = sorted(str(p) for p in [MODULE_PY, *LIB.rglob("*.py")] if "__pycache__" not in p.parts)
    compile_all = "import sys\nfor path in sys.argv[1:]:\n    compile(open(path).read(), path, 'exec')\n"
    done = run(python312, "-W", "error", "-c", compile_all, *files)
    assert done.returncode == 0, done.stderr[-3000:]

    setup = LOAD_SOURCE + "widget = module.DPETResponseWidget()\nwidget.setup()\nprint(sys.version_info[:2])\n"
    done = run(python312, "-c", setup, str(MODULE_PY))
    assert done.returncode == 0 and done.stdout.strip() == "(3, 12)", done.stderr[-3000:]

    modules = sorted(".".join(Path(f).relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for f in files[1:])
    import_all = (
        "import importlib, json, sys\n"
        "missing = {}\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        missing[name] = error.name\n"
        "print(json.dumps(missing))\n"
    )
    done = run(python312, "-c", import_all, *modules)
    assert done.returncode == 0, done.stderr[-3000:]
    missing = json.loads(done.stdout.strip().splitlines()[-1])
    assert {name.split(".")[0] for name in missing.values()} <= set(LEFT_OUT.values()), missing
    imported = set(modules) - set(missing)
    assert {"DPETResponseLib", "DPETResponseLib.cli", "DPETResponseLib.scene", "DPETResponseLib.protocol",
            "DPETResponseLib.study.bundle"} <= imported, sorted(missing)
