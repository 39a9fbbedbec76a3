"""run_cohort / run_extract: values against hand-checkable references, content-keyed cache, resume after SIGKILL,
one bad case never stops a cohort, process pool and Dask give the serial run's numbers, and the CLI prints one line.

The synthetic cases (cohort_tasks.synthetic_case) have a ball of radius 4 voxels centred on a voxel: 257 voxels
(the number of integer points within distance 4 of the origin), background 0-1 SUV, tumour 4-9 SUV.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from cohort_tasks import synthetic_case, tumour_stats, tumour_stats_or_crash, write_cohort
from conftest import PROJECT_ROOT

from DPETResponseLib.cohort import CohortError, run_cohort
from DPETResponseLib.extraction import run_extract

TESTING = Path(__file__).resolve().parent
BALL_VOXELS = 257


def _cases(paths: dict) -> pd.DataFrame:
    return pd.DataFrame({"image": [p[0] for p in paths.values()], "mask": [p[1] for p in paths.values()]},
                        index=pd.Index(list(paths), name="case_id"))


def _expected(seed: int, scale: float = 1.0) -> dict:
    image, mask = synthetic_case(seed)
    values = sitk.GetArrayFromImage(image).astype(np.float64)[sitk.GetArrayFromImage(mask) > 0]
    return {"mean": values.mean(), "max": values.max(), "voxels": values.size, "scaled": values.mean() * scale}


def _entries(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.glob("*/*/*.json") if not p.name.startswith("."))  # not temporary files


def _log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def cohort(tmp_path):
    return _cases(write_cohort(tmp_path / "data", 8))


def test_values_then_everything_from_cache(cohort, tmp_path):
    log = tmp_path / "calls.log"
    settings = {"scale": 2.0, "log": str(log)}
    first = run_cohort(cohort, tumour_stats, settings, tmp_path / "cache", progress=False)
    assert (first.n_computed, first.n_cached, first.n_failed, first.exit_code) == (8, 0, 0, 0)
    assert list(first.table.index) == list(cohort.index) and list(first.table.columns) == ["mean", "max", "voxels",
                                                                                          "scaled"]
    for i, case_id in enumerate(cohort.index):
        expected = _expected(i, scale=2.0)
        assert first.table.loc[case_id, "voxels"] == BALL_VOXELS == expected["voxels"]
        assert 4 < expected["mean"] < 9
        for name in ("mean", "max", "scaled"):
            assert first.table.loc[case_id, name] == pytest.approx(expected[name], rel=1e-6)
    assert len(_entries(tmp_path / "cache")) == 8

    again = run_cohort(cohort, tumour_stats, settings, tmp_path / "cache", progress=False)
    assert (again.n_computed, again.n_cached) == (0, 8)
    pd.testing.assert_frame_equal(again.table, first.table)
    assert len(_log_lines(log)) == 8  # the second run called the task for no case
    assert again.describe().startswith("cohort_tasks.tumour_stats: 8 case(s) in")
    assert "0 computed, 8 from cache, 0 failed" in again.describe()


def test_changed_setting_recomputes(cohort, tmp_path):
    run_cohort(cohort, tumour_stats, {"scale": 2.0}, tmp_path / "cache", progress=False)
    changed = run_cohort(cohort, tumour_stats, {"scale": 3.0}, tmp_path / "cache", progress=False)
    assert (changed.n_computed, changed.n_cached) == (8, 0)
    assert changed.table.loc["C005", "scaled"] == pytest.approx(3 * _expected(5)["mean"], rel=1e-6)
    renamed = run_cohort(cohort, tumour_stats, {"scale": 3.0}, tmp_path / "cache", progress=False, task_name="other")
    assert renamed.n_computed == 8  # the task name is part of the key


def test_cache_follows_file_content_not_mtime(cohort, tmp_path):
    run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    for path in cohort["image"]:
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    touched = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    assert (touched.n_computed, touched.n_cached) == (0, 8)
    image, _ = synthetic_case(100)  # new bytes for C002
    sitk.WriteImage(image, cohort.loc["C002", "image"])
    edited = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    assert (edited.n_computed, edited.n_cached) == (1, 7)
    assert edited.table.loc["C002", "mean"] == pytest.approx(_expected(100)["mean"], rel=1e-6)


def test_corrupt_cache_entry_is_recomputed(cohort, tmp_path):
    run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    entry = _entries(tmp_path / "cache")[3]
    entry.write_text(entry.read_text()[:20])
    rerun = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    assert (rerun.n_computed, rerun.n_cached) == (1, 7)
    assert json.loads(entry.read_text())["result"]["voxels"] == BALL_VOXELS


def test_failures_are_not_cached_and_a_fixed_file_is_retried(cohort, tmp_path):
    good_mask = sitk.ReadImage(cohort.loc["C004", "mask"])
    sitk.WriteImage(good_mask * 0, cohort.loc["C004", "mask"])
    broken = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False)
    assert (broken.n_computed, broken.n_failed, broken.exit_code) == (7, 1, 0)
    assert broken.errors.to_dict("records") == [{"case_id": "C004", "stage": "input",
                                                 "message": "mask is empty (no tumour voxel)"}]
    assert "failed C004 [input]: mask is empty (no tumour voxel)" in broken.describe()
    assert "C004" not in broken.table.index and len(_entries(tmp_path / "cache")) == 7
    strict = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False, strict=True)
    assert (strict.n_cached, strict.n_failed, strict.exit_code) == (7, 1, 1)

    sitk.WriteImage(good_mask, cohort.loc["C004", "mask"])
    fixed = run_cohort(cohort, tumour_stats, {}, tmp_path / "cache", progress=False, strict=True)
    assert (fixed.n_cached, fixed.n_computed, fixed.n_failed, fixed.exit_code) == (7, 1, 0, 0)
    assert fixed.table.loc["C004", "voxels"] == BALL_VOXELS


def _write(image, path):
    sitk.WriteImage(image, str(path))


def _array_image(array, like):
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


def _no_weight_dicom(paths, shared):
    ds = pydicom.dcmread(shared / "pet_dicom" / "acrin_flt_breast_bqml" / "1.dcm")
    del ds.PatientWeight
    ds.save_as(Path(paths[0]).with_suffix(".dcm"))
    return str(Path(paths[0]).with_suffix(".dcm")), paths[1]


def _corrupt(kind, paths, shared):
    """Breaks one case's files; returns its (image, mask) paths."""
    image, mask = (sitk.ReadImage(p) for p in paths)
    pet, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask)
    if kind == "unreadable file":
        Path(paths[0]).write_bytes(b"this is not a NIfTI file")
    elif kind == "missing DICOM tag":
        return _no_weight_dicom(paths, shared)
    elif kind == "NaNs":  # NRRD, found by check_case (NaN in a NIfTI is found when it is read: test_io)
        pet[0, 0, :4] = np.nan
        _write(_array_image(pet, image), Path(paths[0]).with_suffix(".nrrd"))
        return str(Path(paths[0]).with_suffix(".nrrd")), paths[1]
    elif kind == "strongly negative SUV":
        pet[0, :2, 0] = -20
        _write(_array_image(pet, image), paths[0])
    elif kind == "2D image":
        _write(image[:, :, 6], paths[0])
    elif kind == "4D image":
        _write(sitk.JoinSeries([image, image]), paths[0])
    elif kind == "empty mask":
        _write(mask * 0, paths[1])
    elif kind == "non-binary mask":
        labels[labels > 0] = 1 + (np.arange(int(labels.sum())) % 3)
        _write(_array_image(labels, mask), paths[1])
    elif kind == "geometry mismatch":
        mask.SetSpacing((2.0, 2.0, 3.3))
        _write(mask, paths[1])
    elif kind == "mask outside the image":
        mask.SetOrigin((-10.0, 25.0, 400.0))
        _write(mask, paths[1])
    elif kind == "2-voxel tumour":
        labels[:] = 0
        labels[6, 7, 8:10] = 1
        _write(_array_image(labels, mask), paths[1])
    return paths


