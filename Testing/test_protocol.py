"""The study end to end on the synthetic D-PET cohort (147 cases, 90/39/18), with a fast configuration: a light
radiomics parameter file (Original image only), 3 folds, a small CNN trained for a few epochs on the CPU.

What it shows: every model is reported with its CIs next to the oracle; the pathways and fusions learn what the
cohort holds (above chance, below the oracle); nothing leaks (random labels give chance AUCs,
also in the cross-validated training estimates, which is where leakage shows first); a saved bundle predicts the
same numbers in a fresh process.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from DPETResponseLib.protocol import evaluate, train
from DPETResponseLib.study import FUSIONS, PATHWAYS
from DPETResponseLib.synthetic import make_cohort

FAST_PARAMS = """
imageType:
  Original: {}
featureClass:
  shape:
  firstorder:
  glcm:
  glrlm:
  glszm:
setting:
  binWidth: 0.25
  label: 1
  minimumROIDimensions: 2
  minimumROISize: 9
  padDistance: 5
"""
ALL_MODELS = set(PATHWAYS) | set(FUSIONS)


def _fast_config(params_path) -> dict:
    return {"n_folds": 3, "seed": 0, "deep_preset": "cpu-fast", "deep_epochs": 12, "classifiers": ["lr", "nb", "rf"],
            "analysis": {"radiomics_params": str(params_path)}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The 147-case synthetic cohort trained and evaluated once for the tests of this module."""
    root = tmp_path_factory.mktemp("study")
    params = root / "fast.yaml"
    params.write_text(FAST_PARAMS)
    manifest = make_cohort(root / "cohort", n=147, seed=0)
    train(manifest, root / "bundle", config=_fast_config(params), jobs=2, cache_dir=root / "cache", progress=False)
    report = evaluate(root / "bundle", manifest, root / "report", jobs=2, cache_dir=root / "cache", progress=False,
                      n_boot=500)
    metrics = json.loads((root / "report" / "metrics.json").read_text())
    return {"root": root, "manifest": manifest, "params": params, "report": report, "metrics": metrics}


def test_every_model_reported_with_cis_next_to_the_oracle(study):
    metrics = study["metrics"]
    assert set(metrics["splits"]) == {"train_cv", "test", "test2"}
    assert metrics["splits"]["test"]["n"] == 39 and metrics["splits"]["test2"]["n"] == 18
    for split, block in metrics["splits"].items():
        assert set(block["models"]) == ALL_MODELS, split
        for name, m in block["models"].items():
            lo, hi = m["auc_ci"]
            assert 0 <= lo <= m["auc"] <= hi <= 1, (split, name)
            blo, bhi = m["auc_ci_bootstrap"]
            assert blo <= m["auc"] <= bhi, (split, name)
    oracle = metrics["oracle"]["auc_by_split"]
    assert 0.8 < oracle["test"] <= 1
    html = study["report"].read_text()
    assert "oracle" in html.lower() and all(name in html for name in ALL_MODELS)


def _pooled_auc(study, model: str) -> float:
    """AUC over both held-out splits together (57 cases): less noisy than either split alone."""
    from DPETResponseLib.evaluation import auc

    predictions = pd.read_csv(study["root"] / "report" / "predictions.csv")
    held_out = predictions[predictions["split"].isin(["test", "test2"])]
    return auc(held_out["label"].to_numpy(), held_out[model].to_numpy())


def test_models_learn_what_the_cohort_holds(study):
    """Every pathway that can see part of the hidden truth does better than chance on the held-out cases, and
    none beats the oracle by more than sampling noise. (The study's comparative claims, subregions over
    whole-tumour radiomics and fusion over the best single pathway, are measured and reported in the issue
    notes; on this cohort and fast configuration they do not hold, so they are not asserted here.)"""
    oracle = study["metrics"]["oracle"]["auc_overall"]
    aucs = {name: _pooled_auc(study, name) for name in ALL_MODELS}
    print({k: round(v, 3) for k, v in aucs.items()}, "oracle", oracle)
    for name in ("radiomics", "radiomics_whole", "deep", "clinical", "fusion_feature", "fusion_feature_e2e",
                 "fusion_decision"):
        assert aucs[name] > 0.6, (name, aucs[name])
    assert max(aucs.values()) <= oracle + 0.1


def test_random_labels_give_chance_auc_everywhere(study, tmp_path):
    """Leakage test: the same images with permuted labels. Any step fit outside its training fold (selection,
    scaling, thresholds, the meta-learner) shows up as an AUC above chance, first in the out-of-fold training
    estimates."""
    manifest = pd.read_csv(study["manifest"])
    rng = np.random.default_rng(7)
    for split in manifest["split"].unique():
        rows = manifest["split"] == split
        manifest.loc[rows, "label"] = rng.permutation(manifest.loc[rows, "label"].to_numpy())
    cohort = study["manifest"].parent
    for column in ("image", "mask"):
        manifest[column] = [str(cohort / p) for p in manifest[column]]
    shuffled = tmp_path / "manifest_random.csv"
    manifest.to_csv(shuffled, index=False)
    train(shuffled, tmp_path / "bundle", config=_fast_config(study["params"]), jobs=2,
          cache_dir=study["root"] / "cache", progress=False)
    evaluate(tmp_path / "bundle", shuffled, tmp_path / "report", jobs=2, cache_dir=study["root"] / "cache",
             progress=False, n_boot=200)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for split in ("train_cv", "test"):
        for name, m in metrics["splits"][split]["models"].items():
            lo, hi = m["auc_ci"]
            assert lo <= 0.5 <= hi, (split, name, m["auc"], m["auc_ci"])


def test_bundle_predicts_the_same_in_a_fresh_process(study, tmp_path):
    """`dpet-response predict` in a new interpreter reproduces evaluate's probabilities for a test case, and
    writes the subregions and a Grad-CAM map on the PET's exact grid."""
    manifest = pd.read_csv(study["manifest"])
    case = manifest[manifest["split"] == "test"].iloc[0]
    cohort = study["manifest"].parent
    out = tmp_path / "prediction"
    run = subprocess.run(
        [sys.executable, "-m", "DPETResponseLib.cli", "predict", str(study["root"] / "bundle"),
         "--image", str(cohort / case["image"]), "--mask", str(cohort / case["mask"]), "--out", str(out),
         "--clinical", *[f"{c}={case[c]}" for c in ("age", "cT", "cN", "grade", "ki67", "regimen")]],
        capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    predictions = pd.read_csv(study["root"] / "report" / "predictions.csv").set_index("case_id")
    expected = predictions.loc[case["case_id"]]
    for name in ALL_MODELS:
        assert printed["probabilities"][name] == pytest.approx(expected[name], abs=1e-6), name
    assert set(printed["decision"]) == ALL_MODELS
    pet = sitk.ReadImage(str(cohort / case["image"]))
    for name in ("mask.nii.gz", "subregions.nii.gz", "gradcam.nii.gz"):
        image = sitk.ReadImage(str(out / name))
        assert image.GetSize() == pet.GetSize(), name
        np.testing.assert_allclose(image.GetOrigin(), pet.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), pet.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), pet.GetDirection(), atol=1e-6)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "subregions.nii.gz")))
    assert set(np.unique(labels)) == {0, 1, 2}
    assert set(printed["shap"]) >= {"radiomics", "fusion_decision"}
