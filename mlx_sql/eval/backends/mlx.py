"""MLX backends: decoder-only models (the schema prefix computed once per database, kept on disk for the
next process, several answers as rows over one prompt), T5, and mlx-lm's own `generate` as the anchor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_sql.eval.backends.base import eos_ids, next_token, prompt_ids, source_ids, statement_done
from mlx_sql.models.prompt_state import keep_recent, state_path
from mlx_sql.models.verify import TOP_K, draw_rng, pick_token
from mlx_sql.train.encode import Encoder
from mlx_sql.train.prefix_cache import BranchCache, DecodeCache, prefix_keys_values


def load_prefix_state(path: Path, layers: int) -> list[tuple[mx.array, mx.array]] | None:
    """A prefix's keys and values an earlier process saved, or None (absent, damaged, another shape)."""
    if not path.is_file():
        return None
    try:
        arrays = mx.load(str(path))
        kv = [(arrays[f"k{i}"], arrays[f"v{i}"]) for i in range(layers)]
    except Exception:  # a truncated or foreign file: computed afresh
        return None
    os.utime(path)
    return kv


def save_prefix_state(path: Path, kv: list[tuple[mx.array, mx.array]]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
        mx.save_safetensors(str(tmp), {f"{n}{i}": a for i, (k, v) in enumerate(kv) for n, a in (("k", k), ("v", v))})
        os.replace(tmp, path)
        keep_recent(path.parent, ".safetensors")
    except OSError:  # a cache that cannot be written only costs time
        pass


class MLXBackend:
    """Greedy decoding; the prefix (instruction + schema) of each database is run once and reused."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int = 256, state_id: str | None = None):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.encoder = Encoder(tokenizer)
        self.eos = eos_ids(tokenizer)
        self._prefix: tuple[tuple[int, ...], list[tuple[mx.array, mx.array]]] | None = None
        self.state_id = state_id  # given: prefixes are kept on disk for the next process (a one-shot ask)

    def forget_prefix(self) -> None:
        """The weights changed (a training step): the kept prefix keys/values no longer hold."""
        self._prefix = None

    def prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[mx.array, mx.array]]:
        """Each layer's keys/values of `prefix` under the current weights, computed once and kept."""
        if self._prefix is None or self._prefix[0] != prefix:
            path = self._state_file(prefix)
            kv = load_prefix_state(path, len(self.model.layers)) if path is not None else None
            if kv is None:
                kv = prefix_keys_values(self.model, mx.array([list(prefix)]))
                if path is not None:
                    save_prefix_state(path, kv)
            self._prefix = (prefix, kv)
        return self._prefix[1]

    def _state_file(self, prefix: tuple[int, ...]) -> Path | None:
        return state_path("mlx-state", self.state_id or "", prefix, ".safetensors")

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        prefix, question = prompt_ids(self.encoder, record)
        cache = [DecodeCache(k, v) for k, v in self.prefix_kv(prefix)]
        logits = self.model(mx.array([question]), cache=cache)[:, -1, :]
        out: list[int] = []
        rng = draw_rng(seed, [*prefix, *question])
        for _ in range(self.max_tokens):
            token = next_token(logits, temperature, rng)
            if token in self.eos:
                break
            out.append(token)
            if statement_done(self.tokenizer, out):
                break
            logits = self.model(mx.array([[token]]), cache=cache)[:, -1, :]
        return self.tokenizer.decode(out)

    def generate_many(self, record: dict[str, Any], seeds: Sequence[int], temperature: float) -> list[str]:
        """One sampled answer per seed, decoded as rows of one batch over a single computation of the prompt
        (the database's prefix from its cache, the question once)."""
        return [self.tokenizer.decode(row) for row, _ in self.sample_ids(record, seeds, temperature)]

    def sample_ids(self, record: dict[str, Any], seeds: Sequence[int], temperature: float
                   ) -> list[tuple[list[int], int | None]]:
        """(token ids, the end-of-turn token it ended with, else None) of one answer per seed: the
        rows of one batch; a row that has finished idles on its last token until all have. GRPO trains on
        exactly these ids (re-encoding the text could give other tokens)."""
        prefix, question = prompt_ids(self.encoder, record)
        cache = [DecodeCache(k, v) for k, v in self.prefix_kv(prefix)]
        first = self.model(mx.array([question]), cache=cache)[:, -1, :]
        branch = [BranchCache(c.keys, c.values) for c in cache]
        rngs = [draw_rng(seed, [*prefix, *question]) for seed in seeds]
        rows: list[list[int]] = [[] for _ in seeds]
        done, ended = [False] * len(seeds), [None] * len(seeds)
        logits = mx.broadcast_to(first, (len(seeds), first.shape[-1])).astype(mx.float32)
        for _ in range(self.max_tokens):
            table = np.asarray(logits)
            feed = []
            for i, rng in enumerate(rngs):
                if not done[i]:
                    token = pick_token(table[i], temperature, rng)
                    if token in self.eos:
                        done[i], ended[i] = True, token
                    else:
                        rows[i].append(token)
                        done[i] = len(rows[i]) >= self.max_tokens or statement_done(self.tokenizer, rows[i])
                feed.append(rows[i][-1] if rows[i] else question[-1])
            if all(done):
                break
            logits = self.model(mx.array(feed)[:, None], cache=branch)[:, -1, :].astype(mx.float32)
        return list(zip(rows, ended))

    def generate_batch(self, records: Sequence[dict[str, Any]], batch_size: int = 8) -> list[str]:
        """Batched greedy decoding; each run of records sharing a prefix reuses one prefix KV cache.

        A row leaves the batch at its end-of-turn token or once its text holds a complete first
        statement (all `extract_sql` keeps), so the batch shrinks instead of every row running to
        max_tokens.
        """
        from mlx_lm.models.cache import make_prompt_cache

        encoded = [prompt_ids(self.encoder, r) for r in records]
        out: list[str] = []
        start = 0
        while start < len(encoded):
            end = start + 1
            while end < len(encoded) and end - start < batch_size and encoded[end][0] == encoded[start][0]:
                end += 1
            group = encoded[start:end]
            cache = make_prompt_cache(self.model)
            self.model(mx.array([list(group[0][0])]), cache=cache)
            mx.eval([c.state for c in cache])
            out.extend(self._decode_rows([question for _, question in group], cache))
            start = end
        return out

    def _decode_rows(self, prompts: list[list[int]], prefix_cache: list[Any]) -> list[str]:
        from mlx_lm.generate import BatchGenerator

        # On the default stream: mlx-lm's own generation stream is a second CPU thread calling BLAS, and
        # OpenBLAS (pthreads build) can then spin forever in the next training step of the same process.
        gen = BatchGenerator(self.model, stop_tokens=[[t] for t in self.eos], max_tokens=self.max_tokens,
                             stream=mx.default_stream(mx.default_device()))
        uids = gen.insert(prompts, [self.max_tokens] * len(prompts), caches=[prefix_cache] * len(prompts))
        tokens: dict[int, list[int]] = {uid: [] for uid in uids}
        try:
            while responses := gen.next_generated():
                finished = []
                for r in responses:
                    if r.finish_reason != "stop":
                        tokens[r.uid].append(r.token)
                    row = tokens[r.uid]
                    if r.finish_reason is None and statement_done(self.tokenizer, row):
                        finished.append(r.uid)
                if finished:
                    gen.remove(finished)
        finally:
            gen.close()
        return [self.tokenizer.decode(tokens[uid]) for uid in uids]


class Seq2SeqMLXBackend:
    """Greedy decoding for an encoder-decoder model (T5). Its encoder reads schema and question together,
    so it runs once per question; the decoder then keeps a self-attention cache, and the keys and values of
    the encoder's output are computed once, on the first step."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int = 256):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.encoder = Encoder.for_model(model, tokenizer)
        self.eos = eos_ids(tokenizer)

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        source = source_ids(self.encoder, record)
        memory = self.model.encode(mx.array([source]))
        cache = self.model.make_cache()
        token, out = self.encoder.decoder_start, []
        rng = draw_rng(seed, source)
        for _ in range(self.max_tokens):
            logits = self.model.logits(self.model.decode(mx.array([[token]]), memory, None, cache))[0, -1]
            token = next_token(logits, temperature, rng)
            if token in self.eos:
                break
            out.append(token)
            if statement_done(self.tokenizer, out):
                break
        return self.tokenizer.decode(out, skip_special_tokens=True)


class NaiveMLXBackend:
    """mlx-lm's own `generate`, one question at a time, whole prompt each time (the benchmark's anchor).

    Fed the same token ids as MLXBackend, so any difference in output comes from the prefix reuse.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int = 256):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.encoder = Encoder(tokenizer)

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        from mlx_lm import generate
        from mlx_lm.sample_utils import make_sampler

        prefix, question = prompt_ids(self.encoder, record)
        mx.random.seed(seed)
        return generate(self.model, self.tokenizer, list(prefix) + question, max_tokens=self.max_tokens,
                        sampler=make_sampler(temperature, top_k=TOP_K if temperature > 0 else 0))
