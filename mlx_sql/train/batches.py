"""Streamed batches: memory bounded by a shuffle window, whatever the file size.

Unshared: within each window, examples are sorted by length and cut into batches
(length bucketing, little padding), then the batches are shuffled.
Schema-shared: within each window, examples with the same prefix (same database
schema) are shuffled and cut into batches, then the batches are shuffled. `data
build` writes each database's questions next to each other for such recipes, so a
window holds whole databases and batches are full.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx
import numpy as np

from mlx_sql.data.examples import RECORD_KEYS
from mlx_sql.data.jsonl import iter_jsonl
from mlx_sql.train.encode import Encoded, Encoder, prefix_key
from mlx_sql.train.losses import Batch

Records = list[dict[str, Any]]


@dataclass
class BatchPlan:
    path: Path
    batch_size: int
    shared: bool
    seed: int
    window: int = 1024
    strict: bool = True

    def _cut(self, records: Records, rng: random.Random) -> list[Records]:
        if self.shared:
            groups: dict[tuple[str, str], Records] = {}
            for record in records:
                groups.setdefault(prefix_key(record), []).append(record)
            batches = []
            for group in groups.values():
                rng.shuffle(group)
                batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        else:
            ordered = sorted(records, key=lambda r: len(r["input"]) + len(r["output"]))
            batches = [ordered[i:i + self.batch_size] for i in range(0, len(ordered), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def epoch(self, epoch: int) -> Iterator[Records]:
        """One pass over the file as batches of raw records (tokenized later, only if used)."""
        rng = random.Random(f"{self.seed}:{epoch}")
        window: Records = []
        for _, record in iter_jsonl(self.path, RECORD_KEYS, strict=self.strict):
            window.append(record)
            if len(window) >= self.window:
                yield from self._cut(window, rng)
                window = []
        if window:
            yield from self._cut(window, rng)

    def batches_per_epoch(self) -> int:
        return sum(1 for _ in self.epoch(0))

    def forever(self, start_epoch: int = 0) -> Iterator[tuple[int, Records]]:
        epoch = start_epoch
        while True:
            empty = True
            for batch in self.epoch(epoch):
                empty = False
                yield epoch, batch
            if empty:
                return
            epoch += 1


def _pad(rows: list[list[int]], value: int = 0) -> np.ndarray:
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), value, dtype=np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _mask(lengths: list[int], starts: list[int], width: int) -> np.ndarray:
    idx = np.arange(width)[None, :]
    return ((idx >= np.asarray(starts)[:, None]) & (idx < np.asarray(lengths)[:, None])).astype(np.float32)


@dataclass(frozen=True)
class LengthCheck:
    """How a training file fits `train.max_seq_length`, counted before the first step: an example longer
    than the limit trains on a prompt whose schema tail is cut (its SQL may name tables it was not shown)."""

    examples: int
    cut: int  # longer than the limit: the schema's tail is cut
    dropped: int  # question and answer alone reach the limit: left out
    longest: int  # tokens of the longest example, whole
    limit: int  # the train.max_seq_length counted against

    def warning(self) -> str | None:
        """One line for the user where the limit changes what the model sees, else None."""
        if not self.cut and not self.dropped:
            return None
        keep = -(-self.longest // 256) * 256
        parts = []
        if self.cut:
            parts.append(f"{self.cut} of {self.examples} training examples are longer than train.max_seq_length = "
                         f"{self.limit} tokens (the longest: {self.longest}): their schema's tail is cut, so the model "
                         "learns SQL naming tables it was not shown")
        if self.dropped:
            parts.append(f"{self.dropped} whose question and answer alone reach it are left out")
        return "; ".join(parts) + f"; train.max_seq_length = {keep} keeps them whole (`mlx-sql plan` says what it costs)"


def kept(e: Encoded, max_seq_length: int, seq2seq: bool) -> bool:
    """Whether an example trains at all: its question and answer (never cut) fit the limit."""
    if seq2seq:
        return e.completion_start + 1 < max_seq_length and len(e.segment) - e.completion_start < max_seq_length
    return len(e.segment) < max_seq_length


def prefix_room(e: Encoded, max_seq_length: int, seq2seq: bool) -> int:
    """How many of an example's schema-prefix tokens fit beside its question (and answer, in a decoder)."""
    return max_seq_length - (e.completion_start + 1 if seq2seq else len(e.segment))


