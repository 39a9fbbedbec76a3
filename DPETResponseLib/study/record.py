"""What an evaluation rests on: the bundle, the cohorts and the image-analysis settings, as metrics.json's `run` and
`provenance` blocks. The report and the reporting checklists (`reporting.checklist`) are written from these alone,
so a report rebuilt from its folder says the same."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from ..core.files import sha256_file
from ..core.provenance import package_versions
from ..features.analysis import radiomics_extractor, resolve_settings
from ..io.manifest import clinical_columns
from .model import StudyModel

#: Feature-table prefixes (DEVELOPERS.md, "The per-case feature table") -> the input group they belong to.
INPUT_GROUPS = {"pet_": "PET metrics", "whole_": "radiomics (whole tumour)", "high_": "radiomics (high uptake)",
                "low_": "radiomics (low uptake)", "sub_": "habitat composition", "ith_": "ITH score"}


def _input_groups(columns: list[str], clinical: list[str]) -> dict[str, int]:
    groups = Counter()
    for column in columns:
        group = next((g for prefix, g in INPUT_GROUPS.items() if column.startswith(prefix)), None)
        groups[group or ("clinical" if column in clinical else "other")] += 1
    return dict(groups)


def _split_counts(cases: pd.DataFrame, analysed: set[str], failed: dict[str, str]) -> dict:
    """Per split: cases listed in the manifest, labelled, analysed, failed (with the reason) and clinical values
    missing per column."""
    out = {}
    clinical = clinical_columns(cases)
    for split, rows in cases.groupby(cases["split"].fillna("").astype(str)):
        labelled = rows[rows["label"].notna()]
        out[split or "(none)"] = {
            "listed": int(len(rows)), "labelled": int(len(labelled)),
            "events": int(labelled["label"].astype(int).sum()),
            "analysed": int(sum(c in analysed for c in labelled.index)),
            "failed": {c: failed[c] for c in labelled.index if c in failed},
            "clinical_missing": {c: int(labelled[c].isna().sum()) for c in clinical},
        }
    return out


def run_record(model: StudyModel, bundle, manifest, cases: pd.DataFrame, analysed, errors: pd.DataFrame,
               n_boot: int) -> dict:
    """The `run` block: the bundle (checksum, versions it was trained with, its training cohort, input columns),
    the evaluation (manifest and its checksum, versions now, bootstrap size) and per-split case flow."""
    m = model.manifest_
    failed = dict(zip(errors["case_id"].astype(str), errors["message"].astype(str))) if len(errors) else {}
    deep = m.get("deep_config") or {}
    return {
        "bundle": {"path": str(Path(bundle).resolve()), "content_sha256": m.get("content_sha256"),
                   "schema_version": m.get("schema_version"), "created": m.get("created"),
                   "versions": m.get("versions", {}), "training": m.get("training", {}),
                   "models": list(model.model_names), "clinical_columns": list(model.clinical_columns),
                   "n_input_columns": len(m.get("columns", [])),
                   "input_groups": _input_groups(m.get("columns", []), list(model.clinical_columns)),
                   "deep": {**deep.get("config", {}), "fold_val_auc": deep.get("fold_val_auc")} if deep else None},
        "evaluation": {"manifest": str(Path(manifest).resolve()), "manifest_sha256": sha256_file(manifest),
                       "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "versions": package_versions(), "n_boot": int(n_boot)},
        "cases": _split_counts(cases, set(map(str, analysed)), failed),
    }


def provenance_record(model: StudyModel, cases: pd.DataFrame) -> dict:
    """The `provenance` block (IBSI reporting): radiomics engine, settings, image types and feature classes as
    extracted; habitat method and centroids; ITH settings; how the tumour masks were given; the CNN's input crop."""
    settings = resolve_settings(model.config.analysis)
    radiomics = radiomics_extractor(settings["radiomics_params_text"]).settings_summary()
    radiomics["parameter_file"] = settings["radiomics_params"] or "packaged default (radiomics_pet.yaml)"
    masks = Counter(_mask_format(p) for p in cases["mask"].dropna().astype(str))
    deep = (model.manifest_.get("deep_config") or {}).get("config")
    return {
        "radiomics": radiomics,
        "habitats": {"method": settings["habitat_method"], "k": settings["habitat_k"],
                     "local_radius_mm": settings["habitat_radius_mm"], "seed": settings["habitat_seed"],
                     "model": settings["habitat_model"]},
        "ith": {"dims": settings["ith_dims"], "seed": settings["ith_seed"]},
        "segmentation": {"source": "tumour masks given in the manifest's mask column", "formats": dict(masks)},
        "deep_input": {k: deep[k] for k in ("size", "spacing", "suv_clip", "mask_channel", "augment")} if deep
        else None,
        "analysis_code": settings["analysis_code"],
        "frozen_encoder": model.manifest_.get("frozen_encoder"),  # the deep_features pathway's weights and sha256
    }


def _mask_format(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return "DICOM folder"
    name = p.name.lower()
    for suffix, kind in ((".nii.gz", "NIfTI"), (".nii", "NIfTI"), (".nrrd", "NRRD"),
                         (".mha", "MetaImage"), (".dcm", "DICOM (RTSTRUCT or SEG)")):
        if name.endswith(suffix):
            return kind
    return p.suffix or "unknown"
