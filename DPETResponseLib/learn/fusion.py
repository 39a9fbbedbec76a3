"""Fusion of the pathways: decision-level stacking and feature-level concatenation (scikit-learn estimators).

Both take the full feature table like the pathways do and fit everything they learn inside ``fit``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, check_X_y

from ..core.errors import ConfigError, InputError
from .pathways import (
    ClinicalEncoder,
    ClinicalPathway,
    DeepFeaturePathway,
    RadiomicsPathway,
    radiomics_columns,
)
from .selection import LabelError, _binary_labels
from .tables import _columns, _table

META_WEIGHTS = ("auto", "equal", "learned")
#: The weightings `ScreenedStacker` compares: tied weights, free weights, the single best input.
STACKER_CANDIDATES = ("equal", "learned", "best")


class TiedLogisticRegression(LogisticRegression):
    """Logistic regression whose coefficients are all equal: a = intercept, b fit (unpenalised by default) on
    the mean of the inputs, stored as ``coef_ = b / K`` for each of the K inputs, so that it predicts, and is
    explained by SHAP, as an ordinary logistic regression over the K inputs. The slope is never negative: pathways
    whose probabilities rank the training cases the wrong way round are not turned round (that would be fitting
    noise, e.g. cross-validation's bias under the null); the model then predicts the base rate.

    Parameters
    ----------
    C : float, default inf
        Inverse L2 penalty of the slope (inf: unpenalised).
    max_iter : int, default 1000
        lbfgs iterations.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features_in_)
        The shared slope divided by K, once per input.
    intercept_ : ndarray of shape (1,)
        The intercept.
    """

    def __init__(self, C: float = np.inf, max_iter: int = 1000):
        super().__init__(C=C, max_iter=max_iter)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False  # unlike LogisticRegression: the row mean is taken on a dense array
        tags.array_api_support = False
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.poor_score = True  # one shared weight cannot fit every data set
        return tags

    def fit(self, X, y, sample_weight=None):
        """Fit the intercept and the shared slope.

        Parameters
        ----------
        X : array-like of shape (n_samples, K)
            The inputs (for the decision fusion: each pathway's out-of-fold probability).
        y : array-like of shape (n_samples,)
            Two classes (a multiclass target raises LabelError).
        sample_weight : array-like of shape (n_samples,) or None
            Case weights.

        Returns
        -------
        self : TiedLogisticRegression
            The fitted model.
        """
        X, y = check_X_y(X, y, dtype=float)
        if type_of_target(y, input_name="y") == "multiclass":
            raise LabelError("TiedLogisticRegression: Only binary classification is supported. The type of the "
                             "target is multiclass.", case="label")
        super().fit(X.mean(axis=1, keepdims=True), y, sample_weight)
        if self.coef_[0, 0] < 0:
            rate = np.average(np.asarray(y) == self.classes_[1], weights=sample_weight)
            self.coef_[:] = 0.0
            self.intercept_ = np.array([np.log(rate / (1 - rate))])
        self.coef_ = np.repeat(self.coef_ / X.shape[1], X.shape[1], axis=1)
        self.n_features_in_ = X.shape[1]
        return self


def auc_standard_error(auc: float, n_positive: int, n_negative: int) -> float:
    """Hanley & McNeil's (1982) standard error of an AUC from ``n_positive`` and ``n_negative`` cases."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc ** 2) + (n_negative - 1) * (q2 - auc ** 2))
    return float(np.sqrt(max(variance, 0.0) / (n_positive * n_negative)))


class ScreenedStacker(LogisticRegression):
    """The meta-learner of ``weights="auto"``: its inputs and weights chosen from the training data, so that
    pathways at chance cannot drag the fusion down.

    1. Screening: an input (a pathway's out-of-fold probability) whose AUC on the training cases does not exceed
       0.5 by ``min_se`` standard errors (Hanley-McNeil) gets weight 0; when none passes, the best one is kept.
    2. Weights on the kept inputs: each of ``candidates`` ("equal": TiedLogisticRegression, "learned": one free
       weight each, "best": the kept input with the best AUC alone) is scored by stratified ``cv``-fold CV (mean
       AUC, screening redone inside each fold); the best is refit on every case, the first listed on ties.

    The result is a logistic regression over every input (zero coefficients for the screened-out ones): it predicts,
    and SHAP explains it, as one. Cross-validating it (as `StudyModel` does for the fusion's out-of-fold estimate)
    nests the whole choice inside the outer folds.

    Parameters
    ----------
    candidates : sequence of {"equal", "learned", "best"}, default ("equal", "learned", "best")
        The weightings compared.
    min_se : float, default 1.0
        How many standard errors above 0.5 an input's AUC must be to keep it.
    cv : int, default 5
        Folds of the comparison (fewer when the minority class is smaller).
    random_state : int, default 0
        Seed of the folds.

    Attributes
    ----------
    screened_ : ndarray of bool, shape (n_features_in_,)
        The inputs that passed the screening.
    kept_ : ndarray of bool, shape (n_features_in_,)
        The inputs the chosen weighting gives a weight (all screened ones, or the best alone).
    input_auc_ : ndarray of shape (n_features_in_,)
        Each input's AUC on the training cases.
    weights_ : str
        The chosen weighting.
    inner_cv_auc_ : dict of str to float
        Mean inner-CV AUC of each candidate.
    coef_, intercept_ : ndarray
        As LogisticRegression's (0 for screened-out inputs).
    """

    def __init__(self, candidates=STACKER_CANDIDATES, min_se: float = 1.0, cv: int = 5, random_state=0):
        super().__init__(max_iter=1000)
        self.candidates = candidates
        self.min_se = min_se
        self.cv = cv
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.array_api_support = False
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.poor_score = True  # chance-level inputs are dropped, not fit
        return tags

    def _screen(self, P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.metrics import roc_auc_score

        n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
        auc = np.array([roc_auc_score(y, P[:, j]) for j in range(P.shape[1])])
        se = np.array([auc_standard_error(a, n_pos, n_neg) for a in auc])
        kept = auc - 0.5 > self.min_se * se
        if not kept.any():
            kept[np.argmax(auc)] = True
        return kept, auc

    @staticmethod
    def _fit_weights(weights: str, P: np.ndarray, y: np.ndarray, screening) -> tuple[np.ndarray, LogisticRegression]:
        """The inputs ``weights`` gives a weight to, of those ``screening`` (`_screen` on P, y) kept, and its fit."""
        kept, auc = screening
        if weights == "best":  # the single input with the best training AUC
            kept = np.arange(P.shape[1]) == np.argmax(np.where(kept, auc, -np.inf))
        return kept, make_meta_learner("equal" if weights == "best" else weights).fit(P[:, kept], y)

    def fit(self, X, y, sample_weight=None):
        from sklearn.metrics import roc_auc_score
        from sklearn.utils.validation import check_X_y

        if sample_weight is not None:
            raise InputError("ScreenedStacker: sample weights are not supported")
        P, y = check_X_y(X, y, dtype=float)
        y = _binary_labels(y, "ScreenedStacker")
        unknown = set(self.candidates) - set(STACKER_CANDIDATES)
        if not self.candidates or unknown:
            raise ConfigError(f"ScreenedStacker: candidates must be among {', '.join(STACKER_CANDIDATES)}, got "
                              f"{self.candidates}")
        self.classes_ = np.array([0, 1])
        self.screened_, self.input_auc_ = self._screen(P, y)
        n_splits = max(2, min(self.cv, int(np.bincount(y).min())))
        folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state).split(P, y))
        fold_screening = [self._screen(P[train], y[train]) for train, _ in folds]  # one per fold, every candidate
        self.inner_cv_auc_ = {}
        for weights in self.candidates:
            scores = []
            for (train, test), screening in zip(folds, fold_screening):
                kept, model = self._fit_weights(weights, P[train], y[train], screening)
                scores.append(roc_auc_score(y[test], model.predict_proba(P[test][:, kept])[:, 1]))
            self.inner_cv_auc_[weights] = float(np.mean(scores))
        self.weights_ = max(self.candidates, key=lambda w: self.inner_cv_auc_[w])  # first on ties
        self.kept_, final = self._fit_weights(self.weights_, P, y, (self.screened_, self.input_auc_))
        self.coef_ = np.zeros((1, P.shape[1]))
        self.coef_[0, self.kept_] = final.coef_.ravel()
        self.intercept_ = np.asarray(final.intercept_, dtype=float)
        self.n_features_in_ = P.shape[1]
        return self


