"""Model bundle: round trip in a fresh process, and every kind of tampering refused with its own message."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.preprocessing import FunctionTransformer
from test_pathways import feature_table

from DPETResponseLib.core.errors import BundleError
from DPETResponseLib.learn.fusion import DecisionFusion, FeatureFusion
from DPETResponseLib.learn.pathways import (
    BaselinePathway,
    ClinicalPathway,
    ColumnProbability,
    DeepFeaturePathway,
    ITHPathway,
    RadiomicsPathway,
)
from DPETResponseLib.study.bundle import SCHEMA_VERSION, TRUSTED_TYPES, _content_sha256, read_bundle, write_bundle

PROJECT = Path(__file__).resolve().parents[1]

FRESH_LOAD = """
import json, sys
import pandas as pd
from DPETResponseLib.study.bundle import read_bundle
b = read_bundle(sys.argv[1])
X = pd.read_csv(sys.argv[2], index_col=0)
print(json.dumps({name: est.predict_proba(X)[:, 1].tolist() for name, est in b.estimators.items()}
                 | {"tensor_sum": float(b.tensors["net"]["conv.weight"].double().sum())}))
"""


@pytest.fixture(scope="module")
def fitted():
    X, y = feature_table(n=90, seed=0)
    Xt, _ = feature_table(n=20, seed=1)
    X["site"], Xt["site"] = (np.where(np.arange(len(t)) % 3, "A", "B") for t in (X, Xt))  # never a predictor
    estimators = {
        "fusion_decision": DecisionFusion({"clinical": ClinicalPathway(), "ith": ITHPathway(),
                                           "radiomics": RadiomicsPathway(classifiers=("xgb",), inner_cv=3),
                                           "deep": ColumnProbability()}, cv=3).fit(X, y),
        "fusion_feature": FeatureFusion(radiomics=RadiomicsPathway(classifiers=("lr",), inner_cv=3)).fit(X, y),
        "radiomics_rf": RadiomicsPathway(classifiers=("rf",), inner_cv=3).fit(X, y),
        "radiomics_knn": RadiomicsPathway(classifiers=("knn",), inner_cv=3).fit(X, y),
        "radiomics_nb": RadiomicsPathway(classifiers=("nb",), inner_cv=3).fit(X, y),
        "fusion_decision_equal": DecisionFusion({"ith": ITHPathway(), "deep": ColumnProbability()}, cv=3,
                                                weights="equal").fit(X, y),
        "baseline": BaselinePathway(inner_cv=3).fit(X, y),
        "deep_features": DeepFeaturePathway(prefix="dl_emb_", n_mrmr=5, n_features=2).fit(X, y),
        "radiomics_harmonised": RadiomicsPathway(classifiers=("lr",), inner_cv=3, site_column="site").fit(X, y),
    }
    tensors = {"net": {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
                       "fc.bias": torch.tensor([0.5, -0.5])}}
    return Xt, estimators, tensors


MANIFEST = {"kind": "test", "settings": {"bin_width": 0.25}, "features": ["a", "b"], "thresholds": {"fusion": 0.42}}


@pytest.fixture
def bundle(tmp_path, fitted):
    _, estimators, tensors = fitted
    return write_bundle(tmp_path / "bundle", MANIFEST, estimators, tensors)


def test_round_trip_in_a_fresh_process(bundle, fitted, tmp_path):
    Xt, estimators, tensors = fitted
    content = json.loads((bundle / "bundle.json").read_text())
    assert content["schema_version"] == SCHEMA_VERSION == 5
    assert content["thresholds"] == {"fusion": 0.42} and content["settings"] == {"bin_width": 0.25}
    assert {"DPETResponse", "numpy", "scikit-learn", "torch", "pyradiomics", "xgboost"} <= set(content["versions"])
    assert content["versions"]["numpy"] == np.__version__
    assert sorted(content["files"]) == sorted([f"estimators/{n}.skops" for n in estimators] +
                                              ["tensors/net.safetensors"])
    for rel, digest in content["files"].items():
        assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
    csv = tmp_path / "X.csv"
    Xt.to_csv(csv)
    out = subprocess.run([sys.executable, "-c", FRESH_LOAD, str(bundle), str(csv)], capture_output=True,
                         text=True, cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    import pandas as pd

    X_csv = pd.read_csv(csv, index_col=0)  # what the fresh process saw
    for name, estimator in estimators.items():
        np.testing.assert_array_equal(loaded[name], estimator.predict_proba(X_csv)[:, 1], err_msg=name)
    assert loaded["tensor_sum"] == float(sum(range(24)))
    # In this process too: the manifest and the tensors come back as written.
    b = read_bundle(bundle)
    assert b.manifest["features"] == ["a", "b"] and b.manifest["kind"] == "test"
    torch.testing.assert_close(b.tensors["net"]["fc.bias"], tensors["net"]["fc.bias"])


def test_trusted_type_list_covers_every_estimator(fitted, tmp_path):
    """TRUSTED_TYPES was computed from skops.io.get_untrusted_types on this reference set; recompute it."""
    import skops.io as sio

    _, estimators, _ = fitted
    found = set()
    for name, estimator in estimators.items():
        sio.dump(estimator, tmp_path / f"{name}.skops")
        found |= set(sio.get_untrusted_types(file=tmp_path / f"{name}.skops"))
    assert found == set(TRUSTED_TYPES)


def _rewrite_manifest(bundle: Path, edit) -> None:
    """Change bundle.json like an attacker who also recomputes the content checksum."""
    content = json.loads((bundle / "bundle.json").read_text())
    edit(content)
    content["content_sha256"] = _content_sha256(content)
    (bundle / "bundle.json").write_text(json.dumps(content))


def test_edited_json_value_refused(bundle):
    text = (bundle / "bundle.json").read_text()
    (bundle / "bundle.json").write_text(text.replace('"fusion": 0.42', '"fusion": 0.05'))
    with pytest.raises(BundleError, match=r"bundle\.json: content checksum mismatch"):
        read_bundle(bundle)


def test_edited_skops_byte_refused(bundle):
    target = bundle / "estimators" / "fusion_decision.skops"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"estimators/fusion_decision\.skops: checksum mismatch"):
        read_bundle(bundle)


def test_dropped_in_pickle_refused(bundle):
    (bundle / "estimators" / "model.pkl").write_bytes(pickle.dumps({"not": "loaded"}))
    with pytest.raises(BundleError, match=r"not listed in bundle\.json: estimators/model\.pkl"):
        read_bundle(bundle)


def test_unknown_schema_version_refused(bundle):
    _rewrite_manifest(bundle, lambda c: c.update(schema_version=99))
    with pytest.raises(BundleError, match="unknown schema version 99"):
        read_bundle(bundle)


def test_missing_file_refused(bundle):
    (bundle / "tensors" / "net.safetensors").unlink()
    with pytest.raises(BundleError, match=r"tensors/net\.safetensors: missing"):
        read_bundle(bundle)


def test_missing_part_checksum_refused(bundle):
    _rewrite_manifest(bundle, lambda c: c["files"].pop("estimators/radiomics_nb.skops"))
    with pytest.raises(BundleError, match=r"part estimators/radiomics_nb\.skops has no checksum"):
        read_bundle(bundle)


def test_untrusted_type_in_skops_refused(bundle, tmp_path):
    import skops.io as sio

    # A skops file whose checksum was recomputed too: only the trusted-type check stands in the way.
    target = bundle / "estimators" / "radiomics_nb.skops"
    sio.dump(FunctionTransformer(func=os.system), target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    _rewrite_manifest(bundle, lambda c: c["files"].update({"estimators/radiomics_nb.skops": digest}))
    with pytest.raises(BundleError, match=r"radiomics_nb\.skops: untrusted types, refused: .*system"):
        read_bundle(bundle)
    with pytest.raises(BundleError, match="estimator 'evil' holds types a bundle may not load"):
        write_bundle(tmp_path / "evil", {}, {"evil": FunctionTransformer(func=os.system)})
    assert not (tmp_path / "evil").exists() and not any(p.name.startswith(".evil") for p in tmp_path.iterdir())


def test_overwrite_rules(bundle, fitted, tmp_path):
    _, estimators, _ = fitted
    with pytest.raises(BundleError, match="already exists; pass overwrite=True"):
        write_bundle(bundle, MANIFEST, {})
    write_bundle(bundle, {**MANIFEST, "kind": "second"}, {"nb": estimators["radiomics_nb"]}, overwrite=True)
    b = read_bundle(bundle)
    assert b.manifest["kind"] == "second" and list(b.estimators) == ["nb"] and b.tensors == {}
    assert sorted(p.name for p in bundle.parent.iterdir() if p.name.startswith(".")) == []  # no leftovers
    user = tmp_path / "my_results"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="is not a model bundle; refusing"):
        write_bundle(user, MANIFEST, {}, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"
    with pytest.raises(BundleError, match="reserved"):
        write_bundle(tmp_path / "x", {"files": {}}, {})
    with pytest.raises(BundleError, match="not JSON-able"):
        write_bundle(tmp_path / "y", {"threshold": float("nan")}, {})
    assert not (tmp_path / "y").exists()


def test_skops_file_is_data_not_pickle(bundle):
    with zipfile.ZipFile(bundle / "estimators" / "fusion_feature.skops") as z:
        names = z.namelist()
    assert "schema.json" in names and not any(n.endswith((".pkl", ".pickle")) for n in names)


# ---------------------------------------------------------------------------------------------------------------
# The radiomics engine a study bundle records, and predict's check of the engine it runs with.
@pytest.fixture(scope="module")
def study(tmp_path_factory, shared_data):
    """A study bundle without CNN (fast radiomics settings, per-tumour habitats), fit on a random table with the
    analysis' own columns, and one real STS PET with its mask to predict."""
    import pandas as pd
    from conftest import FAST_RADIOMICS_YAML

    from DPETResponseLib.features.analysis import analyse_image
    from DPETResponseLib.io.images import read_mask, read_pet
    from DPETResponseLib.study.model import StudyConfig, StudyModel

    folder = shared_data / "sts_pet" / "STS_025"
    image = read_pet(folder / "PET_image.nii.gz")
    mask = read_mask(folder / "PET_mask.nii.gz", image)
    config = StudyConfig(n_folds=3, deep=False, classifiers=("lr",),
                         analysis={"radiomics_params": str(FAST_RADIOMICS_YAML), "habitat_method": "tumour"})
    features, *_ = analyse_image(image, mask, config.analysis, "STS_025")
    rng = np.random.default_rng(0)
    y = np.arange(30) % 2
    X = pd.DataFrame(rng.normal(size=(30, len(features))) + y[:, None] * 0.5, columns=list(features),
                     index=[f"c{i}" for i in range(30)])
    X["age"] = rng.normal(55, 10, 30)
    path = tmp_path_factory.mktemp("study") / "bundle"
    StudyModel(config, ["age"]).fit(X, y, [], [], progress=False).save(path)
    return {"bundle": path, "image": image, "mask": mask, "config": config}


