"""Token losses on the SQL completion only, for both batch layouts."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from mlx_sql.train.prefix_cache import CollectCache, PrefixCache


@dataclass
class Batch:
    """Token ids and a loss mask, ready for the model.

    Unshared: `tokens` is (B, L) full sequences, `prefix` is None.
    Shared: `prefix` is (1, P), `tokens` is (B, S) question+SQL segments attending to it.
    `mask[b, t]` is 1 where `tokens[b, t]` is a completion token (carries loss).
    """

    tokens: mx.array
    mask: mx.array
    prefix: mx.array | None
    real_tokens: int  # non-pad tokens processed (the prefix once)
    examples: int
    truncated: int


def _token_losses(logits: mx.array, targets: mx.array, mask: mx.array) -> mx.array:
    return nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none") * mask


def example_losses(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """Per example: (sum of completion-token losses, number of completion tokens)."""
    inputs, targets, mask = batch.tokens[:, :-1], batch.tokens[:, 1:], batch.mask[:, 1:]
    if batch.prefix is None:
        logits = model(inputs)
    else:
        collect = [CollectCache() for _ in model.layers]
        model.model(batch.prefix, cache=collect)
        logits = model(inputs, cache=[PrefixCache(c.keys, c.values) for c in collect])
    losses = _token_losses(logits, targets, mask)
    return losses.sum(axis=1), mask.sum(axis=1)


def batch_loss(model: nn.Module, batch: Batch) -> tuple[mx.array, mx.array]:
    """(sum of token losses, token count): sums, so accumulation over batches weighs every token alike."""
    sums, counts = example_losses(model, batch)
    return sums.sum(), counts.sum()
