from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import build_tiny_model  # noqa: E402

MINISPIDER = ROOT / "benchmarks" / "minispider"

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
