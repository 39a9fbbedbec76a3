"""SHAP explanations: shap importable beside a foreign `slicer` module, hand-computed linear SHAP, additivity
for every model kind, contribution shares, figures."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from test_fusion import coefficient_shares
from test_pathways import feature_table

from DPETResponseLib.core.errors import DPETError, InputError
from DPETResponseLib.learn.explain import contribution_shares, import_shap, model_log_odds, shap_values
from DPETResponseLib.learn.fusion import DecisionFusion, FeatureFusion
from DPETResponseLib.learn.pathways import ClinicalPathway, ColumnProbability, ITHPathway, RadiomicsPathway
from DPETResponseLib.reporting.figures import plot_contribution_shares, plot_shap_summary, plot_shap_waterfall

PROJECT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: a fake `slicer` (like 3D Slicer's: no Alias/Obj/Slicer) is installed first, so
# a cached or naive `import shap` cannot pass. Prints the SHAP values of a hand-checkable linear model.
FRESH_IMPORT = """
import json, sys, types
import numpy as np
fake = types.ModuleType("slicer")
fake.app = "3D Slicer application stand-in"
sys.modules["slicer"] = fake
assert "shap" not in sys.modules
from DPETResponseLib.learn.explain import import_shap
shap = import_shap()
from sklearn.linear_model import LogisticRegression
X = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, -1.0], [2.0, 1.0]])
model = LogisticRegression().fit(X, [0, 1, 1, 0])
explanation = shap.LinearExplainer(model, shap.maskers.Independent(X))(X)  # a shap.Explanation uses slicer.Slicer
print(json.dumps({
    "same_module": sys.modules["slicer"] is fake,
    "fake_untouched": sorted(k for k in vars(fake) if not k.startswith("__")),
    "leftover": sorted(k for k in sys.modules if k.startswith("slicer.")),
    "values": explanation.values.tolist(), "expected": (model.coef_ * (X - X.mean(0))).tolist(),
    "first_row": explanation[0].values.tolist(),
}))
"""


def _run_fresh(env_extra=None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), **(env_extra or {})}
    out = subprocess.run([sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, env=env,
                         cwd=PROJECT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_fresh(result: dict):
    assert result["same_module"] is True
    assert result["fake_untouched"] == ["app"]  # no Alias/Obj/Slicer added to the application's module
    assert result["leftover"] == []  # the private slicer.slicer / slicer.slicer_internal are gone again
    np.testing.assert_allclose(result["values"], result["expected"], atol=1e-10)
    np.testing.assert_allclose(result["first_row"], result["expected"][0], atol=1e-10)


def test_import_shap_beside_a_foreign_slicer_module():
    _check_fresh(_run_fresh({"DPET_SHAP_SLICER_DIR": ""}))


def test_import_shap_from_a_private_folder(tmp_path):
    """Inside 3D Slicer: the PyPI slicer files in a private folder named by DPET_SHAP_SLICER_DIR."""
    import importlib.metadata

    source = Path(importlib.metadata.distribution("slicer").locate_file("slicer"))
    private = tmp_path / "shap_deps" / "slicer"
    private.mkdir(parents=True)
    for name in ("slicer.py", "slicer_internal.py"):
        shutil.copy(source / name, private / name)
    _check_fresh(_run_fresh({"DPET_SHAP_SLICER_DIR": str(private.parent)}))


def test_import_shap_names_a_missing_private_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DPET_SHAP_SLICER_DIR", str(tmp_path / "nowhere"))
    monkeypatch.delitem(sys.modules, "shap", raising=False)
    with pytest.raises(DPETError, match="DPET_SHAP_SLICER_DIR=.*nowhere"):
        import_shap()


def test_linear_shap_equals_hand_computed_coef_times_centred_value():
    rng = np.random.default_rng(0)
    background = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    y = (background.a - background.b + rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(background, y)
    X = pd.DataFrame([[1.0, 2.0, -0.5], [0.0, 0.0, 0.0]], columns=["a", "b", "c"], index=["p1", "p2"])
    values = shap_values(model, background, X)
    expected = model.coef_.ravel() * (X.to_numpy() - background.mean().to_numpy())  # interventional, independent
    np.testing.assert_allclose(values.to_numpy(), expected, atol=1e-10)
    assert list(values.index) == ["p1", "p2"] and list(values.columns) == ["a", "b", "c"]
    base = model.intercept_[0] + model.coef_.ravel() @ background.mean().to_numpy()
    assert values.attrs["base_value"] == pytest.approx(base)
    np.testing.assert_allclose(values.sum(axis=1) + base, model_log_odds(model, X), atol=1e-10)


@pytest.fixture(scope="module")
def tables():
    X, y = feature_table(n=90, seed=0)
    Xt, _ = feature_table(n=12, seed=1)
    return X, y, Xt


@pytest.mark.parametrize("classifier, tol", [("lr", 1e-8), ("xgb", 1e-4), ("rf", 1e-8), ("nb", 1e-8)])
def test_additivity_radiomics_pathway(tables, classifier, tol):
    X, y, Xt = tables
    model = RadiomicsPathway(classifiers=(classifier,), inner_cv=3).fit(X, y)
    values = shap_values(model, X, Xt)
    assert list(values.columns) == model.selected_features_
    np.testing.assert_allclose(values.sum(axis=1) + values.attrs["base_value"], model_log_odds(model, Xt),
                               atol=tol)
    assert values.abs().to_numpy().max() > 0.05  # real contributions, not zeros


def test_additivity_fusions_and_other_pathways(tables):
    X, y, Xt = tables
    fusion = DecisionFusion({"clinical": ClinicalPathway(), "ith": ITHPathway(), "deep": ColumnProbability()},
                            cv=3).fit(X, y)
    features = FeatureFusion(radiomics=RadiomicsPathway(classifiers=("lr",), inner_cv=3)).fit(X, y)
    for model, columns in [(fusion, ["clinical", "ith", "deep"]), (features, features.feature_names_),
                           (ClinicalPathway().fit(X, y), ["age", "pet_SUVmax", "grade_G1", "grade_G2", "grade_G3"]),
                           (ColumnProbability().fit(X, y), ["dl_prob"])]:
        values = shap_values(model, X, Xt)
        assert list(values.columns) == columns
        np.testing.assert_allclose(values.sum(axis=1) + values.attrs["base_value"], model_log_odds(model, Xt),
                                   atol=1e-8)
    # The stacker's SHAP over its inputs (the pathways' probabilities) is linear: coef_j * (p_j - mean background p_j).
    values = shap_values(fusion, X, Xt)
    centred = fusion.explanation_inputs(Xt) - fusion.explanation_inputs(X).mean()
    np.testing.assert_allclose(values.to_numpy(), centred.to_numpy() * fusion.coef_.to_numpy(), atol=1e-10)
    shares = contribution_shares(shap_values(features, X, X), features.feature_groups_)
    assert sum(shares.values()) == pytest.approx(1.0)
    # On the training cases, mean |SHAP| shares equal the coefficient-based shares up to the centring of the
    # (already standardised, mean 0) inputs: the two figures agree.
    for group, share in shares.items():
        assert share == pytest.approx(coefficient_shares(features, X)[group], abs=1e-8)


def test_contribution_shares_hand_computed():
    values = pd.DataFrame({"r1": [1.0, -3.0], "r2": [0.0, 2.0], "d1": [-2.0, 2.0]})
    # mean |SHAP|: r1 2, r2 1, d1 2 -> radiomics 3/5, dl 2/5
    assert contribution_shares(values, {"radiomics": ["r1", "r2"], "dl": ["d1"]}) == pytest.approx(
        {"radiomics": 0.6, "dl": 0.4})
    with pytest.raises(InputError, match="no SHAP values for d2"):
        contribution_shares(values, {"dl": ["d1", "d2"]})


def test_contribution_shares_figure_draws_each_share_in_its_own_colour(tmp_path):
    """The bar's colour areas follow the shares (70/30), and a group with no share anywhere is still in the
    legend in its own colour."""
    from matplotlib import colormaps
    from matplotlib.image import imread

    path = plot_contribution_shares({"fusion": {"clinical": 0.7, "radiomics": 0.3, "deep": 0.0}},
                                    tmp_path / "shares.png")
    rgb = imread(path)[..., :3]
    pixels = {g: int(np.all(np.abs(rgb - colormaps["tab10"](i)[:3]) < 0.02, axis=-1).sum())
              for i, g in enumerate(["clinical", "radiomics", "deep"])}
    assert 2.0 < pixels["clinical"] / pixels["radiomics"] < 2.7, pixels  # 7/3 = 2.33 (labels cover a little)
    assert 0 < pixels["deep"] < 0.05 * pixels["radiomics"], pixels  # its legend patch only
    with pytest.raises(InputError, match="no shares"):
        plot_contribution_shares({}, tmp_path / "none.png")


def test_figures(tmp_path):
    values = pd.DataFrame({"small": [0.1, -0.1, 0.0], "large": [2.0, -1.0, 0.5], "mid": [0.5, 0.5, -0.5]},
                          index=["c1", "c2", "c3"])
    X = pd.DataFrame({"small": [1.0, 2.0, 3.0], "large": [0.0, np.nan, 1.0]}, index=["c1", "c2", "c3"])
    order = plot_shap_summary(values, X, tmp_path / "summary.png")  # "mid" has no value column: grey dots
    assert order == ["large", "mid", "small"]  # mean |SHAP| 1.17, 0.5, 0.067
    end = plot_shap_waterfall(values.loc["c1"], -0.4, tmp_path / "waterfall.png", max_features=2)
    assert end == pytest.approx(-0.4 + 0.1 + 2.0 + 0.5)
    for name in ("summary.png", "waterfall.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.png", "waterfall.png"]  # no temporary left
