"""Features of a cohort: the per-case analysis (`features.analysis`) run over a manifest by the cohort runner,
with the population habitats learned first on the training cases; each other modality's analysis on the cases that
have it (NaN features where a case lacks it). `train`, `evaluate` and `dpet-response extract` all build their tables
here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .cohort import CohortError, CohortResult, run_cohort
from .core.errors import InputError
from .core.files import write_text
from .core.names import BODY_MASK, SITE, modality_columns
from .core.provenance import package_versions
from .features.analysis import (
    SUV_RECORD,
    analyse_case,
    analyse_modality_case,
    analysis_code_version,
    check_settings,
    habitat_supervoxels,
    modality_settings,
    pet_task_settings,
    population_habitats,
    resolve_settings,
)
from .io.manifest import clinical_columns, default_cache_dir, modalities, read_manifest, training_cases
from .io.suv import rule_counts

log = logging.getLogger(__name__)


def with_habitat_model(cases, settings: dict | None, cache_dir, jobs: int = 1, scheduler=None,
                       progress: bool = True) -> dict:
    """The full analysis settings (defaults overlaid with ``settings``), with population habitats fitted on
    ``cases`` (the training cases; labels are not read) where ``habitat_method`` is "population" and no
    ``habitat_model`` is given yet. Every key is explicit, so a bundle that stores the result analyses new cases
    as its training cases were analysed, whatever the defaults become. Stage 1 (supervoxels) is a cached cohort
    task; cases it cannot read are left out of the fit (their analysis reports the problem)."""
    merged = check_settings(settings)
    if merged["habitat_method"] != "population" or merged.get("habitat_model"):
        return merged
    # the cache key: every parameter of the stage-1 model (also those not exposed as settings) and the code
    stage1 = {**{k: merged[k] for k in ("habitat_k", "habitat_radius_mm", "habitat_seed")},
              "habitat_params": population_habitats(merged).get_params(), "analysis_code": analysis_code_version()}
    result = run_cohort(cases, habitat_supervoxels, stage1, cache_dir, jobs=jobs, scheduler=scheduler,
                        progress=progress, task_name="habitat_supervoxels")
    rows = [np.asarray(json.loads(text), dtype=float).reshape(-1, 3) for text in result.table.get("supervoxels", [])]
    if not rows:
        raise InputError("population habitats: no training tumour could be read to learn the habitats from")
    model = population_habitats(merged).fit_features([r[:, :2] for r in rows], [r[:, 2] for r in rows])
    return {**merged, "habitat_model": model.to_dict()}


def suv_records(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """``analyse_case`` results split into the feature table and each case's SUV conversion record."""
    if SUV_RECORD not in table.columns:
        return table, {}
    records = {str(case): json.loads(text) for case, text in table[SUV_RECORD].items() if isinstance(text, str)}
    return table.drop(columns=[SUV_RECORD]), records


