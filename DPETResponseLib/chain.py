"""A model chain (HER2-MAP): a bundle trained for one endpoint (e.g. HER2 status) supplies its probability as a
clinical column of a manifest for another endpoint (pCR), without leakage.

The rule, per case of the manifest: a case the upstream bundle was trained on gets its out-of-fold probability
(`StudyModel.oof_`: from a model that never saw the case's upstream label); every other case gets the upstream
ensemble's prediction, computed as `evaluate` computes it for held-out cases. A new patient is never a training
case: `predict` the upstream bundle and pass its probability with ``--clinical``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .core.errors import DPETError, ManifestError, unknown_names_error
from .core.files import sha256_file, write_json, write_text
from .core.names import BODY_MASK, modality_columns
from .core.provenance import package_versions
from .io.manifest import LABEL, clinical_columns, modalities, read_manifest
from .protocol import _body_masks, _cache, _model_images, label_column_of
from .study.model import StudyModel

log = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".chain.json"
SOURCES = ("oof", "ensemble", "failed")  # how a case's probability was obtained ("failed": its analysis failed)


def sidecar_path(manifest) -> Path:
    """``new_manifest.csv`` -> ``new_manifest.chain.json``: where `add_upstream_column` records the chain."""
    return Path(manifest).with_suffix(SIDECAR_SUFFIX)


def upstream_predictions(bundle, manifest, model: str = "fusion_decision", label_column: str = LABEL,
                         cache_dir=None, jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """The upstream bundle's ``model`` probability for every case of ``manifest`` (whose outcome is
    ``label_column``): columns ``probability`` and ``source`` (`SOURCES`), index ``case_id`` in manifest order.

    ``attrs["upstream"]`` records the bundle (path, sha256 of its bundle.json, which lists every other file's
    sha256, its label column, the model), ``attrs["image_check"]`` the cases whose OOF value rests on other images
    (`_different_images`). Refused: a model the bundle lacks; an upstream bundle trained on ``label_column`` or
    using it as a clinical predictor (its probabilities would carry the downstream outcome)."""
    upstream = StudyModel.load(bundle)
    cases = read_manifest(manifest, label_column=label_column)
    if model not in upstream.model_names:
        raise unknown_names_error(f"model of bundle {bundle}", {model}, upstream.model_names)
    upstream_label = label_column_of(upstream)
    if upstream_label == label_column:
        raise DPETError(f"bundle {bundle} was trained on {upstream_label!r}, the outcome of {manifest}: a model's own "
                        "endpoint is no input to a model of that endpoint (leakage by construction); chain a bundle "
                        "trained on another column (train --label-column NAME)")
    if label_column in upstream.clinical_columns:
        raise DPETError(f"bundle {bundle} uses {label_column!r}, the outcome of {manifest}, as a clinical predictor: "
                        f"its probabilities carry that outcome; retrain it on a manifest without {label_column!r}")
    oof = cases.index.isin(upstream.oof_.index)
    probability = pd.Series(np.nan, index=cases.index)
    source = pd.Series("failed", index=cases.index, dtype=object)
    probability[oof] = upstream.oof_.loc[cases.index[oof], model].to_numpy()
    source[oof] = "oof"
    # The upstream's features from the body masks only where it was trained with them.
    upstream.require_body_masks(upstream.body_mask and BODY_MASK in cases.columns, f"manifest {manifest}")
    others = cases[~oof].drop(columns=[] if upstream.body_mask else [BODY_MASK], errors="ignore")
    if len(others):
        from .extraction import feature_table

        X, _, _ = feature_table(others, upstream.config.analysis, _cache(cache_dir, manifest), jobs=jobs,
                                progress=progress, modality_names=upstream.modalities)
        missing = [c for c in upstream.clinical_columns if c not in X.columns]
        if missing:
            log.warning(f"{manifest} lacks the upstream bundle's clinical column(s) {', '.join(missing)}: imputed "
                        "from its training data")
            X = X.assign(**{c: np.nan for c in missing})
        images, masks, modality_images = _model_images(upstream, others.loc[X.index])
        probability[X.index] = upstream.predict_proba(X, images, masks, modality_images, body_masks=_body_masks(
            upstream, others.loc[X.index], images))[model]
        source[X.index] = "ensemble"
    if upstream_label in clinical_columns(cases):
        log.warning(f"{manifest} also holds {upstream_label!r}, the upstream outcome: a downstream model will use it "
                    "as a clinical predictor; remove it if new patients will not have it")
    out = pd.DataFrame({"probability": probability.astype(float), "source": source})
    out.attrs["upstream"] = {"bundle": str(Path(bundle).resolve()), "sha256": _bundle_sha256(bundle),
                             "content_sha256": upstream.manifest_.get("content_sha256"),
                             "label_column": upstream_label, "model": model,
                             "training_manifest": upstream.manifest_.get("training", {}).get("manifest"),
                             "n_training_cases": int(len(upstream.oof_))}
    out.attrs["image_check"] = _different_images(upstream, cases[oof])
    log.info(f"upstream {model} probabilities: " + ", ".join(f"{n} {s}" for s, n in source.value_counts().items()))
    return out


def _bundle_sha256(bundle) -> str:
    from .study.bundle import MANIFEST

    return sha256_file(Path(bundle) / MANIFEST)


def _different_images(upstream: StudyModel, cases: pd.DataFrame) -> dict:
    """The upstream training cases in ``cases`` whose image or mask is not the one the upstream trained on: not the
    same path, and not a file of the same sha256 (a DICOM folder is compared by its path only). Warned, not refused:
    their OOF values are the upstream's predictions from its own images."""
    path = upstream.manifest_.get("training", {}).get("manifest")
    check = {"training_manifest": path, "compared": 0, "differ": []}
    if not len(cases):
        return check
    try:
        if path is None:
            raise DPETError("the bundle does not record its training manifest")
        trained = read_manifest(path, label_column=label_column_of(upstream))
    except DPETError as err:
        log.warning(f"cannot check that {len(cases)} upstream training case(s) have the images it trained on: {err}")
        return {**check, "error": str(err)}
    shared = cases.index.intersection(trained.index)
    for case in shared:
        if any(not _same_file(cases.at[case, kind], trained.at[case, kind]) for kind in ("image", "mask")):
            check["differ"].append(str(case))
    check["compared"] = int(len(shared))
    if check["differ"]:
        log.warning(f"{len(check['differ'])} case(s) share an id with an upstream training case but not its image or "
                    f"mask: {', '.join(check['differ'])}; they get that training case's out-of-fold probability")
    return check


