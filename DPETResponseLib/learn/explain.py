"""SHAP explanations of the tabular models, in log-odds units.

``import_shap`` is the only place the project imports shap (see its docstring for why).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import DPETError, InputError
from .pathways import logit

SLICER_DIR_ENV = "DPET_SHAP_SLICER_DIR"
TREE_BACKGROUND = 100
AGNOSTIC_BACKGROUND = 50
EXACT_MAX_FEATURES = 10


def _pypi_slicer_dir() -> Path:
    """The folder holding the PyPI ``slicer`` package's ``slicer.py`` and ``slicer_internal.py``."""
    given = os.environ.get(SLICER_DIR_ENV)
    if given:
        candidates = [Path(given), Path(given) / "slicer"]
    else:
        try:
            dist = importlib.metadata.distribution("slicer")
        except importlib.metadata.PackageNotFoundError:
            dist = None
        candidates = [Path(dist.locate_file("slicer"))] if dist is not None else []
    for folder in candidates:
        if (folder / "slicer.py").is_file() and (folder / "slicer_internal.py").is_file():
            return folder
    raise DPETError(
        "shap needs the PyPI package 'slicer' (Slicer/Alias/Obj), which was not found "
        + (f"in {SLICER_DIR_ENV}={given}" if given else "among the installed distributions")
        + f"; install it into a private folder (pip install --target DIR slicer==0.0.8) and set {SLICER_DIR_ENV}=DIR")


