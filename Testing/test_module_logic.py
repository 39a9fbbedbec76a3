"""The Slicer module's logic outside Slicer (stand-ins for qt and slicer, Testing/standins): the arguments it gives
the CLI, a process that cannot start, and Cancel, with real processes."""

import subprocess
import sys

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
from module_standins import load_module

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
