"""T5 (encoder-decoder) in MLX: v1.0 (ReLU FFN, tied head) and v1.1 / FLAN (gated GELU, untied head).

mlx-lm has no T5, so this is ours. The module tree mirrors Hugging Face's
(`encoder.block.0.layer.0.SelfAttention.q`, …): HF safetensors load as they are, a
fused model saves as an HF checkpoint, and LoRA keys name HF's projections. T5 has no
absolute positions: each stack's first block owns a learned bias per relative-position
bucket, shared by every block of that stack, and attention logits are not scaled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

NEG_INF = -1e9


@dataclass
class T5Args:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    tie_word_embeddings: bool = True
    decoder_start_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 0

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "T5Args":
        return cls(c["vocab_size"], c["d_model"], c["d_kv"], c["d_ff"], c["num_layers"],
                   c.get("num_decoder_layers") or c["num_layers"], c["num_heads"],
                   c.get("relative_attention_num_buckets", 32), c.get("relative_attention_max_distance", 128),
                   c.get("layer_norm_epsilon", 1e-6), c.get("feed_forward_proj", "relu"),
                   c.get("tie_word_embeddings", True), c.get("decoder_start_token_id", 0) or 0,
                   c.get("eos_token_id", 1), c.get("pad_token_id", 0) or 0)

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated")


def relative_position_buckets(queries: int, keys: int, bidirectional: bool, num_buckets: int,
                              max_distance: int, offset: int = 0) -> np.ndarray:
    """(queries, keys) bucket ids as T5 computes them: exact for near tokens, log-spaced up to max_distance.

    `offset` is the first query's position (decoding with a cache: the new token sits after the cached ones).
    """
    relative = np.arange(keys)[None, :] - (np.arange(queries)[:, None] + offset)
    buckets = np.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0) * num_buckets
        relative = np.abs(relative)
    else:
        relative = -np.minimum(relative, 0)
    exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        large = exact + (np.log(np.maximum(relative, 1) / exact) / math.log(max_distance / exact)
                         * (num_buckets - exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (buckets + np.where(relative < exact, relative, large)).astype(np.int32)


class T5Attention(nn.Module):
    def __init__(self, args: T5Args, has_relative_bias: bool):
        super().__init__()
        inner = args.num_heads * args.d_kv
        self.heads, self.d_kv = args.num_heads, args.d_kv
        self.q = nn.Linear(args.d_model, inner, bias=False)
        self.k = nn.Linear(args.d_model, inner, bias=False)
        self.v = nn.Linear(args.d_model, inner, bias=False)
        self.o = nn.Linear(inner, args.d_model, bias=False)
        if has_relative_bias:
            self.relative_attention_bias = nn.Embedding(args.relative_attention_num_buckets, args.num_heads)

    def _split(self, x: mx.array) -> mx.array:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.d_kv).transpose(0, 2, 1, 3)

    def bias(self, buckets: np.ndarray) -> mx.array:
        """(1, heads, queries, keys) additive bias for these bucket ids."""
        return self.relative_attention_bias(mx.array(buckets)).transpose(2, 0, 1)[None]

    def __call__(self, x: mx.array, source: mx.array | None, bias: mx.array | None,
                 cache: "T5Cache | None" = None, cross: bool = False) -> mx.array:
        """`source` is what keys and values come from (x itself for self-attention, the encoder's
        output for cross-attention); `bias` holds position bias and masks, already added together."""
        q = self._split(self.q(x))
        if cross and cache is not None and cache.cross is not None:
            k, v = cache.cross
        else:
            k, v = self._split(self.k(source)), self._split(self.v(source))
            if cross and cache is not None:
                cache.cross = (k, v)
            elif cache is not None:
                k, v = cache.extend(k, v)
        scores = (q @ k.transpose(0, 1, 3, 2)).astype(mx.float32)  # T5 does not scale by 1/sqrt(d_kv)
        if bias is not None:
            scores = scores + bias
        weights = mx.softmax(scores, axis=-1).astype(v.dtype)
        out = (weights @ v).transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
        return self.o(out)


class T5LayerNorm(nn.Module):
    """RMS norm without a mean or bias, in float32 (T5's own)."""

    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.weight, self.eps)


