"""Backends that ask a running server: Ollama's /api/chat and any OpenAI-compatible /v1/chat/completions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from mlx_sql.data.examples import chat_messages
from mlx_sql.errors import MlxSqlError
from mlx_sql.models.verify import TOP_K


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
