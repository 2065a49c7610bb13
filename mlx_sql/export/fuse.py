"""Merge a trained adapter into its base model, into a folder `mlx_lm.load` opens on its own.

The merge is mlx-lm's own (`LoRALinear.fuse`, `DoRALinear.fuse`), so it matches what
mlx-lm does; into a quantized (QLoRA) base it dequantizes, merges and re-quantizes
with the base's settings, or leaves it dequantized with `dequantize=True`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mlx.utils import tree_unflatten

from mlx_sql.fileio import atomic_dir
from mlx_sql.recipe import load_recipe


@dataclass
class FuseResult:
    out_dir: Path
    fused_layers: int
    quantized: bool


def fuse_adapter(adapter_dir: Path, out_dir: Path | None = None, dequantize: bool = False) -> FuseResult:
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model, load_config

    from mlx_sql.models.loading import QUANT_GROUP_SIZE, load_model
    from mlx_sql.train.adapters import load_trained_adapter, trained_adapter_config

    adapter_dir = Path(adapter_dir)
    trained_adapter_config(adapter_dir)
    recipe = load_recipe(adapter_dir / "recipe.toml", check_data=False)
    out_dir = Path(out_dir or adapter_dir / "fused")
    model, tokenizer, base = load_model(recipe.model)
    load_trained_adapter(model, adapter_dir)
    fused = [(name, module.fuse(dequantize=dequantize)) for name, module in model.named_modules()
             if hasattr(module, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    quantized = bool(recipe.model.quantize) and not dequantize
    if recipe.model.quantize and dequantize:
        model = dequantize_model(model)
    config = load_config(Path(base))
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    if quantized:
        config["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": recipe.model.quantize}
    mx.eval(model.parameters())
    from mlx_lm.utils import save_config, save_model

    with atomic_dir(out_dir) as tmp:
        save_model(tmp, model)
        save_config(config, tmp / "config.json")
        tokenizer.save_pretrained(str(tmp))
        for name in ("gguf_source.json", "spiece.model"):
            # the GGUF exporter copies the tokenizer of the file the base came from; T5 keeps its SentencePiece model
            if (Path(base) / name).is_file():
                shutil.copy(Path(base) / name, tmp / name)
    return FuseResult(out_dir, len(fused), quantized)
