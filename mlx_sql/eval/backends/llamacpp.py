"""llama.cpp backends: a GGUF fed the very token ids MLX sees, greedy and sampled answers over one shared
prompt (SharedPromptSampler), and encoder-decoder (T5) GGUFs through the low-level API."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mlx_sql.data.examples import chat_messages
from mlx_sql.eval.backends.base import eos_ids, prompt_ids, source_ids, statement_done
from mlx_sql.models.verify import TOP_K
from mlx_sql.train.encode import Encoder


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
