"""A T5 model folder (HF layout, as `models/t5.py` loads and `fuse` saves) → GGUF for llama.cpp's `t5`.

Tensor names are the `gguf` package's own T5 mapping (the one llama.cpp's converter uses).
The tokenizer is llama.cpp's "t5" (SentencePiece unigram): pieces, scores and types from
spiece.model when the folder has one (as llama.cpp's converter reads it), else from
tokenizer.json's unigram vocabulary; the precompiled normalizer map travels with it.
A tied head (T5 v1.0) is written as its own `output` tensor scaled by d_model^-0.5, the
rescaling HF applies before a tied head, so llama.cpp's logits are HF's logits.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.spiece import CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED, read_sentencepiece


def _normalizer_steps(data: dict) -> list[dict]:
    steps, pending = [], [data.get("normalizer") or {}]
    while pending:
        step = pending.pop(0)
        steps.append(step)
        pending += step.get("normalizers", [])
    return steps


def _vocab_from_tokenizer_json(model_dir: Path) -> tuple[list[str], list[float], list[int], bytes, bool, bool]:
    data = json.loads((model_dir / "tokenizer.json").read_text())
    model = data["model"]
    if model.get("type") != "Unigram":
        raise MlxSqlError(f"a T5 tokenizer is SentencePiece unigram, this one is {model.get('type')}",
                          model_dir / "tokenizer.json")
    pieces = [p for p, _ in model["vocab"]]
    scores = [float(s) for _, s in model["vocab"]]
    types = [NORMAL] * len(pieces)
    unk = model.get("unk_id")
    if unk is not None:
        types[unk] = UNKNOWN
    for added in data.get("added_tokens", []):
        i = added["id"]
        while i >= len(pieces):
            pieces.append(f"[PAD{len(pieces)}]")
            scores.append(-1000.0)
            types.append(UNUSED)
        if i != unk:
            pieces[i], types[i] = added["content"], CONTROL if added["content"] in ("<pad>", "</s>") else USER_DEFINED
            if types[i] == USER_DEFINED:
                scores[i] = -1000.0
    steps = _normalizer_steps(data)
    charsmap = next((base64.b64decode(s["precompiled_charsmap"]) for s in steps
                     if s.get("type") == "Precompiled" and s.get("precompiled_charsmap")), b"")
    collapse = any(s.get("type") == "Replace" and (s.get("pattern") or {}).get("Regex") == " {2,}" for s in steps)
    pre = [data.get("pre_tokenizer") or {}]
    pre += pre[0].get("pretokenizers", [])
    prefix = any(p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" for p in pre)
    return pieces, scores, types, charsmap, prefix, collapse


def _vocab(model_dir: Path) -> tuple[list[str], list[float], list[int], bytes, bool, bool]:
    if (model_dir / "spiece.model").is_file():
        spm = read_sentencepiece(model_dir / "spiece.model")
        pieces, scores, types = list(spm.pieces), list(spm.scores), list(spm.types)
        added = json.loads((model_dir / "tokenizer.json").read_text()).get("added_tokens", []) \
            if (model_dir / "tokenizer.json").is_file() else []
        for token in added:  # HF's <extra_id_N> sentinels sit after the SentencePiece pieces
            i = token["id"]
            while i >= len(pieces):
                pieces.append(f"[PAD{len(pieces)}]")
                scores.append(-1000.0)
                types.append(UNUSED)
            if i >= len(spm.pieces):
                pieces[i], scores[i], types[i] = token["content"], -1000.0, USER_DEFINED
        return pieces, scores, types, spm.precompiled_charsmap, spm.add_dummy_prefix, spm.remove_extra_whitespaces
    if (model_dir / "tokenizer.json").is_file():
        return _vocab_from_tokenizer_json(model_dir)
    raise MlxSqlError("a T5 GGUF needs the tokenizer: spiece.model or tokenizer.json", model_dir)


def write_t5_gguf(model_dir: Path, tmp: Path, config: dict[str, Any], weights: dict[str, np.ndarray], dtype: str,
                  add_tensor) -> tuple[str, int]:
    """Write the T5 GGUF into `tmp` (the caller renames it into place); (architecture, tensors written)."""
    import gguf
    from gguf import GGUFWriter, LlamaFileType

    from mlx_sql.models.t5 import EMBEDDING_NAMES, T5Args

    args = T5Args.from_config(config)
    pieces, scores, types, charsmap, prefix, collapse = _vocab(model_dir)
    rows = args.vocab_size
    while len(pieces) < rows:  # embedding rows no token uses (t5-small: 32,128 rows, 32,100 tokens)
        pieces.append(f"[PAD{len(pieces)}]")
        scores.append(-1000.0)
        types.append(UNUSED)
    writer = GGUFWriter(str(tmp), "t5")
    writer.add_name(config.get("_name_or_path") or "t5")
    writer.add_context_length(int(config.get("n_positions", 512)))
    writer.add_embedding_length(args.d_model)
    writer.add_feed_forward_length(args.d_ff)
    writer.add_block_count(args.num_layers)
    writer.add_decoder_block_count(args.num_decoder_layers)
    writer.add_head_count(args.num_heads)
    writer.add_key_length(args.d_kv)
    writer.add_value_length(args.d_kv)
    writer.add_layer_norm_eps(args.layer_norm_epsilon)
    writer.add_layer_norm_rms_eps(args.layer_norm_epsilon)
    writer.add_relative_attn_buckets_count(args.relative_attention_num_buckets)
    writer.add_decoder_start_token_id(args.decoder_start_token_id)
    writer.add_file_type({"f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": LlamaFileType.MOSTLY_Q4_0}[dtype])
    writer.add_tokenizer_model("t5")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_add_space_prefix(prefix)
    writer.add_remove_extra_whitespaces(collapse)
    if charsmap:
        writer.add_precompiled_charsmap(charsmap)
    writer.add_eos_token_id(args.eos_token_id)
    writer.add_pad_token_id(args.pad_token_id)
    if UNKNOWN in types:
        writer.add_unk_token_id(types.index(UNKNOWN))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(True)  # T5's tokenizer ends every input with </s>

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5, max(args.num_layers, args.num_decoder_layers))
    embedding = next(weights[k] for k in EMBEDDING_NAMES if k in weights)
    tensors = {"token_embd.weight": embedding}
    if args.tie_word_embeddings:
        tensors["output.weight"] = embedding * (args.d_model ** -0.5)
    for name, w in weights.items():
        if name in EMBEDDING_NAMES or (name == "lm_head.weight" and args.tie_word_embeddings):
            continue
        gguf_name = names.get_name(name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise MlxSqlError(f"tensor {name}: no GGUF name for t5", model_dir)
        tensors[gguf_name] = w
    for gguf_name, w in sorted(tensors.items()):
        add_tensor(writer, gguf_name, w, dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return "t5", len(tensors)