def make_meta_learner(weights: str, cv: int = 5, random_state=0) -> LogisticRegression:
    """The stacking meta-learner: ``"auto"`` (ScreenedStacker: pathways at chance dropped, equal or learned weights
    chosen by inner CV), ``"equal"`` weights (TiedLogisticRegression) or ``"learned"`` ones (the study's logistic
    regression, one free weight per pathway).

    Parameters
    ----------
    weights : {"auto", "equal", "learned"}
        The weighting; anything else raises ConfigError.
    cv, random_state : int
        Folds and seed of ``"auto"``'s inner comparison.

    Returns
    -------
    LogisticRegression
        The unfitted meta-learner.
    """
    if weights == "auto":
        return ScreenedStacker(cv=cv, random_state=random_state)
    if weights == "equal":
        return TiedLogisticRegression()
    if weights == "learned":
        return LogisticRegression()
    raise ConfigError(f"unknown decision-fusion weights {weights!r}; choose one of {', '.join(META_WEIGHTS)}")


class DecisionFusion(ClassifierMixin, BaseEstimator):
    """Stacking: each pathway's out-of-fold probability on the training data (stratified ``cv`` folds) ->
    logistic-regression meta-learner on those probabilities (the study's design); then every pathway is refit on
    all training data. Probabilities rather than logits: a naive-Bayes or random-forest pathway gives
    probabilities of 0 or 1 whose logits are huge, and a meta-learner on logits then follows those few cases.

    Parameters
    ----------
    pathways : dict of str to estimator
        The unfitted pathways by name (each takes the full feature table and has ``predict_proba``).
    cv : int, default 5
        Stratified folds of the out-of-fold probabilities (fewer when the minority class is smaller, at least 2).
    weights : {"auto", "equal", "learned"}, default "auto"
        ``"equal"`` ties the meta-learner's weights, so it only calibrates the mean of the pathways'
        probabilities; ``"learned"`` gives each pathway its own weight, as the study did. Tied weights suit
        cohorts of about 100 cases, where free weights fit noise (the forecast-combination puzzle), but a pathway
        at chance drags a tied mean down: ``"auto"`` (`ScreenedStacker`) drops pathways at chance and chooses
        equal or learned weights by inner CV.
    random_state : int, default 0
        Seed of the fold split.

    Attributes
    ----------
    pathways_ : dict of str to estimator
        The pathways fit on every training case.
    oof_probabilities_ : dict of str to ndarray of shape (n_cases,)
        Each pathway's out-of-fold probability of the training cases.
    meta_ : LogisticRegression
        The fitted meta-learner (``make_meta_learner``).
    coef_ : Series
        One meta-learner weight per pathway.
    intercept_ : float
        The meta-learner's intercept.
    """

    def __init__(self, pathways: dict, cv: int = 5, weights: str = "auto", random_state=0):
        self.pathways = pathways
        self.cv = cv
        self.weights = weights
        self.random_state = random_state

    def fit(self, X, y):
        """Cross-validate every pathway, fit the meta-learner on their out-of-fold probabilities, refit them all.

        Parameters
        ----------
        X : DataFrame of shape (n_cases, n_columns)
            The feature table (every pathway picks its own columns).
        y : array-like of shape (n_cases,)
            Binary 0/1 labels with both classes present.

        Returns
        -------
        self : DecisionFusion
            The fitted fusion.
        """
        X = _table(X, "DecisionFusion")
        y = _binary_labels(y, "DecisionFusion")
        if not self.pathways:
            raise InputError("DecisionFusion: no pathway to fuse")
        make_meta_learner(self.weights)  # an unknown setting fails before the cross-validation
        n_splits = max(2, min(self.cv, int(np.bincount(y).min())))
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        oof = {name: cross_val_predict(clone(p), X, y, cv=folds, method="predict_proba")[:, 1]
               for name, p in self.pathways.items()}
        return self._fit_meta({name: clone(p).fit(X, y) for name, p in self.pathways.items()}, oof, y)

    @classmethod
    def from_fitted(cls, pathways: dict, oof_probabilities: dict, y, weights: str = "auto", cv: int = 5,
                    random_state=0) -> "DecisionFusion":
        """The stacking of pathways already fit on every training case, given their out-of-fold probabilities
        (from the folds the caller chose): only the meta-learner is fit (scikit-learn's StackingClassifier
        design). `StudyModel.fit` uses it, so no pathway is cross-validated or refit a second time.

        Parameters
        ----------
        pathways : dict of str to estimator
            The pathways, fitted on every training case.
        oof_probabilities : dict of str to array-like of shape (n_cases,)
            Each pathway's out-of-fold probability of the training cases (a key per pathway).
        y : array-like of shape (n_cases,)
            The training cases' binary labels, in the same order.
        weights, cv, random_state
            As for the constructor (``cv`` and ``random_state`` are recorded, not used).

        Returns
        -------
        DecisionFusion
            The fitted fusion.
        """
        fusion = cls(pathways=dict(pathways), cv=cv, weights=weights, random_state=random_state)
        return fusion._fit_meta(dict(pathways), oof_probabilities, _binary_labels(y, "DecisionFusion"))

    @classmethod
    def from_parts(cls, pathways: dict, meta, oof_probabilities: dict | None = None, weights: str = "auto",
                   cv: int = 5, random_state=0):
        """A fitted fusion from its fitted pathways and meta-learner (how a bundle, which stores each pathway
        once, rebuilds it).

        Parameters
        ----------
        pathways : dict of str to estimator
            The fitted pathways, in the order of the meta-learner's inputs.
        meta : LogisticRegression
            The fitted meta-learner.
        oof_probabilities : dict of str to array-like, optional
            The pathways' out-of-fold probabilities the meta-learner was fit on (a study bundle keeps them).
        weights, cv, random_state
            As for the constructor (recorded only).

        Returns
        -------
        DecisionFusion
            A fusion that predicts (with ``oof_probabilities_`` when they were given).
        """
        fusion = cls(pathways=dict(pathways), cv=cv, weights=weights, random_state=random_state)
        fusion.classes_, fusion.pathways_, fusion.meta_ = np.array([0, 1]), dict(pathways), meta
        if oof_probabilities is not None:
            fusion.oof_probabilities_ = {name: np.asarray(oof_probabilities[name], dtype=float) for name in pathways}
            fusion.missing_fill_ = _missing_fill(fusion.oof_probabilities_)
        return fusion

    def _fit_meta(self, fitted: dict, oof_probabilities: dict, y: np.ndarray) -> "DecisionFusion":
        self.classes_ = np.array([0, 1])
        self.pathways_ = fitted
        self.oof_probabilities_ = {name: np.asarray(oof_probabilities[name], dtype=float) for name in fitted}
        self.missing_fill_ = _missing_fill(self.oof_probabilities_)
        meta = make_meta_learner(self.weights, self.cv, self.random_state)
        inputs = pd.DataFrame(self.oof_probabilities_).fillna(self.missing_fill_)
        self.meta_ = meta.fit(inputs.to_numpy(), y)
        return self

    @property
    def coef_(self) -> pd.Series:
        check_is_fitted(self, "meta_")
        return pd.Series(self.meta_.coef_.ravel(), index=list(self.pathways_), name="meta_coefficient")

    @property
    def intercept_(self) -> float:
        check_is_fitted(self, "meta_")
        return float(self.meta_.intercept_[0])

    def pathway_probabilities(self, X) -> pd.DataFrame:
        """Each fitted pathway's pCR probability, one column per pathway; a pathway that gives none for a case (a
        modality the case lacks) is given the median of its out-of-fold training probabilities."""
        check_is_fitted(self, "pathways_")
        X = _table(X, "DecisionFusion")
        probabilities = pd.DataFrame({name: p.predict_proba(X)[:, 1] for name, p in self.pathways_.items()},
                                     index=X.index)
        return probabilities.fillna(getattr(self, "missing_fill_", {}))

    def predict_proba(self, X) -> np.ndarray:
        """The meta-learner's class probabilities, shape (n_cases, 2), on the pathways' probabilities of ``X``."""
        check_is_fitted(self, "meta_")
        return self.meta_.predict_proba(self.pathway_probabilities(X).to_numpy())

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def explanation_inputs(self, X) -> pd.DataFrame:
        """The meta-learner's inputs: each pathway's probability."""
        return self.pathway_probabilities(X)

    @property
    def explained_estimator_(self):
        check_is_fitted(self, "meta_")
        return self.meta_

    @property
    def used_columns_(self) -> list[str]:
        """Every column a fused pathway of non-zero weight uses (one at weight 0 does not reach the output)."""
        check_is_fitted(self, "pathways_")
        weighted = [p for p, w in zip(self.pathways_.values(), self.meta_.coef_.ravel()) if w != 0]
        return list(dict.fromkeys(c for p in weighted for c in p.used_columns_))


