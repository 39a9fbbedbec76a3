"""Files the library writes and reads back: atomic writes, JSON of numpy values, content hashes.

Every file is written to a temporary name in its folder and renamed, so a crash leaves the old file or the new
one, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` on success, remove it on error.

    The temporary name keeps ``path``'s suffixes, so writers that choose the format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    # A fresh name, not a mkstemp file: that would give the result mode 0600 instead of the user's umask.
    tmp = path.parent / f".{path.name[:len(path.name) - len(suffix)]}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def plain(value, nonfinite: str = "null"):
    """``value`` with numpy scalars and arrays, tuples and paths turned into plain JSON types (dict keys into
    strings). ``nonfinite="null"`` writes NaN and infinities as None; ``"keep"`` leaves them for the caller's
    ``json.dumps(allow_nan=...)`` to accept or refuse."""
    if isinstance(value, dict):
        return {str(k): plain(v, nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v, nonfinite) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if nonfinite == "keep" or math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path, value, indent: int | None = 2) -> Path:
    """``plain(value)`` as JSON, written atomically (NaN and infinities as null)."""
    return write_text(path, json.dumps(plain(value), indent=indent))


def sha256_file(path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
