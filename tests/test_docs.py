"""Docs that cannot drift: every `mlx-sql …` command in README.md and docs/*.md code blocks names a real
subcommand with real flags (checked against the CLI's own parser), every recipe file they name exists and
passes `recipe check`, and `mlx-sql --help` lists the commands in workflow order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer

from conftest import ROOT
from mlx_sql.cli.app import app
from mlx_sql.recipe import load_recipe

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each shell line in fenced code blocks, continuations joined, comments cut."""
    out, inside, pending, start = [], False, "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip().startswith("```"):
            inside = not inside
            continue
        if not inside:
            continue
        text = re.sub(r"\s+#\s.*$", "", line).strip()
        if text.startswith("$ "):
            text = text[2:]
        if not pending:
            start = n
        pending = f"{pending} {text.rstrip(chr(92)).strip()}" if pending else text.rstrip(chr(92)).strip()
        if not text.endswith("\\"):
            out.append((start, pending))
            pending = ""
    return out


def mlx_sql_commands() -> list[tuple[str, int, list[str]]]:
    found = []
    for path in DOCS:
        for n, line in code_lines(path):
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)  # quotes kept whole, operators apart
            lexer.whitespace_split = True
            tokens, words = list(lexer), []
            for token in [*tokens, ";"]:
                if token in ("&&", ";", "|", "||", ">", "<<", "&"):
                    if words[:1] == [".venv/bin/mlx-sql"]:
                        words[0] = "mlx-sql"
                    if words[:1] == ["mlx-sql"]:
                        found.append((f"{path.name}:{n}", n, words[1:]))
                    words = []
                else:
                    words.append(token)
    return found


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The subcommand the words name and the rest of them."""
    command: click.Command = typer.main.get_command(app)
    rest = list(words)
    while hasattr(command, "get_command") and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        if sub is None:
            raise AssertionError(f"no command {rest[0]!r}")
        command, rest = sub, rest[1:]
    return command, rest


def test_docs_exist_and_hold_commands():
    assert (ROOT / "docs").is_dir() and len(DOCS) >= 5
    assert len(mlx_sql_commands()) >= 20
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("where, line, words", mlx_sql_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_command_and_flag_exists(where, line, words):
    command, rest = resolve(words)
    flags = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in flags, f"{where}: `{command.name}` has no {flag} (it has {sorted(flags)})"
        if re.fullmatch(r"recipes/[\w.+-]+\.toml", word):
            assert (ROOT / word).is_file(), f"{where}: {word} does not exist"
            load_recipe(ROOT / word, check_data=False)  # what `recipe check` validates, data aside


def test_help_lists_the_commands_in_workflow_order():
    group = typer.main.get_command(app)
    names = list(group.list_commands(click.Context(group)))
    order = ["recipe", "data", "plan", "train", "eval", "fuse", "export", "ask", "serve"]
    assert [n for n in names if n in order] == order
    for name in names:
        help_text = group.get_command(click.Context(group), name).get_short_help_str(limit=200)
        assert help_text and len(help_text) < 150, name


def test_the_readme_quickstart_runs_end_to_end(tmp_path, tiny_model):
    """README's finetuning quickstart, as written, on a database the test builds and a tiny model in place of
    the offline Qwen (and 2 steps in place of 100)."""
    import os
    import sqlite3
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    recipe = re.search(r"cat > shop.toml <<'TOML'\n(.*?)\nTOML\n", readme, re.S).group(1)
    commands = re.findall(r"^(mlx-sql (?:data build|train|ask --adapter) [^\n]*?)\s*(?:#.*)?$",
                          readme[readme.index("cat > shop.toml"):], re.M)[:3]
    assert [c.split()[1] for c in commands] == ["data", "train", "ask"]
    recipe = re.sub(r'gguf_parts = "[^"]*".*', f'path = "{tiny_model("llama")}"', recipe)
    (tmp_path / "shop.toml").write_text(recipe)
    db = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY, city TEXT, total REAL);"
                       "INSERT INTO orders VALUES (1, 'Paris', 10.5), (2, 'Oslo', 3), (3, 'Paris', 7);")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    (tmp_path / "pairs.csv").write_text("question,sql\n" + "How many orders?,SELECT count(*) FROM orders\n"
                                        "Which city orders the most?,\"SELECT city, count(*) FROM orders GROUP BY city "
                                        "ORDER BY count(*) DESC LIMIT 1\"\nTotal of all orders?,SELECT sum(total) FROM orders\n" * 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for command in commands:
        words = shlex.split(command)[1:]
        if words[0] == "train":
            words += ["--set", "train.iters=2", "--set", "train.batch_size=2"]
        if words[0] == "ask":
            words += ["--set", "eval.max_tokens=8"]
        done = subprocess.run([sys.executable, "-m", "mlx_sql", *words], cwd=tmp_path, capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode in ((0, 1) if words[0] == "ask" else (0,)), (command, done.stderr)
    assert (tmp_path / "adapters" / "shop" / "adapters.safetensors").is_file()
    assert (tmp_path / "data" / "shop" / "train.jsonl").is_file()
    assert db.read_bytes() == before