def _missing_fill(oof_probabilities: dict) -> dict[str, float]:
    """The meta-learner's input for a pathway that gives no probability for a case: the median of its out-of-fold
    training probabilities (a pathway without a missing value gets one too, never used)."""
    return {name: float(np.nanmedian(p)) if np.isfinite(p).any() else 0.5 for name, p in oof_probabilities.items()}


class FeatureFusion(ClassifierMixin, BaseEstimator):
    """Feature-level fusion: one logistic regression on every pathway's inputs side by side, scaled: the
    clinical columns (``clinical``: a ClinicalPathway giving the columns and their encoding; None leaves them
    out), the ITH score(s) (``ith_columns``), the radiomics pathway's selected features (its selection chain fit
    inside), the peritumoural pathway's selected features (``peritumoural``, its own selection chain; None leaves
    them out) and the PCA-reduced deep embeddings (``embedding_prefix`` columns, ``n_components``; None leaves
    them out, for a study without the CNN). The study fused radiomics and DL alone; the clinical and ITH inputs
    are here so that this fusion sees what the decision-level one sees.

    Parameters
    ----------
    radiomics : RadiomicsPathway or None, default None
        Gives the regions and the selection chain; None: ``RadiomicsPathway()``.
    clinical : ClinicalPathway or None, default None
        Gives the clinical columns (its ``input_columns``); None leaves them out.
    ith_columns : sequence of str, default ()
        ITH score columns, median-imputed and scaled; empty leaves them out.
    peritumoural : RadiomicsPathway or None, default None
        The peritumoural shell's pathway (its regions and selection chain); None leaves the shell out.
    deep_features : DeepFeaturePathway or None, default None
        The frozen encoder's features (``dlf_*``) through that pathway's selection chain (mRMR -> RFE, fit inside);
        None leaves them out.
    modalities : dict of str to RadiomicsPathway, or None, default None
        Other modalities' pathways by name (e.g. ``radiomics_ct``), each through its own selection chain; a case
        without the modality has its columns median-imputed. None leaves them out.
    embedding_prefix : str or None, default "dl_emb_"
        Prefix of the deep-embedding columns; None leaves them out.
    n_components : int, default 8
        Principal components of the embeddings (at most the number of columns and of training cases - 1).
    random_state : int, default 0
        Seed of the PCA.

    Attributes
    ----------
    model_ : Pipeline
        ColumnTransformer of the groups -> StandardScaler -> LogisticRegression.
    columns_ : list of str
        The table columns that enter the pipeline.
    feature_names_ : list of str
        The names of the classifier's inputs (embedding PCs as ``<prefix>pc<k>``).
    feature_groups_ : dict of str to list of str
        Those names per group (``"clinical"``, ``"ith"``, ``"radiomics"``, ``"peritumoural"``, ``"deep_features"``,
        each modality's pathway name, ``"deep"``; groups left out absent).
    """

    def __init__(self, radiomics: RadiomicsPathway | None = None, clinical: ClinicalPathway | None = None,
                 ith_columns=(), embedding_prefix: str | None = "dl_emb_", n_components: int = 8, random_state=0,
                 peritumoural: RadiomicsPathway | None = None, deep_features: DeepFeaturePathway | None = None,
                 modalities: dict | None = None):
        self.modalities = modalities
        self.radiomics = radiomics
        self.clinical = clinical
        self.peritumoural = peritumoural
        self.deep_features = deep_features
        self.ith_columns = ith_columns
        self.embedding_prefix = embedding_prefix
        self.n_components = n_components
        self.random_state = random_state

    def _groups(self, X: pd.DataFrame) -> list[tuple[str, object, list[str]]]:
        """(group, unfitted transformer, table columns) for every fused group."""
        radiomics = RadiomicsPathway() if self.radiomics is None else self.radiomics
        rad_columns = radiomics_columns(X, radiomics.regions)
        if not rad_columns:
            raise InputError(f"FeatureFusion: no radiomics column for region(s) {', '.join(radiomics.regions)}")
        groups = []
        if self.clinical is not None:
            columns = self.clinical.input_columns(X)
            groups.append(("clinical", ClinicalEncoder(columns), columns))
        if self.ith_columns:
            groups.append(("ith", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                StandardScaler()), list(self.ith_columns)))
        groups.append(("radiomics", radiomics.make_selection(), radiomics.with_site(rad_columns)))
        if self.peritumoural is not None:
            peri_columns = radiomics_columns(X, self.peritumoural.regions)
            if not peri_columns:
                raise InputError(f"FeatureFusion: no column for region(s) {', '.join(self.peritumoural.regions)}")
            groups.append(("peritumoural", self.peritumoural.make_selection(),
                           self.peritumoural.with_site(peri_columns)))
        for name, pathway in (self.modalities or {}).items():
            columns = radiomics_columns(X, pathway.regions)
            if not columns:
                raise InputError(f"FeatureFusion: no column of {name} (region(s) {', '.join(pathway.regions)})")
            groups.append((name, pathway.make_selection(), pathway.with_site(columns)))
        if self.deep_features is not None:
            dlf_columns = [c for c in X.columns if str(c).startswith(self.deep_features.prefix)]
            if not dlf_columns:
                raise InputError(f"FeatureFusion: no frozen-encoder feature ({self.deep_features.prefix}*) in the "
                                 "table")
            groups.append(("deep_features", self.deep_features.make_selection(), dlf_columns))
        if self.embedding_prefix is not None:
            emb_columns = [c for c in X.columns if str(c).startswith(self.embedding_prefix)]
            if not emb_columns:
                raise InputError(f"FeatureFusion: no deep-embedding column ({self.embedding_prefix}*) in the table")
            n_components = min(self.n_components, len(emb_columns), len(X) - 1)
            groups.append(("deep", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                                 StandardScaler(),
                                                 PCA(n_components=n_components, random_state=self.random_state)),
                           emb_columns))
        return groups

    def fit(self, X, y):
        """Fit every group's transformer and the logistic regression.

        Parameters
        ----------
        X : DataFrame of shape (n_cases, n_columns)
            The feature table.
        y : array-like of shape (n_cases,)
            Binary 0/1 labels with both classes present.

        Returns
        -------
        self : FeatureFusion
            The fitted fusion.
        """
        X = _table(X, "FeatureFusion")
        y = _binary_labels(y, "FeatureFusion")
        self.classes_ = np.array([0, 1])
        groups = self._groups(X)
        self.columns_ = list(dict.fromkeys(c for _, _, columns in groups for c in columns))
        self.model_ = Pipeline([("features", ColumnTransformer(groups)), ("scale", StandardScaler()),
                                ("lr", LogisticRegression(max_iter=1000))])
        self.model_.fit(_columns(X, self.columns_, "FeatureFusion"), y)
        names = list(self.model_[:-1].get_feature_names_out())
        group_of = [n.split("__", 1)[0] for n in names]
        self.feature_names_ = [n.split("__", 1)[1] for n in names]
        if self.embedding_prefix is not None:
            self.feature_names_ = [f"{self.embedding_prefix}pc{n.removeprefix('pca')}" if g == "deep" else n
                                   for n, g in zip(self.feature_names_, group_of)]
        self.feature_groups_ = {g: [n for n, o in zip(self.feature_names_, group_of) if o == g]
                                for g, _, _ in groups}
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_cases, 2), of the rows of the feature table ``X``."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(_columns(_table(X, "FeatureFusion"), self.columns_, "FeatureFusion"))

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def explanation_inputs(self, X) -> pd.DataFrame:
        """The logistic regression's inputs (every group's encoded, selected or reduced features, scaled), named."""
        check_is_fitted(self, "model_")
        Z = self.model_[:-1].transform(_columns(_table(X, "FeatureFusion"), self.columns_, "FeatureFusion"))
        return pd.DataFrame(np.asarray(Z, dtype=float), index=X.index, columns=self.feature_names_)

    @property
    def explained_estimator_(self):
        check_is_fitted(self, "model_")
        return self.model_[-1]

    @property
    def used_columns_(self) -> list[str]:
        """The table columns whose values reach the classifier: every fused group's columns, of the groups that
        select features (radiomics, peritumoural, deep features, other modalities) only the selected ones."""
        check_is_fitted(self, "model_")
        transformers = self.model_.named_steps["features"]
        return [c for name, transformer, columns in transformers.transformers_ if name != "remainder"
                for c in (columns if name in ("clinical", "ith", "deep") else transformer.get_feature_names_out())]
