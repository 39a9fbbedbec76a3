"""The Slicer module's logic outside Slicer (stand-ins for qt and slicer, Testing/standins): the arguments it gives
the CLI, a process that cannot start, and Cancel, with real processes."""

import importlib
import importlib.metadata
import os
import subprocess
import sys

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from module_standins import load_module, standin_imports
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from DPETResponseLib import scene as S
from DPETResponseLib.cli import build_parser

SLEEPER = "import time; time.sleep(300)"
PARENT = "import subprocess, sys; subprocess.run([sys.executable, '-c', {!r}])"
#: PythonSlicer stand-in: a launcher that starts a Python, which starts a worker (the CLI's process pool).
LAUNCHER = PARENT.format(PARENT.format(SLEEPER))


@pytest.fixture
def module():
    return load_module()[0]


@pytest.fixture
def processes():
    """psutil processes a test started; any still alive at its end are killed."""
    started = []
    yield started
    for process in started:
        if alive(process):
            process.kill()


def alive(process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tree(pid: int, processes: list, size: int = 3) -> list:
    """Process ``pid`` and its descendants, once there are ``size`` of them."""
    root = psutil.Process(pid)
    for _ in range(200):
        found = [root, *root.children(recursive=True)]
        if len(found) >= size:
            processes.extend(found)
            return found
        psutil.wait_procs([root], timeout=0.05)
    pytest.fail(f"the process tree of {pid} did not start")


def stub_prepare(logic, tmp_path, args, monkeypatch):
    """``_prepare`` that makes a working folder with a partly written input and returns ``args``."""
    work = tmp_path / "work"

    def prepare(*_):
        work.mkdir()
        (work / "pet.nii.gz").write_bytes(b"partial")
        logic._workDir = str(work)
        return args, str(work / "result")

    monkeypatch.setattr(logic, "_prepare", prepare)
    return work


def test_seed_with_a_negative_x_reaches_the_cli_as_the_seed(module, tmp_path):
    """The arguments the module gives `PythonSlicer`, read by the CLI's own parser: a seed at LPS x = -12.5 was
    passed as `--seed -12.5000,...`, which argparse takes for an option ("expected one argument")."""
    scene = S.standalone_scene()
    pet = S.sitk_to_volume_node(sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)), scene, name="PET")
    seed = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seed")
    seed.AddControlPoint(12.5, -30.0, 4.0)  # RAS; LPS (-12.5, 30, 4)
    (tmp_path / "bundle").mkdir()
    logic = module.DPETResponseLogic()
    args, out = logic._prepare(pet, seed, tmp_path / "bundle", None)
    try:
        assert args[:2] == ["-m", "DPETResponseLib.cli"]
        parsed = build_parser().parse_args(args[2:])
        assert (parsed.command, parsed.bundle, parsed.mask, str(parsed.out)) == ("predict", tmp_path / "bundle", None,
                                                                                 out)
        assert parsed.seed == (-12.5, 30.0, 4.0) and parsed.image.is_file()
    finally:
        logic._cleanup()


def test_a_process_that_cannot_start_ends_the_run_with_its_error(module, tmp_path, monkeypatch):
    """Qt emits errorOccurred(FailedToStart) and no finished() for a program it cannot start: the run stayed
    "running" for ever."""
    logic = module.DPETResponseLogic()
    missing = str(tmp_path / "bin" / "PythonSlicer")
    monkeypatch.setattr(logic, "pythonSlicer", lambda: missing)
    work = stub_prepare(logic, tmp_path, ["-m", "DPETResponseLib.cli"], monkeypatch)
    ended = []
    logic.processAsync(None, None, tmp_path, onFinished=lambda result, error: ended.append((result, error)))
    assert not logic.isRunning()
    assert [(result, str(error)) for result, error in ended] == [
        (None, f"could not start {missing}: execve: No such file or directory")]
    assert not work.exists()


def test_kill_process_tree_ends_every_process_under_the_launcher(module, processes):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER])
    found = tree(launcher.pid, processes)
    module.killProcessTree(launcher.pid)
    launcher.wait(5)  # its owner reaps it
    assert [p.pid for p in found if alive(p)] == []


def test_kill_process_tree_of_a_process_that_has_ended(module):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    module.killProcessTree(ended.pid)


