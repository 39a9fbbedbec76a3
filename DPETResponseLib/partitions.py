"""Repeated stratified partitions (Jang's evaluation design): N independent train/test partitions of a cohort's
labelled cases, the study's settings re-fit on each training part and scored on its test part, each metric
summarised as mean and SD over the partitions. `protocol.evaluate` runs them (``partitions=N``); this module holds
the partitions, the scores and the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .core.errors import DPETError, ManifestError
from .io.manifest import validate_for_training
from .reporting.evaluation import auc, threshold_metrics

#: The test part's share of the cases where the manifest has no held-out split to take it from.
DEFAULT_TEST_FRACTION = 0.3
#: The metrics each partition's test part gives each model (thresholds: the partition's own, fit on training OOF).
PARTITION_METRICS = ("auc", "balanced_accuracy", "sensitivity", "specificity")
#: How a partition gets its population-habitat centroids: learned on its own training part, or the bundle's.
HABITAT_CHOICES = ("refit", "bundle")


def pooled_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """The cases partitions are drawn from: every labelled case with a split (train and held-out alike)."""
    return cases[cases["label"].notna() & cases["split"].notna()]


def manifest_test_fraction(cases: pd.DataFrame) -> float:
    """The held-out share of the manifest's labelled cases (`pooled_cases`), or `DEFAULT_TEST_FRACTION` where
    every labelled case is in split train."""
    pooled = pooled_cases(cases)
    held_out = int((pooled["split"] != "train").sum())
    return held_out / len(pooled) if held_out and len(pooled) else DEFAULT_TEST_FRACTION


def partition_seeds(n: int, seed: int) -> list[int]:
    """The seeds of ``n`` partitions: ``seed``, ``seed + 1``, ... (``seed`` is the bundle's)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise DPETError(f"partitions: {n!r} partitions; give 2 or more (a standard deviation needs two)")
    return [int(seed) + i for i in range(int(n))]


def partition_cases(cases: pd.DataFrame, seeds: list[int], test_fraction: float, n_folds: int,
                    early_stopping: bool = False) -> list[pd.DataFrame]:
    """One copy of `pooled_cases` per seed with ``split`` rewritten to "train"/"test": a stratified random
    partition (scikit-learn's ``train_test_split`` with ``stratify`` on the label, ``random_state`` the seed).
    Each is checked as a training cohort (`io.manifest.validate_for_training`) before any work: a partition that
    cannot be cross-validated or scored raises a `ManifestError` naming its seed."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise DPETError(f"partitions: test fraction {test_fraction!r}; give a number between 0 and 1")
    pooled = pooled_cases(cases)
    labels = pooled["label"].astype(int)
    counts = labels.value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ManifestError(f"partitions need at least 2 labelled cases of each class; got "
                            f"{int(counts.get(1, 0))} positive, {int(counts.get(0, 0))} negative")
    out = []
    for seed in seeds:
        try:
            train_ids, _ = train_test_split(pooled.index, test_size=test_fraction, stratify=labels,
                                            random_state=seed)
        except ValueError as err:  # a test part too small to hold both classes
            raise ManifestError(f"partition seed {seed}: {err}") from None
        part = pooled.assign(split=np.where(pooled.index.isin(train_ids), "train", "test"))
        try:
            validate_for_training(part, n_folds=n_folds, early_stopping=early_stopping)
        except ManifestError as err:
            raise ManifestError(f"partition seed {seed} ({len(train_ids)} training, {len(part) - len(train_ids)} "
                                f"test cases at test fraction {test_fraction:.3g}): {err}") from None
        out.append(part)
    return out


def partition_scores(y, probs: pd.DataFrame, thresholds: dict) -> dict:
    """{model: {metric: value}} on one partition's test part: AUC, and balanced accuracy, sensitivity and
    specificity at the model's threshold (fit on that partition's training cases). A model is scored on the cases
    it gave a probability (another modality's pathway: those with the modality); None where they hold one class."""
    y = np.asarray(y, dtype=int)
    out = {}
    for name in probs.columns:
        p = probs[name].to_numpy(dtype=float)
        scored = np.isfinite(p)
        if len(set(y[scored].tolist())) < 2:
            out[name] = dict.fromkeys(PARTITION_METRICS)
            continue
        at = threshold_metrics(y[scored], p[scored], thresholds[name])
        out[name] = {"auc": auc(y[scored], p[scored]), **{m: at[m] for m in PARTITION_METRICS[1:]}}
    return out


def summarise(scores: list[dict]) -> dict:
    """{model: {metric: {"mean", "sd", "values"}}} over the partitions' `partition_scores` (SD with ddof 1; a
    metric undefined on a partition is None there and left out of its mean and SD)."""
    out = {}
    for name in scores[0]:
        out[name] = {}
        for metric in PARTITION_METRICS:
            values = [s[name][metric] for s in scores]
            known = np.array([v for v in values if v is not None], dtype=float)
            out[name][metric] = {"mean": float(known.mean()) if known.size else None,
                                 "sd": float(known.std(ddof=1)) if known.size > 1 else None, "values": values}
    return out