BAD_INPUTS = [
    ("unreadable file", "input", r"cannot read image file .*C002_pet.nii.gz"),
    ("missing DICOM tag", "input", r"DICOM tag PatientWeight is missing \(.*C002_pet.nii.dcm\)"),
    ("NaNs", "input", r"image has 4 non-finite voxel\(s\) \(NaN/inf\) of 2688"),
    ("strongly negative SUV", "input", r"image has 2 voxel\(s\) below -1 SUV \(minimum -20\)"),
    ("2D image", "input", r"image is 2D \(size \(16, 14\)\)"),
    ("4D image", "input", r"4D"),  # io.read_pet or check_case may be the one to refuse it
    ("empty mask", "input", r"^mask is empty \(no tumour voxel\)$"),
    ("non-binary mask", "input", r"mask has 3 labels \(1, 2, 3\); give one tumour per case"),
    ("geometry mismatch", "input", r"not on the PET grid: spacing \(2, 2, 3.3\) vs PET \(2, 2, 3\) mm"),
    ("mask outside the image", "input", r"mask's tumour lies outside the image"),
    ("2-voxel tumour", "input", r"tumour has 2 voxel\(s\): too small for texture analysis"),
]


@pytest.mark.parametrize("kind,stage,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_one_bad_case_never_stops_the_cohort(tmp_path, shared_data, kind, stage, message):
    paths = write_cohort(tmp_path / "data", 4)
    paths["C002"] = _corrupt(kind, paths["C002"], shared_data)
    result = run_cohort(_cases(paths), tumour_stats, {}, tmp_path / "cache", progress=False)
    assert list(result.table.index) == ["C000", "C001", "C003"]
    assert result.table.loc["C003", "mean"] == pytest.approx(_expected(3)["mean"], rel=1e-6)
    assert (result.n_computed, result.n_failed, result.exit_code) == (3, 1, 0)
    assert result.errors[["case_id", "stage"]].values.tolist() == [["C002", stage]]
    assert re.search(message, result.errors.loc[0, "message"]), result.errors.loc[0, "message"]


def test_unexpected_exception_is_a_task_error(cohort, tmp_path):
    result = run_cohort(cohort, tumour_stats_or_crash, {"crash": "C006"}, tmp_path / "cache", progress=False)
    assert result.errors.values.tolist() == [["C006", "task", "ZeroDivisionError: division by zero"]]
    assert len(result.table) == 7


def test_nothing_succeeded_is_an_error(cohort, tmp_path):
    missing = cohort.assign(image=[str(tmp_path / f"gone{i}.nii.gz") for i in range(len(cohort))])
    with pytest.raises(CohortError, match=r"all 8 case\(s\) failed \(C000: cannot read .*gone0.nii.gz: No such file"):
        run_cohort(missing, tumour_stats, {}, tmp_path / "cache", progress=False)
    try:
        run_cohort(missing, tumour_stats, {}, tmp_path / "cache", progress=False)
    except CohortError as err:
        assert err.result.exit_code == 2 and err.result.n_failed == 8 and err.result.table.empty


def test_process_pool_matches_serial_and_survives_a_dying_worker(cohort, tmp_path):
    serial = run_cohort(cohort.drop(index="C003"), tumour_stats, {}, tmp_path / "serial", progress=False).table
    parallel = run_cohort(cohort, tumour_stats_or_crash, {"die": "C003"}, tmp_path / "pool", jobs=2, progress=False,
                          task_name="t")
    assert parallel.errors[["case_id", "stage"]].values.tolist() == [["C003", "worker"]]
    assert "worker process died" in parallel.errors.loc[0, "message"]
    pd.testing.assert_frame_equal(parallel.table, serial)


def test_dask_local_cluster_matches_serial(cohort, tmp_path):
    serial = run_cohort(cohort, tumour_stats, {}, tmp_path / "serial", progress=False).table
    dask = run_cohort(cohort, tumour_stats, {}, tmp_path / "dask", jobs=2, scheduler="local", progress=False)
    assert (dask.n_computed, dask.n_failed) == (8, 0)
    pd.testing.assert_frame_equal(dask.table, serial)


def test_dask_existing_cluster_by_address(cohort, tmp_path):
    from distributed import LocalCluster

    serial = run_cohort(cohort, tumour_stats, {}, tmp_path / "serial", progress=False).table
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = run_cohort(cohort, tumour_stats_or_crash, {"crash": "C001"}, tmp_path / "dask",
                          scheduler=cluster.scheduler_address, progress=False)
    assert dask.errors.values.tolist() == [["C001", "task", "ZeroDivisionError: division by zero"]]
    pd.testing.assert_frame_equal(dask.table, serial.drop(index="C001"))


KILL_SCRIPT = """
import sys
import pandas as pd
from cohort_tasks import tumour_stats
from DPETResponseLib.cohort import run_cohort
cases = pd.read_csv(sys.argv[1], index_col="case_id")
run_cohort(cases, tumour_stats, {"sleep": 0.3, "log": sys.argv[3]}, sys.argv[2], jobs=int(sys.argv[4]), progress=False)
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path, jobs):
    """KILL TEST: a real run is SIGKILLed once some cases are cached; the rerun computes only the others and the
    table equals an uninterrupted run's."""
    cases = _cases(write_cohort(tmp_path / "data", 12))
    cases.to_csv(tmp_path / "cases.csv")
    cache, log = tmp_path / "cache", tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTING), str(PROJECT_ROOT)])}
    run = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path / "cases.csv"), str(cache), str(log),
                            str(jobs)], env=env, cwd=tmp_path, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(_entries(cache)) < 4 and run.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)  # the run and its worker processes
    run.wait()
    assert run.returncode == -signal.SIGKILL, run.stderr.read().decode()
    cached = {json.loads(p.read_text())["case_id"] for p in _entries(cache)}  # every entry is whole JSON
    assert 4 <= len(cached) < 12

    log.unlink()
    resumed = run_cohort(cases, tumour_stats, {"sleep": 0.3, "log": str(log)}, cache, progress=False)
    assert (resumed.n_cached, resumed.n_computed, resumed.n_failed) == (len(cached), 12 - len(cached), 0)
    assert sorted(_log_lines(log)) == sorted(set(cases.index) - cached)  # recomputed exactly the unfinished ones
    uninterrupted = run_cohort(cases, tumour_stats, {}, tmp_path / "reference", progress=False)
    pd.testing.assert_frame_equal(resumed.table, uninterrupted.table)


