"""MLX model folder → GGUF that llama.cpp (and so Ollama) loads, with its tokenizer and chat template.

Tensor names come from the shared table in `models/gguf_names.py`; the conversions
llama.cpp's own converter applies are redone here (llama's q/k rotary row order,
Gemma's `1 + w` norms, tied embeddings left out). Norms and biases stay float32,
matrices are written as f16, q8_0 or q4_0 (q4_0 keeps the embedding and output at
q8_0, as llama.cpp's quantizer keeps them at higher precision). The tokenizer is
copied from the GGUF the model was imported from when there is one, else converted
from `tokenizer.json` (byte-level BPE, or SentencePiece-style byte-fallback BPE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_path
from mlx_sql.models.gguf_names import (EXPORT_ONLY, GEMMA_FAMILY, MODEL_TYPES, hf_to_gguf, is_gemma_norm,
                                       rotary_permute)

ARCH_OF = {v: k for k, v in {**MODEL_TYPES, **EXPORT_ONLY}.items()}
DTYPES = ("f16", "q8_0", "q4_0")


@dataclass
class ExportResult:
    path: Path
    architecture: str
    dtype: str
    n_tensors: int


def _load_weights(model_dir: Path, config: dict[str, Any]) -> dict[str, np.ndarray]:
    import mlx.core as mx

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise MlxSqlError("no .safetensors weights", model_dir)
    raw: dict[str, Any] = {}
    for f in files:
        raw.update(mx.load(str(f)))
    quant = config.get("quantization") or {}
    out = {}
    for name, w in raw.items():
        if name.endswith((".scales", ".biases")) and name.rsplit(".", 1)[0] + ".weight" in raw:
            continue
        prefix = name.rsplit(".", 1)[0]
        if f"{prefix}.scales" in raw and name.endswith(".weight"):
            w = mx.dequantize(w, raw[f"{prefix}.scales"], raw[f"{prefix}.biases"], quant.get("group_size", 64),
                              quant.get("bits", 4))
        out[name] = np.asarray(w.astype(mx.float32))
    return out


def _tensor_type(name: str, w: np.ndarray, dtype: str):
    from gguf import GGMLQuantizationType as Q

    if w.ndim == 1 or name.endswith("attn_rel_b.weight"):  # T5's position bias: tiny, added to every score
        return Q.F32
    if dtype == "f16" or w.shape[-1] % 32:
        return Q.F16
    if name in ("token_embd.weight", "output.weight"):
        # the output projection decides the next token: llama.cpp would quantize its activations too
        return Q.F16 if dtype == "q8_0" else Q.Q8_0
    return Q.Q4_0 if dtype == "q4_0" else Q.Q8_0


def _add_metadata(writer, arch: str, config: dict[str, Any], dtype: str) -> None:
    from gguf import LlamaFileType

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_name(config.get("_name", arch))
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config.get("max_position_embeddings", 4096))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    if arch == "phi2":  # LayerNorm (mean and bias), not RMSNorm
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-5)))
    else:
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(int(head_dim * config.get("partial_rotary_factor", 1.0)))
    if head_dim != config["hidden_size"] // heads or arch in GEMMA_FAMILY:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch == "gemma3":
        writer.add_sliding_window(config.get("sliding_window", 512))
        pattern = config.get("sliding_window_pattern", 6)
        writer.add_sliding_window_pattern([i % pattern != pattern - 1 for i in range(config["num_hidden_layers"])])
        scaling = config.get("rope_scaling") or {}
        if scaling.get("factor"):
            from gguf import RopeScalingType

            writer.add_rope_scaling_type(RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(scaling["factor"]))
    writer.add_file_type({"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": LlamaFileType.MOSTLY_Q4_0}[dtype])


def _copy_tokenizer_from_gguf(writer, source: Path) -> None:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(source)
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def _vocab_from_json(data: dict, size: int = 0) -> tuple[list[str], set[int], dict[str, int]]:
    """Token strings by id, holes and the rows the embedding has beyond the tokenizer (`size`: Phi-2 has
    51,200 rows for 50,295 tokens) padded as llama.cpp's converter does; special added ids; token -> id."""
    vocab = dict(data["model"]["vocab"])
    for added in data.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [f"[PAD{i}]" for i in range(max(max(vocab.values()) + 1, size))]
    for token, idx in vocab.items():
        tokens[idx] = token
    return tokens, {a["id"] for a in data.get("added_tokens", []) if a.get("special")}, vocab


