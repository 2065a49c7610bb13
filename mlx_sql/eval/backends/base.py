"""What every generation backend shares: the contract, and how a record becomes the ids a decoder is fed.

A backend turns eval records (the same `{instruction, input}` as training, without the answer) into raw
model text; `extract_sql` makes it a query. `generate(record, temperature, seed)` is greedy at temperature 0
(what scoring assumes) and a reproducible draw above it; a backend that can decode several answers to one
prompt together also has `generate_many(record, seeds, temperature)` (result voting uses it where present).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import mlx.core as mx
import numpy as np

from mlx_sql.eval.extract import statement_finished
from mlx_sql.models.verify import pick_token
from mlx_sql.train.encode import Encoder


class Backend(Protocol):
    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        """Greedy at temperature 0 (what scoring assumes); sampled, reproducibly per seed, above it."""


class ManyBackend(Backend, Protocol):
    def generate_many(self, record: dict[str, Any], seeds: Sequence[int], temperature: float) -> list[str]:
        """One answer per seed, decoded together over one computation of the prompt."""


STOP_CHECK_EVERY = 8  # decoding the text costs more than a token: look for the statement's end now and then


def next_token(logits: mx.array, temperature: float, rng: np.random.Generator) -> int:
    """Greedy stays on the device; a draw (retries) goes through the one top-k sampler, in float32 (numpy
    has no bfloat16)."""
    if temperature <= 0:
        return int(mx.argmax(logits).item())
    return pick_token(logits.astype(mx.float32), temperature, rng)


def statement_done(tokenizer: Any, tokens: list[int]) -> bool:
    """Whether a row may stop: its text already holds everything `extract_sql` will keep."""
    return len(tokens) % STOP_CHECK_EVERY == 0 and statement_finished(tokenizer.decode(tokens))


def eos_ids(tokenizer: Any) -> set[int]:
    ids = getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id]
    return {ids} if isinstance(ids, int) else set(ids)  # mlx-lm's wrapper holds a set, HF's tokenizer one id


def prompt_ids(encoder: Encoder, record: dict[str, Any]) -> tuple[tuple[int, ...], list[int]]:
    """(shared prefix, question) token ids of a record without its answer: what every decoder is fed."""
    e = encoder.encode({**record, "output": ""})
    return tuple(e.prefix), list(e.segment[: e.completion_start])


def source_ids(encoder: Encoder, record: dict[str, Any]) -> list[int]:
    """An encoder-decoder model's input for a record: prompt (schema, question) then </s>, as in training."""
    prefix, question = prompt_ids(encoder, record)
    return [*prefix, *question, encoder.tokenizer.eos_token_id]
