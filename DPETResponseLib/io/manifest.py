"""The cohort manifest: a CSV ``case_id,image,mask,label,split`` plus any clinical columns, checked before any work.

Paths are relative to the manifest's folder (absolute paths are kept); ``label`` is 0/1 or empty (unknown);
``split`` is ``train``, ``test``, ``test2``, ... or empty. Other imaging modalities come as ``image_<modality>``
with their tumour mask ``mask_<modality>`` (no mask column: the PET's mask, on the modality's grid); an empty cell
means the case lacks that modality. ``site`` names the centre or scanner (the harmonisation's batch).
``body_mask``, if given, is every case's body or breast mask on the PET's grid: the peritumoural shell stays
inside it. Every other
column is a clinical column, except text columns that hold file paths (refused) or a distinct value for (nearly)
every case, such as identifiers (left out, with a warning). Another binary column can be the outcome
(``label_column``, e.g. ``response``): it is read as the label, and the ``label`` column, if the manifest has one,
is then neither the outcome nor a predictor.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.errors import ManifestError, listing
from ..core.names import BODY_MASK, MODALITY_NAME, RESERVED_MODALITIES, SITE, modality_columns

REQUIRED_COLUMNS = ("case_id", "image", "mask", "label", "split")
#: The outcome column unless another is named (`read_manifest`'s ``label_column``).
LABEL = "label"
# Cells read as "missing" in clinical columns (as well as the empty cell).
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", "none", "null", "missing", "unknown", "?", "-"})
SPLIT_PATTERN = re.compile(r"^(train|test\d*)$")
MODALITY_COLUMN = re.compile(rf"^(image|mask)_({MODALITY_NAME})$")
#: File name endings of images and masks: a text column holding them is a misnamed image column.
PATH_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm", ".seg.nrrd")
#: A text column with more than this share of distinct values among at least `IDENTIFIER_MIN_CASES` non-missing
#: cells is an identifier, not a category (a category seen once cannot be learned from).
IDENTIFIER_SHARE = 0.9
IDENTIFIER_MIN_CASES = 8


class ManifestWarning(UserWarning):
    """A manifest that can be used but probably is not what its author meant (e.g. a mixed-type clinical column)."""


def _clinical_column(values: pd.Series, name: str, where: str) -> tuple[pd.Series, str | None]:
    """A clinical column with a sensible dtype (numbers -> int64/float64, text -> pandas text with NaN for missing),
    and a warning when it mixes numbers and text (kept as text so that nothing is silently turned into NaN)."""
    text = values.str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS)
    numbers = pd.to_numeric(text.where(~missing), errors="coerce")
    is_number = numbers.notna()
    is_text = ~missing & ~is_number
    if not is_text.any():
        if missing.any() or not np.allclose(numbers.fillna(0), numbers.fillna(0).round()):
            return numbers.astype("float64"), None
        return numbers.astype("int64"), None
    column = text.where(~missing, np.nan).astype(object)
    if is_number.any():
        examples_num = list(dict.fromkeys(text[is_number]))[:3]
        examples_text = list(dict.fromkeys(text[is_text]))[:3]
        return column, (f"{where}: clinical column {name!r} mixes numbers ({', '.join(examples_num)}) and text "
                        f"({', '.join(examples_text)}); kept as text - fix the values or use a missing token "
                        f"({', '.join(sorted(t for t in MISSING_TOKENS if t))}) for unknowns")
    return column, None


def read_manifest(path, label_column: str = LABEL) -> pd.DataFrame:
    """The validated manifest: index ``case_id``; ``image``/``mask`` absolute path strings; ``label`` Int64 (0/1,
    <NA> unknown) read from column ``label_column``; ``split`` lower-case text or NaN; clinical columns with their
    own dtypes. Neither ``label_column`` nor a ``label`` column is ever a clinical column (``df.attrs``
    ``label_column`` names the outcome's column, ``outcome_columns_ignored`` a ``label`` column left out).

    Every problem found is reported at once in one `ManifestError` (missing required columns, empty or duplicate
    ids, missing files - all of them -, labels other than 0/1, unknown split names); a clinical column that mixes
    numbers and text gives a `ManifestWarning`. The warnings are also in ``df.attrs["warnings"]``.
    """
    path = Path(path)
    label_column = str(label_column).strip()
    if label_column in {c for c in REQUIRED_COLUMNS if c != LABEL} or not label_column:
        raise ManifestError(f"label column {label_column!r}: name a manifest column with the 0/1 outcome, not one of "
                            "case_id, image, mask, split")
    required = [c if c != LABEL else label_column for c in REQUIRED_COLUMNS]
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} not found") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ManifestError(f"manifest {path} cannot be read as CSV: {err}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing_columns = [c + (" (the label column)" if c == label_column != LABEL else "") for c in required
                       if c not in raw.columns]
    if missing_columns:
        raise ManifestError(f"manifest {path}: missing required column(s) {', '.join(missing_columns)} "
                            f"(found: {', '.join(raw.columns)}; required: {', '.join(required)})")
    if not len(raw):
        raise ManifestError(f"manifest {path} lists no cases")
    modalities = _modalities(raw.columns, path)

    problems: list[str] = []
    ids = raw["case_id"].str.strip()
    rows_without_id = [str(i + 2) for i in np.flatnonzero(ids == "")]  # +2: header line, 1-based lines
    if rows_without_id:
        problems.append(f"empty case_id on line(s) {listing(rows_without_id)}")
    duplicated = sorted(set(ids[ids.duplicated() & (ids != "")]))
    if duplicated:
        problems.append(f"duplicate case_id(s) {listing(duplicated)}")

    folder = path.resolve().parent
    resolved: dict[str, list[str]] = {"image": [], "mask": []}
    missing_files: list[str] = []
    for case, image, mask in zip(ids, raw["image"].str.strip(), raw["mask"].str.strip()):
        for kind, value in (("image", image), ("mask", mask)):
            full = folder / value if value else None
            resolved[kind].append(str(full.resolve()) if full else "")
            if full is None:
                missing_files.append(f"{case} {kind} (no path given)")
            elif not full.exists():
                missing_files.append(f"{case} {kind} {full}")
    other_paths = {}
    for modality in modalities:
        other_paths.update(_modality_paths(raw, ids, modality, folder, missing_files, problems))
    if BODY_MASK in raw.columns:
        other_paths[BODY_MASK] = _body_mask_paths(raw, ids, folder, missing_files, problems)
    if missing_files:
        problems.append(f"{len(missing_files)} missing file(s): {listing(missing_files)}")

    labels = raw[label_column].str.strip()
    numeric_labels = pd.to_numeric(labels.where(labels != ""), errors="coerce")
    bad_labels = (labels != "") & ~numeric_labels.isin([0, 1])
    if bad_labels.any():
        problems.append(f"label column {label_column!r} must be 0, 1 or empty (unknown): " + listing(
            [f"{c}={v!r}" for c, v in zip(ids[bad_labels], labels[bad_labels])]))

    splits = raw["split"].str.strip().str.lower()
    bad_splits = (splits != "") & ~splits.str.match(SPLIT_PATTERN)
    if bad_splits.any():
        problems.append("split must be train, test, test2, ... or empty: " + listing(
            [f"{c}={v!r}" for c, v in zip(ids[bad_splits], raw["split"][bad_splits])]))
    if problems:
        raise ManifestError(f"manifest {path}: " + "; ".join(problems))

    df = pd.DataFrame({
        "image": resolved["image"],
        "mask": resolved["mask"],
        "label": numeric_labels.astype("Int64").array,
        "split": splits.where(splits != "", np.nan).astype(object).to_numpy(),
    }, index=pd.Index(ids, name="case_id"))
    for column, values in other_paths.items():
        df[column] = values
    if SITE in raw.columns:
        sites = raw[SITE].str.strip()
        df[SITE] = sites.where(~sites.str.lower().isin(MISSING_TOKENS), np.nan).to_numpy()
    found_warnings, left_out, path_columns = [], {}, []
    for name in raw.columns:
        # an outcome column is never a predictor, nor are the image columns and the site
        if name in REQUIRED_COLUMNS or name == label_column or name in other_paths or name == SITE:
            continue
        values, warning = _clinical_column(raw[name], name, f"manifest {path}")
        not_predictor = _not_a_predictor(values, folder)
        if not_predictor == "paths":
            path_columns.append(name)
            continue
        if not_predictor:
            left_out[name] = not_predictor
            warning = (f"manifest {path}: column {name!r} is left out of the clinical predictors: {not_predictor} "
                       "(an identifier cannot be learned from; remove the column to silence this)")
        else:
            df[name] = values.to_numpy()
        if warning:
            found_warnings.append(warning)
            warnings.warn(warning, ManifestWarning, stacklevel=2)
    if path_columns:
        raise ManifestError(f"manifest {path}: column(s) {', '.join(map(repr, path_columns))} hold file paths, which "
                            "cannot be clinical predictors: name another modality's image and tumour mask "
                            "image_<modality> and mask_<modality> (e.g. image_ct, mask_ct), or remove the column(s)")
    df.attrs["manifest"] = str(path.resolve())
    df.attrs["modalities"] = modalities
    df.attrs["left_out_columns"] = left_out
    df.attrs["label_column"] = label_column
    df.attrs["outcome_columns_ignored"] = [LABEL] if label_column != LABEL and LABEL in raw.columns else []
    df.attrs["warnings"] = found_warnings
    return df


def _modalities(columns, path) -> list[str]:
    """The modalities named by ``image_<modality>``/``mask_<modality>`` columns, in column order; a malformed or
    reserved name, or a mask column without its image column, raises ManifestError."""
    problems, modalities = [], []
    for column in columns:
        if not column.startswith(("image_", "mask_")):
            continue
        match = MODALITY_COLUMN.match(column)
        if not match:
            problems.append(f"{column!r} is not image_<modality> or mask_<modality> with a modality name of lower-case "
                            "letters and digits (e.g. image_ct, mask_mr)")
        elif match.group(2) in RESERVED_MODALITIES:
            problems.append(f"{column!r}: modality name {match.group(2)!r} is taken (the PET is 'image'/'mask'; "
                            f"reserved: {', '.join(sorted(RESERVED_MODALITIES))})")
        elif match.group(1) == "image":
            modalities.append(match.group(2))
    problems += [f"{column!r} has no image column {modality_columns(m)[0]!r}" for column in columns
                 if (m := column[len("mask_"):]) and column.startswith("mask_") and MODALITY_COLUMN.match(column)
                 and m not in RESERVED_MODALITIES and m not in modalities]
    if problems:
        raise ManifestError(f"manifest {path}: " + "; ".join(problems))
    return modalities


def _modality_paths(raw: pd.DataFrame, ids: pd.Series, modality: str, folder: Path, missing_files: list[str],
                    problems: list[str]) -> dict[str, list[str]]:
    """A modality's resolved image and mask paths ("" where the case lacks the modality); files not found go to
    ``missing_files``, an image without its mask (or the reverse) to ``problems``."""
    image_column, mask_column = modality_columns(modality)
    images = raw[image_column].str.strip()
    masks = raw[mask_column].str.strip() if mask_column in raw.columns else pd.Series("", index=raw.index)
    resolved: dict[str, list[str]] = {image_column: [], mask_column: []}
    unpaired = []
    for case, image, mask in zip(ids, images, masks):
        if bool(image) != bool(mask) and mask_column in raw.columns:
            given, absent = (image_column, mask_column) if image else (mask_column, image_column)
            unpaired.append(f"{case} ({given} without {absent})")
        for column, value in ((image_column, image), (mask_column, mask)):
            full = (folder / value).resolve() if value else None
            resolved[column].append(str(full) if full else "")
            if full is not None and not full.exists():
                missing_files.append(f"{case} {column} {full}")
    if unpaired:
        problems.append(f"modality {modality!r}: a case has both its image and its tumour mask or neither (an empty "
                        f"cell: the modality is missing): {listing(unpaired)}")
    return resolved if mask_column in raw.columns else {image_column: resolved[image_column]}


def _body_mask_paths(raw: pd.DataFrame, ids: pd.Series, folder: Path, missing_files: list[str],
                     problems: list[str]) -> list[str]:
    """The resolved body mask paths: every case needs one when the column is given (a model's shells are all
    limited by a body mask or none is); files not found go to ``missing_files``."""
    values = raw[BODY_MASK].str.strip()
    if (values == "").any():
        problems.append(f"{BODY_MASK!r} is empty for {listing(list(ids[values == '']))} (give every case its body "
                        "mask, or remove the column)")
    resolved = [str((folder / v).resolve()) if v else "" for v in values]
    missing_files += [f"{case} {BODY_MASK} {path}" for case, path in zip(ids, resolved)
                      if path and not Path(path).exists()]
    return resolved


def _not_a_predictor(values: pd.Series, folder: Path) -> str | None:
    """Why a clinical column cannot be a predictor: "paths" (its text names files), a reason for an identifier
    (a distinct text for nearly every case), or None."""
    if pd.api.types.is_numeric_dtype(values):
        return None
    text = values.dropna().astype(str)
    if not len(text):
        return None
    looks_like_path = text.str.lower().str.endswith(PATH_SUFFIXES) | text.map(
        lambda v: ("/" in v or "\\" in v) and (folder / v).exists())
    if looks_like_path.mean() >= 0.5:
        return "paths"
    distinct = text.nunique()
    if len(text) >= IDENTIFIER_MIN_CASES and distinct > IDENTIFIER_SHARE * len(text):
        return f"{distinct} distinct values among {len(text)} cases"
    return None


def clinical_columns(df: pd.DataFrame) -> list[str]:
    """The manifest's clinical columns: every column but the required ones, the other modalities' image and mask
    columns, the site and the body mask, in file order."""
    return [c for c in df.columns
            if c not in REQUIRED_COLUMNS and c not in (SITE, BODY_MASK) and not MODALITY_COLUMN.match(c)]


def modalities(df: pd.DataFrame) -> list[str]:
    """The manifest's modalities besides the PET (``image_<modality>`` columns), in column order."""
    return [m.group(2) for c in df.columns if (m := MODALITY_COLUMN.match(c)) and m.group(1) == "image"]


def missing_modalities(row: pd.Series, names) -> list[str]:
    """The modalities of ``names`` a manifest row lacks (an empty image cell)."""
    return [m for m in names if not row.get(modality_columns(m)[0], "")]


def training_cases(cases: pd.DataFrame) -> pd.DataFrame:
    """The cases a model is fit on, and the population habitats learned from: the labelled cases of split
    ``train``. One rule for `train` and `extract`, so both analyse a manifest the same way."""
    return cases[(cases["split"] == "train") & cases["label"].notna()]


def default_cache_dir(manifest) -> Path:
    """Where per-case results are cached unless told otherwise: ``.dpet-cache`` beside the manifest, shared by
    `extract`, `train` and `evaluate`."""
    return Path(manifest).resolve().parent / ".dpet-cache"


def validate_for_training(df: pd.DataFrame, n_folds: int = 5, early_stopping: bool = False) -> None:
    """Raise `ManifestError` when the labelled cases cannot train/evaluate with ``n_folds``-fold stratified CV.

    Rules: there must be labelled ``train`` cases; ``train`` needs both classes and at least ``n_folds`` cases of
    its minority class (so every fold's held-out part holds both classes), one more with ``early_stopping`` (the
    CNN's inner early-stopping split needs a case of each class too); every other labelled split needs both classes
    (an AUC needs both). Unlabelled cases are ignored (they are for prediction only).
    """
    needed = n_folds + 1 if early_stopping else n_folds
    labelled = df[df["label"].notna() & df["split"].notna()]
    problems = []
    if not (labelled["split"] == "train").any():
        problems.append(f"no labelled case in split 'train' (splits found: "
                        f"{', '.join(sorted(map(str, df['split'].dropna().unique()))) or 'none'})")
    for split, rows in labelled.groupby("split", sort=True):
        counts = rows["label"].astype(int).value_counts()
        n_pos, n_neg = int(counts.get(1, 0)), int(counts.get(0, 0))
        if n_pos == 0 or n_neg == 0:
            problems.append(f"split {split!r} has one class only ({n_pos} positive, {n_neg} negative)")
        elif split == "train" and min(n_pos, n_neg) < needed:
            problems.append(f"split 'train' has {len(rows)} labelled cases ({n_pos} positive, {n_neg} negative): "
                            f"{n_folds}-fold cross-validation{' with the CNN' if early_stopping else ''} needs at "
                            f"least {needed} of each class")
    if problems:
        raise ManifestError("cohort cannot be used for training: " + "; ".join(problems))
