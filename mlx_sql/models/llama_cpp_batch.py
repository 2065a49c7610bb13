"""K sampled continuations of one prompt in llama.cpp, the prompt computed once.

Result voting wants several answers to the same question. K separate completions run the prompt K times
(or, with llama-cpp-python's prefix reuse, once but decode K times one token at a time). Here the prompt
goes into sequence 0 of a KV cache shared by all sequences (`kv_unified`), is copied to sequences
1…K-1 by reference (`llama_memory_seq_cp`: the cells gain sequence ids, nothing is recomputed or
duplicated), and every decoding step feeds one token per live sequence in one batch — on a CPU the
weights are read once per step for all K rows, which is what generation is bound by.

The prompt of the previous call stays in sequence 0, so questions on one database compute its schema once,
as the greedy decoders do. Each row draws with `pick_token` from its own seeded generator: one sampler for
every decoder we drive, and the same seed gives the same answer on a rerun.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.prompt_state import keep_recent, state_path
from mlx_sql.models.verify import draw_rng, pick_token



class SharedPromptSampler:
    """A second llama.cpp context over an already loaded model (`llama_cpp.Llama`), for batched sampling."""

    def __init__(self, llm: Any, max_rows: int, n_ctx: int, n_batch: int = 512, model_id: str = "",
                 save_states: bool = True):
        import llama_cpp
        from llama_cpp import _internals

        self.lib, self.max_rows = llama_cpp, max_rows
        # the loaded model's own context settings (attention kernel, KV types, rope), so a row at temperature 0
        # is its greedy answer; llama.cpp's defaults differ (flash attention on) and shift logits by ~1
        params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_seq_max, params.kv_unified = max_rows, True
        self._context = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.ctx, self.memory = self._context.ctx, self._context.memory
        self.n_ctx, self.n_batch, self.vocab = n_ctx, n_batch, llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(max(n_batch, max_rows), 0, 1)
        self.prompt: list[int] = []  # what sequence 0 holds
        self.model_id, self.save_states = model_id, save_states  # prompt prefixes kept on disk between processes

    def _decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) entries."""
        b = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            b.token[i], b.pos[i], b.n_seq_id[i] = token, pos, 1
            b.seq_id[i][0], b.logits[i] = seq, int(logits)
        b.n_tokens = len(entries)
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            raise MlxSqlError(f"llama.cpp could not decode a batch (code {rc}): the prompt and {self.max_rows} "
                              f"answers need more than its {self.n_ctx}-token context")

    def _logits(self, i: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,))

    def _feed(self, ids: list[int], start: int, end: int) -> None:
        for at in range(start, end, self.n_batch):
            chunk = ids[at:min(at + self.n_batch, end)]
            self._decode([(t, at + j, 0, at + j == len(ids) - 1) for j, t in enumerate(chunk)])

    def _feed_prompt(self, ids: list[int], prefix_len: int = 0) -> None:
        """Make sequence 0 hold exactly `ids`, computing only what differs from the last prompt; a shared
        prefix (a database's schema) not in memory is loaded from disk when an earlier process saved it,
        else computed and saved, so a one-shot `ask` pays for a schema once, not every time."""
        keep = 0
        for a, b in zip(self.prompt, ids[:-1]):  # the last token is always fed again: its logits are needed
            if a != b:
                break
            keep += 1
        self.lib.llama_memory_seq_rm(self.memory, -1, keep, -1)
        state = self._state_file(ids[:prefix_len]) if keep < prefix_len < len(ids) else None
        if state is not None and self._load_state(state, ids[:prefix_len]):
            keep = prefix_len
        elif state is not None:
            self._feed(ids, keep, prefix_len)
            self._save_state(state, ids[:prefix_len])
            keep = prefix_len
        self._feed(ids, keep, len(ids))
        self.prompt = list(ids)

    def _state_file(self, prefix: list[int]) -> Path | None:
        return state_path("llama-state", self.model_id, prefix, ".state") if self.save_states else None

    def _load_state(self, path: Path, prefix: list[int]) -> bool:
        if not path.is_file():
            return False
        tokens = (self.lib.llama_token * len(prefix))()
        count = ctypes.c_size_t(0)
        read = self.lib.llama_state_seq_load_file(self.ctx, str(path).encode(), 0, tokens, len(prefix),
                                                  ctypes.byref(count))
        if read == 0 or count.value != len(prefix) or list(tokens) != prefix:
            self.lib.llama_memory_seq_rm(self.memory, -1, 0, -1)  # whatever it loaded: gone, computed afresh
            return False
        os.utime(path)  # recently used: kept longest
        return True

    def _save_state(self, path: Path, prefix: list[int]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tokens = (self.lib.llama_token * len(prefix))(*prefix)
            if self.lib.llama_state_seq_save_file(self.ctx, str(tmp).encode(), 0, tokens, len(prefix)):
                os.replace(tmp, path)
            keep_recent(path.parent, ".state")
        except OSError:  # a cache that cannot be written only costs time
            pass

    def sample(self, ids: Sequence[int], seeds: Sequence[int], temperature: float, max_tokens: int,
               stop: Callable[[list[int]], bool], eos: set[int], prefix_len: int = 0) -> list[list[int]]:
        """One continuation of `ids` per seed, each ending at an end token, `max_tokens`, or `stop(tokens)`."""
        rows = len(seeds)
        if rows > self.max_rows:
            raise MlxSqlError(f"{rows} samples asked of a sampler made for {self.max_rows}")
        if len(ids) + rows * max_tokens > self.n_ctx:
            raise MlxSqlError(f"the prompt ({len(ids)} tokens) and {rows} answers of up to {max_tokens} tokens "
                              f"exceed the {self.n_ctx}-token context")
        ids = list(ids)
        self._feed_prompt(ids, prefix_len)
        for row in range(1, rows):
            self.lib.llama_memory_seq_cp(self.memory, 0, row, 0, len(ids))
        rngs = [draw_rng(seed, ids) for seed in seeds]
        first = self._logits(-1).astype(np.float32)
        out: list[list[int]] = [[] for _ in seeds]
        live = list(range(rows))
        logits = {row: first for row in live}
        try:
            for step in range(max_tokens):
                feed = []
                for row in live:
                    token = pick_token(logits[row], temperature, rngs[row])
                    if token in eos:
                        continue
                    out[row].append(token)
                    if len(out[row]) < max_tokens and not stop(out[row]):
                        feed.append((row, token))
                if not feed:
                    break
                self._decode([(token, len(ids) + step, row, True) for row, token in feed])
                live = [row for row, _ in feed]
                logits = {row: self._logits(i).astype(np.float32) for i, row in enumerate(live)}
        finally:  # back to the bare prompt in sequence 0, for the next question's prefix reuse
            self.lib.llama_memory_seq_rm(self.memory, -1, len(ids), -1)
            for row in range(1, rows):
                self.lib.llama_memory_seq_rm(self.memory, row, -1, -1)
        return out

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self._context.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

