"""The tokenizer a recipe's model uses, when it can be had without loading weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError
from mlx_sql.recipe import ModelConfig


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer (mlx-lm's wrapper around the HF tokenizer) from a local folder or the hub."""
    if not cfg.path:
        raise MlxSqlError("model: only model.path (a folder or hub id) has a tokenizer before import")
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    try:
        return mlx_load_tokenizer(Path(cfg.path))
    except Exception as exc:  # hub errors, missing files, bad JSON: all mean "no tokenizer here"
        raise MlxSqlError(f"cannot load the tokenizer: {type(exc).__name__}: {exc}".splitlines()[0],
                          cfg.path) from None