def _engine_probe(study):
    from DPETResponseLib.features.analysis import resolve_settings
    from DPETResponseLib.features.radiomics import RadiomicsExtractor, engine_probe

    settings = resolve_settings(study["config"].analysis)
    return engine_probe(RadiomicsExtractor.from_text(settings["radiomics_params_text"]))


def test_bundle_records_the_radiomics_engine(study):
    from importlib import metadata

    import radiomics
    import SimpleITK

    recorded = json.loads((study["bundle"] / "bundle.json").read_text())["radiomics_engine"]
    assert recorded["distribution"] == "pyradiomics-bhklab"
    assert recorded["version"] == metadata.version("pyradiomics-bhklab") == radiomics.__version__.lstrip("v")
    assert recorded["revision"] == radiomics._version.get_versions()["full-revisionid"]
    assert recorded["SimpleITK"] == SimpleITK.__version__ and recorded["numpy"] == np.__version__
    probe = _engine_probe(study)
    assert recorded["probe"] == probe  # the bundle's parameters: Original image, shape to GLSZM
    assert len(probe) == 14 + 18 + 24 + 16 + 16


def _predict(study, **kwargs):
    from DPETResponseLib.protocol import predict

    return predict(study["bundle"], study["image"], mask=study["mask"], case_id="STS_025", **kwargs)


