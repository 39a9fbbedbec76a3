"""Feature selection for the radiomics pathway: scikit-learn selectors (work on DataFrames and arrays).

The study's chain: drop constant / highly correlated features, then Mann-Whitney U -> mRMR -> LASSO.
Every selector is a ``SelectorMixin`` transformer, so ``transform`` and ``get_feature_names_out`` come from
scikit-learn and a ``Pipeline`` refits the whole chain inside each cross-validation fold.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, rankdata
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import SelectorMixin, f_classif, mutual_info_classif
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import ClassifierTags
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.errors import ConfigError, InputError


class LabelError(InputError, ValueError):
    """Unusable labels: an InputError that is also the ValueError scikit-learn expects of an estimator given a bad
    target (its estimator checks, and code that catches scikit-learn's errors)."""


def _binary_labels(y, who: str) -> np.ndarray:
    """``y`` as a 0/1 integer array with both classes present, or LabelError."""
    if y is None:
        raise LabelError(f"{who} requires y to be passed, but the target y is None", case="label")
    y = np.asarray(y).ravel()
    if pd.isna(y).any():
        raise LabelError(f"{who}: the label has missing values", case="label")
    values = np.unique(y)
    if len(values) < 2:
        raise LabelError(f"{who}: the label has only one class, {values.tolist()}; both classes 0 and 1 must be "
                         "present", case="label")
    if len(values) != 2 or not set(values.tolist()) <= {0, 1}:
        raise LabelError(f"{who}: the label must be binary 0/1 with both classes present, got {values.tolist()}",
                         case="label")
    return y.astype(int)


def _standardise(X: np.ndarray) -> np.ndarray:
    """Columns with mean 0 and unit (population) norm / sqrt(n); constant columns become 0."""
    Z = X - X.mean(axis=0)
    sd = Z.std(axis=0)
    return np.divide(Z, sd, out=np.zeros_like(Z), where=sd > 0)


class _Selector(SelectorMixin, BaseEstimator):
    """A selector whose ``fit`` sets ``support_``, the boolean mask of the kept features."""

    def _get_support_mask(self):
        check_is_fitted(self, "support_")
        return self.support_


class _LabelledSelector(_Selector):
    """A selector fit on binary 0/1 labels; its tags say so (``classifier_tags.multi_class=False`` is
    scikit-learn's mark of a binary-only target: its estimator checks then give two-class targets)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.classifier_tags = ClassifierTags(multi_class=False)
        return tags


class VarianceCorrelationFilter(_Selector):
    """Drop near-constant features (variance <= ``min_variance``), then drop every feature whose |Pearson r|
    with an already kept feature exceeds ``max_correlation`` (columns visited left to right).

    Parameters
    ----------
    min_variance : float, default 0.0
        Features with a (population) variance at or below it are dropped.
    max_correlation : float, default 0.9
        A feature whose absolute Pearson correlation with a kept feature exceeds it is dropped.

    Attributes
    ----------
    variances_ : ndarray of shape (n_features,)
        Each feature's variance on the training data.
    support_ : ndarray of bool, shape (n_features,)
        The kept features.
    """

    def __init__(self, min_variance: float = 0.0, max_correlation: float = 0.9):
        self.min_variance = min_variance
        self.max_correlation = max_correlation

    def fit(self, X, y=None):
        """Learn which features to keep.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training features (finite numbers; impute missing values first).
        y : ignored
            Unused; present for the Pipeline API.

        Returns
        -------
        self : VarianceCorrelationFilter
            The fitted filter.
        """
        X = validate_data(self, X, dtype=np.float64)
        self.variances_ = X.var(axis=0)
        candidates = np.flatnonzero(self.variances_ > self.min_variance)
        Z = _standardise(X[:, candidates])
        n = X.shape[0]
        kept: list[int] = []
        # One pass against the kept set only: n_features x n_kept products instead of the full correlation matrix
        # (5,000 radiomics features would need a 200 MB matrix).
        for j in range(len(candidates)):
            if kept:
                r = np.abs(Z[:, kept].T @ Z[:, j]) / n
                if r.max() > self.max_correlation:
                    continue
            kept.append(j)
        self.support_ = np.zeros(X.shape[1], bool)
        self.support_[candidates[kept]] = True
        return self


class MannWhitneySelector(_LabelledSelector):
    """Keep the features whose two-sided Mann-Whitney U p-value between the classes is below ``alpha``;
    never empty: when fewer pass, keep the ``min_features`` with the smallest p-values.

    Parameters
    ----------
    alpha : float, default 0.05
        Significance level (p-values are not corrected for multiple testing).
    min_features : int, default 10
        The fewest features kept.

    Attributes
    ----------
    pvalues_ : ndarray of shape (n_features,)
        Each feature's p-value (1 for a feature with a single value).
    support_ : ndarray of bool, shape (n_features,)
        The kept features.
    """

    def __init__(self, alpha: float = 0.05, min_features: int = 10):
        self.alpha = alpha
        self.min_features = min_features

    def fit(self, X, y):
        """Test every feature and keep the significant ones.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training features (finite numbers).
        y : array-like of shape (n_samples,)
            Binary 0/1 labels with both classes present (else LabelError).

        Returns
        -------
        self : MannWhitneySelector
            The fitted selector.
        """
        X = validate_data(self, X, dtype=np.float64)
        y = _binary_labels(y, "MannWhitneySelector")
        with np.errstate(invalid="ignore", divide="ignore"):
            p = mannwhitneyu(X[y == 1], X[y == 0], axis=0, alternative="two-sided").pvalue
        self.pvalues_ = np.where(np.isnan(p), 1.0, p)  # a column with all values tied carries no information
        support = self.pvalues_ < self.alpha
        if support.sum() < self.min_features:
            best = np.argsort(self.pvalues_, kind="stable")[: self.min_features]
            support[best] = True
        self.support_ = support
        return self


class MRMRSelector(_LabelledSelector):
    """Minimum redundancy maximum relevance (Peng, Long & Ding 2005, difference form "MID"): greedily add the
    feature maximising relevance - mean redundancy with the features already selected; the first is the most
    relevant. Both terms are on one scale:

    - ``relevance="f"``: the ANOVA F statistic as the point-biserial |r| = sqrt(F / (F + n - 2)) with the label,
      redundancy the mean |Pearson or Spearman r|;
    - ``relevance="mi"``: mutual information with the label (nats), redundancy the mean Gaussian mutual
      information -0.5 log(1 - r^2) implied by each correlation.

    Written here because scikit-learn has no mRMR and the PyPI mRMR packages are not scikit-learn estimators
    (they cannot sit in a Pipeline that cross-validation refits).

    Parameters
    ----------
    n_features : int, default 20
        How many features to select (all of them when there are fewer).
    relevance : {"f", "mi"}, default "f"
        The relevance measure and scale, as above.
    redundancy : {"pearson", "spearman"}, default "pearson"
        The correlation that redundancy is computed from.
    random_state : int, RandomState or None, default 0
        Seed of the mutual-information estimate (``relevance="mi"`` only).

    Attributes
    ----------
    relevance_ : ndarray of shape (n_features_in_,)
        Each feature's relevance.
    order_ : ndarray of int
        The selected column indices in the order they were picked.
    support_ : ndarray of bool, shape (n_features_in_,)
        The selected features.
    """

    def __init__(self, n_features: int = 20, relevance: str = "f", redundancy: str = "pearson",
                 random_state=0):
        self.n_features = n_features
        self.relevance = relevance
        self.redundancy = redundancy
        self.random_state = random_state

    def fit(self, X, y):
        """Select the features greedily.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training features (finite numbers).
        y : array-like of shape (n_samples,)
            Binary 0/1 labels with both classes present (else LabelError).

        Returns
        -------
        self : MRMRSelector
            The fitted selector.
        """
        X = validate_data(self, X, dtype=np.float64)
        y = _binary_labels(y, "MRMRSelector")
        n, p = X.shape
        if self.relevance == "f":
            with np.errstate(invalid="ignore", divide="ignore"):  # constant columns: F = nan; separating: inf
                F = np.nan_to_num(f_classif(X, y)[0], nan=0.0, posinf=np.inf)
                relevance = np.where(np.isinf(F), 1.0, np.sqrt(F / (F + max(n - 2, 1))))
        elif self.relevance == "mi":
            relevance = mutual_info_classif(X, y, random_state=self.random_state)
        else:
            raise ConfigError(f"MRMRSelector: relevance must be 'f' or 'mi', got {self.relevance!r}")
        if self.redundancy not in ("pearson", "spearman"):
            raise ConfigError(f"MRMRSelector: redundancy must be 'pearson' or 'spearman', got {self.redundancy!r}")
        self.relevance_ = relevance
        Z = _standardise(rankdata(X, axis=0) if self.redundancy == "spearman" else X)
        order = [int(np.argmax(relevance))]
        redundancy_sum = np.zeros(p)
        while len(order) < min(self.n_features, p):
            r = np.clip(np.abs(Z.T @ Z[:, order[-1]]) / n, 0.0, 1.0)
            redundancy_sum += r if self.relevance == "f" else -0.5 * np.log1p(-np.minimum(r, 1 - 1e-12) ** 2)
            score = relevance - redundancy_sum / len(order)
            score[order] = -np.inf
            order.append(int(np.argmax(score)))
        self.order_ = np.array(order)
        self.support_ = np.zeros(p, bool)
        self.support_[self.order_] = True
        return self


class LassoSelector(_LabelledSelector):
    """L1-penalised logistic regression with C chosen by stratified CV (AUC); keep the features with nonzero
    coefficients, at most ``max_features`` of them by |coefficient| on standardised features.

    If the chosen C zeroes every coefficient, the next larger C of the grid with a nonzero coefficient is
    used (the sparsest non-empty model), so the selection is never empty.

    Parameters
    ----------
    max_features : int, default 5
        The most features kept.
    cv : int, default 5
        Number of stratified folds choosing C (fewer when the minority class has fewer cases, at least 2).
    Cs : int, default 10
        Number of C values on a log grid between 1e-4 and 1e4 (``LogisticRegressionCV``).
    random_state : int, RandomState or None, default 0
        Seed of the fold split and of liblinear.

    Attributes
    ----------
    C_ : float
        The inverse penalty used.
    coef_ : ndarray of shape (n_features_in_,)
        The coefficients at ``C_`` on standardised features.
    support_ : ndarray of bool, shape (n_features_in_,)
        The kept features.
    """

    def __init__(self, max_features: int = 5, cv: int = 5, Cs: int = 10, random_state=0):
        self.max_features = max_features
        self.cv = cv
        self.Cs = Cs
        self.random_state = random_state

    def fit(self, X, y):
        """Choose C by cross-validation and keep the strongest nonzero coefficients.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Training features (finite numbers).
        y : array-like of shape (n_samples,)
            Binary 0/1 labels with both classes present (else LabelError).

        Returns
        -------
        self : LassoSelector
            The fitted selector.
        """
        X = validate_data(self, X, dtype=np.float64)
        y = _binary_labels(y, "LassoSelector")
        Z = _standardise(X)
        n_splits = max(2, min(self.cv, np.bincount(y).min()))
        # At the weakly penalised end of the C grid, (nearly) separable folds have no finite optimum: liblinear
        # stops at its iteration limit and warns, flooding a cohort run's output. The CV AUC judges those fits like
        # any other (more iterations did not change the selection), so the warning is silenced here, and only here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegressionCV(
                Cs=self.Cs, l1_ratios=(1.0,), solver="liblinear", scoring="roc_auc",
                cv=StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state),
                random_state=self.random_state, use_legacy_attributes=False).fit(Z, y)
            self.C_, coef = float(model.C_), model.coef_.ravel()
            for C in sorted(c for c in model.Cs_ if c > model.C_):
                if np.any(coef):
                    break
                self.C_, coef = float(C), LogisticRegression(
                    C=C, l1_ratio=1.0, solver="liblinear", random_state=self.random_state).fit(Z, y).coef_.ravel()
        self.coef_ = coef
        nonzero = np.flatnonzero(coef)
        ranked = nonzero[np.argsort(-np.abs(coef[nonzero]), kind="stable")]
        if ranked.size == 0:  # no C of the grid gives a nonzero coefficient: keep the most relevant feature
            ranked = np.array([int(np.argmax(np.nan_to_num(f_classif(Z, y)[0])))])
        self.support_ = np.zeros(X.shape[1], bool)
        self.support_[ranked[: self.max_features]] = True
        return self
