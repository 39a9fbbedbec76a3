"""Repeated stratified partitions (`DPETResponseLib.partitions`): the partitions drawn, their checks, the scores
against scikit-learn and the mean/SD summary against numpy. The partitions run end to end through
`evaluate --partitions` in test_cli.py."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from DPETResponseLib.core.errors import DPETError, ManifestError
from DPETResponseLib.partitions import (
    DEFAULT_TEST_FRACTION,
    manifest_test_fraction,
    partition_cases,
    partition_scores,
    partition_seeds,
    summarise,
)


def _cases(n_train=(12, 18), n_test=(5, 7), unlabelled=3):
    """A manifest frame: ``n_train``/``n_test`` (positives, negatives) per split, plus unlabelled and unsplit cases."""
    rows = ([(1, "train")] * n_train[0] + [(0, "train")] * n_train[1] + [(1, "test")] * n_test[0]
            + [(0, "test")] * n_test[1] + [(None, "test")] * unlabelled + [(1, None)])
    return pd.DataFrame({"label": pd.array([r[0] for r in rows], dtype="Int64"), "split": [r[1] for r in rows],
                         "age": np.arange(len(rows))}, index=[f"P{i:02d}" for i in range(len(rows))])


def test_partitions_are_stratified_independent_and_pool_every_labelled_split():
    cases = _cases()
    assert manifest_test_fraction(cases) == pytest.approx(12 / 42)
    seeds = partition_seeds(3, seed=7)
    assert seeds == [7, 8, 9]
    parts = partition_cases(cases, seeds, 0.25, n_folds=3)
    pooled = cases.index[cases["label"].notna() & cases["split"].notna()]
    tests = []
    for part in parts:
        assert list(part.index) == list(pooled) and (part["age"] == cases.loc[pooled, "age"]).all()
        test = part[part["split"] == "test"]
        assert len(test) == round(0.25 * 42) == 10 or len(test) == 11
        # stratified: the test part's positive share within one case of the cohort's (17 of 42)
        assert abs(int(test["label"].sum()) - len(test) * 17 / 42) <= 1
        assert set(part["split"]) == {"train", "test"}
        tests.append(set(test.index))
    assert len({frozenset(t) for t in tests}) == 3  # different partitions from different seeds
    again = partition_cases(cases, seeds, 0.25, n_folds=3)  # the same seeds, the same partitions
    assert all(a.equals(b) for a, b in zip(parts, again))


def test_default_fraction_without_a_held_out_split():
    cases = _cases(n_test=(0, 0), unlabelled=0)
    assert manifest_test_fraction(cases) == DEFAULT_TEST_FRACTION == 0.3


@pytest.mark.parametrize("call,expected", [
    (lambda c: partition_seeds(1, 0), r"1 partitions; give 2 or more"),
    (lambda c: partition_cases(c, [0], 1.2, n_folds=3), r"test fraction 1.2; give a number between 0 and 1"),
    # 22 labelled cases, 7 positive: a 16-case training part holds 5 positives, too few for 5 folds with the CNN's
    # early stopping (6 of each class)
    (lambda c: partition_cases(c, [4], 0.25, n_folds=5, early_stopping=True),
     r"partition seed 4 \(16 training, 6 test cases at test fraction 0.25\): cohort cannot be used for training: "
     r"split 'train' has 16 labelled cases \(5 positive, 11 negative\): 5-fold cross-validation with the CNN needs "
     r"at least 6 of each class"),
    (lambda c: partition_cases(c.assign(label=pd.array([0] * len(c), dtype="Int64")), [0], 0.3, n_folds=3),
     r"at least 2 labelled cases of each class; got 0 positive, 45 negative"),  # 45: every case with a split
])
def test_impossible_partitions_are_refused_before_any_work(call, expected):
    cases = _cases(n_train=(4, 10), n_test=(3, 5)) if "seed 4" in expected else _cases()
    with pytest.raises((DPETError, ManifestError), match=expected):
        call(cases)


def test_scores_equal_sklearn_and_summary_equals_numpy():
    rng = np.random.default_rng(3)
    scores, kept = [], []
    for _ in range(3):
        y = np.r_[np.ones(9, int), np.zeros(14, int)]
        probs = pd.DataFrame({"a": rng.random(23) * 0.5 + 0.3 * y, "b": rng.random(23)})
        thresholds = {"a": 0.45, "b": 0.5}
        scores.append(partition_scores(y, probs, thresholds))
        for name in probs:
            called = (probs[name] >= thresholds[name]).astype(int)
            expected = {"auc": roc_auc_score(y, probs[name]), "balanced_accuracy": balanced_accuracy_score(y, called),
                        "sensitivity": recall_score(y, called), "specificity": recall_score(1 - y, 1 - called)}
            assert scores[-1][name] == pytest.approx(expected, abs=1e-12), name
        kept.append(scores[-1])
    summary = summarise(scores)
    for name in ("a", "b"):
        for metric in ("auc", "balanced_accuracy", "sensitivity", "specificity"):
            values = [s[name][metric] for s in kept]
            got = summary[name][metric]
            assert got["values"] == values
            assert (got["mean"], got["sd"]) == pytest.approx((np.mean(values), np.std(values, ddof=1)), abs=1e-12)
    assert summary["a"]["auc"]["mean"] > summary["b"]["auc"]["mean"]  # a carries the label, b does not


def test_summary_leaves_out_a_metric_undefined_on_a_partition():
    scores = [{"m": {"auc": a, "balanced_accuracy": b, "sensitivity": b, "specificity": 0.5}}
              for a, b in ((0.6, None), (0.7, 0.55), (0.8, 0.65))]
    summary = summarise(scores)["m"]
    assert summary["balanced_accuracy"]["values"] == [None, 0.55, 0.65]
    assert summary["balanced_accuracy"]["mean"] == pytest.approx(0.6)
    assert summary["balanced_accuracy"]["sd"] == pytest.approx(np.std([0.55, 0.65], ddof=1))
    assert summary["auc"]["mean"] == pytest.approx(0.7) and summary["specificity"]["sd"] == 0


def test_a_modality_pathway_is_scored_on_the_cases_it_scored():
    """A modality's pathway gives no probability for the cases without the modality (NaN): it is scored on the
    others, exactly as sklearn scores them; with one class among them its metrics are None."""
    y = np.r_[np.ones(6, int), np.zeros(8, int)]
    p = np.linspace(0.1, 0.9, 14)[::-1]
    missing = np.zeros(14, bool)
    missing[[0, 7, 8]] = True
    probs = pd.DataFrame({"radiomics_ct": np.where(missing, np.nan, p), "one_class": np.where(y == 1, p, np.nan)})
    scores = partition_scores(y, probs, {"radiomics_ct": 0.5, "one_class": 0.5})
    y_scored, p_scored = y[~missing], p[~missing]
    called = (p_scored >= 0.5).astype(int)
    assert scores["radiomics_ct"] == pytest.approx({
        "auc": roc_auc_score(y_scored, p_scored), "balanced_accuracy": balanced_accuracy_score(y_scored, called),
        "sensitivity": recall_score(y_scored, called), "specificity": recall_score(1 - y_scored, 1 - called)},
        abs=1e-12)
    assert scores["one_class"] == {"auc": None, "balanced_accuracy": None, "sensitivity": None, "specificity": None}
