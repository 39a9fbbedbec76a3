"""The model chain (HER2-MAP): an upstream bundle's probability as a clinical column of a downstream manifest.

An 80-case synthetic cohort (50 train, 30 test). The upstream endpoint ``her2`` is a known function of an image
quantity: 1 where minus the tumour's standardised sphericity plus Gaussian noise (SD 0.3) is above 0 (irregular
tumours are HER2-positive); four training cases have no HER2 status, so the upstream is not trained on them. The
downstream outcome ``response`` is ``her2`` in nine cases of ten (drawn at random) and the cohort's own pCR label
in the rest. The manifests' clinical columns see nothing of the tumour's shape. Population habitats are off
(per-tumour habitats), so every train shares one feature cache.

What it shows: the chain adds information (the downstream clinical pathway gains with the column); training cases
get their out-of-fold value, other cases the ensemble's prediction that `evaluate` reports; on permuted upstream
labels the chained column gives chance AUCs downstream, and in-sample upstream predictions in its place do not
(the positive control); the refusals; the sidecar.
"""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_RADIOMICS_YAML
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from DPETResponseLib.chain import SIDECAR_SUFFIX, add_upstream_column, sidecar_path, upstream_predictions
from DPETResponseLib.core.errors import ConfigError, DPETError, ManifestError
from DPETResponseLib.core.files import sha256_file
from DPETResponseLib.extraction import feature_table
from DPETResponseLib.io.manifest import read_manifest
from DPETResponseLib.learn.pathways import ClinicalPathway
from DPETResponseLib.protocol import evaluate, train
from DPETResponseLib.reporting.evaluation import auc
from DPETResponseLib.study.model import StudyModel
from DPETResponseLib.synthetic import make_cohort

CONFIG = {"n_folds": 3, "seed": 0, "deep": False, "classifiers": ["lr", "rf"], "radiomics_feature_sets": ["original"],
          "analysis": {"radiomics_params": str(FAST_RADIOMICS_YAML), "habitat_method": "tumour"}}
NO_HER2 = 4  # training cases without a HER2 status: not upstream training cases
PERMUTATIONS = (1, 2, 3)
CHAIN_MODELS = ("fusion_decision", "fusion_feature")  # the upstream models of the permutation control


def _write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return path


def _train(manifest, bundle, cache, label_column, config=None) -> StudyModel:
    return train(manifest, bundle, config=config or CONFIG, jobs=2, cache_dir=cache, progress=False,
                 label_column=label_column)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The cohort, its upstream (her2) and downstream (response) manifests, the upstream bundle, the chained
    manifest and evaluate's report of the upstream bundle."""
    root = tmp_path_factory.mktemp("chain")
    manifest = make_cohort(root / "cohort", n=80, seed=0, splits={"train": 50, "test": 30})
    cohort = pd.read_csv(manifest)
    for column in ("image", "mask"):
        cohort[column] = [str(manifest.parent / p) for p in cohort[column]]
    X, _, _ = feature_table(read_manifest(manifest), CONFIG["analysis"], root / "cache", jobs=2, progress=False)
    sphericity = X.loc[cohort["case_id"], "whole_original_shape_Sphericity"].to_numpy()
    rng = np.random.default_rng(0)
    her2 = ((sphericity.mean() - sphericity) / sphericity.std() + 0.3 * rng.standard_normal(len(cohort)) > 0)
    her2 = her2.astype(int)
    response = np.where(rng.random(len(cohort)) < 0.9, her2, cohort["label"])
    upstream = cohort.assign(her2=her2.astype(object))
    unknown = upstream.index[upstream["split"] == "train"][:NO_HER2]
    upstream.loc[unknown, "her2"] = ""
    downstream = cohort.assign(response=response)
    study = {"root": root, "cache": root / "cache", "cohort": cohort, "her2": pd.Series(her2, cohort["case_id"]),
             "upstream_manifest": _write(upstream, root / "upstream.csv"),
             "downstream_manifest": _write(downstream, root / "downstream.csv"),
             "no_her2": list(cohort.loc[unknown, "case_id"]), "features": X}
    study["upstream"] = _train(study["upstream_manifest"], root / "upstream", study["cache"], "her2")
    evaluate(root / "upstream", study["upstream_manifest"], root / "upstream_report", jobs=2, cache_dir=study["cache"],
             progress=False, n_boot=100)
    study["chained"] = add_upstream_column(root / "upstream", study["downstream_manifest"], root / "chained.csv",
                                           label_column="response", cache_dir=study["cache"], jobs=2, progress=False)
    return study


