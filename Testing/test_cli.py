"""`dpet-response` as a user runs it: every subcommand on a small synthetic cohort (36 cases: 22 train, 10 test,
4 test2) and on real DICOM, with light settings (radiomics of the Original image only, habitats on a 3 mm
neighbourhood), 3 folds and a CNN of the cpu-fast preset trained for 2 epochs.

Some commands go through `python -m DPETResponseLib.cli` in a new process (the entry point, exit codes, stdout and
stderr as a shell sees them), the rest through `cli.main([...])` in this process. Each output is checked against
something computed another way: the synthetic cohort's own generator, the expert masks, sklearn's AUC on the
written predictions, the Python API, hand arithmetic on DICOM tags. The settings variants (`deep: false`,
`e2e_fusion: false`, `decision_weights: "learned"`, `habitat_method: "tumour"`) each go through
train -> evaluate -> predict, and a held-out case's `predict` equals `evaluate`'s probabilities for it.
"""

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
import torch
from conftest import FAST_RADIOMICS_YAML, PROJECT_ROOT
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score
from test_dicom_out import model_groups, sr_groups

from DPETResponseLib import cli, extraction
from DPETResponseLib.features.segmentation import segment_from_seed
from DPETResponseLib.features.subregions import tumour_habitats
from DPETResponseLib.io.images import read_mask, read_pet
from DPETResponseLib.protocol import predict_files
from DPETResponseLib.study.model import FUSIONS, PATHWAYS, StudyModel
from DPETResponseLib.synthetic import render_case, sample_factors, split_sizes

N_CASES = 36
CLINICAL = ("age", "cT", "cN", "grade", "ki67", "regimen", "hr_status")
ALL_MODELS = set(PATHWAYS) | set(FUSIONS)
# each settings variant: what it sets on top of the base settings below
VARIANTS = {
    "default": {},  # CNN, end-to-end fusion, "auto" decision weights, population habitats
    "deep_off": {"deep": False},
    "e2e_off": {"e2e_fusion": False},
    "learned": {"deep": False, "decision_weights": "learned"},
    "tumour": {"deep": False, "analysis": {"habitat_method": "tumour"}},
}