class DenseReluDense(nn.Module):
    def __init__(self, args: T5Args):
        super().__init__()
        self.gated = args.gated
        if self.gated:
            self.wi_0 = nn.Linear(args.d_model, args.d_ff, bias=False)
            self.wi_1 = nn.Linear(args.d_model, args.d_ff, bias=False)
        else:
            self.wi = nn.Linear(args.d_model, args.d_ff, bias=False)
        self.wo = nn.Linear(args.d_ff, args.d_model, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        if self.gated:  # HF's "gated-gelu" is the tanh approximation (gelu_new)
            return self.wo(nn.gelu_approx(self.wi_0(x)) * self.wi_1(x))
        return self.wo(nn.relu(self.wi(x)))


class SelfAttentionLayer(nn.Module):
    def __init__(self, args: T5Args, has_relative_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(args, has_relative_bias)
        self.layer_norm = T5LayerNorm(args.d_model, args.layer_norm_epsilon)

    def __call__(self, x, bias, cache=None):
        h = self.layer_norm(x)
        return x + self.SelfAttention(h, h, bias, cache)


class CrossAttentionLayer(nn.Module):
    def __init__(self, args: T5Args):
        super().__init__()
        self.EncDecAttention = T5Attention(args, False)
        self.layer_norm = T5LayerNorm(args.d_model, args.layer_norm_epsilon)

    def __call__(self, x, memory, memory_bias, cache=None):
        return x + self.EncDecAttention(self.layer_norm(x), memory, memory_bias, cache, cross=True)


class FeedForwardLayer(nn.Module):
    def __init__(self, args: T5Args):
        super().__init__()
        self.DenseReluDense = DenseReluDense(args)
        self.layer_norm = T5LayerNorm(args.d_model, args.layer_norm_epsilon)

    def __call__(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, args: T5Args, decoder: bool, has_relative_bias: bool):
        super().__init__()
        self.layer = [SelfAttentionLayer(args, has_relative_bias)]
        if decoder:
            self.layer.append(CrossAttentionLayer(args))
        self.layer.append(FeedForwardLayer(args))

    def __call__(self, x, bias, memory=None, memory_bias=None, cache=None):
        x = self.layer[0](x, bias, cache)
        if len(self.layer) == 3:
            x = self.layer[1](x, memory, memory_bias, cache)
        return self.layer[-1](x)


class T5Cache:
    """One decoder block's cache: its self-attention keys/values so far, and the encoder's keys/values."""

    def __init__(self):
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.cross: tuple[mx.array, mx.array] | None = None

    @property
    def offset(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def extend(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = k if self.keys is None else mx.concatenate([self.keys, k], axis=2)
        self.values = v if self.values is None else mx.concatenate([self.values, v], axis=2)
        return self.keys, self.values


def padding_bias(mask: mx.array | None) -> mx.array | None:
    """(B, 1, 1, keys) additive mask from a (B, keys) 1/0 mask of real tokens."""
    if mask is None:
        return None
    return ((1.0 - mask.astype(mx.float32)) * NEG_INF)[:, None, None, :]


class T5Stack(nn.Module):
    def __init__(self, args: T5Args, decoder: bool):
        super().__init__()
        self.args, self.decoder = args, decoder
        count = args.num_decoder_layers if decoder else args.num_layers
        self.block = [T5Block(args, decoder, i == 0) for i in range(count)]
        self.final_layer_norm = T5LayerNorm(args.d_model, args.layer_norm_epsilon)

    def position_bias(self, queries: int, keys: int, offset: int = 0) -> mx.array:
        a = self.args
        buckets = relative_position_buckets(queries, keys, not self.decoder, a.relative_attention_num_buckets,
                                            a.relative_attention_max_distance, offset)
        return self.block[0].layer[0].SelfAttention.bias(buckets)

    def __call__(self, x: mx.array, mask: mx.array | None = None, memory: mx.array | None = None,
                 memory_mask: mx.array | None = None, cache: list[T5Cache] | None = None) -> mx.array:
        n = x.shape[1]
        offset = cache[0].offset if cache else 0
        bias = self.position_bias(n, offset + n, offset)
        if self.decoder and n > 1:  # causal: a query sees keys up to its own position
            causal = np.triu(np.full((n, offset + n), NEG_INF, dtype=np.float32), k=offset + 1)
            bias = bias + mx.array(causal)
        if mask is not None:
            bias = bias + padding_bias(mask)
        memory_bias = padding_bias(memory_mask)
        for i, block in enumerate(self.block):
            x = block(x, bias, memory, memory_bias, cache[i] if cache else None)
        return self.final_layer_norm(x)


class T5Model(nn.Module):
    """T5ForConditionalGeneration: `encode` once per input, `decode` (with caches) for each new token."""

    model_type = "t5"
    is_encoder_decoder = True

    def __init__(self, args: T5Args):
        super().__init__()
        self.args = args
        self.shared = nn.Embedding(args.vocab_size, args.d_model)
        # HF initialises T5's embedding with unit variance (mlx's default, 1/sqrt(d), would make a fresh tied
        # head, which divides by sqrt(d_model), nearly flat); loaded checkpoints replace it anyway
        self.shared.weight = mx.random.normal((args.vocab_size, args.d_model))
        self.encoder = T5Stack(args, decoder=False)
        self.decoder = T5Stack(args, decoder=True)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.d_model, args.vocab_size, bias=False)

    @property
    def layers(self) -> list[T5Block]:
        """Encoder then decoder blocks: what adapters attach to (the last N are the decoder's)."""
        return [*self.encoder.block, *self.decoder.block]

    def encode(self, ids: mx.array, mask: mx.array | None = None) -> mx.array:
        return self.encoder(self.shared(ids), mask)

    def decode(self, ids: mx.array, memory: mx.array, memory_mask: mx.array | None = None,
               cache: list[T5Cache] | None = None) -> mx.array:
        """Final decoder hidden states (the head is `logits`, so a loss can apply it where it needs it)."""
        return self.decoder(self.shared(ids), None, memory, memory_mask, cache)

    def logits(self, hidden: mx.array) -> mx.array:
        if self.args.tie_word_embeddings:  # v1.0 rescales before the tied head
            return self.shared.as_linear(hidden * (self.args.d_model ** -0.5))
        return self.lm_head(hidden)

    def __call__(self, ids: mx.array, decoder_ids: mx.array, mask: mx.array | None = None) -> mx.array:
        return self.logits(self.decode(decoder_ids, self.encode(ids, mask), mask))

    def make_cache(self) -> list[T5Cache]:
        return [T5Cache() for _ in self.decoder.block]


# tied checkpoints may carry the embedding under any of these names (or several)
EMBEDDING_NAMES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def is_t5_config(config: dict[str, Any]) -> bool:
    return config.get("model_type") in ("t5", "mt5") and bool(config.get("is_encoder_decoder", True))


def t5_weights(raw: dict[str, mx.array], args: T5Args) -> dict[str, mx.array]:
    """HF names as this module tree holds them: one embedding, no lm_head when it is tied."""
    weights = {k: v for k, v in raw.items() if k not in EMBEDDING_NAMES}
    weights["shared.weight"] = next(raw[k] for k in EMBEDDING_NAMES if k in raw)
    if args.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    return weights


def load_t5(folder: Path, dtype: str = "float32") -> T5Model:
    """A T5 model from an HF folder (config.json + *.safetensors)."""
    from mlx_sql.errors import MlxSqlError

    config = json.loads((folder / "config.json").read_text())
    args = T5Args.from_config(config)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise MlxSqlError("no *.safetensors weights (T5 loads safetensors; save the model with "
                          "transformers' save_pretrained(..., safe_serialization=True))", folder)
    raw: dict[str, mx.array] = {}
    for f in files:
        raw.update(mx.load(str(f)))
    if not any(k in raw for k in EMBEDDING_NAMES):
        raise MlxSqlError("T5 weights without a token embedding (shared.weight)", folder)
    model = T5Model(args)
    quant = config.get("quantization")
    if quant:  # a fused QLoRA model saved quantized
        nn.quantize(model, group_size=quant["group_size"], bits=quant["bits"],
                    class_predicate=lambda p, m: isinstance(m, nn.Linear) and f"{p}.scales" in raw)
    try:
        model.load_weights(list(t5_weights(raw, args).items()), strict=True)
    except ValueError as exc:
        raise MlxSqlError(f"T5 weights do not match config.json: {exc}".splitlines()[0], folder) from None
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    return model