def test_cancel_ends_the_whole_tree_removes_the_work_and_loads_nothing(module, tmp_path, monkeypatch, processes):
    """QProcess.kill() stopped the PythonSlicer launcher only: the prediction (and its workers) went on."""
    logic = module.DPETResponseLogic()
    monkeypatch.setattr(logic, "pythonSlicer", lambda: sys.executable)
    work = stub_prepare(logic, tmp_path, ["-c", LAUNCHER], monkeypatch)
    monkeypatch.setattr(logic, "loadResults", lambda *args, **kwargs: pytest.fail("a cancelled run loaded results"))
    ended = []
    logic.processAsync(None, None, tmp_path, onFinished=lambda result, error: ended.append(error))
    found = tree(logic._process.processId(), processes)
    logic.cancel()
    assert [p.pid for p in found if alive(p)] == []
    assert not logic.isRunning() and not work.exists() and ended == []



# ------------------------------------------------------------------------------------------------ dependencies
ABSENT = "dpet-response-absent-package>=1.0"
#: A requirement for a platform other than this one.
ELSEWHERE = "dpet-response-elsewhere>=1.0; sys_platform == " + ('"win32"' if sys.platform != "win32" else '"linux"')


def check_dependencies(monkeypatch, version: str, requirements: list[str], decline_torch=False, **attributes):
    """checkDependencies(askConfirmation=True) on the stand-ins of Slicer ``version``, with PIP_REQUIREMENTS =
    ``requirements`` and the module's other ``attributes`` (the user declines PyTorch's installation with
    ``decline_torch``): (its answer or the RuntimeError it raised, the stand-ins, with those it imported while
    running)."""
    monkeypatch.setenv("SLICER_STANDIN_VERSION", version)
    module, standins = load_module()
    monkeypatch.setattr(module, "PIP_REQUIREMENTS", requirements)
    for name, value in attributes.items():
        monkeypatch.setattr(module, name, value)
    with standin_imports(standins):
        if decline_torch:
            importlib.import_module("PyTorchUtils").declines.append(True)
        try:
            answer = module.DPETResponseLogic().checkDependencies(askConfirmation=True)
        except RuntimeError as error:
            answer = error
    return answer, standins


@pytest.mark.parametrize("version", ["5.10", "5.12"])
def test_packages_install_with_slicer_packaging_on_5_12_and_pip_install_on_5_10(monkeypatch, version):
    """After one confirmation, Slicer 5.12's slicer.packaging.pip_ensure installs (Slicer 5.10 has no
    slicer.packaging: slicer.util.pip_install); a requirement whose marker excludes this platform is not asked
    for; every pip call but the private-folder one carries constraints that keep installed packages from
    downgrades."""
    answer, standins = check_dependencies(monkeypatch, version, [ABSENT, ELSEWHERE])
    assert answer is True
    util = standins["slicer.util"]
    assert len(util.confirmations) == 1
    assert ABSENT in util.confirmations[0] and "elsewhere" not in util.confirmations[0]
    *installs, private = util.pip_installs  # the last: the PyPI `slicer` package into shap's private folder
    assert private[:2] == ["--target", shap_private_dir(standins)] and "-c" not in private
    if version == "5.12":
        assert "slicer.packaging" in standins
        [(requirements, keywords, constraints)] = standins["slicer.packaging"].ensured
        assert requirements == [ABSENT]
        assert (keywords["prompt_install"], keywords["skip_in_testing"]) == (False, False)
        assert keywords["constraints"] and keywords["requester"] == "D-PET Response"
    else:
        assert "slicer.packaging" not in standins
        assert installs[0][:-2] == [ABSENT] and installs.pop(0)[-2] == "-c"
        constraints = util.constraints.pop(0)
    assert [call[:2] for call in installs] == [["--no-deps", "shap>=0.46"], ["numba", "cloudpickle"]]
    assert all(call[-2] == "-c" for call in installs) and util.constraints == [constraints] * 2
    assert f"numpy>={importlib.metadata.version('numpy')}" in constraints.splitlines()


def shap_private_dir(standins) -> str:
    settings = standins["slicer"].app.slicerRevisionUserSettingsFilePath
    return os.path.join(os.path.dirname(settings), "DPETResponse", "shap-slicer")


