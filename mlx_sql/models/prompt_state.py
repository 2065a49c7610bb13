"""Saved prompt prefixes: a database's schema computed by one process and loaded by the next.

A one-shot `mlx-sql ask` would otherwise compute the same schema prefix on every call (seconds on a CPU).
Each decoder saves the keys and values of a prefix in its own format (llama.cpp's sequence state, MLX's
safetensors) under the cache folder, named by the model's identity and the prefix's tokens; a file that does
not load is ignored and the prefix computed afresh. Only the most recently used few are kept.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mlx_sql.fileio import cache_root

MIN_SAVED_PREFIX = 128  # shorter prefixes are computed faster than a file is read
MAX_SAVED_PREFIXES = 32  # a few MB each (one schema's keys and values)


def state_path(kind: str, model_id: str, prefix: Sequence[int], suffix: str) -> Path | None:
    """Where the state of `prefix` under this model goes, or None when it is not worth saving."""
    if not model_id or len(prefix) < MIN_SAVED_PREFIX:
        return None
    key = hashlib.sha256(model_id.encode() + np.asarray(prefix, dtype=np.int32).tobytes()).hexdigest()
    return cache_root() / kind / f"{key[:32]}{suffix}"


def keep_recent(folder: Path, suffix: str) -> None:
    """Drop all but the most recently used saved states in `folder`."""
    files = sorted(folder.glob(f"*{suffix}"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[MAX_SAVED_PREFIXES:]:
        old.unlink(missing_ok=True)