def _same_file(a: str, b: str) -> bool:
    a, b = Path(a), Path(b)
    return a == b or (a.is_file() and b.is_file() and sha256_file(a) == sha256_file(b))


def add_upstream_column(bundle, manifest, out_manifest, column: str = "her2_prob", model: str = "fusion_decision",
                        label_column: str = LABEL, cache_dir=None, jobs: int = 1, progress: bool = True) -> Path:
    """Write ``manifest`` to ``out_manifest`` with one more clinical column, ``column``: `upstream_predictions`
    (empty where a case's analysis failed), and absolute image and mask paths, the other modalities' too (it works
    from any folder). The sidecar (`sidecar_path`) records the upstream bundle and its sha256, the model, and each
    case's probability and source. Returns ``out_manifest``."""
    manifest, out_manifest = Path(manifest), Path(out_manifest)
    if out_manifest.resolve() == manifest.resolve():
        raise DPETError(f"{out_manifest}: write the chained manifest to a new file, not over {manifest}")
    raw = pd.read_csv(manifest, dtype=str, keep_default_na=False, skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    if column in raw.columns:
        raise ManifestError(f"manifest {manifest} already has a column {column!r}: name the upstream column "
                            "otherwise (--column NAME)")
    predictions = upstream_predictions(bundle, manifest, model=model, label_column=label_column, cache_dir=cache_dir,
                                       jobs=jobs, progress=progress)
    cases = read_manifest(manifest, label_column=label_column)
    ids = raw["case_id"].str.strip()
    paths = ["image", "mask", *(c for m in modalities(cases) for c in modality_columns(m) if c in cases.columns),
             *([BODY_MASK] if BODY_MASK in cases.columns else [])]
    for path_column in paths:  # resolved by read_manifest ("" where a case lacks a modality)
        raw[path_column] = cases.loc[ids, path_column].to_numpy()
    raw[column] = predictions.loc[ids, "probability"].to_numpy()
    write_text(out_manifest, raw.to_csv(index=False))
    write_json(sidecar_path(out_manifest), {
        "manifest": str(out_manifest.resolve()), "column": column,
        "source_manifest": {"path": str(manifest.resolve()), "sha256": sha256_file(manifest),
                            "label_column": label_column},
        "upstream": predictions.attrs["upstream"], "image_check": predictions.attrs["image_check"],
        "counts": {s: int((predictions["source"] == s).sum()) for s in SOURCES},
        "cases": {str(case): {"source": row.source, "probability": row.probability}
                  for case, row in predictions.iterrows()},
        "versions": package_versions(),
    })
    return out_manifest