def test_constraints_hold_every_installed_package_at_its_version_or_newer_and_torch_at_its_own(module):
    """Constraints met by what is installed (pip changes nothing to meet them), one per installed package:
    ``>=`` its version, torch ``==`` (the PyTorch extension chose its build)."""
    constraints = {Requirement(line).name: Requirement(line) for line in module.DPETResponseLogic.pipConstraints()}
    installed = {}
    for distribution in importlib.metadata.distributions():  # the first of a name is the one imported
        installed.setdefault(canonicalize_name(distribution.metadata["Name"]), distribution.version)
    assert set(constraints) == set(installed)
    for name, requirement in constraints.items():
        [specifier] = requirement.specifier
        assert specifier.operator == ("==" if name == "torch" else ">=") and specifier.version == installed[name]
        assert requirement.specifier.contains(installed[name], prereleases=True)
    assert "numpy" in constraints and "torch" in constraints


def test_a_requirement_that_would_downgrade_an_installed_package_is_refused(module, monkeypatch):
    """numpy older than the installed one (Slicer's): refused, naming it, before any dialog or pip call."""
    numpy = importlib.metadata.version("numpy")
    answer, standins = check_dependencies(monkeypatch, "5.12", [ABSENT, f"numpy<{numpy}"])
    assert isinstance(answer, RuntimeError)
    assert f"numpy<{numpy} (installed: {numpy})" in str(answer) and ABSENT not in str(answer)
    assert standins["slicer.util"].confirmations == standins["slicer.util"].pip_installs == []
    assert "slicer.packaging" not in standins  # refused before an installer was reached
    downgrades = [f"numpy<{numpy}", f"numpy<={numpy}.dev0", "numpy==1.0", "numpy==1.*", "numpy~=1.0"]
    others = [f"numpy>={numpy}", f"numpy=={numpy}", "numpy>99", "numpy==99.0", "numpy~=99.0", "absent-package<1"]
    assert module.DPETResponseLogic._downgrades(downgrades + others) == [
        f"{r} (installed: {numpy})" for r in downgrades]


def test_torch_below_the_minimum_is_installed_by_the_pytorch_extension(monkeypatch):
    """torch older than TORCH_REQUIREMENT (here: a minimum above the installed one) goes to the PyTorch
    extension's installTorch with the minimum; declined, nothing else is installed. The installed torch meets
    the module's own minimum."""
    torch = Version(importlib.metadata.version("torch"))
    above = f">={torch.major + 1}.0"
    answer, standins = check_dependencies(monkeypatch, "5.12", [ABSENT], TORCH_REQUIREMENT="torch" + above)
    assert answer is True
    assert [(i["askConfirmation"], i["torchVersionRequirement"]) for i in standins["PyTorchUtils"].installs] == [
        (True, above)]
    answer, standins = check_dependencies(monkeypatch, "5.12", [ABSENT], decline_torch=True,
                                          TORCH_REQUIREMENT="torch" + above)
    assert answer is False and len(standins["PyTorchUtils"].installs) == 1
    assert standins["slicer.util"].confirmations == standins["slicer.util"].pip_installs == []
    answer, standins = check_dependencies(monkeypatch, "5.12", [])
    assert answer is True and standins["PyTorchUtils"].installs == []


def test_pyradiomics_is_installed_only_where_no_radiomics_can_be_imported(monkeypatch):
    """No `radiomics` importable (no SlicerRadiomics): RADIOMICS_REQUIREMENT joins the pip installs; a failed build
    names what to install for this platform. With a `radiomics` present (SlicerRadiomics' copy, checked by the
    bundle's probe at prediction) nothing of it is installed."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "radiomics" else real_find_spec(name, *args))
    answer, standins = check_dependencies(monkeypatch, "5.10", [ABSENT])
    assert answer is True
    module, _ = load_module()
    [first, *_] = standins["slicer.util"].pip_installs
    assert first[:-2] == [ABSENT, module.RADIOMICS_REQUIREMENT]

    def failing_build(requirements, constraints):
        raise OSError("error: command 'cc' failed")

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("SLICER_STANDIN_VERSION", "5.10")
    module, standins = load_module()
    monkeypatch.setattr(module.DPETResponseLogic, "pipInstall", staticmethod(failing_build))
    with standin_imports(standins), pytest.raises(RuntimeError, match=r"xcode-select --install.*Apply again"):
        module.DPETResponseLogic().checkDependencies(askConfirmation=False)
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)  # radiomics importable here
    answer, standins = check_dependencies(monkeypatch, "5.10", [ABSENT])
    assert all(module.RADIOMICS_REQUIREMENT not in call for call in standins["slicer.util"].pip_installs)
