"""llama.cpp's GGUF tensor names and the Hugging Face / mlx-lm names they stand for.

One table serves the importer (GGUF → MLX) and the exporter (MLX → GGUF), so the
two directions cannot drift apart. Follows llama.cpp's `gguf-py/gguf/tensor_mapping.py`.
"""

from __future__ import annotations

import re

# GGUF architecture name -> mlx-lm model_type, both ways (import and export)
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma": "gemma", "gemma3": "gemma3_text", "phi3": "phi3"}
# exported only: Phi-2 (mlx-lm "phi", llama.cpp "phi2"); its GGUFs are not imported
EXPORT_ONLY = {"phi2": "phi"}
GEMMA_FAMILY = {"gemma", "gemma3"}

_GLOBAL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_down": "mlp.down_proj",
}
# Phi-2: LayerNorms with biases, biased projections, one norm per block, plain two-layer MLP
_PHI2_GLOBAL = {**_GLOBAL, "output_norm.weight": "model.final_layernorm.weight",
                "output_norm.bias": "model.final_layernorm.bias", "output.bias": "lm_head.bias"}
_PHI2_BLOCK = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.dense", "ffn_up": "mlp.fc1",
               "ffn_down": "mlp.fc2"}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")


def _tables(arch: str) -> tuple[dict[str, str], dict[str, str]]:
    """(global, per-block) GGUF -> HF name tables of an architecture."""
    if arch == "phi2":
        return _PHI2_GLOBAL, _PHI2_BLOCK
    return _GLOBAL, {**_BLOCK, **_ffn_names(arch)}


def _ffn_names(arch: str) -> dict[str, str]:
    ffn_up = "mlp.gate_up_proj" if arch == "phi3" else "mlp.up_proj"  # phi3 keeps gate and up fused
    if arch in ("gemma2", "gemma3"):
        # a norm before and after both attention and MLP
        return {"ffn_norm": "pre_feedforward_layernorm", "ffn_up": ffn_up,
                "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
    return {"ffn_norm": "post_attention_layernorm", "ffn_up": ffn_up}  # llama's one norm before the MLP


def gguf_to_hf(name: str, arch: str) -> str | None:
    """The HF name for a GGUF tensor name, or None if it is not a weight we know."""
    globals_, table = _tables(arch)
    if name in globals_:
        return globals_[name]
    match = _BLOCK_RE.match(name)
    if not match:
        return None
    layer, part, kind = match.groups()
    if part not in table:
        return None
    return f"model.layers.{layer}.{table[part]}.{kind}"


def hf_to_gguf(name: str, arch: str) -> str | None:
    """The inverse of gguf_to_hf."""
    globals_, table = _tables(arch)
    for gguf_name, hf in globals_.items():
        if hf == name:
            return gguf_name
    match = re.match(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$", name)
    if not match:
        return None
    layer, part, kind = match.groups()
    for gguf_part, hf_part in table.items():
        if hf_part == part:
            return f"blk.{layer}.{gguf_part}.{kind}"
    return None


def rotary_permute(w, n_head: int):
    """llama.cpp's converter reorders llama q/k rows from HF's half-split rotary to interleaved pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rotary_unpermute(w, n_head: int):
    """Undo rotary_permute."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def is_gemma_norm(hf_name: str) -> bool:
    """Gemma's RMSNorm scales by (1 + w); llama.cpp stores 1 + w, HF and mlx-lm store w."""
    return hf_name.endswith("norm.weight")