# ------------------------------------------------------------------------------------------------ helpers
def run_cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m DPETResponseLib.cli ARGS` in a new process."""
    return subprocess.run([sys.executable, "-m", "DPETResponseLib.cli", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def call(*args) -> tuple[int, str, str]:
    """`cli.main(ARGS)` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def one_error_line(stderr: str, command: str) -> str:
    """The single line a failed command writes to stderr (no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dpet-response {command}: error: "), lines[0]
    return lines[0]


def array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def clinical_args(case: pd.Series) -> list[str]:
    return ["--clinical", *[f"{c}={case[c]}" for c in CLINICAL]]


def clinical_values(case: pd.Series) -> dict:
    """The values `clinical_args` gives the CLI, as it parses them (a number where the text is one)."""
    values = {}
    for column in CLINICAL:
        try:
            values[column] = float(str(case[column]))
        except ValueError:
            values[column] = str(case[column])
    return values


def same_grid(image: sitk.Image, reference: sitk.Image) -> None:
    assert image.GetSize() == reference.GetSize()
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def one_torch_thread():
    """On 2 shared cores one torch thread is several times faster than oversubscribed OpenMP."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """`dpet-response synth` of 40 cases (a new process) and the light radiomics settings."""
    root = tmp_path_factory.mktemp("cli")
    run = run_cli("synth", root / "cohort", "--n", N_CASES, "--seed", 0)
    assert run.returncode == 0, run.stderr
    manifest_path = root / "cohort" / "manifest.csv"
    manifest = pd.read_csv(manifest_path).set_index("case_id")
    return {"root": root, "manifest_path": manifest_path, "manifest": manifest, "synth": run,
            "params": FAST_RADIOMICS_YAML, "cache": root / "cache"}


def base_settings(cohort) -> dict:
    return {"n_folds": 3, "seed": 0, "deep_preset": "cpu-fast", "deep_epochs": 2, "classifiers": ["lr", "nb"],
            "analysis": {"radiomics_params": str(cohort["params"]), "habitat_radius_mm": 3.0}}


class Runs:
    """Each settings variant trained (`train --config`) and evaluated once, when a test first asks for it."""

    def __init__(self, cohort):
        self.cohort = cohort
        self.done = {}

    def get(self, name: str) -> dict:
        if name not in self.done:
            self.done[name] = self._run(name)
        return self.done[name]

    def _run(self, name: str) -> dict:
        root, cohort = self.cohort["root"] / name, self.cohort
        root.mkdir()
        settings = base_settings(cohort)
        for key, value in VARIANTS[name].items():
            settings[key] = {**settings[key], **value} if isinstance(value, dict) else value
        config = root / "settings.json"
        config.write_text(json.dumps(settings))
        bundle, report = root / "bundle", root / "report"
        train = call("train", cohort["manifest_path"], "--out", bundle, "--config", config, "--cache", cohort["cache"])
        assert train[0] == 0, train[2]
        evaluate = call("evaluate", bundle, cohort["manifest_path"], "--out", report, "--cache", cohort["cache"])
        assert evaluate[0] == 0, evaluate[2]
        return {"settings": settings, "bundle": bundle, "report": report, "train": train, "evaluate": evaluate,
                "manifest": json.loads((bundle / "bundle.json").read_text()),
                "metrics": json.loads((report / "metrics.json").read_text()),
                "predictions": pd.read_csv(report / "predictions.csv", dtype={"case_id": str})}


@pytest.fixture(scope="module")
def runs(cohort, one_torch_thread):
    return Runs(cohort)


@pytest.fixture(scope="module")
def seed_case(cohort):
    """The first test-split case whose tumour centre (the expert mask's centroid, LPS mm) has a negative x."""
    cohort_dir = cohort["manifest_path"].parent
    for case_id, case in cohort["manifest"].iterrows():
        if case["split"] != "test":
            continue
        image = read_pet(cohort_dir / case["image"])
        mask = read_mask(cohort_dir / case["mask"], image)
        voxels = np.argwhere(sitk.GetArrayFromImage(mask) > 0)[:, ::-1].mean(axis=0)  # (x, y, z) index
        centre = image.TransformContinuousIndexToPhysicalPoint(voxels.tolist())
        if centre[0] < 0:
            seed = ",".join(f"{v:.2f}" for v in centre)
            return {"case_id": case_id, "case": case, "image_path": cohort_dir / case["image"], "image": image,
                    "mask": sitk.GetArrayFromImage(mask), "seed": seed,
                    "seed_xyz": tuple(float(v) for v in seed.split(","))}
    pytest.fail("no test case with a negative x centre")


# ------------------------------------------------------------------------------------------------ synth
def test_synth_writes_the_generators_cohort(cohort):
    """`synth` exits 0, says what it wrote, and writes the cohort `synthetic` defines: the study's splits scaled to
    n (both classes in each), every file, and case 1's image and mask voxel for voxel as `render_case` makes them."""
    run, manifest, cohort_dir = cohort["synth"], cohort["manifest"], cohort["manifest_path"].parent
    assert run.stdout == f"wrote {N_CASES} synthetic D-PET cases; manifest: {cohort['manifest_path']}\n"
    assert len(manifest) == N_CASES and list(manifest.columns[:4]) == ["image", "mask", "label", "split"]
    assert manifest["split"].value_counts().to_dict() == split_sizes(N_CASES) == {"train": 22, "test": 10, "test2": 4}
    assert all(set(rows["label"]) == {0, 1} for _, rows in manifest.groupby("split"))
    assert set(CLINICAL) <= set(manifest.columns)
    assert all((cohort_dir / p).is_file() for p in [*manifest["image"], *manifest["mask"]])
    factors = sample_factors(N_CASES, seed=0)
    pet, mask = render_case(factors.iloc[0], seed=0, index=0)
    first = manifest.iloc[0]
    np.testing.assert_array_equal(array(cohort_dir / first["image"]), sitk.GetArrayFromImage(pet))
    np.testing.assert_array_equal(array(cohort_dir / first["mask"]), sitk.GetArrayFromImage(mask))
    assert manifest["label"].tolist() == factors["label"].astype(int).tolist()
    oracle = json.loads((cohort_dir / "oracle.json").read_text())
    assert oracle["n"] == N_CASES and oracle["split_sizes"] == split_sizes(N_CASES)


# ------------------------------------------------------------------------------------------------ train, evaluate
def test_train_config_settings_are_stored_and_used(runs, cohort):
    """`train --config settings.json`: bundle.json holds every given setting, and the bundle shows they were used
    (3 CNN folds of 2 epochs at the cpu-fast size, radiomics of the Original image only, population habitats
    learned on the 22 training cases)."""
    run = runs.get("default")
    assert run["train"][1] == f"model bundle written to {run['bundle']}\n"
    stored = run["manifest"]["config"]
    for key, value in run["settings"].items():
        if key != "analysis":
            assert stored[key] == value, key
    analysis = stored["analysis"]
    for key, value in run["settings"]["analysis"].items():
        assert analysis[key] == value, key
    assert analysis["habitat_method"] == "population" and analysis["habitat_model"]["centroids"]
    deep = run["manifest"]["deep_config"]["config"]
    assert (deep["folds"], deep["epochs"], deep["size"], deep["seed"]) == (3, 2, 24, 0)
    radiomics = [c for c in run["manifest"]["columns"] if c.startswith(("whole_", "high_", "low_"))]
    assert radiomics and all("_original_" in c for c in radiomics)
    assert run["manifest"]["training"]["n_cases"] == 22
    assert set(run["manifest"]["models"]) == ALL_MODELS
    # the classifiers the radiomics pathway could choose among are the two given
    model = StudyModel.load(run["bundle"])
    assert tuple(model.pathways_["radiomics"].classifiers) == ("lr", "nb")


def test_evaluate_metrics_equal_sklearn_on_the_written_predictions(runs, cohort):
    """`evaluate` prints the report's path and writes metrics.json whose every AUC equals sklearn's
    roc_auc_score on predictions.csv; the splits hold the manifest's cases; train_cv is the bundle's out-of-fold
    predictions; the thresholds are the bundle's."""
    run = runs.get("default")
    assert run["evaluate"][1] == f"report: {run['report'] / 'report.html'}\n"
    metrics, predictions, manifest = run["metrics"], run["predictions"], cohort["manifest"]
    assert set(metrics["splits"]) == {"train_cv", "test", "test2"}
    held_out = predictions[predictions["split"] != "train_cv"].set_index("case_id")
    assert sorted(held_out.index) == sorted(manifest.index[manifest["split"] != "train"])
    assert (held_out["split"] == manifest.loc[held_out.index, "split"]).all()
    assert (held_out["label"] == manifest.loc[held_out.index, "label"]).all()
    for split, block in metrics["splits"].items():
        rows = predictions[predictions["split"] == split]
        assert block["n"] == len(rows) == {"train_cv": 22, "test": 10, "test2": 4}[split]
        assert set(block["models"]) == ALL_MODELS, split
        for name, m in block["models"].items():
            assert m["auc"] == pytest.approx(roc_auc_score(rows["label"], rows[name]), abs=1e-12), (split, name)
    oof = run["manifest"]["training_oof"]
    train_cv = predictions[predictions["split"] == "train_cv"].set_index("case_id").loc[oof["case_id"]]
    for name in ALL_MODELS:
        np.testing.assert_allclose(train_cv[name], oof[name], rtol=0, atol=1e-12)
    assert metrics["thresholds"] == run["manifest"]["thresholds"]


# ------------------------------------------------------------------------------------------------ label column
def test_another_label_column_is_trained_recorded_and_evaluated(runs, cohort, tmp_path):
    """`train --label-column response` on a manifest whose `response` is the label with three cases flipped: the
    bundle records the column and has neither it nor `label` among its clinical columns; `evaluate` scores against
    it (each AUC equals sklearn's on predictions.csv against the manifest's response, not its label), says so in
    metrics.json and the report, and refuses `--label-column label`; a column that is not 0/1 is refused, naming
    it and the cases."""
    manifest = cohort["manifest"].copy()
    train_ids, test_ids = (manifest.index[manifest["split"] == s] for s in ("train", "test"))
    flipped = [train_ids[0], train_ids[1], test_ids[0]]
    manifest.insert(3, "response", manifest["label"])
    manifest.loc[flipped, "response"] = 1 - manifest.loc[flipped, "label"]
    assert all(set(rows["response"]) == {0, 1} for _, rows in manifest.groupby("split"))
    path = cohort["manifest_path"].with_name("manifest_response.csv")
    manifest.to_csv(path)
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(runs.get("deep_off")["settings"]))
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    code, _, err = call("train", path, "--out", bundle, "--config", config, "--cache", cohort["cache"],
                        "--label-column", "response")
    assert code == 0, err
    stored = json.loads((bundle / "bundle.json").read_text())
    assert stored["training"]["label_column"] == "response"
    assert sorted(stored["clinical_columns"]) == sorted(CLINICAL)
    assert not {"response", "label"} & set(stored["columns"])
    oof = stored["training_oof"]
    code, _, err = call("evaluate", bundle, path, "--out", report, "--cache", cohort["cache"])
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    predictions = pd.read_csv(report / "predictions.csv", dtype={"case_id": str}).set_index("case_id")
    assert metrics["outcome"] == {"column": "response", "ignored_columns": ["label"]}
    assert (predictions["label"] == manifest.loc[predictions.index, "response"]).all()
    assert sorted(predictions.index[predictions["split"] == "train_cv"]) == sorted(oof["case_id"])
    differs = []
    for split, block in metrics["splits"].items():
        rows = predictions[predictions["split"] == split]
        for name, m in block["models"].items():
            assert m["auc"] == pytest.approx(roc_auc_score(manifest.loc[rows.index, "response"], rows[name]),
                                             abs=1e-12), (split, name)
            differs.append(abs(m["auc"] - roc_auc_score(manifest.loc[rows.index, "label"], rows[name])) > 1e-9)
    assert any(differs)
    assert "Outcome: the manifest&#x27;s column &#x27;response&#x27;" in (report / "report.html").read_text()

    code, out, err = call("evaluate", bundle, path, "--out", tmp_path / "refused", "--label-column", "label")
    assert code == 2 and out == "" and not (tmp_path / "refused").exists()
    assert one_error_line(err, "evaluate") == (
        f"dpet-response evaluate: error: label column 'label' is not the one bundle {bundle} was trained on "
        "('response'): its models predict 'response'; leave out --label-column or train on 'label'")
    code, out, err = call("train", path, "--out", tmp_path / "ki67", "--label-column", "ki67")
    assert code == 2 and out == "" and not (tmp_path / "ki67").exists()
    line = one_error_line(err, "train")
    bad = manifest.index[~manifest["ki67"].isin([0, 1])]
    assert f"label column 'ki67' must be 0, 1 or empty (unknown): {bad[0]}='{manifest.loc[bad[0], 'ki67']}'" in line
    assert f"{bad[19]}=" in line and f"and {len(bad) - 20} more" in line


# ------------------------------------------------------------------------------------------------ body masks
def test_body_masks_limit_the_shell_from_training_to_predict(runs, cohort, tmp_path):
    """A manifest ``body_mask`` (here each case's half x < its tumour's centre), with the deep_features pathway
    (random encoder) cropping the shell too: the bundle records it; the peritumoural pathway's probabilities differ
    from the unlimited model's; evaluate on a manifest without body masks, and predict without --body-mask, are
    refused in one line; predict with it equals evaluate's predictions.csv for every model."""
    cohort_dir, manifest = cohort["manifest_path"].parent, cohort["manifest"].copy()
    (tmp_path / "body").mkdir()
    for case_id, case in manifest.iterrows():
        image = read_pet(cohort_dir / case["image"])
        tumour = sitk.GetArrayFromImage(read_mask(cohort_dir / case["mask"], image))
        body = np.zeros_like(tumour)
        body[..., : int(np.argwhere(tumour)[:, 2].mean())] = 1
        written = sitk.GetImageFromArray(body)
        written.CopyInformation(image)
        sitk.WriteImage(written, str(tmp_path / "body" / f"{case_id}.nii.gz"))
    manifest["body_mask"] = [str(tmp_path / "body" / f"{c}.nii.gz") for c in manifest.index]
    for column in ("image", "mask"):
        manifest[column] = [str(cohort_dir / p) for p in manifest[column]]
    path = tmp_path / "manifest_body.csv"
    manifest.to_csv(path)
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({**runs.get("deep_off")["settings"], "deep_features": {
        "weights": "random", "arch": "resnet10", "size": 32, "spacing": 2.0, "n_mrmr": 10, "n_features": 3}}))
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    code, _, err = call("train", path, "--out", bundle, "--config", config, "--cache", cohort["cache"])
    assert code == 0, err
    stored = json.loads((bundle / "bundle.json").read_text())
    assert stored["body_mask"] is True and "deep_features" in stored["models"] and "body_mask" not in stored["columns"]
    code, _, err = call("evaluate", bundle, path, "--out", report, "--cache", cohort["cache"])
    assert code == 0, err
    predictions = pd.read_csv(report / "predictions.csv", dtype={"case_id": str}).set_index("case_id")
    unlimited = runs.get("deep_off")["predictions"].set_index("case_id")
    held_out = predictions.index[predictions["split"] != "train_cv"]
    assert not np.allclose(predictions.loc[held_out, "peritumoural"], unlimited.loc[held_out, "peritumoural"])

    code, out, err = call("evaluate", bundle, cohort["manifest_path"], "--out", tmp_path / "refused")
    assert code == 2 and not (tmp_path / "refused").exists()
    assert "peritumoural shells were limited to each case's body mask" in one_error_line(err, "evaluate")
    case_id = held_out[0]
    case = manifest.loc[case_id]
    arguments = ["predict", bundle, "--image", case["image"], "--mask", case["mask"], *clinical_args(case)]
    code, out, err = call(*arguments)
    assert code == 2 and "give the body masks" in one_error_line(err, "predict")
    code, out, err = call(*arguments, "--body-mask", case["body_mask"])
    assert code == 0, err
    for model, p in json.loads(out)["probabilities"].items():
        assert p == pytest.approx(predictions.loc[case_id, model], abs=1e-6), model
    code, out, err = call("predict", runs.get("deep_off")["bundle"], "--image", case["image"], "--mask", case["mask"],
                          *clinical_args(case), "--body-mask", case["body_mask"])
    assert code == 2 and "trained without a body_mask column" in one_error_line(err, "predict")


# ------------------------------------------------------------------------------------------------ partitions
def test_evaluate_partitions_refit_the_settings_on_each_partition(runs, cohort, tmp_path, monkeypatch):
    """`evaluate --partitions 3` with the `deep: false` bundle: three stratified partitions of the 36 labelled
    cases (seeds 0-2, the held-out share 14/36 in each test part), population habitats learned on each training
    part alone (seen by a spy on `with_habitat_model`), and every partition's AUC, balanced accuracy,
    sensitivity and specificity equal to sklearn's on partitions.csv at the thresholds recorded, their means
    and SDs to numpy's. The single-split evaluation is the run without partitions, to the last digit."""
    learned = []
    original = extraction.with_habitat_model

    def spy(cases, settings, *args, **kwargs):
        learned.append((set(cases.index), settings.get("habitat_model")))
        result = original(cases, settings, *args, **kwargs)
        learned[-1] += (result["habitat_model"],)
        return result

    monkeypatch.setattr(extraction, "with_habitat_model", spy)
    run, manifest = runs.get("deep_off"), cohort["manifest"]
    report = tmp_path / "report"
    code, _, err = call("evaluate", run["bundle"], cohort["manifest_path"], "--out", report, "--cache",
                        cohort["cache"], "--partitions", 3)
    assert code == 0, err
    metrics = json.loads((report / "metrics.json").read_text())
    block = metrics["partitions"]
    assert (block["n"], block["seeds"], block["habitats"], block["n_cases"]) == (3, [0, 1, 2], "refit", N_CASES)
    assert block["test_fraction"] == pytest.approx(14 / 36)
    parts = pd.read_csv(report / "partitions.csv", dtype={"case_id": str})
    assert set(parts.columns) == {"case_id", "partition", "seed", "label"} | set(block["models"])
    assert set(block["models"]) == set(run["manifest"]["models"])
    tests = []
    for i, rows in parts.groupby("partition"):
        rows = rows.set_index("case_id")
        assert len(rows) == 14 and (rows["seed"] == i).all()
        assert (rows["label"] == manifest.loc[rows.index, "label"]).all()
        assert int(rows["label"].sum()) == block["sizes"][i]["test_positive"] == round(14 * manifest["label"].mean())
        training, seen, centroids = learned[i]
        assert training == set(manifest.index) - set(rows.index) and seen is None  # learned afresh, on train only
        assert centroids != run["manifest"]["config"]["analysis"]["habitat_model"]
        tests.append(set(rows.index))
        for name in block["models"]:
            y, p = rows["label"].to_numpy(), rows[name].to_numpy()
            called = (p >= block["thresholds"][name][i]).astype(int)
            expected = {"auc": roc_auc_score(y, p), "balanced_accuracy": balanced_accuracy_score(y, called),
                        "sensitivity": recall_score(y, called), "specificity": recall_score(1 - y, 1 - called)}
            for metric, value in expected.items():
                assert block["models"][name][metric]["values"][i] == pytest.approx(value, abs=1e-12), (i, name)
    assert len(learned) == 3 and len({frozenset(t) for t in tests}) == 3
    for stats in block["models"].values():
        for summary in stats.values():
            assert summary["mean"] == pytest.approx(np.mean(summary["values"]), abs=1e-12)
            assert summary["sd"] == pytest.approx(np.std(summary["values"], ddof=1), abs=1e-12)
    assert metrics["splits"] == run["metrics"]["splits"]
    html = (report / "report.html").read_text()
    assert "<section id='partitions'>" in html and "evaluates the protocol" in html
    tripod = {i["item"]: i for i in json.loads((report / "checklist.json").read_text())["TRIPOD+AI"]["items"]}
    assert tripod["12a"]["data"]["partitions"]["seeds"] == [0, 1, 2]

    # With the bundle's centroids (nothing re-extracted), the same partitions: the models that read no habitat
    # feature give the same probabilities, the subregion radiomics pathway does not.
    code, _, err = call("evaluate", run["bundle"], cohort["manifest_path"], "--out", tmp_path / "bundle_habitats",
                        "--cache", cohort["cache"], "--partitions", 3, "--partition-habitats", "bundle")
    assert code == 0, err
    assert len(learned) == 3  # no centroids learned
    kept = pd.read_csv(tmp_path / "bundle_habitats" / "partitions.csv", dtype={"case_id": str})
    assert json.loads((tmp_path / "bundle_habitats" / "metrics.json").read_text())["partitions"]["habitats"] == \
        "bundle"
    assert kept[["case_id", "partition", "label"]].equals(parts[["case_id", "partition", "label"]])
    for name in ("baseline", "clinical", "radiomics_whole", "ith", "peritumoural"):
        np.testing.assert_allclose(kept[name], parts[name], rtol=0, atol=1e-12, err_msg=name)
    assert not np.allclose(kept["radiomics"], parts["radiomics"])

    code, out, err = call("evaluate", run["bundle"], cohort["manifest_path"], "--out", tmp_path / "one",
                          "--partitions", 1)
    assert code == 2 and out == "" and not (tmp_path / "one").exists()
    assert one_error_line(err, "evaluate").endswith("partitions: 1 partitions; give 2 or more (a standard "
                                                    "deviation needs two)")


# ------------------------------------------------------------------------------------------------ report
def test_report_rebuilds_the_html_from_metrics_json(runs, tmp_path):
    """`report DIR` (a new process) rebuilds report.html and the split figures from metrics.json: every split's
    table names every model in metrics.json with its AUC, a value edited in metrics.json shows, the explanation
    figures evaluate made are still shown."""
    report = shutil.copytree(runs.get("default")["report"], tmp_path / "report")
    metrics = json.loads((report / "metrics.json").read_text())
    metrics["splits"]["test"]["models"]["clinical"]["auc"] = 0.123456
    (report / "metrics.json").write_text(json.dumps(metrics))
    (report / "report.html").unlink()
    (report / "roc_test.png").unlink()
    run = run_cli("report", report)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"report: {report / 'report.html'}\n"
    html = (report / "report.html").read_text()
    cards = dict(re.findall(r"<details class='model'><summary><b>(\w+)</b>(.*?)</details>", html, flags=re.S))
    assert set(cards) == {m for block in metrics["splits"].values() for m in block["models"]}
    for split, block in metrics["splits"].items():
        assert f"<h3>{split}</h3>" in html
        for name, m in block["models"].items():
            column = list(metrics["splits"]).index(split)  # the card's columns follow metrics.json's splits
            row = re.search(r"<tr><td>AUC</td>((?:<td>[^<]*</td>)+)</tr>", cards[name]).group(1)
            assert re.findall(r"<td>([^<]*)</td>", row)[column] == f"{m['auc']:.3f}", (split, name)
    assert "<td>0.123</td>" in cards["clinical"]
    assert (report / "roc_test.png").stat().st_size > 5000 and "src='roc_test.png'" in html
    shown = set(re.findall(r"<img src='([^']+)'", html))
    assert {"shap_radiomics.png", "shap_fusion_decision.png", "fusion_shares.png"} <= shown
    assert any(name.startswith("gradcam_") for name in shown)
    assert all((report / name).is_file() for name in shown)


def test_report_on_a_folder_without_metrics_is_one_line(tmp_path):
    code, out, err = call("report", tmp_path)
    assert code == 2 and out == ""
    assert one_error_line(err, "report") == (f"dpet-response report: error: {tmp_path}: metrics.json not found: "
                                             "not an evaluation folder")


# ------------------------------------------------------------------------------------------------ settings variants
@pytest.mark.parametrize("name", ["deep_off", "e2e_off", "learned", "tumour"])
def test_settings_variants_give_the_models_they_ask_for(runs, cohort, name):
    """Each variant's bundle stores its settings and holds the models they imply (no CNN and no end-to-end
    fusion with `deep: false`, no end-to-end fusion with `e2e_fusion: false`); evaluate reports those models."""
    run = runs.get(name)
    given, stored = run["settings"], run["manifest"]["config"]
    for key, value in given.items():
        assert (stored[key] if key != "analysis" else {k: stored[key][k] for k in value}) == value, key
    expected = set(ALL_MODELS)
    if not given.get("deep", True):
        expected -= {"deep", "fusion_feature_e2e"}
    elif not given.get("e2e_fusion", True):
        expected -= {"fusion_feature_e2e"}
    assert set(run["manifest"]["models"]) == expected
    for block in run["metrics"]["splits"].values():
        assert set(block["models"]) == expected
    assert set(run["predictions"].columns) == {"case_id", "split", "label"} | expected
    files = set(run["manifest"]["files"])
    assert any(f.startswith("tensors/deep_") for f in files) == ("deep" in expected)
    assert any(f.startswith("tensors/e2e_") for f in files) == ("fusion_feature_e2e" in expected)
    model = StudyModel.load(run["bundle"])
    fused = set(model.fusion_decision_.coef_.index)
    assert fused == {"baseline", "clinical", "radiomics", "peritumoural", "ith"} | ({"deep"} if "deep" in expected
                                                                                  else set())
    assert any(c.startswith("dl_") for c in model.background_.columns) == ("deep" in expected)
    if name == "e2e_off":
        assert model.e2e_model_ is None and model.deep_model_ is not None


def test_decision_weights_learned_vs_auto(runs, cohort):
    """`decision_weights: "learned"` fits the study's free logistic regression on the pathways' out-of-fold
    probabilities (its coefficients equal sklearn's, and differ from one another); the default ("auto") screens
    the pathways and gives weight 0 to those it drops."""
    learned = StudyModel.load(runs.get("learned")["bundle"]).fusion_decision_
    assert runs.get("learned")["manifest"]["config"]["decision_weights"] == "learned"
    y = cohort["manifest"].loc[runs.get("learned")["manifest"]["training_oof"]["case_id"], "label"].to_numpy()
    level1 = np.column_stack(list(learned.oof_probabilities_.values()))
    reference = LogisticRegression().fit(level1, y)
    np.testing.assert_allclose(learned.coef_.to_numpy(), reference.coef_.ravel(), rtol=1e-6, atol=1e-8)
    assert learned.coef_.max() - learned.coef_.min() > 0.01, learned.coef_
    auto = StudyModel.load(runs.get("deep_off")["bundle"]).fusion_decision_
    assert runs.get("deep_off")["manifest"]["config"]["decision_weights"] == "auto"
    assert (auto.coef_[~auto.meta_.kept_] == 0).all() and (auto.coef_[auto.meta_.kept_] > 0).all()
    assert list(learned.coef_.index) == list(auto.coef_.index) == ["baseline", "clinical", "radiomics", "peritumoural",
                                                                   "ith"]
    choices = runs.get("deep_off")["manifest"]["choices"]["fusion_decision"]
    assert choices["weights"] == auto.meta_.weights_ and set(choices["inner_cv_auc"]) == {"equal", "learned", "best"}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_predict_on_a_held_out_case_equals_evaluate(runs, cohort, name, tmp_path):
    """`predict BUNDLE --image --mask --clinical ... --out` on a test case: the probabilities printed equal
    evaluate's predictions.csv for that case (1e-6), decisions follow the thresholds, and the images written
    are on the PET's grid: a Grad-CAM map only where the bundle has a CNN; with per-tumour habitats the
    subregions are `tumour_habitats`' labels."""
    run = runs.get(name)
    case_id = cohort["manifest"].index[cohort["manifest"]["split"] == "test"][0]
    case = cohort["manifest"].loc[case_id]
    cohort_dir = cohort["manifest_path"].parent
    out = tmp_path / "prediction"
    code, stdout, err = call("predict", run["bundle"], "--image", cohort_dir / case["image"], "--mask",
                             cohort_dir / case["mask"], "--out", out, *clinical_args(case))
    assert code == 0, err
    printed = json.loads(stdout)
    expected = run["predictions"].set_index("case_id").loc[case_id]
    assert set(printed["probabilities"]) == set(run["manifest"]["models"])
    for model, p in printed["probabilities"].items():
        assert p == pytest.approx(expected[model], abs=1e-6), model
        assert printed["decision"][model] == int(p >= run["manifest"]["thresholds"][model]), model
    assert printed == json.loads((out / "prediction.json").read_text())
    pet = sitk.ReadImage(str(cohort_dir / case["image"]))
    written = {p.name for p in out.iterdir()}
    has_cnn = "deep" in run["manifest"]["models"]
    assert written == {"prediction.json", "mask.nii.gz", "subregions.nii.gz", "peritumoural.nii.gz", "shap.csv"} | (
        {"gradcam.nii.gz"} if has_cnn else set())
    for image in written - {"prediction.json", "shap.csv"}:
        same_grid(sitk.ReadImage(str(out / image)), pet)
    np.testing.assert_array_equal(array(out / "mask.nii.gz") > 0, array(cohort_dir / case["mask"]) > 0)
    analysis = run["manifest"]["config"]["analysis"]
    assert analysis["habitat_method"] == ("tumour" if name == "tumour" else "population")
    if name == "tumour":
        assert analysis["habitat_model"] is None
        image = read_pet(cohort_dir / case["image"])
        labels, _ = tumour_habitats(image, read_mask(cohort_dir / case["mask"], image), k=analysis["habitat_k"],
                                    local_radius_mm=analysis["habitat_radius_mm"], seed=analysis["habitat_seed"])
        np.testing.assert_array_equal(array(out / "subregions.nii.gz"), sitk.GetArrayFromImage(labels))
        # the habitats differ from the population ones, and so do the subregion radiomics' probabilities
        population = runs.get("deep_off")["predictions"].set_index("case_id")
        tumour = run["predictions"].set_index("case_id")
        held_out = tumour.index[tumour["split"] != "train_cv"]
        assert not np.allclose(tumour.loc[held_out, "radiomics"], population.loc[held_out, "radiomics"])


# ------------------------------------------------------------------------------------------------ seeds
def test_predict_from_a_seed_point_equals_the_python_api(runs, cohort, seed_case, tmp_path):
    """`predict --seed=X,Y,Z` (x < 0) segments the tumour from the seed (Dice with the expert mask
    > 0.8, the mask `segment_from_seed` gives) and prints the probabilities `predict_files` returns for the same
    seed; `--seed X,Y,Z` (a separate argument starting with '-') gives the same."""
    bundle = runs.get("default")["bundle"]
    case = seed_case["case"]
    assert seed_case["seed"].startswith("-")
    code, stdout, err = call("predict", bundle, "--image", seed_case["image_path"], f"--seed={seed_case['seed']}",
                             "--out", tmp_path / "a", *clinical_args(case))
    assert code == 0, err
    printed = json.loads(stdout)
    api = predict_files(bundle, seed_case["image_path"], seed_xyz=seed_case["seed_xyz"],
                        clinical=clinical_values(case))
    assert set(printed["probabilities"]) == ALL_MODELS
    for model in ALL_MODELS:
        assert printed["probabilities"][model] == pytest.approx(api.probabilities[model], abs=1e-6), model
    assert printed["pet_metrics"] == pytest.approx(api.pet_metrics, rel=1e-6)
    mask = array(tmp_path / "a" / "mask.nii.gz")
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(api.mask))
    np.testing.assert_array_equal(mask, sitk.GetArrayFromImage(segment_from_seed(seed_case["image"],
                                                                                 seed_case["seed_xyz"])))
    assert dice(mask, seed_case["mask"]) > 0.8

    code, stdout, err = call("predict", bundle, "--image", seed_case["image_path"], "--seed", seed_case["seed"],
                             *clinical_args(case))
    assert code == 0, err
    assert json.loads(stdout)["probabilities"] == pytest.approx(printed["probabilities"], abs=1e-6)


def test_predict_dicom_out_on_real_dicom(runs, shared_data, tmp_path):
    """`predict --dicom-out` with the real STS_001 DICOM PET and its RTSTRUCT: the SEG, the SR and the Grad-CAM map
    are written, and the SR's probabilities, thresholds and decisions (read with dcmqi's tid1500reader) are those
    printed on stdout."""
    folder = shared_data / "pet_dicom" / "sts_001_suv"
    code, stdout, err = call("predict", runs.get("default")["bundle"], "--image", folder / "image",
                             "--mask", folder / "mask" / "RS.dcm", "--dicom-out", tmp_path / "dicom")
    assert code == 0, err
    printed = json.loads(stdout)
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == ["gradcam.dcm", "seg.dcm", "sr.dcm"]
    groups = model_groups(sr_groups(tmp_path / "dicom" / "sr.dcm", tmp_path))
    assert set(groups) == set(printed["probabilities"]) == ALL_MODELS
    for model, group in groups.items():
        values = {i["quantity"]["CodeValue"]: float(i["value"]) for i in group["measurementItems"]}
        assert values["PCR-PROB"] == pytest.approx(printed["probabilities"][model], rel=1e-9), model
        assert values["122411"] == pytest.approx(printed["thresholds"][model], rel=1e-9), model
        decision = group["qualitativeEvaluations"][0]["conceptValue"]["CodeMeaning"]
        assert decision == ("Yes" if printed["decision"][model] else "No"), model


def test_segment_from_a_seed_or_a_box(seed_case, tmp_path):
    """`segment` with a seed of negative x as `--seed=X,Y,Z` and as `--seed X,Y,Z` writes the same mask, on the
    PET's grid, overlapping the expert mask (Dice > 0.8); a box around the expert mask (5 mm margin, passed as
    `--box X0,...` with X0 < 0) gives a mask inside the box with Dice > 0.8; a higher relative threshold a
    strictly smaller mask inside the first."""
    image_path, seed = seed_case["image_path"], seed_case["seed"]
    for form, args in (("equals", [f"--seed={seed}"]), ("space", ["--seed", seed])):
        code, out, err = call("segment", "--image", image_path, *args, "--out", tmp_path / f"{form}.nii.gz")
        assert code == 0, (form, err)
        assert out == f"wrote tumour mask {tmp_path / f'{form}.nii.gz'}\n"
    mask = array(tmp_path / "equals.nii.gz")
    np.testing.assert_array_equal(array(tmp_path / "space.nii.gz"), mask)
    same_grid(sitk.ReadImage(str(tmp_path / "equals.nii.gz")), seed_case["image"])
    assert set(np.unique(mask)) == {0, 1}
    assert dice(mask, seed_case["mask"]) > 0.8

    image = seed_case["image"]
    z, y, x = np.nonzero(seed_case["mask"])
    lo = np.array(image.TransformIndexToPhysicalPoint([int(x.min()), int(y.min()), int(z.min())])) - 5
    hi = np.array(image.TransformIndexToPhysicalPoint([int(x.max()), int(y.max()), int(z.max())])) + 5
    box = ",".join(f"{v:.2f}" for v in [*lo, *hi])
    assert box.startswith("-")
    code, _, err = call("segment", "--image", image_path, "--box", box, "--out", tmp_path / "box.nii.gz")
    assert code == 0, err
    boxed = array(tmp_path / "box.nii.gz")
    assert dice(boxed, seed_case["mask"]) > 0.8
    zz, yy, xx = np.nonzero(boxed)
    points = np.array([image.TransformIndexToPhysicalPoint([int(a), int(b), int(c)])
                       for a, b, c in zip(xx, yy, zz)])
    assert (points >= lo - 1e-6).all() and (points <= hi + 1e-6).all()

    code, _, err = call("segment", "--image", image_path, f"--seed={seed}", "--relative", 0.6,
                        "--out", tmp_path / "high.nii.gz")
    assert code == 0, err
    high = array(tmp_path / "high.nii.gz") > 0
    assert high.any() and high.sum() < (mask > 0).sum() and not (high & (mask == 0)).any()


def test_segment_seed_outside_the_image_is_one_line(seed_case, tmp_path):
    run = run_cli("segment", "--image", seed_case["image_path"], "--seed=-5000,0,0", "--out", tmp_path / "m.nii.gz",
                  timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    line = one_error_line(run.stderr, "segment")
    assert "(-5000.0, 0.0, 0.0) mm (LPS) lies outside the PET image" in line, line
    assert not (tmp_path / "m.nii.gz").exists()


def test_unknown_setting_in_train_config_is_one_line(tmp_path, cohort):
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"n_folds": 3, "deep_epoch": 2}))
    code, out, err = call("train", cohort["manifest_path"], "--out", tmp_path / "bundle", "--config", config)
    assert code == 2 and out == ""
    assert "deep_epoch" in one_error_line(err, "train")
    assert not (tmp_path / "bundle").exists()


# ------------------------------------------------------------------------------------------------ convert
def _seconds(tm) -> float:
    text = str(tm)
    return int(text[:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:])


def hand_suv(path) -> np.ndarray:
    """Body-weight SUV of one Bq/ml slice (DecayCorrection START) from its own tags, read with pydicom:
    (stored * slope + intercept) Bq/ml * weight g / (dose Bq decayed from injection to the series start)."""
    ds = pydicom.dcmread(str(path))
    assert (ds.Units, ds.DecayCorrection) == ("BQML", "START")
    info = ds.RadiopharmaceuticalInformationSequence[0]
    elapsed = _seconds(ds.SeriesTime) - _seconds(info.RadiopharmaceuticalStartTime)
    dose = float(info.RadionuclideTotalDose) * 2.0 ** (-elapsed / float(info.RadionuclideHalfLife))
    bqml = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return bqml * float(ds.PatientWeight) * 1000.0 / dose


def test_convert_real_breast_pet_dicom_matches_hand_computation(shared_data, tmp_path):
    """`convert` (a new process) of a real ACRIN-FLT-Breast slice in Bq/ml: the SUV image written equals the
    hand computation from its DICOM tags (hottest pixel 7.19433, see test_io) and the library's read_pet."""
    source = shared_data / "pet_dicom" / "acrin_flt_breast_bqml" / "1.dcm"
    out = tmp_path / "pet.nii.gz"
    run = run_cli("convert", source, "--out", out, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"wrote SUV image {out} (size (")
    suv = sitk.ReadImage(str(out))
    assert suv.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(suv)[0]
    np.testing.assert_allclose(values, hand_suv(source), rtol=1e-6, atol=1e-6)
    assert values[95, 88] == pytest.approx(7.19433, rel=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(suv), sitk.GetArrayFromImage(read_pet(source)))
    same_grid(suv, read_pet(source))


def test_convert_dicom_series_folder_matches_hand_computation(shared_data, tmp_path):
    """`convert FOLDER` of the IBSI-SUV reference series (20 Bq/ml slices): each slice of the SUV volume equals
    the hand computation from that slice's tags, at the slice's own position; inside the reference mask the SUV
    is min 0.20, median 1.00, max 4.00 (DRO_list.csv)."""
    folder = shared_data / "suv_dro" / "DRO_0_0"
    out = tmp_path / "pet.nii.gz"
    code, _, err = call("convert", folder / "PT", "--out", out)
    assert code == 0, err
    suv = sitk.ReadImage(str(out))
    values = sitk.GetArrayFromImage(suv)
    slices = sorted((folder / "PT").glob("*.dcm"))
    assert len(slices) == values.shape[0] == 20
    for path in slices:
        position = [float(v) for v in pydicom.dcmread(str(path), stop_before_pixels=True).ImagePositionPatient]
        index = suv.TransformPhysicalPointToIndex(position)
        assert index[:2] == (0, 0), path.name
        np.testing.assert_allclose(values[index[2]], hand_suv(path), rtol=1e-6, atol=1e-6, err_msg=path.name)
    inside = values[sitk.GetArrayFromImage(read_mask(folder / "mask" / "DRO_mask.nii.gz", suv)) > 0]
    assert (inside.min(), np.median(inside), inside.max()) == pytest.approx((0.2, 1.0, 4.0), abs=1e-3)


@pytest.mark.parametrize("dro", ["DRO_2_0", "DRO_2_1", "DRO_2_2", "DRO_2_4", "DRO_3_0", "DRO_3_1", "DRO_3_3",
                                 "DRO_4_0", "DRO_5_0"])
def test_convert_every_ibsi_suv_reference_right(shared_data, tmp_path, dro):
    """`convert` of each IBSI-SUV reference object (the same activity stored in other units, SUV types, dose units,
    decay corrections, date-time tags, nuclides) gives body-weight SUV min 0.20 / median 1.00 / max 4.00 inside the
    mask (DRO_2_3's stored values are truncated: Testing/test_suv.py shows what it reads and why)."""
    folder = shared_data / "suv_dro" / dro
    out = tmp_path / "pet.nii.gz"
    code, _, err = call("convert", folder / "PT", "--out", out)
    assert code == 0, err
    suv = sitk.ReadImage(str(out))
    inside = sitk.GetArrayFromImage(suv)[sitk.GetArrayFromImage(read_mask(folder / "mask" / "DRO_mask.nii.gz",
                                                                           suv)) > 0]
    assert (inside.min(), np.median(inside), inside.max()) == pytest.approx((0.2, 1.0, 4.0), abs=2e-3), dro


# ------------------------------------------------------------------------------------------------ demo
def test_demo_with_a_small_cohort(tmp_path):
    """`demo --n 20 --fast` (a new process; 20 is the smallest n whose 12 training cases hold the 4 per class the
    CNN's 3 folds with early stopping need): exit 0, the report, every model on every split, the settings --fast
    promises, the cohort's oracle, and the console summary equal to metrics.json's AUCs."""
    out = tmp_path / "demo"
    run = run_cli("demo", "--out", out, "--n", 20, "--seed", 0, "--fast", timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    report = out / "report" / "report.html"
    assert report.is_file() and re.search(rf"done in \d+ s\. Report: {re.escape(str(report))}$", run.stderr, re.M)
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    sizes = split_sizes(20)
    assert {s: b["n"] for s, b in metrics["splits"].items()} == {"train_cv": sizes["train"], "test": sizes["test"],
                                                                 "test2": sizes["test2"]}
    for block in metrics["splits"].values():
        assert set(block["models"]) == ALL_MODELS
    settings = metrics["settings"]
    assert (settings["n_folds"], settings["deep_epochs"], settings["classifiers"], settings["deep_preset"]) == (
        3, 5, ["lr", "nb"], "cpu-fast")
    assert metrics["oracle"] == json.loads((out / "cohort" / "oracle.json").read_text())
    for split, block in metrics["splits"].items():
        line = re.search(rf"^\[dpet-response\] {split} \(n={block['n']}\): (.*)$", run.stderr, flags=re.M).group(1)
        printed = dict(re.findall(r"(\w+) (\d\.\d\d)", line.split(" | ")[0]))
        assert printed == {m: f"{v['auc']:.2f}" for m, v in block["models"].items()}, split
        if split != "train_cv":
            assert f"| oracle {metrics['oracle']['auc_by_split'][split]:.2f}" in line


def test_clinical_predictors_keep_another_outcome_out(runs, cohort, tmp_path):
    """A manifest with two outcome columns: with `--label-column response` the `label` column is left out by rule,
    but any other outcome-like column would be a predictor; `clinical_predictors` names the predictors, an unknown
    one is refused before any work, naming the manifest's clinical columns."""
    manifest = cohort["manifest"].copy()
    manifest["other_outcome"] = manifest["label"]
    path = cohort["manifest_path"].with_name("manifest_two_outcomes.csv")
    manifest.to_csv(path)
    settings = {**runs.get("deep_off")["settings"], "clinical_predictors": list(CLINICAL[:2])}
    config = tmp_path / "settings.json"
    config.write_text(json.dumps(settings))
    code, _, err = call("train", path, "--out", tmp_path / "bundle", "--config", config, "--cache", cohort["cache"])
    assert code == 0, err
    stored = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert stored["clinical_columns"] == list(CLINICAL[:2])
    model = StudyModel.load(tmp_path / "bundle")
    left_out = {"other_outcome", *CLINICAL[2:]}
    assert not [name for name, e in model.estimators_.items() if left_out & set(e.used_columns_)]
    config.write_text(json.dumps({**settings, "clinical_predictors": ["age", "grde"]}))
    code, out, err = call("train", path, "--out", tmp_path / "refused", "--config", config)
    assert code == 2 and not (tmp_path / "refused").exists()
    assert "clinical_predictors grde: not clinical columns of" in one_error_line(err, "train")
    assert "other_outcome" in err


def test_extract_learns_the_habitats_on_the_label_columns_training_cases(cohort, tmp_path):
    """`extract --label-column response` learns the population habitats on the cases `train --label-column
    response` learns them on: the labelled train cases of that column (here a third of them unlabelled)."""
    from DPETResponseLib.extraction import with_habitat_model
    from DPETResponseLib.io.manifest import read_manifest, training_cases

    manifest = cohort["manifest"].copy()
    train_ids = manifest.index[manifest["split"] == "train"]
    manifest.insert(3, "response", manifest["label"].astype("Int64"))
    manifest.loc[train_ids[::3], "response"] = pd.NA
    path = cohort["manifest_path"].with_name("manifest_partly_labelled.csv")
    manifest.to_csv(path)
    settings = {"radiomics_params": str(cohort["params"]), "habitat_radius_mm": 3.0}
    config = tmp_path / "settings.json"
    config.write_text(json.dumps({"analysis": settings}))
    out = tmp_path / "features.csv"
    code, _, err = call("extract", path, "--out", out, "--config", config, "--cache", cohort["cache"],
                        "--label-column", "response")
    assert code == 0, err
    learned = json.loads(out.with_suffix(".json").read_text())["settings"]["habitat_model"]
    cases = read_manifest(path, label_column="response")
    assert len(training_cases(cases)) == len(train_ids) - len(train_ids[::3])
    expected = with_habitat_model(training_cases(cases), settings, cohort["cache"], progress=False)["habitat_model"]
    assert learned == json.loads(json.dumps(expected))
    on_label = with_habitat_model(training_cases(read_manifest(path)), settings, cohort["cache"], progress=False)
    assert learned != json.loads(json.dumps(on_label["habitat_model"]))
