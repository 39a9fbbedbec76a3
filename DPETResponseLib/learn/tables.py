"""The feature-table checks every estimator of `learn` shares: a DataFrame, its columns present and finite, and
which rows hold any of some columns (a case that has a modality)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.errors import InputError


def rows_holding(X: pd.DataFrame, columns) -> np.ndarray:
    """Which rows of ``X`` hold a value in any of ``columns`` (columns absent from ``X`` hold none): the cases that
    have a modality, where ``columns`` are its features."""
    return X.reindex(columns=list(columns)).notna().any(axis=1).to_numpy()


def _table(X, who: str) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise InputError(f"{who} needs the feature table as a pandas DataFrame (named columns), got {type(X).__name__}")
    return X


def _columns(X: pd.DataFrame, columns, who: str) -> pd.DataFrame:
    """``X[columns]``, or InputError naming missing columns or infinite values (and their cases)."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise InputError(f"{who}: the feature table lacks column(s) {', '.join(map(str, missing))}")
    data = X[list(columns)]
    numeric = data.select_dtypes(include="number")
    rows, cols = np.nonzero(np.isinf(numeric.to_numpy(dtype=float)))
    if rows.size:
        raise InputError(f"{who}: infinite values in column(s) {', '.join(sorted(set(numeric.columns[cols]))[:5])} "
                         f"of case(s) {', '.join(sorted(set(map(str, X.index[rows])))[:10])}")
    return data