def import_shap():
    """Import shap without touching the ``slicer`` module the process already has.

    shap does ``from slicer import Alias, Obj, Slicer`` (the small PyPI package ``slicer``), while inside
    3D Slicer ``slicer`` is the application's module, and in our test environment slicer-core's meta-package
    owns ``site-packages/slicer/__init__.py``. So the PyPI package's files (found through its distribution
    record, or in the folder named by $DPET_SHAP_SLICER_DIR) are loaded as a private package that sits in
    ``sys.modules["slicer"]`` only while shap is imported; the original ``slicer`` entries (module objects)
    are then put back exactly. shap keeps its own references to the classes it imported.
    """
    if "shap" in sys.modules:
        return sys.modules["shap"]
    folder = _pypi_slicer_dir()
    is_slicer = lambda name: name == "slicer" or name.startswith("slicer.")  # noqa: E731
    saved = {name: module for name, module in sys.modules.items() if is_slicer(name)}
    for name in saved:
        del sys.modules[name]
    try:
        private = types.ModuleType("slicer", "the PyPI 'slicer' package, loaded privately for shap")
        private.__path__ = [str(folder)]
        sys.modules["slicer"] = private
        # What the PyPI package's own __init__ does (that file may be slicer-core's in a shared site-packages).
        core = importlib.import_module("slicer.slicer")
        private.Slicer, private.Alias, private.Obj = core.Slicer, core.Alias, core.Obj
        try:
            import shap
        except BaseException:
            for name in [n for n in sys.modules if n == "shap" or n.startswith("shap.")]:
                del sys.modules[name]
            raise
    finally:
        for name in [n for n in sys.modules if is_slicer(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
    return shap


def explanation_inputs(model, X: pd.DataFrame) -> tuple[pd.DataFrame, object]:
    """The named inputs of ``model``'s final classifier for the rows of ``X``, and that classifier.

    Our pathways and fusions say so themselves (``explanation_inputs`` / ``explained_estimator_``); a
    scikit-learn Pipeline is split before its last step; any other estimator is explained on ``X`` itself.

    Parameters
    ----------
    model : estimator
        A fitted pathway, fusion, Pipeline or classifier.
    X : DataFrame of shape (n_cases, n_columns)
        The feature table.

    Returns
    -------
    inputs : DataFrame of shape (n_cases, n_inputs)
        The final classifier's inputs, indexed like ``X``, one named column per input.
    final : estimator
        The final classifier.
    """
    from sklearn.pipeline import Pipeline

    if hasattr(model, "explanation_inputs"):
        return model.explanation_inputs(X), model.explained_estimator_
    if isinstance(model, Pipeline):
        Z = model[:-1].transform(X)
        return pd.DataFrame(np.asarray(Z, dtype=float), index=X.index,
                            columns=model[:-1].get_feature_names_out()), model[-1]
    return X, model


def shap_values(model, X_background: pd.DataFrame, X: pd.DataFrame, feature_names=None) -> pd.DataFrame:
    """SHAP values in log-odds units of pCR, one row per row of ``X``, one column per input of the model's
    final classifier (for the radiomics pathway: its selected features after preprocessing; for the decision
    fusion: the pathways' probabilities; for the feature fusion: selected radiomics features and embedding PCs).

    Interventional SHAP against ``X_background`` (rows subsampled with a fixed seed where the explainer costs
    grow with them):

    - logistic regression: shap.LinearExplainer (exact, coef_j * (x_j - mean_j));
    - XGBoost: shap.TreeExplainer on the margin (exact);
    - anything else (RF, KNN, naive Bayes, ...): logit(predict_proba) explained model-agnostically against
      50 background rows: shap.ExactExplainer up to 10 inputs, shap.PermutationExplainer beyond. TreeExplainer
      on a scikit-learn random forest would explain averaged probabilities, not log-odds, so the forest goes
      this way to keep one unit for every model.

    Parameters
    ----------
    model : estimator
        A fitted pathway, fusion, Pipeline or classifier with ``predict_proba``.
    X_background : DataFrame of shape (n_background, n_columns)
        The reference cases (usually the training cases), not empty.
    X : DataFrame of shape (n_cases, n_columns)
        The cases to explain.
    feature_names : sequence of str or None, default None
        Column names for the result, one per input of the final classifier; None: the inputs' own names.

    Returns
    -------
    DataFrame of shape (n_cases, n_inputs)
        SHAP values indexed like ``X``. ``result.attrs["base_value"]``: the expected log-odds; base value + row
        sum = the model's log-odds (``model_log_odds``).
    """
    if not isinstance(X, pd.DataFrame) or not isinstance(X_background, pd.DataFrame):
        raise InputError("shap_values needs X and X_background as pandas DataFrames")
    if len(X_background) == 0:
        raise InputError("shap_values: the background table is empty")
    shap = import_shap()
    from sklearn.linear_model import LogisticRegression

    Z, final = explanation_inputs(model, X)
    Zb, _ = explanation_inputs(model, X_background)
    names = list(Z.columns) if feature_names is None else list(feature_names)
    if len(names) != Z.shape[1]:
        raise InputError(f"shap_values: {len(names)} feature names for {Z.shape[1]} model inputs")

    if isinstance(final, LogisticRegression):
        background = Zb.to_numpy(float)  # only its mean matters: no need to subsample
        explainer = shap.LinearExplainer(final, shap.maskers.Independent(background, max_samples=len(background)))
        values, base = explainer.shap_values(Z.to_numpy(float)), explainer.expected_value
    elif type(final).__name__ == "XGBClassifier":
        background = Zb.sample(min(len(Zb), TREE_BACKGROUND), random_state=0).to_numpy(float)
        explainer = shap.TreeExplainer(final, data=background, feature_perturbation="interventional",
                                       model_output="raw")
        values, base = explainer.shap_values(Z.to_numpy(float), check_additivity=True), explainer.expected_value
    else:
        background = Zb.sample(min(len(Zb), AGNOSTIC_BACKGROUND), random_state=0).to_numpy(float)
        as_table = hasattr(final, "feature_names_in_") or hasattr(final, "explanation_inputs")

        def log_odds(A):
            A = pd.DataFrame(A, columns=Z.columns) if as_table else A
            return logit(final.predict_proba(A)[:, 1])

        masker = shap.maskers.Independent(background, max_samples=len(background))
        if Z.shape[1] <= EXACT_MAX_FEATURES:  # all 2^p coalitions: exact and cheaper than sampling permutations
            result = shap.ExactExplainer(log_odds, masker)(Z.to_numpy(float), silent=True)
        else:
            result = shap.PermutationExplainer(log_odds, masker, seed=0)(
                Z.to_numpy(float), max_evals=max(500, 2 * Z.shape[1] + 1), silent=True)
        values, base = result.values, np.asarray(result.base_values).ravel()[0]
    out = pd.DataFrame(np.asarray(values, dtype=float).reshape(Z.shape), index=X.index, columns=names)
    out.attrs["base_value"] = float(np.asarray(base).ravel()[0])
    return out


def model_log_odds(model, X: pd.DataFrame) -> np.ndarray:
    """The quantity SHAP values add up to: logit of the model's pCR probability.

    Parameters
    ----------
    model : estimator
        A fitted classifier with ``predict_proba``.
    X : DataFrame of shape (n_cases, n_columns)
        The cases.

    Returns
    -------
    ndarray of shape (n_cases,)
        log(p / (1 - p)), p clipped to [1e-6, 1 - 1e-6].
    """
    return logit(model.predict_proba(X)[:, 1])


def contribution_shares(values: pd.DataFrame, groups: dict[str, list[str]]) -> dict[str, float]:
    """Each group's share of the total mean |SHAP| (e.g. ``FeatureFusion.feature_groups_``: radiomics vs DL).

    Parameters
    ----------
    values : DataFrame of shape (n_cases, n_inputs)
        SHAP values (``shap_values``).
    groups : dict of str to list of str
        Columns of ``values`` per group; a column not in ``values`` raises InputError.

    Returns
    -------
    dict of str to float
        Each group's mean |SHAP| summed over its columns, divided by the sum over every group (so the shares
        add up to 1; all 0 when every value is 0).
    """
    unknown = sorted({c for cols in groups.values() for c in cols} - set(values.columns))
    if unknown:
        raise InputError(f"contribution_shares: no SHAP values for {', '.join(unknown)}")
    mean_abs = values.abs().mean(axis=0)
    total = float(sum(mean_abs[cols].sum() for cols in groups.values()))
    return {g: float(mean_abs[cols].sum() / total) if total else 0.0 for g, cols in groups.items()}