def check_lengths(path: Path, encoder: Encoder, max_seq_length: int) -> LengthCheck:
    """Count, with the trainer's own cutting rules (`kept`, `prefix_room`), the examples `max_seq_length` cuts
    or drops. In schema-shared batches the cut also depends on the batch's longest segment: counted alone here."""
    examples = cut = dropped = longest = 0
    for _, record in iter_jsonl(path, strict=False):
        e = encoder.encode(record)
        examples += 1
        longest = max(longest, e.length + (1 if encoder.seq2seq else 0))
        if not kept(e, max_seq_length, encoder.seq2seq):
            dropped += 1
        else:
            cut += len(e.prefix) > prefix_room(e, max_seq_length, encoder.seq2seq)
    return LengthCheck(examples, cut, dropped, longest, max_seq_length)


def collate(encoded: list[Encoded], shared: bool, max_seq_length: int) -> Batch | None:
    """Pad into a Batch, cutting the end of the prefix (the schema's tail) when too long.

    Questions and answers are never cut; an example whose segment alone exceeds the limit
    is dropped (None when nothing is left).
    """
    encoded = [e for e in encoded if kept(e, max_seq_length, seq2seq=False)]
    if not encoded:
        return None
    if shared:
        budget = min(prefix_room(e, max_seq_length, seq2seq=False) for e in encoded)  # room beside the longest
        prefix = list(encoded[0].prefix[:budget])
        truncated = len(encoded) if len(prefix) < len(encoded[0].prefix) else 0
        segments = [list(e.segment) for e in encoded]
        tokens = _pad(segments)
        mask = _mask([len(s) for s in segments], [e.completion_start for e in encoded], tokens.shape[1])
        real = len(prefix) + sum(len(s) for s in segments)
        return Batch(mx.array(tokens), mx.array(mask), mx.array([prefix], dtype=mx.int32), real,
                     len(encoded), truncated)
    rows, starts, truncated = [], [], 0
    for e in encoded:
        prefix = e.prefix[: prefix_room(e, max_seq_length, seq2seq=False)]
        truncated += len(prefix) < len(e.prefix)
        rows.append(list(prefix) + list(e.segment))
        starts.append(len(prefix) + e.completion_start)
    tokens = _pad(rows)
    mask = _mask([len(r) for r in rows], starts, tokens.shape[1])
    return Batch(mx.array(tokens), mx.array(mask), None, sum(len(r) for r in rows), len(rows), truncated)


def collate_seq2seq(encoded: list[Encoded], max_seq_length: int, start: int, eos: int) -> Batch | None:
    """Encoder-decoder batch: the prompt (schema cut at its tail, never the question) plus `</s>` as the
    encoder's input, the decoder start token then the SQL as the decoder's. Each side is capped at
    `max_seq_length`; an example whose question or answer alone is longer is dropped."""
    encoded = [e for e in encoded if kept(e, max_seq_length, seq2seq=True)]
    if not encoded:
        return None
    sources, targets, truncated = [], [], 0
    for e in encoded:
        question = list(e.segment[: e.completion_start])
        prefix = e.prefix[: prefix_room(e, max_seq_length, seq2seq=True)]
        truncated += len(prefix) < len(e.prefix)
        sources.append(list(prefix) + question + [eos])
        targets.append([start] + list(e.segment[e.completion_start:]))
    source, tokens = _pad(sources), _pad(targets)
    source_mask = _mask([len(s) for s in sources], [0] * len(sources), source.shape[1])
    mask = _mask([len(t) for t in targets], [1] * len(targets), tokens.shape[1])
    real = sum(len(s) for s in sources) + sum(len(t) for t in targets)
    return Batch(mx.array(tokens), mx.array(mask), None, real, len(encoded), truncated, mx.array(source),
                 mx.array(source_mask))


def make_batch(encoder: Encoder, records: Records, shared: bool, max_seq_length: int) -> Batch | None:
    encoded = [encoder.encode(r) for r in records]
    if encoder.seq2seq:
        return collate_seq2seq(encoded, max_seq_length, encoder.decoder_start, encoder.tokenizer.eos_token_id)
    return collate(encoded, shared, max_seq_length)