def test_training_cases_get_oof_values_other_cases_the_ensemble(study):
    """Leakage: each upstream training case's value is exactly its OOF probability (`StudyModel.oof_`); each held-out
    case's is exactly what `evaluate` wrote to predictions.csv; the training cases without a HER2 status (never
    seen by the upstream) get the ensemble's prediction, exactly `StudyModel.predict_proba`."""
    chained = read_manifest(study["chained"], label_column="response")
    upstream = study["upstream"]
    sidecar = json.loads(sidecar_path(study["chained"]).read_text())
    source = pd.Series({case: v["source"] for case, v in sidecar["cases"].items()})
    assert set(source[source == "oof"].index) == set(upstream.oof_.index)
    assert len(upstream.oof_) == 50 - NO_HER2
    np.testing.assert_array_equal(chained.loc[upstream.oof_.index, "her2_prob"],
                                  upstream.oof_["fusion_decision"])
    predictions = pd.read_csv(study["root"] / "upstream_report" / "predictions.csv", dtype={"case_id": str})
    held_out = predictions[predictions["split"] == "test"].set_index("case_id")
    assert len(held_out) == 30 and set(source[held_out.index]) == {"ensemble"}
    np.testing.assert_array_equal(chained.loc[held_out.index, "her2_prob"], held_out["fusion_decision"])
    unseen = chained.loc[study["no_her2"]]
    X, _, _ = feature_table(unseen, upstream.config.analysis, study["cache"], progress=False)
    assert set(source[study["no_her2"]]) == {"ensemble"}
    np.testing.assert_array_equal(unseen["her2_prob"], upstream.predict_proba(X, [], [])["fusion_decision"])
    # the upstream learned HER2 from the images: held-out AUC 0.963
    her2_auc = auc(study["her2"][held_out.index], held_out["fusion_decision"])
    print("upstream held-out HER2 AUC", round(her2_auc, 3))
    assert her2_auc > 0.75


def test_the_chain_adds_information(study):
    """The downstream study trained with and without the upstream column (`train`, `evaluate`): the clinical pathway
    (clinical columns and SUVmax; the tumour's shape reaches it only through the column) gains at least 0.15 in
    train_cv and held-out AUC, to above 0.75. Measured: train_cv 0.534 -> 0.852, held-out (30 cases) 0.648 -> 0.861.
    The image pathways read the shape themselves, so the fusions gain nothing here (decision fusion train_cv 0.930
    -> 0.904, held-out 0.856 -> 0.833): a chain helps where the downstream model cannot learn the upstream
    endpoint itself."""
    root = study["root"]
    aucs = {}
    for name, manifest in (("without", study["downstream_manifest"]), ("with", study["chained"])):
        _train(manifest, root / f"down_{name}", study["cache"], "response")
        evaluate(root / f"down_{name}", manifest, root / f"down_{name}_report", jobs=2, cache_dir=study["cache"],
                 progress=False, n_boot=100)
        metrics = json.loads((root / f"down_{name}_report" / "metrics.json").read_text())
        aucs[name] = {split: {m: round(v["auc"], 3) for m, v in block["models"].items()}
                      for split, block in metrics["splits"].items()}
    print(aucs)
    for split in ("train_cv", "test"):
        assert aucs["with"][split]["clinical"] >= aucs["without"][split]["clinical"] + 0.15, split
        assert aucs["with"][split]["clinical"] > 0.75, split


