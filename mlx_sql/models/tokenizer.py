"""The tokenizer a recipe's model uses, without loading its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.sources import resolve_model_path
from mlx_sql.recipe import ModelConfig


def load_tokenizer(cfg: ModelConfig) -> Any:
    """mlx-lm's tokenizer wrapper for the model (GGUF sources are imported, and cached, first)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    location = resolve_model_path(cfg)
    try:
        return mlx_load_tokenizer(Path(location))
    except Exception as exc:  # hub errors, missing files, bad JSON: all mean "no tokenizer here"
        raise MlxSqlError(f"cannot load the tokenizer: {type(exc).__name__}: {exc}".splitlines()[0],
                          location) from None
