"""Carry an unfinished evaluation run to the next machine: its predictions, compressed, in git.

`runs/` is not kept when a session moves to a new checkout, and a Spider dev run with voting on the 1.5B takes
longer than one session here. `save RUN` writes RUN's predictions.jsonl (every finished question: our SQL and
candidates, never a Spider question or gold query) to `benchmarks/partial/`; `restore` puts each saved file back
where it came from, unless that run already holds as many answers, so the benchmark resumes where it stopped.
Once the run finishes and its section is written, `drop RUN` deletes the saved copy.

    python benchmarks/keep_partial.py save runs/spider-validation/qwen1.5b/dev-base-ddl-rows3-vote16-es
    python benchmarks/keep_partial.py restore
    python benchmarks/keep_partial.py drop runs/spider-validation/qwen1.5b/dev-base-ddl-rows3-vote16-es
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

from results import ROOT

PARTIAL = ROOT / "benchmarks" / "partial"
RUNS = ROOT / "runs"


def saved_name(run: Path, runs: Path = RUNS, partial: Path = PARTIAL) -> Path:
    """runs/a/b/c → benchmarks/partial/a--b--c.predictions.jsonl.gz"""
    relative = run.resolve().relative_to(runs.resolve())
    return partial / ("--".join(relative.parts) + ".predictions.jsonl.gz")


def answers(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip())


def save(run: Path, runs: Path = RUNS, partial: Path = PARTIAL) -> str:
    text = (run / "predictions.jsonl").read_text(encoding="utf-8")
    target = saved_name(run, runs, partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    with gzip.open(partial, "wt", encoding="utf-8") as out:
        out.write(text)
    os.replace(partial, target)  # a saved copy is whole or absent
    return f"saved {answers(text)} answers of {run} to {target}"


def restore(runs: Path = RUNS, partial: Path = PARTIAL) -> list[str]:
    said = []
    for source in sorted(partial.glob("*.predictions.jsonl.gz")):
        run = runs.joinpath(*source.name.removesuffix(".predictions.jsonl.gz").split("--"))
        with gzip.open(source, "rt", encoding="utf-8") as f:
            text = f.read()
        here = run / "predictions.jsonl"
        if here.is_file() and answers(here.read_text(encoding="utf-8")) >= answers(text):
            said.append(f"kept {here}: it holds as many answers as the saved copy or more")
            continue
        run.mkdir(parents=True, exist_ok=True)
        here.write_text(text, encoding="utf-8")
        said.append(f"restored {answers(text)} answers to {here}")
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "restore", "drop"])
    parser.add_argument("run", nargs="?", type=Path, help="the run's folder under runs/ (save, drop)")
    args = parser.parse_args()
    if args.action == "restore":
        print("\n".join(restore()) or "nothing saved")
        return
    if args.run is None:
        parser.error(f"{args.action} needs the run's folder")
    if args.action == "save":
        print(save(args.run))
    else:
        saved_name(args.run).unlink()
        print(f"dropped {saved_name(args.run)}")


if __name__ == "__main__":
    main()
