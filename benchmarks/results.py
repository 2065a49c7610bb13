"""RESULTS.md is written by the benchmarks themselves: each owns one section between markers and
replaces it with what it just measured, so `make bench` regenerates the file."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def no_options(doc: str | None) -> None:
    """For a benchmark that takes no options: `--help` prints its docstring, anything else is an error,
    instead of a run that rewrites its RESULTS section."""
    argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()


def model_label(cfg) -> str:
    """A recipe's model as its source names it (PyPI parts or package, Ollama name, GGUF file or folder)."""
    return str(cfg.gguf_parts or cfg.gguf_package or cfg.ollama or cfg.gguf or cfg.path)


def machine() -> str:
    """One line describing where the numbers were measured."""
    import mlx.core as mx

    try:
        import llama_cpp

        llama = f", llama-cpp-python {llama_cpp.__version__}"
    except ImportError:
        llama = ""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, {memory:.0f} GiB, "
            f"Python {platform.python_version()}, mlx {mx.__version__} ({mx.default_device().type.name}){llama}")


def trained_with(adapter: Path) -> dict:
    """The [train] settings an adapter was trained with — the recipe.toml saved beside it, not the flags of the
    command reporting it — or {} where no recipe was saved."""
    from mlx_sql.recipe import tomllib

    recipe = Path(adapter) / "recipe.toml"
    return tomllib.loads(recipe.read_text(encoding="utf-8")).get("train", {}) if recipe.is_file() else {}


def section_pattern(key: str) -> re.Pattern:
    """A section of RESULTS.md, markers included; group 1 is what lies between them."""
    return re.compile(rf"<!-- {re.escape(key)} -->(.*?)<!-- /{re.escape(key)} -->", re.S)


def update_section(key: str, title: str, body: str, path: Path = RESULTS, shows: str = "") -> None:
    """Replace (or append) the section `key` of RESULTS.md with `body`, dated and with the machine, opened by
    `shows`: two or three lines on what the section tells a reader."""
    from mlx_sql.fileio import write_text

    stamp = f"_{datetime.date.today().isoformat()}, {machine()}._"
    intro = f"**What this shows.** {shows.strip()}\n\n" if shows else ""
    section = f"<!-- {key} -->\n## {title}\n\n{stamp}\n\n{intro}{body.strip()}\n<!-- /{key} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    pattern = section_pattern(key)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    write_text(path, text)
    print(f"updated the '{title}' section of {path}")
