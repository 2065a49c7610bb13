"""GGUF → MLX: turn a llama.cpp / Ollama model file into a folder `mlx_lm.load` opens.

Weights are dequantized with the `gguf` package's numpy kernels, renamed to the
HF names mlx-lm expects, and un-done where llama.cpp's converter changed them on
the way in (llama's rotary q/k row order, Gemma's `1 + w` norms). The tokenizer
is rebuilt from the file's metadata. The result is written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_dir
from mlx_sql.models.gguf_names import GEMMA_FAMILY, MODEL_TYPES, gguf_to_hf, is_gemma_norm, rotary_unpermute

IGNORED_TENSORS = {"rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"}
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class ImportResult:
    out_dir: Path
    architecture: str
    n_tensors: int
    seconds: float


def supported_types() -> set:
    from gguf import GGMLQuantizationType as Q

    return {Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K}


def open_gguf(path: str | Path):
    """A GGUFReader, or a one-line error for a missing, truncated or corrupt file."""
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise MlxSqlError("GGUF file not found", path)
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise MlxSqlError("not a GGUF file (bad magic bytes)", path)
    try:
        return GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors... on damaged files
        raise MlxSqlError(f"corrupt or truncated GGUF ({type(exc).__name__}: {exc})".splitlines()[0], path) from None


_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value types


def gguf_header_string(path: str | Path, key: str) -> str:
    """One string of a GGUF file's header, read key by key up to it: `GGUFReader` parses every field first,
    a 150,000-token vocabulary included (~10 s for Qwen2.5), to answer what the first key already says."""
    import struct

    path = Path(path)
    if not path.is_file():
        raise MlxSqlError("GGUF file not found", path)
    with open(path, "rb") as f:
        def read(n: int) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise MlxSqlError("corrupt or truncated GGUF (its header ends early)", path)
            return data

        def skip(kind: int) -> None:
            if kind == 8:
                f.seek(struct.unpack("<Q", read(8))[0], 1)
            elif kind == 9:
                inner, count = struct.unpack("<IQ", read(12))
                if inner in _SCALAR_SIZES:
                    f.seek(_SCALAR_SIZES[inner] * count, 1)
                else:
                    for _ in range(count):
                        skip(inner)
            elif kind in _SCALAR_SIZES:
                f.seek(_SCALAR_SIZES[kind], 1)
            else:
                raise MlxSqlError(f"corrupt GGUF (unknown value type {kind})", path)

        if read(4) != b"GGUF":
            raise MlxSqlError("not a GGUF file (bad magic bytes)", path)
        _version, _tensors, kv_count = struct.unpack("<IQQ", read(20))
        for _ in range(kv_count):
            name = read(struct.unpack("<Q", read(8))[0]).decode("utf-8", errors="replace")
            kind = struct.unpack("<I", read(4))[0]
            if name == key and kind == 8:
                return read(struct.unpack("<Q", read(8))[0]).decode("utf-8", errors="replace")
            skip(kind)
    return ""


def gguf_architecture(path: str | Path) -> str:
    """general.architecture of a GGUF file (without reading its vocabulary)."""
    return gguf_header_string(path, "general.architecture")


def read_metadata(reader) -> dict[str, Any]:
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def build_config(md: dict[str, Any], tensor_names: set[str], path: Path) -> dict[str, Any]:
    arch = md.get("general.architecture")
    if arch not in MODEL_TYPES:
        raise MlxSqlError(f"architecture {arch!r} is not supported (supported: {', '.join(MODEL_TYPES)})", path)

    def get(key: str, default: Any = None) -> Any:
        value = md.get(f"{arch}.{key}", default)
        if value is None:
            raise MlxSqlError(f"missing metadata key {arch}.{key}", path)
        return value

    n_head = get("attention.head_count")
    config: dict[str, Any] = {
        "model_type": MODEL_TYPES[arch],
        "hidden_size": get("embedding_length"),
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": get("attention.head_count_kv", n_head),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": get("context_length", 4096),
        "vocab_size": len(md["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if f"{arch}.attention.key_length" in md:
        config["head_dim"] = md[f"{arch}.attention.key_length"]
    if arch == "gemma3":
        head_dim = config.setdefault("head_dim", config["hidden_size"] // n_head)
        pattern = md.get("gemma3.attention.sliding_window_pattern")
        if isinstance(pattern, list) and False in pattern:  # per-layer "is sliding" flags: global every Nth layer
            pattern = pattern.index(False) + 1
        config.update(sliding_window=get("attention.sliding_window", 512),
                      sliding_window_pattern=pattern if isinstance(pattern, int) else 6,
                      query_pre_attn_scalar=head_dim, rope_local_base_freq=10000.0)
        factor = md.get("gemma3.rope.scaling.factor")
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(factor)} if factor else None
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        if f"tokenizer.ggml.{key}" in md:
            config[key.replace("padding", "pad")] = int(md[f"tokenizer.ggml.{key}"])
    return config


def dequantize(tensor) -> np.ndarray:
    """A tensor as float32 in row-major HF orientation (GGUF lists dimensions innermost first)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize as gguf_dequantize

    if tensor.tensor_type not in supported_types():
        raise MlxSqlError(f"tensor {tensor.name}: type {tensor.tensor_type.name} is not supported")
    shape = tuple(int(d) for d in reversed(tensor.shape))
    if tensor.tensor_type in (Q.F32, Q.F16):
        data = np.asarray(tensor.data, dtype=np.float32)
    else:
        data = gguf_dequantize(tensor.data, tensor.tensor_type)
    return data.reshape(shape).astype(np.float32, copy=False)


