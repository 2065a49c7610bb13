"""A trained LoRA adapter alone as a llama.cpp LoRA GGUF, so Ollama can apply it to a base (`ADAPTER`).

Small to ship (megabytes, not the whole model) and the base GGUF stays shared. llama.cpp computes
`W x + alpha / rank * B (A x)`, so alpha is written as mlx-lm's scale × rank; A and B are transposed
to llama.cpp's layout, and llama's q/k rows get the same rotary reordering as the base weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mlx_sql.errors import MlxSqlError
from mlx_sql.export.gguf_writer import ARCH_OF, ExportResult
from mlx_sql.fileio import atomic_path
from mlx_sql.models.gguf_names import hf_to_gguf, rotary_permute
from mlx_sql.train.adapters import trained_adapter_config


def export_lora_gguf(adapter_dir: str | Path, out: str | Path) -> ExportResult:
    import mlx.core as mx
    from gguf import GGUFWriter

    from mlx_sql.models.sources import resolve_model_path
    from mlx_sql.recipe import load_recipe

    adapter_dir, out = Path(adapter_dir), Path(out)
    adapter = trained_adapter_config(adapter_dir)
    if adapter.get("fine_tune_type") != "lora":
        raise MlxSqlError(f"only LoRA adapters have a llama.cpp adapter format ({adapter.get('fine_tune_type')} "
                          "adapters: fuse them and export the whole model)", adapter_dir)
    base_dir = Path(resolve_model_path(load_recipe(adapter_dir / "recipe.toml", check_data=False).model))
    config = json.loads((base_dir / "config.json").read_text())
    arch = ARCH_OF.get(config.get("model_type"))
    if arch is None:
        raise MlxSqlError(f"model_type {config.get('model_type')!r} has no GGUF export", base_dir)
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    params = adapter["lora_parameters"]
    weights = {k: np.array(v.astype(mx.float32)) for k, v in mx.load(str(adapter_dir / "adapters.safetensors")).items()}

    with atomic_path(out) as tmp:
        writer = GGUFWriter(str(tmp), arch)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(params["scale"]) * int(params["rank"]))
        count = 0
        for name in sorted(k for k in weights if k.endswith(".lora_a")):
            module = name[: -len(".lora_a")]
            gguf_name = hf_to_gguf(module + ".weight", arch)
            if gguf_name is None:
                raise MlxSqlError(f"adapter tensor {name}: no GGUF name for {arch}", adapter_dir)
            a = weights[name].T  # (rank, in)
            b = weights[module + ".lora_b"].T  # (out, rank)
            if arch == "llama" and module.endswith(("q_proj", "k_proj")):
                b = rotary_permute(b, heads if module.endswith("q_proj") else kv_heads)
            writer.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
            writer.add_tensor(f"{gguf_name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
            count += 2
        if not count:
            raise MlxSqlError("the adapter holds no LoRA tensors", adapter_dir / "adapters.safetensors")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return ExportResult(out, arch, "lora-f32", count)
