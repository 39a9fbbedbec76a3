"""The model bundle: a folder of data files, never code.

Layout::

    bundle.json                    schema_version, created, package versions, the caller's manifest (settings,
                                   feature lists, thresholds, ...), the parts, ``files: {path: sha256}`` and
                                   ``content_sha256`` (of bundle.json's own content)
    estimators/<name>.skops        scikit-learn objects (skops.io; loaded with an explicit trusted-type list)
    tensors/<name>.safetensors     torch tensors (state dicts) via safetensors

Reading runs no code from the bundle (no pickle, no torch.load); a changed or missing file, a file not listed,
an unknown schema version or an untrusted type in a skops file is refused with a BundleError naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..core.errors import BundleError
from ..core.files import plain, sha256_file
from ..core.provenance import package_versions

# 2: the clinical pathway encodes through models.ClinicalEncoder and the feature fusion always exists (version 1's
# clinical pipelines expected text-converted categories from a method that is gone: refused, not mispredicted).
# 3: training_oof_thresholds (nested train_cv thresholds); the fusions are run once per CNN fold model.
# 4: each pathway stored once, the decision fusion rebuilt from its meta-learner. A study bundle's `radiomics_engine`
# (features.radiomics.engine_record) came later within 4: it only adds a check, so a bundle without it still loads
# and predicts, with a note that its engine could not be checked (features.radiomics.check_engine).
# 5: other modalities (modalities, radiomics_<modality> pathways; training_oof may hold null), harmonisation by
# site (the radiomics pathways' site_column and ComBat), the CNN's modality channels.
SCHEMA_VERSION = 5
MANIFEST = "bundle.json"
RESERVED_KEYS = ("schema_version", "created", "versions", "estimators", "tensors", "files", "content_sha256")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Types beyond skops' own defaults that our estimators contain: computed once with
# skops.io.get_untrusted_types on a reference bundle holding every pathway (each classifier), both fusions and
# the selectors (Testing/test_bundle.py recomputes it and fails if a new type appears). Anything else is refused.
TRUSTED_TYPES = (
    "DPETResponseLib.learn.fusion.DecisionFusion",
    "DPETResponseLib.learn.fusion.FeatureFusion",
    "DPETResponseLib.learn.fusion.ScreenedStacker",
    "DPETResponseLib.learn.fusion.TiedLogisticRegression",
    "DPETResponseLib.learn.harmonise.ComBat",
    "DPETResponseLib.learn.pathways.BaselinePathway",
    "DPETResponseLib.learn.pathways.ClinicalEncoder",
    "DPETResponseLib.learn.pathways.ClinicalPathway",
    "DPETResponseLib.learn.pathways.ColumnProbability",
    "DPETResponseLib.learn.pathways.DeepFeaturePathway",
    "DPETResponseLib.learn.pathways.ITHPathway",
    "DPETResponseLib.learn.pathways.RadiomicsPathway",
    "DPETResponseLib.learn.selection.LassoSelector",
    "DPETResponseLib.learn.selection.MRMRSelector",
    "DPETResponseLib.learn.selection.MannWhitneySelector",
    "DPETResponseLib.learn.selection.VarianceCorrelationFilter",
    "numpy.dtype",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
)

@dataclass
class Bundle:
    """A loaded bundle: ``manifest`` (all of bundle.json), ``estimators`` {name: object}, ``tensors``
    {name: {key: torch.Tensor}}."""

    manifest: dict
    estimators: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)
    path: Path | None = None


def _canonical(content: dict) -> bytes:
    return json.dumps(plain(content, nonfinite="keep"), sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()


def _content_sha256(content: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in content.items() if k != "content_sha256"})).hexdigest()


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise BundleError(f"{kind} name {name!r}: use letters, digits, '_', '.', '-' (it becomes a file name)")


def _untrusted(types) -> list[str]:
    return sorted(set(types) - set(TRUSTED_TYPES))


def write_bundle(out_dir, manifest: dict, estimators: dict, tensors: dict | None = None,
                 overwrite: bool = False) -> Path:
    """Write a bundle folder at ``out_dir`` (built in a temporary folder beside it, then renamed).

    ``manifest``: JSON-able settings, feature lists, thresholds, ...; ``estimators``: {name: scikit-learn
    object}; ``tensors``: {name: {key: torch.Tensor}}. An existing bundle is replaced only with
    ``overwrite=True``; a folder that is not a bundle (and not empty) is never replaced.
    """
    import skops.io as sio

    out_dir = Path(out_dir)
    tensors = tensors or {}
    if out_dir.exists():
        if not overwrite:
            raise BundleError(f"{out_dir}: already exists; pass overwrite=True to replace the bundle")
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file()):
            raise BundleError(f"{out_dir}: exists and is not a model bundle; refusing to replace it")
    clash = sorted(set(manifest) & set(RESERVED_KEYS))
    if clash:
        raise BundleError(f"manifest keys {clash} are reserved for the bundle's own bookkeeping")
    for name in estimators:
        _check_name("estimator", name)
    for name in tensors:
        _check_name("tensor group", name)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        (tmp / "estimators").mkdir(parents=True)
        (tmp / "tensors").mkdir()
        content = {"schema_version": SCHEMA_VERSION,
                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "versions": package_versions(), **manifest, "estimators": {}, "tensors": {}, "files": {}}
        for name, estimator in estimators.items():
            rel = f"estimators/{name}.skops"
            sio.dump(estimator, tmp / rel, compression=zipfile.ZIP_DEFLATED)
            untrusted = _untrusted(sio.get_untrusted_types(file=tmp / rel))
            if untrusted:
                raise BundleError(f"estimator {name!r} holds types a bundle may not load: {', '.join(untrusted)}")
            content["estimators"][name] = rel
        for name, group in tensors.items():
            rel = f"tensors/{name}.safetensors"
            _save_tensors(group, tmp / rel, name)
            content["tensors"][name] = rel
        content["files"] = {rel: sha256_file(tmp / rel)
                            for rel in [*content["estimators"].values(), *content["tensors"].values()]}
        try:
            content["content_sha256"] = _content_sha256(content)
            text = json.dumps(plain(content, nonfinite="keep"), indent=1, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise BundleError(f"manifest is not JSON-able (no NaN/inf, no objects): {err}") from None
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _save_tensors(group: dict, path: Path, name: str) -> None:
    import torch
    from safetensors.torch import save_file

    bad = [k for k, v in group.items() if not isinstance(v, torch.Tensor)]
    if bad or not isinstance(group, dict):
        raise BundleError(f"tensor group {name!r}: values must be torch tensors (not: {bad[:5]})")
    # clone: safetensors refuses tensors that share storage (tied weights, views of one buffer).
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in group.items()}, str(path))


def _replace(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temporary folder to ``out_dir``, moving an existing bundle aside until it is done."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_bundle(path) -> Bundle:
    """Load and verify a bundle folder (see the module docstring for what is refused)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    try:
        content = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path}: unreadable ({err})") from None
    if not isinstance(content, dict):
        raise BundleError(f"{manifest_path}: not a JSON object")
    version = content.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: unknown schema version {version!r} (this DPETResponse reads "
                          f"version {SCHEMA_VERSION}; use the release that wrote the bundle)")
    try:
        content_ok = content.get("content_sha256") == _content_sha256(content)
    except (TypeError, ValueError):
        content_ok = False
    if not content_ok:
        raise BundleError(f"{manifest_path}: content checksum mismatch: bundle.json was edited after it was "
                          "written")
    files = content.get("files")
    parts = {"estimators": content.get("estimators"), "tensors": content.get("tensors")}
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in parts.values()):
        raise BundleError(f"{manifest_path}: 'files', 'estimators' and 'tensors' must be objects")
    _verify_files(path, files, parts)
    return Bundle(manifest=content, path=path,
                  estimators={name: _load_estimator(path / rel) for name, rel in parts["estimators"].items()},
                  tensors={name: _load_tensors(path / rel) for name, rel in parts["tensors"].items()})


