"""Pathway classifiers on the per-case feature table (scikit-learn estimators).

Every pathway takes the FULL table (a DataFrame, one row per case) and picks its own columns, so the same
table goes to all of them; everything learned (imputation, scaling, selection, the classifier) is fit inside
``fit``, so cross-validation refits it in each fold. ``predict_proba(X)`` returns (n, 2).

For explanation (``explain.shap_values``) each pathway exposes ``explanation_inputs(X)`` (the named inputs
of its final model) and ``explained_estimator_`` (that final fitted model).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import RFE, VarianceThreshold
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from ..core.errors import ConfigError, InputError
from .selection import LassoSelector, MannWhitneySelector, MRMRSelector, VarianceCorrelationFilter, _binary_labels
from .tables import _columns, _table, rows_holding

FEATURE_PREFIXES = ("pet_", "whole_", "high_", "low_", "sub_", "ith_", "dl_", "dlf_")
MANIFEST_COLUMNS = ("case_id", "image", "mask", "label", "split", "site")
CLASSIFIERS = ("lr", "rf", "xgb", "knn", "nb")
#: Candidate radiomics feature sets by the pyradiomics image types they hold (column ``<region>_<imageType>_...``;
#: None: every image type). Columns without an image type (the subregions' ``sub_`` composition) are in every set.
FEATURE_SETS = {"original": ("original",), "original+log": ("original", "log-sigma"), "all": None}
PROBABILITY_EPS = 1e-6


def logit(p) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6] (a probability of exactly 0 or 1 stays finite)."""
    p = np.clip(np.asarray(p, dtype=float), PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return np.log(p / (1 - p))


def pool_probabilities(probabilities) -> np.ndarray:
    """One probability per case from K models' probabilities ((K, n) or a list of K arrays): the expit of the
    mean of their log-odds. In log-odds the pooled model's SHAP explanation is exactly the mean of the K models'
    explanations, and one model's probability of 0 or 1 cannot decide alone.

    Parameters
    ----------
    probabilities : array-like of shape (K, n_cases), or a list of K arrays of shape (n_cases,)
        Each model's pCR probability per case (clipped to [1e-6, 1 - 1e-6] before the logit).

    Returns
    -------
    ndarray of shape (n_cases,)
        The pooled probability per case.
    """
    from scipy.special import expit

    return expit(logit(probabilities).mean(axis=0))


def clinical_columns(table: pd.DataFrame) -> list[str]:
    """The clinical columns of a feature table: neither a feature prefix nor a manifest bookkeeping column."""
    return [c for c in table.columns if not str(c).startswith(FEATURE_PREFIXES) and c not in MANIFEST_COLUMNS]


def radiomics_columns(table: pd.DataFrame, regions=("whole", "high", "low")) -> list[str]:
    """The pyradiomics columns of the given regions (``<region>_<imageType>_<class>_<feature>``)."""
    return [c for c in table.columns if str(c).startswith(tuple(f"{r}_" for r in regions))]


#: Columns of the radiomics regions' tables that pyradiomics did not make (habitat composition, the peritumoural
#: shell's PET metrics): in every feature set.
NOT_PYRADIOMICS = ("sub_", "peri_pet_")


def feature_set_columns(columns, feature_set: str, regions=("whole", "high", "low")) -> list[str]:
    """The radiomics ``columns`` of ``regions`` (``<region>_<imageType>_...``; a region may hold an underscore, e.g.
    ``ct_whole``) in ``feature_set`` (a `FEATURE_SETS` name)."""
    if feature_set not in FEATURE_SETS:
        raise ConfigError(f"unknown radiomics feature set {feature_set!r}; choose from {', '.join(FEATURE_SETS)}")
    image_types = FEATURE_SETS[feature_set]
    if image_types is None:
        return list(columns)

    def image_type(column: str) -> str:
        region = max((r for r in regions if column.startswith(f"{r}_")), key=len, default="")
        return column[len(region) + 1:].split("_")[0] if region else ""

    return [c for c in columns if str(c).startswith(NOT_PYRADIOMICS) or image_type(str(c)).startswith(image_types)]


def make_classifier(name: str, random_state=0):
    """One of the study's classifiers: lr, rf, xgb (xgboost, hist, 1 thread), knn, nb.

    Parameters
    ----------
    name : {"lr", "rf", "xgb", "knn", "nb"}
        Logistic regression, random forest, XGBoost, 5-nearest neighbours or Gaussian naive Bayes.
    random_state : int, default 0
        Seed of the random forest and of XGBoost (the others are deterministic).

    Returns
    -------
    estimator
        An unfitted scikit-learn classifier with the study's settings. An unknown name raises ConfigError.
    """
    if name == "lr":
        return LogisticRegression(max_iter=1000)
    if name == "rf":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, random_state=random_state, n_jobs=1)
    if name == "xgb":
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, tree_method="hist", n_jobs=1,
                             random_state=random_state, eval_metric="logloss")
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=5)
    if name == "nb":
        return GaussianNB()
    raise ConfigError(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")


class _Pathway(ClassifierMixin, BaseEstimator):
    """Shared plumbing: label check, column pick, a fitted pipeline ``model_`` ending in a classifier."""

    def _fit_labels(self, y) -> np.ndarray:
        y = _binary_labels(y, type(self).__name__)
        self.classes_ = np.array([0, 1])
        return y

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of the rows of ``X``.

        Parameters
        ----------
        X : DataFrame of shape (n_cases, n_columns)
            A feature table holding the columns the pathway was fit on (missing values are imputed).

        Returns
        -------
        ndarray of shape (n_cases, 2)
            P(no pCR), P(pCR) per case.
        """
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(_columns(_table(X, type(self).__name__), self._input_columns(),
                                                  type(self).__name__))

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def explanation_inputs(self, X) -> pd.DataFrame:
        """The inputs of the final classifier (after imputation/encoding/scaling/selection), named."""
        check_is_fitted(self, "model_")
        Z = self.model_[:-1].transform(_columns(_table(X, type(self).__name__), self._input_columns(),
                                                type(self).__name__))
        return pd.DataFrame(np.asarray(Z, dtype=float), index=X.index,
                            columns=self.model_[:-1].get_feature_names_out())

    @property
    def explained_estimator_(self):
        check_is_fitted(self, "model_")
        return self.model_[-1]

    def _input_columns(self) -> list[str]:
        """The table columns the fitted pipeline reads: the features (``columns_``), and the site where it
        harmonises."""
        return list(self.columns_)

    @property
    def used_columns_(self) -> list[str]:
        """The table columns whose values reach the classifier (a missing one is imputed): a selecting pathway's
        selected features (the other columns never reach it), else every input column."""
        check_is_fitted(self, "model_")
        return list(getattr(self, "selected_features_", self.columns_))


class ClinicalEncoder(TransformerMixin, BaseEstimator):
    """The clinical columns as model inputs: numeric ones median-imputed and standardised, categorical ones (text,
    bool, or numbers stored as text) one-hot encoded, categories unseen in training ignored. Shared by the
    clinical pathway and the feature-level fusion.

    Parameters
    ----------
    columns : sequence of str, default ()
        The table columns to encode (the others are ignored).

    Attributes
    ----------
    categorical_ : list of str
        The columns encoded as categories.
    encoder_ : ColumnTransformer
        The fitted imputation, scaling and one-hot encoding.
    """

    def __init__(self, columns=()):
        self.columns = columns

    def fit(self, X, y=None):
        """Learn the medians, scales and categories.

        Parameters
        ----------
        X : DataFrame of shape (n_cases, n_columns)
            The feature table; it must hold ``columns`` (missing values allowed, infinite ones not).
        y : ignored
            Unused; present for the Pipeline API.

        Returns
        -------
        self : ClinicalEncoder
            The fitted encoder.
        """
        data = _columns(_table(X, "ClinicalEncoder"), list(self.columns), "ClinicalEncoder")
        self.categorical_ = [c for c in data.columns if not pd.api.types.is_numeric_dtype(data[c]) or
                             pd.api.types.is_bool_dtype(data[c])]
        numeric = [c for c in data.columns if c not in self.categorical_]
        self.encoder_ = ColumnTransformer([
            ("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler()),
             numeric),
            ("cat", make_pipeline(SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                                  OneHotEncoder(handle_unknown="ignore", sparse_output=False)), self.categorical_),
        ], verbose_feature_names_out=False).fit(self._as_text(data))
        return self

    def _as_text(self, data: pd.DataFrame) -> pd.DataFrame:
        """Categorical values as text (mixed types such as 1, "1", True never reach the encoder), NaN kept."""
        data = data.copy()
        for c in self.categorical_:
            data[c] = data[c].map(lambda v: str(v) if pd.notna(v) else np.nan).astype(object)
        return data

    def transform(self, X) -> np.ndarray:
        """Encode the rows of ``X``.

        Parameters
        ----------
        X : DataFrame of shape (n_cases, n_columns)
            A feature table holding ``columns``.

        Returns
        -------
        ndarray of shape (n_cases, n_outputs)
            Scaled numeric columns, then one indicator per training category (named by
            ``get_feature_names_out``).
        """
        check_is_fitted(self, "encoder_")
        data = _columns(_table(X, "ClinicalEncoder"), list(self.columns), "ClinicalEncoder")
        return self.encoder_.transform(self._as_text(data))

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "encoder_")
        return self.encoder_.get_feature_names_out()


class ClinicalPathway(_Pathway):
    """Clinical baseline: one-hot categorical + median-imputed, scaled numeric columns (+ SUVmax) -> logistic
    regression.

    Parameters
    ----------
    clinical_columns : sequence of str or None, default None
        The clinical columns; None: every column that is neither a feature (``FEATURE_PREFIXES``) nor manifest
        bookkeeping.
    include_suvmax : bool, default True
        Add ``pet_SUVmax`` to the inputs.

    Attributes
    ----------
    columns_ : list of str
        The table columns used.
    categorical_ : list of str
        Those encoded as categories.
    model_ : Pipeline
        ClinicalEncoder -> LogisticRegression.
    """

    def __init__(self, clinical_columns=None, include_suvmax: bool = True):
        self.clinical_columns = clinical_columns
        self.include_suvmax = include_suvmax

    def input_columns(self, X: pd.DataFrame) -> list[str]:
        """The table columns this pathway uses: the clinical ones, and SUVmax unless left out."""
        columns = list(clinical_columns(X) if self.clinical_columns is None else self.clinical_columns)
        if self.include_suvmax and "pet_SUVmax" not in columns:
            columns.append("pet_SUVmax")
        if not columns:
            raise InputError("ClinicalPathway: no clinical column in the feature table and SUVmax left out")
        return columns

    def fit(self, X, y):
        X = _table(X, "ClinicalPathway")
        y = self._fit_labels(y)
        self.columns_ = self.input_columns(X)
        self.model_ = Pipeline([("encode", ClinicalEncoder(self.columns_)), ("lr", LogisticRegression(max_iter=1000))])
        self.model_.fit(_columns(X, self.columns_, "ClinicalPathway"), y)
        self.categorical_ = self.model_["encode"].categorical_
        return self


class BaselinePathway(_Pathway):
    """The simple, transparent comparator every run reports first: the whole tumour's PET metrics (``pet_``) and
    Original-image first-order and shape features, plus the clinical columns, encoded (median-imputed and scaled,
    categories one-hot) -> an L2 logistic regression whose penalty is chosen by inner stratified CV (AUC).
    No feature selection, no filtered images, no subregions: what a study model has to beat.

    Parameters
    ----------
    clinical_columns : sequence of str or None, default None
        The clinical columns; None: every column that is neither a feature nor manifest bookkeeping.
    inner_cv : int, default 5
        Folds of the choice of the penalty (fewer when the minority class is smaller).
    random_state : int, default 0
        Seed of the inner folds.

    Attributes
    ----------
    columns_ : list of str
        The table columns used.
    model_ : Pipeline
        ClinicalEncoder -> LogisticRegressionCV.
    """

    IMAGE_PREFIXES = ("pet_", "whole_original_firstorder_", "whole_original_shape_")

    def __init__(self, clinical_columns=None, inner_cv: int = 5, random_state=0):
        self.clinical_columns = clinical_columns
        self.inner_cv = inner_cv
        self.random_state = random_state

    def input_columns(self, X: pd.DataFrame) -> list[str]:
        """The image columns (`IMAGE_PREFIXES`) and the clinical columns of ``X``."""
        image = [c for c in X.columns if str(c).startswith(self.IMAGE_PREFIXES)]
        clinical = list(clinical_columns(X) if self.clinical_columns is None else self.clinical_columns)
        if not image:
            raise InputError("BaselinePathway: no PET metric or whole-tumour first-order/shape column in the table")
        return image + [c for c in clinical if c not in image]

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegressionCV

        X = _table(X, "BaselinePathway")
        y = self._fit_labels(y)
        self.columns_ = self.input_columns(X)
        n_splits = max(2, min(self.inner_cv, int(np.bincount(y).min())))
        classifier = LogisticRegressionCV(Cs=np.logspace(-3, 1, 9), l1_ratios=(0.0,), use_legacy_attributes=False,
                                          scoring="roc_auc", max_iter=2000,
                                          cv=StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state))
        self.model_ = Pipeline([("encode", ClinicalEncoder(self.columns_)), ("lr", classifier)])
        self.model_.fit(_columns(X, self.columns_, "BaselinePathway"), y)
        return self


class ITHPathway(_Pathway):
    """Logistic regression on the intratumoural heterogeneity score(s), median-imputed and scaled.

    Parameters
    ----------
    columns : sequence of str, default ("ith_score2d",)
        The ITH score columns of the table.

    Attributes
    ----------
    columns_ : list of str
        The table columns used.
    model_ : Pipeline
        SimpleImputer -> StandardScaler -> LogisticRegression.
    """

    def __init__(self, columns=("ith_score2d",)):
        self.columns = columns

    def fit(self, X, y):
        X = _table(X, "ITHPathway")
        y = self._fit_labels(y)
        if not self.columns:
            raise InputError("ITHPathway: no ITH column given (expected e.g. ith_score2d)")
        self.columns_ = list(self.columns)
        self.model_ = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                                    LogisticRegression(max_iter=1000))
        self.model_.fit(_columns(X, self.columns_, "ITHPathway"), y)
        return self


class RadiomicsPathway(_Pathway):
    """The study's radiomics chain on the given regions' columns: median imputation -> variance/correlation
    filter -> scaling -> Mann-Whitney U -> mRMR (``n_mrmr``) -> LASSO (``max_features``) -> a classifier; the
    feature set (image types, ``feature_sets``) and the classifier (``classifiers``) are the pair with the best
    inner stratified-CV AUC.

    The inner CV fits the whole selection chain on each inner training fold (no leakage into the comparison), so a
    cross-validated pathway's estimate is nested: the configuration is chosen inside each outer training fold.

    Parameters
    ----------
    regions : sequence of str, default ("whole", "high", "low")
        The regions whose pyradiomics columns (``<region>_...``) are the inputs.
    n_mrmr : int, default 20
        Features kept by mRMR (and the fewest kept by Mann-Whitney U).
    max_features : int, default 5
        The most features LASSO keeps.
    classifiers : sequence of str, default ("lr", "rf", "xgb", "knn", "nb")
        The candidate classifiers (``make_classifier`` names).
    feature_sets : sequence of str, default ("all",)
        The candidate feature sets (`FEATURE_SETS` names: "original", "original+log", "all"); with one feature set
        and one classifier, no inner CV is run.
    inner_cv : int, default 5
        Folds of the inner CV and of LASSO's choice of C (fewer when the minority class is smaller).
    max_correlation : float, default 0.9
        The variance/correlation filter's threshold.
    random_state : int, default 0
        Seed of the folds, LASSO and the classifiers.
    available_only : bool, default False
        For a modality some cases lack: fit on the cases with any of its columns present, and give no probability
        (NaN) for a case with none of them, rather than a prediction from imputed values alone.
    site_column : str or None, default None
        The table's site column: the features are harmonised across sites by ComBat (`learn.harmonise`), fit with
        the rest of the chain on the training cases only. None: no harmonisation.

    Attributes
    ----------
    columns_ : list of str
        The radiomics columns of the table that enter the chain.
    selected_features_ : list of str
        The features reaching the classifier.
    inner_cv_auc_ : dict of str to float
        Mean inner-fold AUC per candidate, keyed ``"<feature set>/<classifier>"`` (empty with one candidate).
    feature_set_ : str
        The chosen feature set.
    classifier_name_ : str
        The chosen classifier (the first candidate on ties, feature sets in the order given).
    model_ : Pipeline
        The selection chain and the chosen classifier, fit on every training case.
    """

    def __init__(self, regions=("whole", "high", "low"), n_mrmr: int = 20, max_features: int = 5,
                 classifiers=CLASSIFIERS, feature_sets=("all",), inner_cv: int = 5, max_correlation: float = 0.9,
                 random_state=0, available_only: bool = False, site_column: str | None = None):
        self.available_only = available_only
        self.site_column = site_column
        self.regions = regions
        self.n_mrmr = n_mrmr
        self.max_features = max_features
        self.classifiers = classifiers
        self.feature_sets = feature_sets
        self.inner_cv = inner_cv
        self.max_correlation = max_correlation
        self.random_state = random_state

    def make_selection(self) -> Pipeline:
        """The unfitted preprocessing + selection chain (also used by feature-level fusion); with ``site_column``
        it starts with ComBat, so its input is the features and the site (`with_site`)."""
        from .harmonise import ComBat

        harmonise = [("harmonise", ComBat(site_column=self.site_column))] if self.site_column else []
        return Pipeline([
            *harmonise,
            ("impute", SimpleImputer(strategy="median")),
            ("filter", VarianceCorrelationFilter(max_correlation=self.max_correlation)),
            ("scale", StandardScaler()),
            ("mannwhitney", MannWhitneySelector(alpha=0.05, min_features=self.n_mrmr)),
            ("mrmr", MRMRSelector(n_features=self.n_mrmr)),
            ("lasso", LassoSelector(max_features=self.max_features, cv=self.inner_cv,
                                    random_state=self.random_state)),
        ])

    def fit(self, X, y):
        X = _table(X, "RadiomicsPathway")
        y = self._fit_labels(y)
        columns = radiomics_columns(X, self.regions)
        if not columns:
            raise InputError(f"RadiomicsPathway: no radiomics column for region(s) {', '.join(self.regions)} "
                             "in the feature table")
        if not self.classifiers or not self.feature_sets:
            raise ConfigError("RadiomicsPathway: no classifier or no feature set to choose from")
        for name in self.classifiers:
            make_classifier(name)  # unknown names fail before any work
        if self.available_only:
            present = rows_holding(X, columns)
            X, y = X[present], y[present]
            if len(set(y.tolist())) < 2:
                raise InputError(f"RadiomicsPathway: the {int(present.sum())} training case(s) with region(s) "
                                 f"{', '.join(self.regions)} hold one class only")
        sets = {}
        for feature_set in self.feature_sets:
            chosen = feature_set_columns(columns, feature_set, self.regions)
            if chosen:  # a feature set the radiomics parameters did not compute is no candidate
                sets[feature_set] = chosen
        if not sets:
            raise InputError(f"RadiomicsPathway: no column of the feature sets {', '.join(self.feature_sets)} in "
                             "the feature table (check the radiomics parameters' image types)")
        candidates = [(s, c) for s in sets for c in self.classifiers]
        self.inner_cv_auc_ = self._inner_cv_auc(X, sets, y) if len(candidates) > 1 else {}
        self.feature_set_, self.classifier_name_ = (
            max(candidates, key=lambda sc: self.inner_cv_auc_[f"{sc[0]}/{sc[1]}"])  # first on ties
            if self.inner_cv_auc_ else candidates[0])
        self.columns_ = sets[self.feature_set_]
        self.model_ = Pipeline([*self.make_selection().steps,
                                ("classifier", make_classifier(self.classifier_name_, self.random_state))])
        self.model_.fit(_columns(X, self._input_columns(), "RadiomicsPathway"), y)
        self.selected_features_ = list(self.model_[:-1].get_feature_names_out())
        return self

    def with_site(self, columns) -> list[str]:
        """The selection chain's input columns for the feature ``columns``: with the site where it harmonises."""
        return [*columns, self.site_column] if self.site_column else list(columns)

    def _input_columns(self) -> list[str]:
        return self.with_site(self.columns_)

    def predict_proba(self, X) -> np.ndarray:
        """As `_Pathway.predict_proba`; with ``available_only``, NaN rows for the cases without the regions."""
        if not self.available_only:
            return super().predict_proba(X)
        check_is_fitted(self, "model_")
        X = _table(X, "RadiomicsPathway")
        present = rows_holding(X, self.columns_)
        out = np.full((len(X), 2), np.nan)
        if present.any():
            out[present] = super().predict_proba(X[present])
        return out

    def _inner_cv_auc(self, X: pd.DataFrame, sets: dict[str, list[str]], y: np.ndarray) -> dict[str, float]:
        # Written as a loop rather than GridSearchCV over the classifier step: the selection chain is fit once
        # per inner fold and feature set and shared by all classifiers (GridSearchCV would refit it per classifier).
        n_splits = max(2, min(self.inner_cv, int(np.bincount(y).min())))
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state).split(X, y))
        scores: dict[str, list[float]] = {}
        for feature_set, columns in sets.items():
            data = _columns(X, self.with_site(columns), "RadiomicsPathway")
            for train, test in folds:
                selection = self.make_selection().fit(data.iloc[train], y[train])
                Z_train, Z_test = selection.transform(data.iloc[train]), selection.transform(data.iloc[test])
                for name in self.classifiers:
                    model = make_classifier(name, self.random_state)
                    if name == "knn":
                        model.set_params(n_neighbors=min(5, len(train)))
                    p = model.fit(Z_train, y[train]).predict_proba(Z_test)[:, 1]
                    scores.setdefault(f"{feature_set}/{name}", []).append(roc_auc_score(y[test], p))
        return {key: float(np.mean(s)) for key, s in scores.items()}


