"""Feature selectors: hand-computed small cases and recovery of known informative columns in synthetic tables."""

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import make_pipeline

from DPETResponseLib.core.errors import InputError
from DPETResponseLib.learn.selection import LassoSelector, MannWhitneySelector, MRMRSelector, VarianceCorrelationFilter


def noisy_table(n=90, p=300, seed=0):
    """``p`` pure-noise columns plus three informative ones: logit(pCR) = 3*inf_a + 2*inf_b + 1*inf_c."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"noise_{i:03d}" for i in range(p)])
    for name in ("inf_a", "inf_b", "inf_c"):
        X[name] = rng.normal(size=n)
    eta = 3 * X.inf_a + 2 * X.inf_b + 1 * X.inf_c
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(int)
    return X, y


def test_variance_correlation_filter_drops_constant_and_correlated_copies():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    X = pd.DataFrame({"a": a, "constant": np.full(50, 3.0), "a_copy": 2 * a + 0.01 * rng.normal(size=50),
                      "b": b, "minus_b": -b})
    f = VarianceCorrelationFilter(max_correlation=0.9).fit(X)
    # constant: variance 0; a_copy: r(a, a_copy) ~ 0.99998 > 0.9; minus_b: r = -1 with b (|r| counts).
    assert list(f.get_feature_names_out()) == ["a", "b"]
    assert f.variances_[1] == 0.0
    assert f.transform(X).shape == (50, 2)
    # A looser threshold keeps every non-constant column except the exact mirror (|r| = 1 > 0.99999).
    loose = VarianceCorrelationFilter(max_correlation=0.99999).fit(X)
    assert list(loose.get_feature_names_out()) == ["a", "a_copy", "b"]
    # Arrays work too (scikit-learn's default names x0, x1, ...).
    assert list(VarianceCorrelationFilter().fit(X.to_numpy()).get_feature_names_out()) == ["x0", "x3"]


def test_mann_whitney_hand_computed_exact_p_values():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    X = pd.DataFrame({"separated": [1, 2, 3, 4, 5, 6, 7, 8], "mixed": [1, 5, 2, 6, 3, 7, 4, 8]})
    s = MannWhitneySelector(alpha=0.05, min_features=1).fit(X, y)
    # separated: U = 16 of 16, the single most extreme of C(8,4) = 70 splits each side: p = 2/70.
    # mixed: U = 12; 12 of the 70 splits give U >= 12 (U <= 4 counts 1+1+2+3+5): p = 2*12/70.
    np.testing.assert_allclose(s.pvalues_, [2 / 70, 24 / 70], rtol=1e-12)
    assert list(s.get_feature_names_out()) == ["separated"]
    # Never empty: with alpha so small that nothing passes, the min_features best are kept.
    strict = MannWhitneySelector(alpha=1e-9, min_features=1).fit(X, y)
    assert list(strict.get_feature_names_out()) == ["separated"]


def test_mann_whitney_recovers_informative_columns():
    X, y = noisy_table()
    kept = set(MannWhitneySelector(alpha=0.05).fit(X, y).get_feature_names_out())
    assert {"inf_a", "inf_b"} <= kept
    # About alpha x 300 = 15 noise columns pass by chance; far fewer than all of them.
    assert len(kept) < 40


def test_mrmr_hand_checked_order_skips_redundant_copy():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    a = np.array([0, 0, 1, 1, 1, 1, 2, 2.0])
    X = pd.DataFrame({"a": a, "a_copy": 2 * a + 1, "c": [0, 1, 1, 0, 0, 1, 1, 0.0],
                      "b": [1, 0, 0, 0, 1, 1, 1, 0.0]})
    # By hand (population moments, n = 8): r(a, y) = 0.25 / sqrt(0.5 * 0.25) = 1/sqrt(2); r(b, y) = 0.125 / 0.25
    # = 0.5; r(c, y) = 0; a_copy is a linear copy of a (r = 1). r(a, b) = r(a, c) = r(b, c) = 0.
    s = MRMRSelector(n_features=2).fit(X, y)
    np.testing.assert_allclose(s.relevance_, [2 ** -0.5, 2 ** -0.5, 0.0, 0.5], atol=1e-12)
    # Step 1: a (ties with a_copy, first column wins). Step 2: a_copy 0.707 - 1 = -0.29, c 0 - 0 = 0,
    # b 0.5 - 0 = 0.5 -> b: the redundant copy is skipped for a weaker but new feature.
    assert X.columns[s.order_].tolist() == ["a", "b"]
    assert list(s.get_feature_names_out()) == ["a", "b"]
    # Step 3: a_copy 0.707 - (1 + 0)/2 = 0.207 beats c 0 - 0 = 0.
    assert X.columns[MRMRSelector(n_features=3).fit(X, y).order_].tolist() == ["a", "b", "a_copy"]
    # Spearman redundancy: ranks of a and a_copy coincide, so the same order.
    spearman = MRMRSelector(n_features=3, redundancy="spearman").fit(X, y)
    assert X.columns[spearman.order_].tolist() == ["a", "b", "a_copy"]


def test_mrmr_recovers_informative_columns():
    X, y = noisy_table()
    s = MRMRSelector(n_features=10).fit(X, y)
    assert X.columns[s.order_[0]] == "inf_a"
    assert set(X.columns[s.order_[:3]]) == {"inf_a", "inf_b", "inf_c"}
    # The kNN mutual-information estimate is noisier at n = 90 (inf_b ranks among the noise), but the
    # strongest column still comes first.
    assert X.columns[MRMRSelector(n_features=3, relevance="mi").fit(X, y).order_[0]] == "inf_a"


def test_lasso_keeps_nonzero_coefficients_strongest_first():
    X, y = noisy_table(n=200, p=50, seed=3)
    s = LassoSelector(max_features=5, random_state=0).fit(X, y)
    kept = list(s.get_feature_names_out())
    assert 1 <= len(kept) <= 5
    assert {"inf_a", "inf_b", "inf_c"} <= set(kept)
    # Capped at 2: the two largest |coefficients|, i.e. the true effects 3 and 2.
    two = LassoSelector(max_features=2, random_state=0).fit(X, y)
    assert set(two.get_feature_names_out()) == {"inf_a", "inf_b"}
    assert np.count_nonzero(two.coef_) >= 2 and two.C_ > 0


def test_chain_in_a_pipeline_keeps_names():
    X, y = noisy_table()
    chain = make_pipeline(VarianceCorrelationFilter(), MannWhitneySelector(), MRMRSelector(n_features=8),
                          LassoSelector(max_features=3)).set_output(transform="pandas")
    out = chain.fit_transform(X, y)
    assert list(out.columns) == list(chain.get_feature_names_out())
    assert "inf_a" in out.columns and out.shape == (90, len(out.columns)) and len(out.columns) <= 3


@pytest.mark.parametrize("labels, problem", [([0] * 8, "both classes"), ([0, 1, 2, 0, 1, 2, 0, 1], "binary"),
                                             ([0, 1, np.nan, 0, 1, 0, 1, 0], "missing")])
def test_bad_labels_raise_input_error(labels, problem):
    X = pd.DataFrame({"a": np.arange(8.0), "b": np.arange(8.0) ** 2})
    for selector in (MannWhitneySelector(), MRMRSelector(), LassoSelector()):
        with pytest.raises(InputError, match=problem):
            selector.fit(X, np.array(labels, dtype=float))