def convert_weights(reader, config: dict[str, Any], arch: str, path: Path) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        if tensor.name in IGNORED_TENSORS:
            continue
        hf_name = gguf_to_hf(tensor.name, arch)
        if hf_name is None:
            raise MlxSqlError(f"tensor {tensor.name}: no known {arch} weight by that name", path)
        try:
            w = dequantize(tensor)
        except MlxSqlError as exc:
            raise MlxSqlError(str(exc), path) from None
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config["num_attention_heads"] if "q_proj" in hf_name else config["num_key_value_heads"]
            w = rotary_unpermute(w, heads)
        if arch in GEMMA_FAMILY and is_gemma_norm(hf_name):
            w = w - 1.0
        weights[hf_name] = w
    return weights


def build_tokenizer(md: dict[str, Any], path: Path):
    """A transformers fast tokenizer rebuilt from the file's tokenizer metadata."""
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer

    if "tokenizer.ggml.tokens" not in md:
        raise MlxSqlError("no tokenizer in this GGUF (tokenizer.ggml.tokens missing)", path)
    fields = {name: md[f"tokenizer.{key}"] for key, name in GGUF_TOKENIZER_MAPPING["tokenizer"].items()
              if f"tokenizer.{key}" in md}
    try:
        backend, _ = convert_gguf_tokenizer(md["general.architecture"], fields)
    except Exception as exc:
        raise MlxSqlError(f"cannot rebuild the tokenizer ({type(exc).__name__}: {exc})".splitlines()[0], path) from None
    tokens = md["tokenizer.ggml.tokens"]
    special = {name: tokens[int(md[f"tokenizer.ggml.{key}"])]
               for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                                 ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id"))
               if f"tokenizer.ggml.{key}" in md}
    add_bos = md.get("tokenizer.ggml.add_bos_token", md.get("tokenizer.ggml.model") == "llama")
    if add_bos and "bos_token" in special:
        # llama.cpp prepends BOS for these models; without it Gemma's output degenerates.
        from tokenizers import processors

        bos, bos_id = special["bos_token"], int(md["tokenizer.ggml.bos_token_id"])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, bos_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **special)
    if md.get("tokenizer.chat_template"):
        tokenizer.chat_template = md["tokenizer.chat_template"]
    return tokenizer


def import_gguf(path: str | Path, out_dir: str | Path, dtype: str = "float32") -> ImportResult:
    """Convert `path` into an mlx-lm model folder at `out_dir` (replaced only once complete)."""
    import mlx.core as mx

    if dtype not in DTYPES:
        raise MlxSqlError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    start = time.perf_counter()
    path, out_dir = Path(path), Path(out_dir)
    reader = open_gguf(path)
    md = read_metadata(reader)
    arch = md.get("general.architecture", "?")
    config = build_config(md, {t.name for t in reader.tensors}, path)
    tokenizer = build_tokenizer(md, path)
    weights = convert_weights(reader, config, arch, path)
    target = getattr(mx, dtype)

    with atomic_dir(out_dir) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"),
                            {k: mx.array(v).astype(target) for k, v in weights.items()}, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "gguf_source.json").write_text(json.dumps({"gguf": str(path.resolve()), "dtype": dtype,
                                                          "name": md.get("general.name")}, indent=2))
    return ImportResult(out_dir, arch, len(weights), time.perf_counter() - start)
