"""Compare an MLX model with llama.cpp on the same GGUF: the proof that a conversion is right.

Used by the importer's tests and benchmark, and by the exporter to check the files it writes.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


import numpy as np


@dataclass
class Agreement:
    positions: int
    top1: float
    mean_abs_logit_diff: float


TOP_K = 40  # sampling (temperature > 0, `eval.retries`) draws from the 40 likeliest tokens, as llama.cpp and Ollama do


def pick_token(logits: Any, temperature: float, rng: np.random.Generator) -> int:
    """The next token from one row of logits (numpy or MLX): the argmax at temperature 0, else a draw from
    the top-k tokens at `temperature` — one sampler for every decoder we drive ourselves."""
    logits = np.asarray(logits, dtype=np.float32).reshape(-1)
    if temperature <= 0:
        return int(logits.argmax())
    top = np.argpartition(-logits, TOP_K - 1)[:TOP_K] if logits.size > TOP_K else np.arange(logits.size)
    weights = np.exp((logits[top] - logits[top].max()) / temperature)
    return int(top[rng.choice(len(top), p=weights / weights.sum())])


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from named parts (a run's seed, a step, a question...): the same parts, the same seed, in
    any process; different parts, unrelated seeds."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def draw_rng(seed: int, prompt: Sequence[int]) -> np.random.Generator:
    """The random stream of one sampled answer: seeded by the candidate's seed *and* the prompt it answers.

    A seed alone would give every question the same stream, so candidate k would draw the same uniforms
    everywhere (one seed always taking a tail token first, another always the argmax): candidates correlated
    across questions. Mixing in the prompt's tokens keeps reruns identical and questions independent."""
    digest = zlib.crc32(np.asarray(prompt, dtype=np.int64).tobytes())
    return np.random.default_rng([int(seed), digest])


def llama_cpp_model(gguf: str | Path, **kwargs: Any):
    from llama_cpp import Llama

    return Llama(model_path=str(gguf), verbose=False, n_threads=kwargs.pop("n_threads", 2), **kwargs)


def logits_agreement(model: Any, gguf: str | Path, ids: Sequence[int]) -> Agreement:
    """Feed both the same token ids and compare their next-token logits at every position."""
    import mlx.core as mx

    ref = llama_cpp_model(gguf, logits_all=True, n_ctx=max(512, len(ids) + 8))
    ref.eval(list(ids))
    ref_logits = np.asarray(ref.scores[: len(ids)], dtype=np.float32)
    ours = np.asarray(model(mx.array([list(ids)]))[0].astype(mx.float32))
    return Agreement(len(ids), float(np.mean(ref_logits.argmax(-1) == ours.argmax(-1))),
                     float(np.mean(np.abs(ref_logits - ours))))


def greedy_side_by_side(model: Any, tokenizer: Any, gguf: str | Path, prompt: str,
                        max_tokens: int = 32) -> tuple[str, str]:
    """Greedy continuations of the same prompt token ids from MLX and from llama.cpp, decoded alike."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    ids = tokenizer.encode(prompt)
    eos = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    ours: list[int] = []
    for token, _ in generate_step(mx.array(ids), model, max_tokens=max_tokens):
        token = int(token)
        if token in eos:
            break
        ours.append(token)
    return tokenizer.decode(ours), tokenizer.decode(llama_cpp_greedy(gguf, ids, max_tokens))


def llama_cpp_greedy(gguf: str | Path, ids: list[int], max_tokens: int) -> list[int]:
    """llama.cpp's greedy continuation of `ids`, up to its end-of-sequence token or `max_tokens`."""
    ref = llama_cpp_model(gguf, n_ctx=2048)
    theirs: list[int] = []
    for token in ref.generate(ids, temp=0.0, top_k=1, reset=True):
        if token == ref.token_eos() or len(theirs) >= max_tokens:
            break
        theirs.append(token)
    return theirs


def greedy_path_gaps(model: Any, tokenizer: Any, gguf: str | Path, prompt: str,
                     max_tokens: int = 32) -> tuple[str, list[float]]:
    """llama.cpp's greedy continuation, and how far MLX's logits are from choosing each of its tokens.

    Identical greedy text is too strict a test: one near-tie that f16 weights round the other way changes
    everything after it. Instead MLX scores llama.cpp's path teacher-forced: at each step where it would
    pick another token, the gap (its best logit minus that token's) goes into the list; a faithful
    conversion leaves only gaps of float-rounding size.
    """
    import mlx.core as mx

    ids = tokenizer.encode(prompt)
    theirs = llama_cpp_greedy(gguf, ids, max_tokens)
    if not theirs:
        return "", []
    logits = np.asarray(model(mx.array([ids + theirs]))[0, len(ids) - 1:len(ids) - 1 + len(theirs)]
                        .astype(mx.float32))
    gaps = [float(logits[i].max() - logits[i, t]) for i, t in enumerate(theirs) if logits[i].argmax() != t]
    return tokenizer.decode(theirs), gaps


class LlamaCppSeq2Seq:
    """An encoder-decoder GGUF (T5) in llama.cpp through llama-cpp-python's low-level API.

    Its high-level `Llama` only decodes; T5 needs `llama_encode` on the input first, then decoding from the
    model's decoder start token (the steps llama.cpp's own llama-cli takes).
    """

    def __init__(self, gguf: str | Path, n_ctx: int = 2048, n_threads: int = 2):
        import llama_cpp

        from mlx_sql.errors import MlxSqlError

        self.lib = llama_cpp
        self.llm = llama_cpp_model(gguf, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads)
        self.ctx, model = self.llm.ctx, self.llm.model
        if not llama_cpp.llama_model_has_encoder(model):
            raise MlxSqlError("not an encoder-decoder GGUF (no encoder)", gguf)
        self.start = int(llama_cpp.llama_model_decoder_start_token(model))
        self.vocab = self.llm.n_vocab()
        self.eos = self.llm.token_eos()

    def _run(self, call, ids: Sequence[int]) -> None:
        tokens = (self.lib.llama_token * len(ids))(*ids)
        rc = call(self.ctx, self.lib.llama_batch_get_one(tokens, len(ids)))
        if rc != 0:
            raise RuntimeError(f"llama.cpp returned {rc}")

    def encode(self, source: Sequence[int]) -> None:
        """Run the encoder on `source` (ending in </s>) and start a fresh decoder cache."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self._run(self.lib.llama_encode, source)

    def step(self, token: int) -> np.ndarray:
        """Feed one decoder token; the next-token logits."""
        self._run(self.lib.llama_decode, [token])
        pointer = self.lib.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,)).astype(np.float32)

    def decoder_logits(self, source: Sequence[int], targets: Sequence[int]) -> np.ndarray:
        """(len(targets) + 1, vocab): logits after the start token and after each target token."""
        self.encode(source)
        rows = [self.step(self.start)]
        rows += [self.step(t) for t in targets]
        return np.stack(rows)

    def decode_tokens(self, source: Sequence[int], max_tokens: int, stop: Any = None, temperature: float = 0.0,
                      seed: int = 0) -> list[int]:
        """Decoding until </s>, `max_tokens`, or `stop(tokens so far)` says the answer is complete: greedy at
        temperature 0, else `pick_token`'s seeded top-k draws."""
        self.encode(source)
        logits, out = self.step(self.start), []
        rng = draw_rng(seed, source)
        while len(out) < max_tokens:
            token = pick_token(logits, temperature, rng)
            if token == self.eos:
                break
            out.append(token)
            if stop is not None and stop(out):
                break
            logits = self.step(token)
        return out
