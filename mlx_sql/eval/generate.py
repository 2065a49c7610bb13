"""Generation backends: MLX (schema prefix computed once per database), Ollama's HTTP API, llama.cpp.

Each turns eval records (the same `{instruction, input}` as training, without the
answer) into raw model text; `extract_sql` makes it a query.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_sql.data.examples import chat_messages
from mlx_sql.errors import MlxSqlError
from mlx_sql.models.prompt_state import keep_recent, state_path
from mlx_sql.eval.extract import statement_finished
from mlx_sql.models.verify import TOP_K, draw_rng, pick_token
from mlx_sql.train.encode import Encoder
from mlx_sql.train.prefix_cache import BranchCache, CollectCache, DecodeCache


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


class Backend(Protocol):
    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        """Greedy at temperature 0 (what scoring assumes); sampled, reproducibly per seed, above it."""


class MLXBackend:
    """Greedy decoding; the prefix (instruction + schema) of each database is run once and reused."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_tokens: int = 256, state_id: str | None = None):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.encoder = Encoder(tokenizer)
        self.eos = eos_ids(tokenizer)
        self._prefix: tuple[tuple[int, ...], list[tuple[mx.array, mx.array]]] | None = None
        self.state_id = state_id  # given: prefixes are kept on disk for the next process (a one-shot ask)

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[mx.array, mx.array]]:
        if self._prefix is None or self._prefix[0] != prefix:
            path = self._state_file(prefix)
            kv = load_prefix_state(path, len(self.model.layers)) if path is not None else None
            if kv is None:
                collect = [CollectCache() for _ in self.model.layers]
                self.model.model(mx.array([list(prefix)]), cache=collect)
                kv = [(c.keys, c.values) for c in collect]
                mx.eval(kv)
                if path is not None:
                    save_prefix_state(path, kv)
            self._prefix = (prefix, kv)
        return self._prefix[1]

    def _state_file(self, prefix: tuple[int, ...]) -> Path | None:
        return state_path("mlx-state", self.state_id or "", prefix, ".safetensors")

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        prefix, question = prompt_ids(self.encoder, record)
        cache = [DecodeCache(k, v) for k, v in self._prefix_kv(prefix)]
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
        (the database's prefix from its cache, the question once). A row that has finished idles on its last
        token until all have; its text is cut where it ended."""
        prefix, question = prompt_ids(self.encoder, record)
        cache = [DecodeCache(k, v) for k, v in self._prefix_kv(prefix)]
        first = self.model(mx.array([question]), cache=cache)[:, -1, :]
        branch = [BranchCache(c.keys, c.values) for c in cache]
        rngs = [draw_rng(seed, [*prefix, *question]) for seed in seeds]
        rows: list[list[int]] = [[] for _ in seeds]
        done = [False] * len(seeds)
        logits = mx.broadcast_to(first, (len(seeds), first.shape[-1])).astype(mx.float32)
        for _ in range(self.max_tokens):
            table = np.asarray(logits)
            feed = []
            for i, rng in enumerate(rngs):
                if not done[i]:
                    token = pick_token(table[i], temperature, rng)
                    if token in self.eos:
                        done[i] = True
                    else:
                        rows[i].append(token)
                        done[i] = len(rows[i]) >= self.max_tokens or statement_done(self.tokenizer, rows[i])
                feed.append(rows[i][-1] if rows[i] else question[-1])
            if all(done):
                break
            logits = self.model(mx.array(feed)[:, None], cache=branch)[:, -1, :].astype(mx.float32)
        return [self.tokenizer.decode(row) for row in rows]

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


def post_json(url: str, body: dict[str, Any], timeout: float, what: str, headers: dict[str, str] | None = None) -> Any:
    """POST a JSON body, return the JSON answer; any failure is one line naming the server."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
        raise MlxSqlError(f"{what} request failed: {exc}", url) from None


class OllamaBackend:
    """A running Ollama server's /api/chat (temperature 0)."""

    def __init__(self, model: str, base_url: str = "http://localhost:11434", timeout: float = 120.0,
                 context_window: int = 4096, max_tokens: int = 256):
        self.model, self.url, self.timeout = model, base_url.rstrip("/") + "/api/chat", timeout
        self.options = {"temperature": 0, "num_ctx": context_window, "num_predict": max_tokens}

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        options = {**self.options, "temperature": temperature, **({"seed": seed, "top_k": TOP_K} if temperature else {})}
        answer = post_json(self.url, {"model": self.model, "messages": chat_messages(record, with_answer=False),
                                      "stream": False, "options": options}, self.timeout, "Ollama")
        try:
            return answer["message"]["content"]
        except (KeyError, TypeError):
            raise MlxSqlError(f"Ollama answered without a message: {str(answer)[:200]}", self.url) from None


class OpenAIBackend:
    """Any OpenAI-compatible chat server (`/v1/chat/completions`): mlx_lm.server, llama.cpp's server,
    LM Studio, Ollama's /v1, vLLM. Greedy (temperature 0); the key, if any, comes from the environment."""

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8080", timeout: float = 120.0,
                 max_tokens: int = 256, api_key: str | None = None):
        root = base_url.rstrip("/")
        self.url = root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")
        self.model, self.timeout, self.max_tokens = model, timeout, max_tokens
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        body = {"model": self.model, "messages": chat_messages(record, with_answer=False), "temperature": temperature,
                "max_tokens": self.max_tokens, "stream": False, **({"seed": seed} if temperature else {})}
        answer = post_json(self.url, body, self.timeout, "chat server", self.headers)
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise MlxSqlError(f"chat server answered without a choice: {str(answer)[:200]}", self.url) from None


