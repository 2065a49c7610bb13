"""Load a recipe's model with mlx-lm, at the dtype and quantization the recipe asks for."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.sources import default_dtype, model_folder_config, resolve_model_path, t5_local_folder
from mlx_sql.recipe import ModelConfig

QUANT_GROUP_SIZE = 64


def quantize_base(model: nn.Module, bits: int, group_size: int = QUANT_GROUP_SIZE) -> None:
    """Quantize the linear layers (the base of a QLoRA run) in memory."""

    def eligible(_path: str, module: nn.Module) -> bool:
        return isinstance(module, nn.Linear) and module.weight.shape[-1] % group_size == 0

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=eligible)


def load_model(cfg: ModelConfig) -> tuple[nn.Module, Any, str]:
    """(model, tokenizer, the folder or hub id it came from)."""
    from mlx_lm import load

    location = resolve_model_path(cfg)
    if model_folder_config(location).get("model_type") in ("t5", "mt5"):
        return load_seq2seq(cfg, location)
    try:
        model, tokenizer = load(location)
    except Exception as exc:  # hub, file and config errors from mlx-lm
        raise MlxSqlError(f"cannot load the model: {type(exc).__name__}: {exc}".splitlines()[0], location) from None
    model.set_dtype(getattr(mx, default_dtype(cfg)))
    if cfg.quantize:
        quantize_base(model, cfg.quantize)
    mx.eval(model.parameters())
    return model, tokenizer, location


def load_seq2seq(cfg: ModelConfig, location: str) -> tuple[nn.Module, Any, str]:
    """A T5 model (ours, in models/t5.py) with Hugging Face's tokenizer for it."""
    from mlx_sql.models.t5 import load_t5
    from mlx_sql.models.tokenizer import load_t5_tokenizer

    folder = t5_local_folder(location)
    model = load_t5(folder, default_dtype(cfg))
    if cfg.quantize:
        quantize_base(model, cfg.quantize)
    mx.eval(model.parameters())
    return model, load_t5_tokenizer(folder), str(folder)