class DeepFeaturePathway(_Pathway):
    """The frozen-encoder deep features (``dlf_*``, `deep.frozen`; Jang et al., Cancers 2025): median imputation ->
    constant features dropped -> scaling -> mRMR (``n_mrmr``) -> RFE with an L2 logistic regression (``n_features``,
    one feature eliminated per step) -> XGBoost. Every step is fit in ``fit``, so cross-validation refits the
    selection inside each training fold.

    Parameters
    ----------
    prefix : str, default "dlf_"
        The columns of the encoder's features.
    n_mrmr : int, default 20
        Features kept by mRMR.
    n_features : int, default 5
        Features RFE keeps of those (all of them when fewer reach it).
    random_state : int, default 0
        Seed of XGBoost.

    Attributes
    ----------
    columns_ : list of str
        The table columns that enter the chain.
    selected_features_ : list of str
        The features reaching XGBoost.
    model_ : Pipeline
        The selection chain and the classifier.
    """

    def __init__(self, prefix: str = "dlf_", n_mrmr: int = 20, n_features: int = 5, random_state=0):
        self.prefix = prefix
        self.n_mrmr = n_mrmr
        self.n_features = n_features
        self.random_state = random_state

    def make_selection(self) -> Pipeline:
        """The unfitted preprocessing + selection chain (mRMR -> RFE)."""
        return Pipeline([
            ("impute", SimpleImputer(strategy="median")),
            ("constant", VarianceThreshold()),
            ("scale", StandardScaler()),
            ("mrmr", MRMRSelector(n_features=self.n_mrmr)),
            ("rfe", RFE(LogisticRegression(max_iter=1000), n_features_to_select=self.n_features, step=1)),
        ])

    def fit(self, X, y):
        X = _table(X, "DeepFeaturePathway")
        y = self._fit_labels(y)
        self.columns_ = [c for c in X.columns if str(c).startswith(self.prefix)]
        if not self.columns_:
            raise InputError(f"DeepFeaturePathway: no frozen-encoder feature ({self.prefix}*) in the feature table")
        self.model_ = Pipeline([*self.make_selection().steps,
                                ("classifier", make_classifier("xgb", self.random_state))])
        self.model_.fit(_columns(X, self.columns_, "DeepFeaturePathway"), y)
        self.selected_features_ = list(self.model_[:-1].get_feature_names_out())
        return self