def modality_features(cases: pd.DataFrame, analysis: dict, names, cache_dir, jobs: int = 1, scheduler=None,
                      progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each modality of ``names``' features (`analyse_modality_case`, cached) on the cases that have it: a table
    (one row per case of ``cases``, NaN where a case lacks the modality) and the failures (``case_id, stage,
    message``, the message naming the modality). A modality without a mask column is read with the PET's mask,
    which must then lie on the modality's grid."""
    tables, errors = [pd.DataFrame(index=cases.index)], []
    for name in names:
        image_column, mask_column = modality_columns(name)
        images = cases[image_column] if image_column in cases else pd.Series("", index=cases.index)
        present = cases[images.fillna("") != ""]
        if not len(present):
            continue
        rows = pd.DataFrame({"image": present[image_column],
                             "mask": present[mask_column if mask_column in present else "mask"]})
        try:
            result = run_cohort(rows, analyse_modality_case, modality_settings(analysis, name), cache_dir, jobs=jobs,
                                scheduler=scheduler, progress=progress, task_name=f"analyse_{name}")
        except CohortError as err:
            result = err.result
        tables.append(result.table.drop(columns=[c for c in ("warnings",) if c in result.table.columns]))
        errors.append(result.errors.assign(message=[f"{name}: {m}" for m in result.errors["message"]]))
    table = pd.concat(tables, axis=1).apply(pd.to_numeric, errors="coerce")
    return table, (pd.concat(errors, ignore_index=True) if errors else pd.DataFrame(
        columns=["case_id", "stage", "message"]))


def _analyse_pet(cases: pd.DataFrame, settings: dict, cache_dir, **run) -> CohortResult:
    """`analyse_case` on every case (cached), with its body mask where the manifest gives them."""
    return run_cohort(cases, analyse_case, pet_task_settings(settings), cache_dir, task_name="analyse_case",
                      inputs=(BODY_MASK,) if BODY_MASK in cases.columns else (), **run)


def feature_table(cases: pd.DataFrame, analysis: dict, cache_dir, jobs: int = 1, scheduler=None,
                  progress: bool = True, modality_names=None):
    """Per-case features (cached; the PET's, then each other modality's, ``modality_names`` defaulting to the
    manifest's) joined with the manifest's clinical columns and its ``site``; a case whose PET or whose given
    modality fails is reported and dropped. Returns ``(table, errors, suv)``, ``suv`` each case's SUV conversion
    record (`io.suv`)."""
    settings = resolve_settings(analysis)
    result = _analyse_pet(cases, settings, cache_dir, jobs=jobs, scheduler=scheduler, progress=progress)
    features, suv = suv_records(result.table.drop(columns=[c for c in ("warnings",) if c in result.table.columns]))
    table, errors = _joined(cases, features.apply(pd.to_numeric, errors="coerce"), result.errors, settings,
                            modalities(cases) if modality_names is None else list(modality_names), cache_dir,
                            jobs=jobs, scheduler=scheduler, progress=progress)
    if len(errors):
        log.warning("%d case(s) failed and are left out:\n%s", len(errors),
                    "\n".join(f"  {row.case_id}: {row.message}" for row in errors.itertuples()))
    return table, errors, suv


def _joined(cases: pd.DataFrame, features: pd.DataFrame, errors: pd.DataFrame, settings: dict, names, cache_dir,
            **run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The PET's ``features`` (one row per analysed case) joined with each modality of ``names``' features
    (`modality_features`) and the manifest's clinical columns and site; a case whose given modality failed is
    dropped and its failure added to the PET's ``errors``. Returns ``(table, errors)``."""
    other, other_errors = modality_features(cases.loc[features.index], settings, names, cache_dir, **run)
    extra = clinical_columns(cases) + ([SITE] if SITE in cases.columns else [])
    table = pd.concat([features, other, cases.loc[features.index, extra]], axis=1)
    table = table.drop(index=[c for c in other_errors["case_id"] if c in table.index])
    return table, (pd.concat([errors, other_errors], ignore_index=True) if len(other_errors) else errors)


def run_extract(manifest, out_csv, params=None, jobs: int = 1, scheduler=None, cache_dir=None,
                strict: bool = False, progress: bool = True, analysis: dict | None = None,
                label_column: str = "label") -> CohortResult:
    """`dpet-response extract`: per-case features of every manifest case (`features.analysis.analyse_case`), written to
    ``out_csv`` (features + the manifest's clinical columns), ``<out>.errors.csv`` and ``<out>.json`` (versions,
    settings, counts). ``analysis``: analysis settings as `train` takes them (``params`` sets their
    ``radiomics_params``). The cache defaults to `io.manifest.default_cache_dir`, the one `train` uses;
    ``label_column`` is the outcome `train` will be given (its labelled train cases learn the habitats)."""
    cases = read_manifest(manifest, label_column=label_column)
    out_csv = Path(out_csv)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(manifest)
    analysis = dict(analysis or {})
    if params:
        analysis["radiomics_params"] = str(params)
    # Population habitats are learned on the cases `train` learns them on (every case where no labelled case is
    # in split train); their centroids go to the sidecar with the other settings.
    training = training_cases(cases)
    settings = resolve_settings(with_habitat_model(training if len(training) else cases, analysis, cache_dir,
                                                   jobs=jobs, scheduler=scheduler, progress=progress))
    try:
        result = _analyse_pet(cases, settings, cache_dir, jobs=jobs, scheduler=scheduler, progress=progress,
                              strict=strict)
        failure = None
    except CohortError as err:
        result, failure = err.result, err
    features, suv = suv_records(result.table)
    table, errors = _joined(cases, features, result.errors, settings, modalities(cases), cache_dir, jobs=jobs,
                            scheduler=scheduler, progress=progress)
    if len(table):
        write_text(out_csv, table.to_csv())
    write_text(out_csv.with_suffix(".errors.csv"), errors.to_csv(index=False))
    sidecar = {
        "manifest": str(Path(manifest).resolve()), "features": str(out_csv.resolve()), "cache": str(cache_dir),
        "versions": package_versions(), "settings": settings, "jobs": jobs, "scheduler": scheduler,
        "counts": {"cases": result.n_cases, "computed": result.n_computed, "cached": result.n_cached,
                   "failed": int(errors["case_id"].nunique()), "warnings": len(result.warnings)},
        "seconds": round(result.seconds, 2),
        "suv_conversion": {"rules": rule_counts(suv), "cases": suv},
    }
    write_text(out_csv.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    if failure is not None:
        raise failure
    return result