def _manifest(tmp_path, paths, extra=""):
    lines = ["case_id,image,mask,label,split,age"]
    lines += [f"{c},{Path(i).relative_to(tmp_path)},{Path(m).relative_to(tmp_path)},{n % 2},train,{50 + n}"
              for n, (c, (i, m)) in enumerate(paths.items())]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + extra + "\n")
    return tmp_path / "manifest.csv"


def test_run_extract_writes_features_errors_and_sidecar(tmp_path, monkeypatch):
    import DPETResponseLib.extraction as extraction

    # The file outputs around the task, with the test task standing in for analyse_case.
    monkeypatch.setattr(extraction, "analyse_case", tumour_stats)
    monkeypatch.setattr(extraction, "resolve_settings", lambda settings: {**settings, "scale": 2.0})
    monkeypatch.setattr(extraction, "with_habitat_model", lambda cases, settings, *args, **kwargs: settings)
    paths = write_cohort(tmp_path / "data", 4)
    sitk.WriteImage(sitk.ReadImage(paths["C001"][1]) * 0, paths["C001"][1])
    out = tmp_path / "out" / "features.csv"
    result = run_extract(_manifest(tmp_path, paths), out, progress=False)
    assert (result.n_computed, result.n_failed) == (3, 1)
    features = pd.read_csv(out, index_col="case_id")
    assert list(features.index) == ["C000", "C002", "C003"] and list(features.columns) == ["mean", "max", "voxels",
                                                                                          "scaled", "age"]
    assert features.loc["C002", "scaled"] == pytest.approx(2 * _expected(2)["mean"], rel=1e-6)
    assert features["age"].tolist() == [50, 52, 53] and (features["voxels"] == BALL_VOXELS).all()
    errors = pd.read_csv(tmp_path / "out" / "features.errors.csv")
    assert errors.values.tolist() == [["C001", "input", "mask is empty (no tumour voxel)"]]
    sidecar = json.loads((tmp_path / "out" / "features.json").read_text())
    assert sidecar["counts"] == {"cases": 4, "computed": 3, "cached": 0, "failed": 1, "warnings": 0}
    assert sidecar["settings"] == {"scale": 2.0}
    assert sidecar["versions"]["DPETResponse"] and sidecar["versions"]["SimpleITK"] == sitk.Version.VersionString()
    assert (tmp_path / ".dpet-cache").is_dir()  # beside the manifest, where train looks too
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]

    again = run_extract(_manifest(tmp_path, paths), out, progress=False)
    assert (again.n_cached, again.n_computed) == (3, 0)
    pd.testing.assert_frame_equal(pd.read_csv(out, index_col="case_id"), features)


