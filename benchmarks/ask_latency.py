"""Where a one-shot `mlx-sql ask` spends its time, phase by phase, and the whole command's wall time.

Phases, timed in one process the way the command runs them: importing the CLI, reading the recipe, reading
the database's schema, loading the model (the backend), rendering the prompt, generating the SQL, and
running it in the sandbox (its worker process starts on first use). The command itself is then timed end
to end (`--sql-only`, and with the rows). Run it against another checkout with --code to compare:

    python benchmarks/ask_latency.py --db ../shared/spider/database/concert_singer/concert_singer.sqlite
    python benchmarks/ask_latency.py --code /tmp/before --no-write   # the same, on an older checkout
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SHOWS = ("Where the seconds of a one-shot `mlx-sql ask` go, phase by phase and backend by backend: what a user"
         " waits for between pressing Enter and seeing rows.")


def phases(code: Path, recipe: str, db: str, question: str, backend: str) -> dict[str, float]:
    """Each phase's seconds, measured in a fresh interpreter on the checkout at `code`."""
    script = f"""
import json, sys, time
t = time.perf_counter(); out = {{}}
import mlx_sql.cli.app
out["import the CLI"] = time.perf_counter() - t; t = time.perf_counter()
from mlx_sql.eval.ask import Asker, ask_recipe
from mlx_sql.data.own import find_databases
from mlx_sql.data.schema import schema_from_tables_json
from mlx_sql.data.tables_json import tables_entry
from mlx_sql.sqlite import open_readonly
from pathlib import Path
cfg, default = ask_recipe(None, Path({recipe!r}), None, [])
out["read the recipe"] = time.perf_counter() - t; t = time.perf_counter()
(db_id, path), = find_databases({db!r}).items()
conn = open_readonly(path); schema_from_tables_json(tables_entry(db_id, conn), path); conn.close()
out["read the schema"] = time.perf_counter() - t; t = time.perf_counter()
asker = Asker(cfg, {db!r}, {backend!r})
out["load the model (Asker)"] = time.perf_counter() - t - out["read the schema"]; t = time.perf_counter()
record = asker.prompt({question!r})
out["render the prompt"] = time.perf_counter() - t; t = time.perf_counter()
raw = asker.backend.generate(record)
out["generate the SQL"] = time.perf_counter() - t; t = time.perf_counter()
from mlx_sql.eval.extract import extract_sql
asker.executor.run(asker.db_path, extract_sql(raw))
out["run it in the sandbox"] = time.perf_counter() - t
asker.close()
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=code,
                          timeout=900)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def command(code: Path, recipe: str, db: str, question: str, backend: str, *extra: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlx_sql", "ask", "--recipe", recipe, "--db", db, "--backend",
                           backend, *extra, question], capture_output=True, text=True, env=env, cwd=code, timeout=900)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(done.stderr[-2000:])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", default=str(ROOT), help="the checkout to measure (default: this one)")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "qwen2.5-coder-0.5b.toml"))
    parser.add_argument("--db", default=str(ROOT.parent / "shared" / "spider" / "database" / "concert_singer" /
                                            "concert_singer.sqlite"))
    parser.add_argument("--question", default="How many singers do we have?")
    parser.add_argument("--backends", default="llamacpp,mlx")
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    code = Path(args.code).resolve()
    lines = []
    for backend in args.backends.split(","):
        command(code, args.recipe, args.db, args.question, backend, "--sql-only")  # warm: caches, page cache
        p = phases(code, args.recipe, args.db, args.question, backend)
        sql_only = command(code, args.recipe, args.db, args.question, backend, "--sql-only")
        full = command(code, args.recipe, args.db, args.question, backend)
        cells = " · ".join(f"{k} {v:.2f}" for k, v in p.items())
        line = (f"| {args.label} | {backend} | {sql_only:.1f} | {full:.1f} | {cells} |")
        print(line)
        lines.append(line)
    if not args.no_write:
        from results import RESULTS, section_pattern, update_section

        kept = []
        match = section_pattern("ask-latency").search(RESULTS.read_text(encoding="utf-8"))
        for row in (match.group(1).splitlines() if match else []):
            if row.startswith("| ") and not row.startswith(("| checkout", f"| {args.label} |")):
                kept.append(row)
        body = ("One-shot `mlx-sql ask` with recipes/qwen2.5-coder-0.5b.toml on one Spider database (`concert_singer`, "
                f"\"{args.question}\"), after one warm-up run of the same command: the GGUF assembled, the MLX import "
                "done and — in checkouts that save them — the database's schema prefix on disk (a first ask on a "
                "new database computes it once: ~4.4 s of the llama.cpp row here). Seconds; written by "
                "`benchmarks/ask_latency.py` (`--code DIR --label NAME` measures another checkout).\n\n"
                "| checkout | backend | `ask --sql-only` | `ask` (with rows) | phases, in one process |\n|---|---|---:|---:|---|\n"
                + "\n".join(kept + lines))
        update_section("ask-latency", "How long a one-shot ask takes", body, shows=SHOWS)


if __name__ == "__main__":
    main()