def _prepends_space(data: dict) -> bool:
    """SentencePiece models differ: Llama/Phi-3 put "▁" before the first word, Gemma does not."""
    parts = [data.get("normalizer") or {}, data.get("pre_tokenizer") or {}]
    for part in list(parts):
        parts += part.get("normalizers", []) + part.get("pretokenizers", [])
    return any((p.get("type") == "Prepend" and p.get("prepend") == "\u2581")
               or (p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never"
                   and p.get("add_prefix_space", True)) for p in parts)


def _sentencepiece_vocab(writer, data: dict, size: int = 0) -> tuple[dict[str, int], bool]:
    """SentencePiece-style BPE (byte fallback, "▁" for spaces) as llama.cpp's "llama" tokenizer.

    llama.cpp merges the adjacent pair whose result has the highest score, Hugging Face the pair with
    the lowest merge rank: so a merged token scores minus its rank, and byte, special and unknown
    tokens get their own token types.
    """
    tokens, special, vocab = _vocab_from_json(data, size)
    rank = {}
    for r, merge in enumerate(data["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    unk = data["model"].get("unk_token")
    types, scores = [], []
    for i, token in enumerate(tokens):
        if token == unk:
            types.append(2)  # UNKNOWN
        elif i in special:
            types.append(3)  # CONTROL
        elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(6)  # BYTE
        elif token.startswith("[PAD"):
            types.append(5)  # UNUSED
        else:
            types.append(1)  # NORMAL
        scores.append(-float(rank[token]) if token in rank else 0.0)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    if unk in vocab:
        writer.add_unk_token_id(vocab[unk])
    writer.add_add_space_prefix(_prepends_space(data))
    return vocab, True


# The Split patterns of byte-level tokenizers llama.cpp knows by name. Its own converter names them by hashing
# a tokenization; the pattern in tokenizer.json says the same without running it.
_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}DIGITS| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
SPLIT_PRE = {_SPLIT.replace("DIGITS", ""): "qwen2",  # Qwen2 / Qwen2.5: one digit per token
             _SPLIT.replace("DIGITS", "{1,3}"): "llama-bpe"}  # Llama 3: up to three


def byte_level_pre(data: dict, source: Path | None = None) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level tokenizer.json. A wrong one still loads, but
    splits text differently (Qwen's digits one by one, GPT-2's in runs) and feeds the model ids it never saw."""
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if kinds.count("Split") == 1 and set(kinds) <= {"Split", "ByteLevel"}:
        pattern = next(p for p in parts if p.get("type") == "Split").get("pattern", {}).get("Regex")
        if pattern in SPLIT_PRE and not any(p.get("use_regex", True) for p in byte_level):
            return SPLIT_PRE[pattern]
    elif kinds == ["ByteLevel"] and byte_level[0].get("use_regex", True):
        return "gpt-2"
    elif kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and byte_level[0].get("use_regex", True):
        return "smollm"  # SmolLM / SmolLM2: digits one by one, then GPT-2's split
    raise MlxSqlError(f"tokenizer.json: pre-tokenizer {' + '.join(map(str, kinds)) or 'none'} has no llama.cpp "
                      "equivalent known here (GPT-2, Qwen2, Llama 3, SmolLM); a GGUF with another would tokenize "
                      "differently from the model", source)


def _byte_level_vocab(writer, data: dict, size: int = 0, source: Path | None = None) -> tuple[dict[str, int], bool]:
    """GPT-2 style byte-level BPE, with special tokens marked as control tokens."""
    pre = byte_level_pre(data, source)
    tokens, special, vocab = _vocab_from_json(data, size)
    real = set(vocab.values())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    # 3 = CONTROL, 1 = NORMAL, 5 = UNUSED (padding)
    writer.add_token_types([3 if i in special else 1 if i in real else 5 for i in range(len(tokens))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])])
    return vocab, False


def _tokenizer_from_json(writer, model_dir: Path, size: int = 0) -> None:
    """The tokenizer from tokenizer.json: byte-level BPE (SmolLM2, Qwen2) or SentencePiece-style BPE
    with byte fallback (Llama/TinyLlama, Phi-3, Gemma), with special tokens and the chat template."""
    data = json.loads((model_dir / "tokenizer.json").read_text())
    if data["model"].get("type") != "BPE":
        raise MlxSqlError(f"{data['model'].get('type')} tokenizers cannot be converted to GGUF (BPE only)",
                          model_dir / "tokenizer.json")
    if data["model"].get("byte_fallback"):
        vocab, default_add_bos = _sentencepiece_vocab(writer, data, size)
    else:
        vocab, default_add_bos = _byte_level_vocab(writer, data, size, model_dir / "tokenizer.json")
    config = json.loads((model_dir / "tokenizer_config.json").read_text()) \
        if (model_dir / "tokenizer_config.json").is_file() else {}
    for key, adder in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                       ("pad_token", writer.add_pad_token_id)):
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        if token in vocab:
            adder(vocab[token])
    writer.add_add_bos_token(bool(config.get("add_bos_token", default_add_bos)))
    template = config.get("chat_template")
    if not template and (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text()
    if template:
        writer.add_chat_template(template)


def add_tensor(writer, gguf_name: str, w: np.ndarray, dtype: str) -> None:
    """One tensor at the type `_tensor_type` picks for it (quantized with the gguf package's own code)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    qtype = _tensor_type(gguf_name, w, dtype)
    if qtype == Q.F32:
        writer.add_tensor(gguf_name, np.ascontiguousarray(w, dtype=np.float32))
    elif qtype == Q.F16:
        writer.add_tensor(gguf_name, np.ascontiguousarray(w, dtype=np.float16))
    else:
        writer.add_tensor(gguf_name, quantize(np.ascontiguousarray(w, dtype=np.float32), qtype), raw_dtype=qtype)


def export_gguf(model_dir: str | Path, out: str | Path, dtype: str = "q8_0") -> ExportResult:
    from gguf import GGUFWriter

    from mlx_sql.models.t5 import is_t5_config

    model_dir, out = Path(model_dir), Path(out)
    if dtype not in DTYPES:
        raise MlxSqlError(f"GGUF type {dtype!r} is not one of {', '.join(DTYPES)}")
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MlxSqlError(f"cannot read config.json: {exc}", model_dir) from None
    if is_t5_config(config):
        from mlx_sql.export.t5_gguf import write_t5_gguf

        weights = _load_weights(model_dir, config)
        with atomic_path(out) as tmp:
            arch, count = write_t5_gguf(model_dir, tmp, config, weights, dtype, add_tensor)
        return ExportResult(out, arch, dtype, count)
    arch = ARCH_OF.get(config.get("model_type"))
    if arch is None:
        raise MlxSqlError(f"model_type {config.get('model_type')!r} has no GGUF export "
                          f"(supported: {', '.join([*MODEL_TYPES.values(), 't5'])})", model_dir)
    weights = _load_weights(model_dir, config)
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    tied = "lm_head.weight" not in weights  # the weights decide: mlx-lm drops lm_head only when it is tied

    with atomic_path(out) as tmp:
        writer = GGUFWriter(str(tmp), arch)
        _add_metadata(writer, arch, config, dtype)
        source = model_dir / "gguf_source.json"
        if source.is_file() and Path(json.loads(source.read_text())["gguf"]).is_file():
            _copy_tokenizer_from_gguf(writer, Path(json.loads(source.read_text())["gguf"]))
        else:
            _tokenizer_from_json(writer, model_dir, int(config.get("vocab_size", 0)))
        count = 0
        for name, w in sorted(weights.items()):
            if name == "lm_head.weight" and tied:
                continue
            gguf_name = hf_to_gguf(name, arch)
            if gguf_name is None:
                raise MlxSqlError(f"tensor {name}: no GGUF name for {arch}", model_dir)
            if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
                w = rotary_permute(w, heads if "q_proj" in name else kv_heads)
            if arch in GEMMA_FAMILY and is_gemma_norm(name):
                w = w + 1.0
            add_tensor(writer, gguf_name, w, dtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return ExportResult(out, arch, dtype, count)
