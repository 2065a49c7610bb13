"""Generation backends, one module each, with the sampling contract they share in `base`.

MLX (`mlx`), llama.cpp (`llamacpp`) and servers (`http`: Ollama, OpenAI-compatible)."""

from mlx_sql.eval.backends.base import Backend, ManyBackend, eos_ids, prompt_ids, source_ids, statement_done
from mlx_sql.eval.backends.http import OllamaBackend, OpenAIBackend, post_json
from mlx_sql.eval.backends.llamacpp import LlamaCppBackend, LlamaCppSeq2SeqBackend
from mlx_sql.eval.backends.mlx import MLXBackend, NaiveMLXBackend, Seq2SeqMLXBackend

__all__ = ["Backend", "ManyBackend", "LlamaCppBackend", "LlamaCppSeq2SeqBackend", "MLXBackend", "NaiveMLXBackend",
           "OllamaBackend", "OpenAIBackend", "Seq2SeqMLXBackend", "eos_ids", "post_json", "prompt_ids", "source_ids",
           "statement_done"]