class LlamaCppSeq2SeqBackend:
    """An encoder-decoder GGUF (T5) in llama.cpp, fed the very ids MLX sees (llama-cpp-python's `Llama`
    cannot run an encoder, so this drives llama_encode / llama_decode itself)."""

    def __init__(self, gguf: str, tokenizer: Any, max_tokens: int = 256, context_window: int = 4096):
        from mlx_sql.models.verify import LlamaCppSeq2Seq

        self.llm = LlamaCppSeq2Seq(gguf, n_ctx=context_window)
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.encoder = Encoder(tokenizer, self.llm.start)

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        out = self.llm.decode_tokens(source_ids(self.encoder, record), self.max_tokens,
                                     stop=lambda tokens: statement_done(self.tokenizer, tokens),
                                     temperature=temperature, seed=seed)
        return self.tokenizer.decode(out, skip_special_tokens=True)


class LlamaCppBackend:
    """A GGUF file through llama-cpp-python.

    Given the model's tokenizer it feeds llama.cpp the very token ids MLX sees (chat template or plain
    layout, as in training) and decodes itself (`SharedPromptSampler`): greedy answers and sampled ones
    (retries, voting) share one KV cache, in which the prompt prefix shared with the previous call is kept —
    a database's schema is computed once, and a question's prompt once for its greedy answer and all its
    samples. Without a tokenizer it falls back to the chat template stored in the file.
    """

    def __init__(self, gguf: str, max_tokens: int = 256, context_window: int = 4096, tokenizer: Any = None):
        from mlx_sql.models.verify import llama_cpp_model

        self.llm = llama_cpp_model(gguf, n_ctx=context_window)
        self.max_tokens, self.context_window = max_tokens, context_window
        stat = Path(gguf).stat()  # saved prompt states belong to this very file
        self.model_id = f"{Path(gguf).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self.tokenizer = tokenizer
        self._sampler: Any = None  # the decoding context, made on first use, remade when more rows are asked
        if tokenizer is not None:
            self.encoder = Encoder(tokenizer)
            self.eos = eos_ids(tokenizer) | {self.llm.token_eos()}

    def generate(self, record: dict[str, Any], temperature: float = 0.0, seed: int = 0) -> str:
        if self.tokenizer is None:
            top_k = TOP_K if temperature > 0 else 1
            result = self.llm.create_chat_completion(messages=chat_messages(record, with_answer=False),
                                                     temperature=temperature, top_k=top_k, seed=seed,
                                                     max_tokens=self.max_tokens)
            return result["choices"][0]["message"]["content"] or ""
        return self.generate_many(record, [seed], temperature)[0]

    def generate_many(self, record: dict[str, Any], seeds: Sequence[int], temperature: float) -> list[str]:
        """One answer per seed (the argmax at temperature 0), decoded together as rows of one batch over one
        computation of the prompt (result voting)."""
        if self.tokenizer is None:
            return [self.generate(record, temperature, seed) for seed in seeds]
        from mlx_sql.models.llama_cpp_batch import SharedPromptSampler

        prefix, question = prompt_ids(self.encoder, record)
        if self._sampler is None or self._sampler.max_rows < len(seeds):
            if self._sampler is not None:
                self._sampler.close()
            rows = max(len(seeds), 8)
            self._sampler = SharedPromptSampler(self.llm, rows, self.context_window + rows * self.max_tokens,
                                                model_id=self.model_id)
        rows = self._sampler.sample([*prefix, *question], seeds, temperature, self.max_tokens,
                                    lambda tokens: statement_done(self.tokenizer, tokens), self.eos, len(prefix))
        return [self.tokenizer.decode(tokens) for tokens in rows]
