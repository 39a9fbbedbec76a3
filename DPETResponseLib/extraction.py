"""Features of a cohort: the per-case analysis (`features.analysis`) run over a manifest by the cohort runner,
with the population habitats learned first on the training cases. `train`, `evaluate` and `dpet-response extract`
all build their tables here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .cohort import CohortError, CohortResult, run_cohort
from .core.errors import InputError
from .core.files import write_text
from .core.provenance import package_versions
from .features.analysis import (
    SUV_RECORD,
    analyse_case,
    analysis_code_version,
    check_settings,
    habitat_supervoxels,
    population_habitats,
    resolve_settings,
)
from .io.manifest import clinical_columns, default_cache_dir, read_manifest, training_cases
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


def feature_table(cases: pd.DataFrame, analysis: dict, cache_dir, jobs: int = 1, scheduler=None,
                  progress: bool = True):
    """Per-case features (cached) joined with the manifest's clinical columns; failed cases are reported and
    dropped. Returns ``(table, errors, suv)``, ``suv`` each case's SUV conversion record (`io.suv`)."""
    result = run_cohort(cases, analyse_case, resolve_settings(analysis), cache_dir, jobs=jobs, scheduler=scheduler,
                        progress=progress, task_name="analyse_case")
    if len(result.errors):
        log.warning("%d case(s) failed and are left out:\n%s", len(result.errors),
                    "\n".join(f"  {row.case_id}: {row.message}" for row in result.errors.itertuples()))
    table, suv = suv_records(result.table.drop(columns=[c for c in ("warnings",) if c in result.table.columns]))
    table = table.apply(pd.to_numeric, errors="coerce")
    clinical = cases.loc[table.index, clinical_columns(cases)]
    return pd.concat([table, clinical], axis=1), result.errors, suv


def run_extract(manifest, out_csv, params=None, jobs: int = 1, scheduler=None, cache_dir=None,
                strict: bool = False, progress: bool = True, analysis: dict | None = None) -> CohortResult:
    """`dpet-response extract`: per-case features of every manifest case (`features.analysis.analyse_case`), written to
    ``out_csv`` (features + the manifest's clinical columns), ``<out>.errors.csv`` and ``<out>.json`` (versions,
    settings, counts). ``analysis``: analysis settings as `train` takes them (``params`` sets their
    ``radiomics_params``). The cache defaults to `io.manifest.default_cache_dir`, the one `train` uses."""
    cases = read_manifest(manifest)
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
        result = run_cohort(cases, analyse_case, settings, cache_dir, jobs=jobs, scheduler=scheduler,
                            strict=strict, progress=progress, task_name="analyse_case")
        failure = None
    except CohortError as err:
        result, failure = err.result, err
    features, suv = suv_records(result.table)
    table = pd.concat([features, cases.loc[features.index, clinical_columns(cases)]], axis=1)
    if len(result.table):
        write_text(out_csv, table.to_csv())
    write_text(out_csv.with_suffix(".errors.csv"), result.errors.to_csv(index=False))
    sidecar = {
        "manifest": str(Path(manifest).resolve()), "features": str(out_csv.resolve()), "cache": str(cache_dir),
        "versions": package_versions(), "settings": settings, "jobs": jobs, "scheduler": scheduler,
        "counts": {"cases": result.n_cases, "computed": result.n_computed, "cached": result.n_cached,
                   "failed": result.n_failed, "warnings": len(result.warnings)},
        "seconds": round(result.seconds, 2),
        "suv_conversion": {"rules": rule_counts(suv), "cases": suv},
    }
    write_text(out_csv.with_suffix(".json"), json.dumps(sidecar, indent=2, default=str))
    if failure is not None:
        raise failure
    return result