def test_predict_with_the_training_engine_notes_nothing(study):
    result = _predict(study)
    assert not [w for w in result.warnings if "radiomics engine" in w]
    assert set(result.probabilities) >= {"radiomics", "fusion_decision"}


def test_predict_refuses_an_engine_that_computes_other_features(study, monkeypatch):
    """A probe feature off by 1e-6 (relative): refused, naming both engines and the feature."""
    from DPETResponseLib.core.errors import DPETError
    from DPETResponseLib.features import radiomics as engine

    probe = _engine_probe(study)
    name = "whole_original_glcm_Contrast"
    changed = {**probe, name: probe[name] * (1 + 1e-6)}
    identity = {**engine.engine_identity(), "distribution": "pyradiomics", "version": "3.0.1a1", "revision": None}
    monkeypatch.setattr(engine, "engine_probe", lambda extractor: changed)
    monkeypatch.setattr(engine, "engine_identity", lambda: identity)
    with pytest.raises(DPETError) as refused:
        _predict(study)
    recorded = json.loads((study["bundle"] / "bundle.json").read_text())["radiomics_engine"]
    message = str(refused.value)
    assert "the radiomics engine here, pyradiomics 3.0.1a1 (SimpleITK" in message
    assert f"trained with, pyradiomics-bhklab {recorded['version']}, revision {recorded['revision'][:10]}" in message
    assert f"1 of 88 probe features differ by more than 1e-09 (relative), {name} by 1e-06" in message
    assert f"Install the bundle's engine (pip install pyradiomics-bhklab=={recorded['version']})" in message
    monkeypatch.setattr(engine, "engine_probe", lambda extractor: {k: v for k, v in probe.items() if k != name})
    with pytest.raises(DPETError, match=r"computes other features \(87\) than the bundle's"):
        _predict(study)