def _permuted(study, seed: int, folder) -> dict:
    """The upstream trained on HER2 permuted within each split; the downstream outcome is that permuted status (on
    the upstream's training cases, where OOF and in-sample values differ). Images cannot predict it, so an honest
    chain column cannot either. Returns, per upstream model, the train_cv AUC of a downstream model on the column
    alone, with the chained column ("honest") and with the upstream's in-sample predictions in its place
    ("leaky")."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    upstream = pd.read_csv(study["upstream_manifest"], dtype={"her2": str}, keep_default_na=False)
    known = upstream["her2"] != ""
    for split in upstream["split"].unique():
        rows = known & (upstream["split"] == split)
        upstream.loc[rows, "her2"] = rng.permutation(upstream.loc[rows, "her2"].to_numpy())
    bundle = _train(_write(upstream, folder / "upstream.csv"), folder / "upstream", study["cache"], "her2")
    training = bundle.oof_.index
    y = upstream.set_index("case_id").loc[training, "her2"].astype(int).to_numpy()
    X = study["features"].loc[training]
    in_sample = bundle.predict_proba(X, [], [])
    folds = StratifiedKFold(n_splits=CONFIG["n_folds"], shuffle=True, random_state=CONFIG["seed"])  # the study's
    out = {}
    for model in CHAIN_MODELS:
        chained = upstream_predictions(folder / "upstream", study["downstream_manifest"], model=model,
                                       label_column="response", cache_dir=study["cache"], progress=False)
        assert set(chained.loc[training, "source"]) == {"oof"}
        out[model] = {}
        for kind, column in (("honest", chained.loc[training, "probability"]), ("leaky", in_sample[model])):
            table = X.assign(her2_prob=column.to_numpy())
            downstream = ClinicalPathway(clinical_columns=["her2_prob"], include_suvmax=False)
            oof = cross_val_predict(downstream, table, y, cv=folds, method="predict_proba")[:, 1]
            out[model][kind] = auc(y, oof)
    return out


def test_permuted_upstream_labels_give_chance_downstream(study):
    """Permutation control, three permutations: with the upstream trained on permuted HER2 and the downstream
    outcome that permuted status, the train_cv AUC of a downstream model on the chained column alone (the clinical
    pathway's logistic regression, cross-validated on the study's folds as `train` does; here they are the
    upstream's folds too, the setting most exposed to what OOF values carry of the other folds' labels) stays near
    chance: mean <= 0.63, the bound of test_protocol's null check. (With the seven clinical columns and SUVmax
    beside it, the clinical pathway alone ranged 0.30-0.67 over six permutations of this 46-case null: too noisy to
    test the column.) Positive control: the upstream's in-sample predictions of its training cases in place of the
    OOF ones lift it (mean >= 0.7 with the decision fusion, >= 0.8 with the feature fusion, which memorises more).
    Measured (permutations 1, 2, 3): fusion_decision honest 0.608, 0.452, 0.610 (mean 0.557), leaky 0.996, 0.735,
    0.805 (0.845); fusion_feature honest 0.540, 0.499, 0.435 (0.491), leaky 0.961, 0.869, 0.953 (0.928)."""
    runs = [_permuted(study, seed, study["root"] / f"perm{seed}") for seed in PERMUTATIONS]
    means = {model: {kind: float(np.mean([run[model][kind] for run in runs])) for kind in ("honest", "leaky")}
             for model in CHAIN_MODELS}
    print([{m: {k: round(v, 3) for k, v in r.items()} for m, r in run.items()} for run in runs], means)
    assert all(means[model]["honest"] <= 0.63 for model in CHAIN_MODELS)
    assert means["fusion_decision"]["leaky"] >= 0.7
    assert means["fusion_feature"]["leaky"] >= 0.8


def test_refusals_name_the_problem(study, tmp_path):
    """Refused before any work: a model the bundle lacks (with the closest name), a column the manifest already
    has, an upstream trained on the downstream outcome, an upstream using the downstream outcome as a predictor,
    writing over the input manifest."""
    bundle, manifest = study["root"] / "upstream", study["downstream_manifest"]
    with pytest.raises(ConfigError, match=r"'fusion_decison' \(did you mean 'fusion_decision'\?\)"):
        upstream_predictions(bundle, manifest, model="fusion_decison", label_column="response")
    with pytest.raises(ManifestError, match=r"already has a column 'age'"):
        add_upstream_column(bundle, manifest, tmp_path / "out.csv", column="age", label_column="response")
    with pytest.raises(DPETError, match=r"trained on 'her2', the outcome of .*leakage by construction"):
        add_upstream_column(bundle, study["upstream_manifest"], tmp_path / "out.csv", label_column="her2")
    with pytest.raises(DPETError, match="write the chained manifest to a new file"):
        add_upstream_column(bundle, manifest, manifest, label_column="response")
    # an upstream that had the downstream outcome among its clinical columns
    both = pd.read_csv(study["upstream_manifest"], dtype=str, keep_default_na=False).assign(
        response=pd.read_csv(manifest)["response"])
    leaky = _train(_write(both, tmp_path / "both.csv"), tmp_path / "leaky_upstream", study["cache"], "her2",
                   config={**CONFIG, "classifiers": ["lr"]})
    assert "response" in leaky.clinical_columns
    with pytest.raises(DPETError, match=r"uses 'response', the outcome of .*, as a clinical predictor"):
        add_upstream_column(tmp_path / "leaky_upstream", manifest, tmp_path / "out.csv", label_column="response")
    assert not (tmp_path / "out.csv").exists()


def test_sidecar_records_the_bundle_and_each_case(study):
    """The sidecar: the upstream bundle's path and sha256 (of its bundle.json, which lists every other file's), the
    model, the source manifest's sha256, counts and each case's source and probability; the new manifest's paths are
    absolute and its other columns unchanged."""
    sidecar = json.loads(sidecar_path(study["chained"]).read_text())
    assert study["chained"].name == "chained.csv" and sidecar_path(study["chained"]).name == "chained" + SIDECAR_SUFFIX
    bundle = study["root"] / "upstream"
    assert sidecar["upstream"]["bundle"] == str(bundle.resolve())
    assert sidecar["upstream"]["sha256"] == sha256_file(bundle / "bundle.json")
    assert sidecar["upstream"]["content_sha256"] == json.loads((bundle / "bundle.json").read_text())["content_sha256"]
    assert (sidecar["upstream"]["model"], sidecar["upstream"]["label_column"]) == ("fusion_decision", "her2")
    assert sidecar["source_manifest"]["sha256"] == sha256_file(study["downstream_manifest"])
    assert sidecar["counts"] == {"oof": 46, "ensemble": 34, "failed": 0}
    assert sidecar["image_check"]["compared"] == 46 and sidecar["image_check"]["differ"] == []
    chained = pd.read_csv(study["chained"])
    assert all(chained["image"].str.startswith("/")) and all(chained["mask"].str.startswith("/"))
    for case, row in chained.set_index("case_id").iterrows():
        assert sidecar["cases"][case]["probability"] == row["her2_prob"]
    original = pd.read_csv(study["downstream_manifest"])
    pd.testing.assert_frame_equal(chained.drop(columns="her2_prob"), original)


def test_cli_chain_warns_of_shared_ids_on_other_images(study, tmp_path, caplog, capsys):
    """`dpet-response chain`: a training case whose manifest row points to another case's image is warned about (by
    path and sha256) and listed in the sidecar; an unknown model ends in one error line and exit status 2."""
    from DPETResponseLib.cli import main

    manifest = pd.read_csv(study["downstream_manifest"])
    manifest = manifest[manifest["case_id"].isin(study["upstream"].oof_.index)].reset_index(drop=True)
    moved = manifest.loc[0, "case_id"]
    manifest.loc[0, "image"] = manifest.loc[1, "image"]
    path = _write(manifest, tmp_path / "shuffled.csv")
    bundle = str(study["root"] / "upstream")
    with caplog.at_level(logging.WARNING, logger="DPETResponseLib"):
        code = main(["chain", bundle, str(path), "--out", str(tmp_path / "out.csv"), "--label-column", "response",
                     "--column", "her2_p", "--cache", str(study["cache"])])
    assert code == 0
    assert f"but not its image or mask: {moved};" in caplog.text
    sidecar = json.loads((tmp_path / "out.chain.json").read_text())
    assert sidecar["image_check"]["differ"] == [moved] and sidecar["counts"]["oof"] == len(manifest)
    assert "her2_p" in pd.read_csv(tmp_path / "out.csv").columns
    capsys.readouterr()
    assert main(["chain", bundle, str(path), "--out", str(tmp_path / "x.csv"), "--model", "nope",
                 "--label-column", "response"]) == 2
    assert "dpet-response chain: error: unknown model of bundle" in capsys.readouterr().err


def test_chained_manifest_makes_other_modalities_paths_absolute(study, tmp_path):
    """A downstream manifest with another modality's relative paths (and a case without it): the chained manifest,
    written to another folder, holds them absolute, so it reads from there; the empty cell stays empty."""
    folder = tmp_path / "relative"
    folder.mkdir()
    rows = pd.read_csv(study["downstream_manifest"])
    rows["image_ct"] = [os.path.relpath(p, folder) for p in rows["image"]]
    rows["mask_ct"] = [os.path.relpath(p, folder) for p in rows["mask"]]
    rows.loc[0, ["image_ct", "mask_ct"]] = ""
    rows.to_csv(folder / "manifest.csv", index=False)
    out = add_upstream_column(study["root"] / "upstream", folder / "manifest.csv", tmp_path / "elsewhere" / "m.csv",
                              label_column="response", cache_dir=study["cache"], progress=False)
    chained = pd.read_csv(out, keep_default_na=False)
    assert chained.loc[0, "image_ct"] == "" and chained.loc[0, "mask_ct"] == ""
    assert chained.loc[1:, "image_ct"].tolist() == [str(Path(p).resolve()) for p in rows.loc[1:, "image"]]
    assert chained.loc[1:, "mask_ct"].tolist() == [str(Path(p).resolve()) for p in rows.loc[1:, "mask"]]
    assert read_manifest(out, label_column="response")["image_ct"].iloc[1] == str(Path(rows.loc[1, "image"]).resolve())