class ColumnProbability(ClassifierMixin, BaseEstimator):
    """Passes a precomputed probability column (the deep pathway's out-of-fold ``dl_prob``) through as an
    estimator; a missing value is imputed with the training median.

    Parameters
    ----------
    column : str, default "dl_prob"
        The table column holding the pCR probability (values in [0, 1] or missing).

    Attributes
    ----------
    median_ : float
        The training median of ``column``, given to missing values.
    """

    def __init__(self, column: str = "dl_prob"):
        self.column = column

    def _values(self, X) -> np.ndarray:
        p = _columns(_table(X, "ColumnProbability"), [self.column], "ColumnProbability")[self.column]
        p = pd.to_numeric(p, errors="coerce").to_numpy(dtype=float)
        bad = ~np.isnan(p) & ((p < 0) | (p > 1))
        if bad.any():
            raise InputError(f"ColumnProbability: {self.column} must be a probability in [0, 1]; cases "
                             f"{', '.join(map(str, X.index[bad][:10]))} are not")
        return p

    def fit(self, X, y):
        _binary_labels(y, "ColumnProbability")
        self.classes_ = np.array([0, 1])
        p = self._values(X)
        if np.isnan(p).all():
            raise InputError(f"ColumnProbability: {self.column} is empty for every training case")
        self.median_ = float(np.nanmedian(p))
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "median_")
        p = self._values(X)
        p = np.where(np.isnan(p), self.median_, p)
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def explanation_inputs(self, X) -> pd.DataFrame:
        return _columns(_table(X, "ColumnProbability"), [self.column], "ColumnProbability").astype(float)

    @property
    def explained_estimator_(self):
        check_is_fitted(self, "median_")
        return self

    @property
    def used_columns_(self) -> list[str]:
        check_is_fitted(self, "median_")
        return [self.column]
