"""KV caches that let a batch of question segments attend to one shared schema prefix.

Pass 1 runs the prefix (batch 1) through the model with `CollectCache`s, which keep
each layer's keys and values. Pass 2 runs the segments (batch B) with `PrefixCache`s,
which put the prefix keys/values in front of the segments' own, broadcast to B.
Everything stays in one graph, so gradients from every segment flow back through
the single prefix computation. Both classes are free of side effects across calls
(recomputation under gradient checkpointing re-runs them).
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask


def prefix_keys_values(model, prefix: mx.array) -> list[tuple[mx.array, mx.array]]:
    """Each layer's keys/values of `prefix` (1, P) under the model's current weights, evaluated: the constant a
    sampler or a reference pass puts in front of many segments."""
    collect = [CollectCache() for _ in model.layers]
    model.model(prefix, cache=collect)
    kv = [(c.keys, c.values) for c in collect]
    mx.eval(kv)
    return kv


class _CausalMask:
    """Causal mask over everything cached so far (with the sliding window, for layers that have one)."""

    offset: int

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        return create_causal_mask(n, self.offset, window_size=window_size)


class CollectCache(_CausalMask):
    offset = 0

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys, self.values = keys, values
        return keys, values


class PrefixCache(_CausalMask):
    def __init__(self, keys: mx.array, values: mx.array):
        self.prefix_keys, self.prefix_values = keys, values
        self.offset = keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        batch = keys.shape[0]
        pk = mx.broadcast_to(self.prefix_keys, (batch, *self.prefix_keys.shape[1:]))
        pv = mx.broadcast_to(self.prefix_values, (batch, *self.prefix_values.shape[1:]))
        return mx.concatenate([pk, keys], axis=2), mx.concatenate([pv, values], axis=2)


class DecodeCache(_CausalMask):
    """Generation: the shared prefix, then one question's own tokens as they come (prefix never copied)."""

    def __init__(self, keys: mx.array, values: mx.array):
        self.keys, self.values = keys, values
        self.offset = keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = mx.concatenate([self.keys, keys], axis=2)
        self.values = mx.concatenate([self.values, values], axis=2)
        self.offset = self.keys.shape[2]
        return self.keys, self.values


class BranchCache(_CausalMask):
    """Sampling several answers to one prompt: the prompt's keys/values (batch 1) broadcast to every row,
    then each row's own tokens — the prompt is computed once and never copied per row in memory."""

    def __init__(self, keys: mx.array, values: mx.array):
        self.shared_keys, self.shared_values = keys, values
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = keys if self.keys is None else mx.concatenate([self.keys, keys], axis=2)
        self.values = values if self.values is None else mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        batch = keys.shape[0]
        sk = mx.broadcast_to(self.shared_keys, (batch, *self.shared_keys.shape[1:]))
        sv = mx.broadcast_to(self.shared_values, (batch, *self.shared_values.shape[1:]))
        return mx.concatenate([sk, self.keys], axis=2), mx.concatenate([sv, self.values], axis=2)