def test_cli_extract_missing_file_is_one_line_without_traceback(tmp_path):
    paths = write_cohort(tmp_path / "data", 3)
    Path(paths["C001"][0]).unlink()
    run = subprocess.run([sys.executable, "-m", "DPETResponseLib.cli", "extract", str(_manifest(tmp_path, paths)),
                          "--out", str(tmp_path / "features.csv")], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert re.fullmatch(r"dpet-response extract: error: manifest .*manifest.csv: 1 missing file\(s\): C001 image "
                        r".*C001_pet.nii.gz", lines[0]), lines[0]
    assert not (tmp_path / "features.csv").exists()


def test_describe_lists_at_most_20_failures_and_duplicate_ids_are_refused(cohort, tmp_path):
    from DPETResponseLib.cohort import CohortResult
    from DPETResponseLib.core.errors import DPETError

    errors = pd.DataFrame([(f"P{i}", "input", "mask is empty") for i in range(25)], columns=["case_id", "stage",
                                                                                            "message"])
    result = CohortResult(pd.DataFrame(), errors, pd.DataFrame(columns=["case_id", "message"]), n_cached=5,
                          n_computed=0, n_failed=25, task_name="t", seconds=1.0)
    lines = result.describe().splitlines()
    assert lines[0] == "t: 30 case(s) in 1.0 s: 0 computed, 5 from cache, 25 failed"
    assert len(lines) == 22 and lines[-1] == "  ... and 5 more failed case(s) (see the errors table)"
    with pytest.raises(DPETError, match="duplicate case ids: C001"):
        run_cohort(pd.concat([cohort, cohort.loc[["C001"]]]), tumour_stats, {}, tmp_path / "cache", progress=False)


def test_cli_extract_real_sts_cases_end_to_end(tmp_path, shared_data):
    """`dpet-response extract` with the real per-case analysis on the two smallest STS tumours: exit 0, the summary
    on stdout, PET metrics equal to numpy's on the expert masks, clinical columns copied, the JSON sidecar with each
    case's SUV conversion. A third case, a NIfTI copy of STS_019 with NaN voxels in the tumour (which SimpleITK's
    NIfTI reader would turn into 0), fails with the problem named while the others carry on."""
    sts = shared_data / "sts_pet"
    sts019 = sitk.ReadImage(str(sts / "STS_019" / "PET_image.nii.gz"))
    values = sitk.GetArrayFromImage(sts019)
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(sts / "STS_019" / "PET_mask.nii.gz"))) > 0
    first_slice = np.nonzero(tumour.any(axis=(1, 2)))[0][0]
    values[first_slice][tumour[first_slice]] = np.nan
    nan_image = sitk.GetImageFromArray(values)
    nan_image.CopyInformation(sts019)
    sitk.WriteImage(nan_image, str(tmp_path / "nan_pet.nii.gz"))
    n_nan = int(np.isnan(values).sum())
    lines = ["case_id,image,mask,label,split,age"]
    lines += [f"{c},{sts / c / 'PET_image.nii.gz'},{sts / c / 'PET_mask.nii.gz'},{n % 2},train,{40 + n}"
              for n, c in enumerate(["STS_019", "STS_035"])]
    lines.append(f"NAN_019,{tmp_path / 'nan_pet.nii.gz'},{sts / 'STS_019' / 'PET_mask.nii.gz'},0,train,42")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "features.csv"
    run = subprocess.run([sys.executable, "-m", "DPETResponseLib.cli", "extract", str(tmp_path / "manifest.csv"),
                          "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert re.match(r"analyse_case: 3 case\(s\) in [\d.]+ s: 2 computed, 0 from cache, 1 failed", run.stdout)
    errors = pd.read_csv(out.with_suffix(".errors.csv"))
    assert errors.values.tolist() == [["NAN_019", "input", f"image {tmp_path / 'nan_pet.nii.gz'} has {n_nan} "
                                       f"non-finite voxel(s) (NaN/inf) of {values.size}"]]
    features = pd.read_csv(out, index_col="case_id")
    assert list(features.index) == ["STS_019", "STS_035"] and features["age"].tolist() == [40, 41]
    for case_id, voxels in (("STS_019", 239), ("STS_035", 365)):  # expert masks' voxel counts
        image = sitk.ReadImage(str(sts / case_id / "PET_image.nii.gz"))
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(sts / case_id / "PET_mask.nii.gz"))) > 0
        assert mask.sum() == voxels
        suv = sitk.GetArrayFromImage(image)[mask]
        assert features.loc[case_id, "pet_SUVmax"] == pytest.approx(suv.max(), rel=1e-6)
        assert features.loc[case_id, "pet_SUVmean"] == pytest.approx(suv.mean(), rel=1e-6)
        assert features.loc[case_id, "pet_MTV"] == pytest.approx(voxels * np.prod(image.GetSpacing()) / 1000, rel=1e-6)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["counts"]["computed"] == 2 and sidecar["settings"]["habitat_k"] == 2
    records = sidecar["suv_conversion"]["cases"]
    assert sorted(records) == ["STS_019", "STS_035"]
    assert records["STS_019"]["rule"] == "image file taken to hold SUV already: no conversion"
    assert records["STS_019"]["values"]["image_max"] == pytest.approx(float(sitk.GetArrayViewFromImage(sts019).max()))
    assert sidecar["suv_conversion"]["rules"] == {records["STS_019"]["rule"]: 2}
