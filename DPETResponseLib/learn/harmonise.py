"""ComBat harmonisation of feature columns across sites (centres, scanners): a transformer fitted on training cases.

Per feature, the values are standardised by the training cases' grand mean and pooled within-site SD; each site's
location gamma and scale delta are estimated on them, shrunk by the parametric empirical-Bayes priors pooled over
the features (Johnson et al., Biostatistics 2007; Fortin et al., NeuroImage 2018), and removed. The site is read
from a column of the table, so a fitted transformer harmonises any new case of a training site (a held-out split, a
bundle's prediction) with the training estimates and can be the first step of a Pipeline.

Written here, not taken from a library: combatlearn 2.3.0 takes the site labels at construction and looks cases up
by index (a fitted model cannot harmonise a case it was not given when built, such as a new case in `predict`),
refuses NaN (the table has them; an imputer follows), and brings umap-learn, numba, plotly and seaborn into what
the Slicer module installs; neuroCombat 0.2.12 harmonises a whole cohort at once (its apply-to-new-data function is
marked "under development"), has no missing-value support in its empirical Bayes step and casts tables to float32.
The estimates are neuroCombat's (`Testing/test_harmonise.py` compares them with it), its empirical Bayes iterated
to convergence rather than to a relative change of 1e-4.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..core.errors import ConfigError, InputError, listing
from ..core.names import SITE, site_label
from .tables import _columns, _table

log = logging.getLogger(__name__)

#: Empirical-Bayes iteration: stop when gamma moves less than this (standardised units) and delta by less than
#: this fraction.
EB_TOLERANCE = 1e-10
EB_MAX_ITERATIONS = 1000


def _eb_shrink(gamma_hat, delta_hat, sum2_fixed, n, a, b):
    """Parametric empirical-Bayes posterior means gamma*, delta* (sites x features; neuroCombat's `it_sol`).

    Priors per site, pooled over the features: gamma ~ N(mean, variance of gamma_hat), delta ~ inverse gamma
    (``a``, ``b``). ``sum2_fixed`` is (n - 1) x the sample variance, so sum((z - g)^2) = sum2_fixed +
    n (gamma_hat - g)^2 with ``n`` each site's non-missing values."""
    gamma_bar = gamma_hat.mean(axis=1, keepdims=True)
    t2 = gamma_hat.var(axis=1, ddof=1, keepdims=True)
    g_old, d_old = gamma_hat, delta_hat
    for _ in range(EB_MAX_ITERATIONS):
        g_new = (t2 * n * gamma_hat + d_old * gamma_bar) / (t2 * n + d_old)
        d_new = (0.5 * (sum2_fixed + n * (gamma_hat - g_new) ** 2) + b) / (n / 2 + a - 1)
        done = np.abs(g_new - g_old).max() < EB_TOLERANCE and (np.abs(d_new - d_old) / d_old).max() < EB_TOLERANCE
        g_old, d_old = g_new, d_new
        if done:
            break
    else:
        log.warning("ComBat: the empirical-Bayes estimates moved by more than %g after %d iterations",
                    EB_TOLERANCE, EB_MAX_ITERATIONS)
    return g_old, d_old


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat across the sites of ``site_column``, fitted on the training cases, applied to any case of those sites.

    ``columns``: the features to harmonise (None: every numeric column but the site column).
    ``empirical_bayes``: shrink the site estimates with the priors pooled over the features (with fewer than two
    harmonised features there is nothing to pool and the site estimates are used as they are).
    ``min_site_cases``: the fewest training cases of a site (2: a scale needs a variance); a feature with fewer
    non-missing values than this at some site, or constant within every site, is left unchanged (``unchanged_``
    says why). NaN values are left out of the estimates and stay NaN.

    ``fit(X)`` and ``transform(X)`` take a DataFrame holding the features and the site column; ``transform`` returns
    the harmonised features only (a DataFrame on X's index, columns ``get_feature_names_out()``). Fitted: ``sites_``,
    ``columns_``, ``grand_mean_``, ``pooled_sd_`` (per feature), ``gamma_``, ``delta_`` (sites x features), and
    ``unchanged_`` {feature: reason}; an unchanged feature has mean 0, SD 1, gamma 0 and delta 1 (the identity).
    """

    def __init__(self, site_column: str = SITE, columns=None, empirical_bayes: bool = True, min_site_cases: int = 2):
        self.site_column = site_column
        self.columns = columns
        self.empirical_bayes = empirical_bayes
        self.min_site_cases = min_site_cases

    def _check_params(self) -> None:
        if not isinstance(self.site_column, str):
            raise ConfigError(f"ComBat: site_column must be a column name (str), got {type(self.site_column).__name__}")
        if self.columns is not None and (isinstance(self.columns, str) or self.site_column in self.columns):
            raise ConfigError(f"ComBat: columns must be a list of feature columns without the site column "
                              f"{self.site_column!r}, got {self.columns!r}")
        if not isinstance(self.empirical_bayes, bool):
            raise ConfigError(f"ComBat: empirical_bayes must be True or False, got {self.empirical_bayes!r}")
        if isinstance(self.min_site_cases, bool) or not isinstance(self.min_site_cases, (int, np.integer)) \
                or self.min_site_cases < 2:
            raise ConfigError(f"ComBat: min_site_cases must be an integer of at least 2 (a site's scale needs a "
                              f"variance), got {self.min_site_cases!r}")

    def _sites(self, X: pd.DataFrame) -> np.ndarray:
        """Each case's site as text; InputError when the column is absent or a case has none."""
        if self.site_column not in X.columns:
            raise InputError(f"ComBat: the table has no site column {self.site_column!r} (columns: "
                             f"{listing(X.columns, 10)}); give each case its site or leave harmonisation out")
        sites = X[self.site_column]
        missing = sites.isna().to_numpy()
        if missing.any():
            raise InputError(f"ComBat: no {self.site_column!r} value for {int(missing.sum())} case(s): "
                             f"{listing(X.index[missing], 10)}")
        return np.array([site_label(v) for v in sites], dtype=object)

    def _values(self, X: pd.DataFrame, columns) -> np.ndarray:
        data = _columns(X, columns, "ComBat")
        text = [c for c in columns if not pd.api.types.is_numeric_dtype(data[c]) or pd.api.types.is_bool_dtype(data[c])]
        if text:
            raise InputError(f"ComBat: feature column(s) {listing(text, 10)} are not numeric")
        return data.to_numpy(dtype=float, na_value=np.nan)

    def fit(self, X, y=None):
        """Estimate the grand mean, pooled SD and each site's gamma and delta on these (training) cases."""
        self._check_params()
        X = _table(X, "ComBat")
        sites = self._sites(X)
        if self.columns is None:
            columns = list(X.drop(columns=self.site_column).select_dtypes(include="number").columns)
            if not columns:
                raise InputError("ComBat: no numeric feature column besides the site column")
        else:
            columns = list(self.columns)
        values = self._values(X, columns)
        levels, counts = np.unique(sites, return_counts=True)
        small = [(s, int(c)) for s, c in zip(levels, counts) if c < self.min_site_cases]
        if small:
            raise InputError("ComBat: " + "; ".join(f"site {s!r} has {c} training case(s)" for s, c in small)
                             + f"; ComBat needs at least {self.min_site_cases} per site to estimate its shift and "
                             "scale: merge it with another site or remove the site column")

        member = (sites[:, None] == levels[None, :]).astype(float)  # cases x sites
        present = np.isfinite(values)
        filled = np.where(present, values, 0.0)
        n = member.T @ present  # sites x features: non-missing values
        site_mean = (member.T @ filled) / np.maximum(n, 1)
        grand = filled.sum(axis=0) / np.maximum(n.sum(axis=0), 1)
        site_of = np.searchsorted(levels, sites)
        resid = np.where(present, values - site_mean[site_of], 0.0)
        pooled_var = (resid ** 2).sum(axis=0) / np.maximum(n.sum(axis=0), 1)
        spread = np.array([np.fmax.reduce(values[site_of == i], axis=0) - np.fmin.reduce(values[site_of == i], axis=0)
                           for i in range(levels.size)])

        unchanged = {}
        for j, name in enumerate(columns):
            if (n[:, j] < self.min_site_cases).any():
                few = [f"{s!r} ({int(k)})" for s, k in zip(levels, n[:, j]) if k < self.min_site_cases]
                unchanged[name] = f"fewer than {self.min_site_cases} training values at site(s) {', '.join(few)}"
            elif (spread[:, j] == 0).all():
                unchanged[name] = "constant within every training site"
        keep = np.array([c not in unchanged for c in columns])

        gamma = np.zeros((levels.size, len(columns)))
        delta = np.ones((levels.size, len(columns)))
        if keep.any():
            sd = np.sqrt(pooled_var[keep])
            z = (values[:, keep] - grand[keep]) / sd
            nk = n[:, keep]
            gamma_hat = (site_mean[:, keep] - grand[keep]) / sd
            sum2_fixed = (member.T @ np.where(present[:, keep], (z - gamma_hat[site_of]) ** 2, 0.0))
            raw_delta = sum2_fixed / (nk - 1)
            delta_hat = np.where(raw_delta == 0, 1.0, raw_delta)  # a site constant in a feature: scale 1 (sva's rule)
            if self.empirical_bayes and keep.sum() >= 2:
                m = delta_hat.mean(axis=1, keepdims=True)
                s2 = np.maximum(delta_hat.var(axis=1, ddof=1, keepdims=True), 1e-12 * m ** 2)
                a, b = (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2
                gamma_hat, delta_hat = _eb_shrink(gamma_hat, delta_hat, sum2_fixed, nk, a, b)
            gamma[:, keep], delta[:, keep] = gamma_hat, delta_hat
        if unchanged:
            log.info("ComBat: %d of %d features left unchanged (%s)", len(unchanged), len(columns),
                     listing([f"{k}: {v}" for k, v in unchanged.items()], 10))

        self.sites_ = [str(s) for s in levels]
        self.columns_ = columns
        self.grand_mean_ = np.where(keep, grand, 0.0)
        self.pooled_sd_ = np.where(keep, np.sqrt(pooled_var), 1.0)
        self.gamma_, self.delta_ = gamma, delta
        self.unchanged_ = unchanged
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = len(X.columns)
        return self

    def transform(self, X) -> pd.DataFrame:
        """The features of these cases with their site's training estimates removed (nothing is re-estimated)."""
        check_is_fitted(self, "gamma_")
        X = _table(X, "ComBat")
        sites = self._sites(X)
        unseen = sorted(set(sites) - set(self.sites_))
        if unseen:
            raise InputError("ComBat: " + "; ".join(f"site {s!r} (case(s) {listing(X.index[sites == s], 10)})"
                                                    for s in unseen)
                             + f" was not among the training sites {', '.join(map(repr, self.sites_))}: ComBat "
                             "can harmonise only cases of the sites it was fitted on")
        values = self._values(X, self.columns_)
        site_of = np.searchsorted(np.array(self.sites_, dtype=object), sites)
        z = (values - self.grand_mean_) / self.pooled_sd_
        harmonised = (z - self.gamma_[site_of]) / np.sqrt(self.delta_[site_of]) * self.pooled_sd_ + self.grand_mean_
        return pd.DataFrame(harmonised, index=X.index, columns=self.columns_)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """The harmonised feature columns (the site column is consumed)."""
        check_is_fitted(self, "columns_")
        return np.asarray(self.columns_, dtype=object)
