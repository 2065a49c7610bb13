"""LoRA / DoRA / full finetuning on an mlx-lm model, saved in mlx-lm's adapter format.

Layer conversion is mlx-lm's own (`linear_to_lora_layers`), so `mlx_lm.load(base,
adapter_path=...)` rebuilds exactly the model we trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import linear_to_lora_layers

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_path, write_json
from mlx_sql.recipe import TrainConfig

# recipe projection name -> other module names that carry it: phi3 fuses q/k/v and gate/up; Phi-2 calls
# the attention output `dense` and its two-layer MLP `fc1` (up) and `fc2` (down); T5 names its attention
# projections q/k/v/o (self- and cross-attention alike) and its FFN wi (v1.0) or wi_0/wi_1 (gated), wo
FUSED = {"q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
         "o_proj": ("dense", "o"), "gate_proj": ("gate_up_proj", "wi_0"), "up_proj": ("gate_up_proj", "fc1", "wi", "wi_1"),
         "down_proj": ("fc2", "wo")}


def lora_keys(model: nn.Module, targets: list[str]) -> list[str]:
    """Module paths inside a transformer block for the recipe's target projections (over every kind of block:
    a T5 decoder block has a cross-attention its encoder blocks lack)."""
    wanted = set(targets) | {f for t in targets for f in FUSED.get(t, ())}
    keys = {name for layer in model.layers for name, module in layer.named_modules()
            if name.rsplit(".", 1)[-1] in wanted and isinstance(module, (nn.Linear, nn.QuantizedLinear))}
    return sorted(keys)


def adapter_config(model: nn.Module, cfg: TrainConfig, base: str) -> dict[str, Any]:
    num_layers = len(model.layers) if cfg.num_layers == -1 else min(cfg.num_layers, len(model.layers))
    return {
        "fine_tune_type": cfg.method,
        "num_layers": num_layers,
        "lora_parameters": {"rank": cfg.rank, "scale": cfg.alpha / cfg.rank, "dropout": cfg.dropout,
                            "keys": lora_keys(model, cfg.target_modules)},
        "base_model": base,
    }


def apply_adapters(model: nn.Module, config: dict[str, Any]) -> None:
    """Freeze the base and add trainable adapters (or unfreeze the last layers for `full`)."""
    model.freeze()
    if config["fine_tune_type"] == "full":
        for layer in model.layers[-config["num_layers"]:]:
            layer.unfreeze()
        return
    linear_to_lora_layers(model, config["num_layers"], config["lora_parameters"],
                          use_dora=config["fine_tune_type"] == "dora")


def trainable_count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.trainable_parameters()))


def save_adapters(model: nn.Module, folder: Path, config: dict[str, Any]) -> None:
    """adapters.safetensors + adapter_config.json, each replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "adapters.safetensors") as tmp:
        mx.save_safetensors(str(tmp), dict(tree_flatten(model.trainable_parameters())))
    write_json(folder / "adapter_config.json", config)


def load_adapter_config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "adapter_config.json").read_text())


def trained_adapter_config(folder: Path) -> dict[str, Any]:
    """The adapter_config of a folder `mlx-sql train` wrote; fuse and export need its recipe.toml too."""
    if not (folder / "adapter_config.json").is_file() or not (folder / "recipe.toml").is_file():
        raise MlxSqlError("not a trained adapter folder (needs adapter_config.json and recipe.toml)", folder)
    return load_adapter_config(folder)


def load_trained_adapter(model: nn.Module, folder: Path) -> None:
    """Put a trained adapter on `model` (mlx-lm's loader); a damaged or foreign weights file is one line."""
    from mlx_lm.tuner.utils import load_adapters

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file():
        raise MlxSqlError("not an adapter folder (no adapter_config.json)", folder)
    weights = folder / "adapters.safetensors"
    if not weights.is_file():
        raise MlxSqlError("adapters.safetensors is missing: the run saved no adapter yet", folder)
    try:
        load_adapters(model, str(folder))
    except (ValueError, RuntimeError, KeyError, OSError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MlxSqlError(f"the adapter cannot be loaded (damaged or not this model's): {first[:200]}",
                          weights) from None


def start_from_adapter(model: nn.Module, folder: Path) -> None:
    """Set the adapters `apply_adapters` just added to a trained adapter's weights: the same shape, or one line."""
    folder = Path(folder)
    weights = folder / "adapters.safetensors"
    if not weights.is_file():
        raise MlxSqlError("train.init_adapter: no adapters.safetensors in this folder", folder)
    try:
        saved = mx.load(str(weights))
    except (ValueError, RuntimeError, OSError) as exc:
        raise MlxSqlError(f"train.init_adapter: cannot be read: {str(exc).splitlines()[0][:200]}", weights) from None
    own = dict(tree_flatten(model.trainable_parameters()))
    unknown = sorted(set(saved) - set(own))
    missing = sorted(set(own) - set(saved))
    wrong = [k for k in set(saved) & set(own) if saved[k].shape != own[k].shape]
    if unknown or missing or wrong:
        first = (unknown or missing or wrong)[0]
        raise MlxSqlError(f"train.init_adapter: its adapters do not match this run's (train.rank, num_layers, "
                          f"target_modules must be the same; first difference: {first})", folder)
    model.load_weights(list(saved.items()), strict=False)