def test_predict_notes_another_engine_that_reproduces_the_features(study, monkeypatch):
    """Another version (or build) whose probe features differ only by rounding (1e-12): predicted, and noted in the
    result's warnings."""
    from DPETResponseLib.features import radiomics as engine

    probe = _engine_probe(study)
    rounded = {name: value * (1 + 1e-12) for name, value in probe.items()}
    identity = {**engine.engine_identity(), "version": "3.1.5", "SimpleITK": "9.9.9"}
    monkeypatch.setattr(engine, "engine_probe", lambda extractor: rounded)
    monkeypatch.setattr(engine, "engine_identity", lambda: identity)
    notes = [w for w in _predict(study).warnings if "radiomics engine" in w]
    assert len(notes) == 1
    assert "pyradiomics-bhklab 3.1.5" in notes[0] and "training's pyradiomics-bhklab 3.1.4" in notes[0]
    assert "(version, SimpleITK)" in notes[0] and "reproduces its probe features" in notes[0]


def test_a_bundle_without_engine_record_predicts_with_a_note(study, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(study["bundle"], old)
    _rewrite_manifest(old, lambda content: content.pop("radiomics_engine"))
    notes = [w for w in _predict({**study, "bundle": old}).warnings if "radiomics engine" in w]
    assert len(notes) == 1 and "does not record the radiomics engine" in notes[0]
