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
    assert content["schema_version"] == SCHEMA_VERSION == 4
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
