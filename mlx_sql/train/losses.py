"""Token losses on the SQL completion only, for both batch layouts."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import mlx.nn as nn

from mlx_sql.train.prefix_cache import CollectCache, PrefixCache


@dataclass
class Batch:
    """Token ids and a loss mask, ready for the model.

    Unshared: `tokens` is (B, L) full sequences, `prefix` is None.
    Shared: `prefix` is (1, P), `tokens` is (B, S) question+SQL segments attending to it.
    Encoder-decoder (T5): `source` is (B, Ls) encoder input (prompt), `source_mask` 1 at its real
    tokens, `tokens` the decoder's start token then the SQL.
    `prefix_kv` (shared only): each layer's keys/values of the prefix, already computed and used as constants.
    `mask[b, t]` is 1 where `tokens[b, t]` is a completion token (carries loss).
    """

    tokens: mx.array
    mask: mx.array
    prefix: mx.array | None
    real_tokens: int  # non-pad tokens processed (the prefix once)
    examples: int
    truncated: int
    source: mx.array | None = None
    source_mask: mx.array | None = None
    prefix_kv: list[tuple[mx.array, mx.array]] | None = None  # shared: the prefix's keys/values, held fixed


def output_logits(model: nn.Module, hidden: mx.array) -> mx.array:
    """The model's own head on final hidden states (mlx-lm's `Model.__call__` after `model.model`)."""
    if getattr(model, "is_encoder_decoder", False):
        return model.logits(hidden)
    if "lm_head" in model:  # untied heads (tied ones are never created, or popped on load)
        logits = model.lm_head(hidden)
    else:
        logits = model.model.embed_tokens.as_linear(hidden)
    cap = getattr(model, "final_logit_softcapping", None)  # Gemma 2
    if cap:
        logits = mx.tanh(logits / cap) * cap
    return logits


def completion_log_probs(model: nn.Module, batch: Batch) -> tuple[mx.array, np.ndarray]:
    """The log-probability of every completion token (flat, row by row) and the row each belongs to.

    The output projection runs only where a token carries loss: with a 150k vocabulary the
    logits of every prompt position would be a third of a small model's training memory.
    """
    inputs, targets, mask = batch.tokens[:, :-1], batch.tokens[:, 1:], batch.mask[:, 1:]
    if batch.source is not None:
        memory = model.encode(batch.source, batch.source_mask)
        hidden = model.decode(inputs, memory, batch.source_mask)
    elif batch.prefix is None:
        hidden = model.model(inputs, cache=None)  # Phi-2's model takes cache positionally, without a default
    elif batch.prefix_kv is not None:  # computed elsewhere (GRPO's sampler): no gradient flows into the prefix
        n = batch.prefix.shape[1]
        hidden = model.model(inputs, cache=[PrefixCache(mx.stop_gradient(k[:, :, :n]), mx.stop_gradient(v[:, :, :n]))
                                            for k, v in batch.prefix_kv])
    else:
        collect = [CollectCache() for _ in model.layers]
        model.model(batch.prefix, cache=collect)
        hidden = model.model(inputs, cache=[PrefixCache(c.keys, c.values) for c in collect])
    rows, length = mask.shape
    flat = np.flatnonzero(np.asarray(mask).reshape(-1) > 0)
    if flat.size == 0:
        return mx.zeros((0,), dtype=mx.float32), np.zeros((0,), dtype=np.int32)
    picked = mx.array(flat.astype(np.int32))
    logits = output_logits(model, hidden.reshape(rows * length, -1)[picked])
    losses = nn.losses.cross_entropy(logits.astype(mx.float32), targets.reshape(-1)[picked], reduction="none")
    return -losses, (flat // length).astype(np.int32)


def example_losses(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """Per example: (sum of completion-token losses, number of completion tokens)."""
    log_probs, owner = completion_log_probs(model, batch)
    rows = batch.mask.shape[0]
    counts = batch.mask[:, 1:].sum(axis=1)
    sums = mx.zeros((rows,), dtype=mx.float32).at[mx.array(owner)].add(-log_probs)
    return sums, counts


def batch_loss(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """(sum of token losses, token count): sums, so accumulation over batches weighs every token alike."""
    sums, counts = example_losses(model, batch)
    return sums.sum(), counts.sum()