def _verify_files(path: Path, files: dict, parts: dict) -> None:
    for rel in [*parts["estimators"].values(), *parts["tensors"].values()]:
        if rel not in files:
            raise BundleError(f"{path / MANIFEST}: part {rel} has no checksum in 'files'")
    present = set()
    for root, dirs, names in os.walk(path):
        for entry in [*dirs, *names]:
            if Path(root, entry).is_symlink():
                raise BundleError(f"{Path(root, entry)}: a bundle holds no symbolic links")
        present |= {Path(root, n).relative_to(path).as_posix() for n in names}
    present.discard(MANIFEST)
    unlisted = sorted(present - set(files))
    if unlisted:
        raise BundleError(f"{path}: file(s) not listed in bundle.json: {', '.join(unlisted)} (a bundle holds "
                          "only the files it lists; remove them)")
    for rel, digest in files.items():
        target = path / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise BundleError(f"{path / MANIFEST}: file path {rel!r} points outside the bundle")
        if not target.is_file():
            raise BundleError(f"{target}: missing (listed in bundle.json)")
        if sha256_file(target) != digest:
            raise BundleError(f"{target}: checksum mismatch: the file changed after the bundle was written")


def _load_estimator(path: Path):
    import skops.io as sio

    try:
        untrusted = _untrusted(sio.get_untrusted_types(file=path))
    except Exception as err:  # any failure to parse the file is a broken bundle
        raise BundleError(f"{path}: not a readable skops file ({err})") from None
    if untrusted:
        raise BundleError(f"{path}: untrusted types, refused: {', '.join(untrusted)}")
    try:
        return sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as err:
        raise BundleError(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from None


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:
        raise BundleError(f"{path}: not a readable safetensors file ({err})") from None
