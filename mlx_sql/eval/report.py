"""Evaluation reports: summary.json, summary.md, accuracy.png, per_example.jsonl; and run comparison."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.hardness import LEVELS
from mlx_sql.eval.scoring import Scored, scored_to_json, summarize
from mlx_sql.fileio import write_json, write_jsonl, write_text
from mlx_sql.plots import accuracy_bars

ROWS = (*LEVELS, "all")


def markdown_table(summary: dict[str, dict[str, float]]) -> str:
    """EM is Spider's exact set match (what papers report); the strict canonical match is our own, stricter one."""
    lines = ["| hardness | count | EM % | EX % | strict canonical match % |", "|---|---:|---:|---:|---:|"]
    for level in ROWS:
        s = summary[level]
        lines.append(f"| {level} | {s['count']} | {s['exact_set_match']:.1f} | {s['execution_accuracy']:.1f} | "
                     f"{s['canonical_match']:.1f} |")
    return "\n".join(lines) + "\n"


def retries_note(meta: dict) -> str:
    """Say so when answers are not all the greedy ones: execution-guided decoding is not what Spider's numbers assume."""
    if not meta.get("retries"):
        return ""
    if meta.get("retry_until") == "correct":
        return (f"\nNot a score: where the greedy query did not return the gold result ({meta.get('retried', 0)} "
                f"questions), up to {meta['retries']} samples were drawn and the first that did is the answer "
                "(`eval.retry_until = \"correct\"`: the model's own correct SQL, for `data.own_answers`).\n")
    return (f"\nExecution-guided decoding (`eval.retries = {meta['retries']}`): where SQLite rejected the greedy "
            f"query ({meta.get('retried', 0)} questions), the first of up to {meta['retries']} samples that ran.\n")


def votes_note(meta: dict) -> str:
    if (meta.get("samples") or 1) <= 1:
        return ""
    return (f"\nResult voting (`eval.samples = {meta['samples']}`): the greedy answer and {meta['samples'] - 1} samples, "
            f"grouped by result; the vote chose another result than the greedy answer for {meta['overturned']} "
            f"questions ({meta['overturned_greedy_that_ran']} where the greedy query ran), {meta['overturned_right']} "
            f"of them right ({meta['overturned_fixed']} fixed, {meta['overturned_broke']} broken).\n")


def write_report(out_dir: Path, name: str, scored: Sequence[Scored], meta: dict | None = None) -> dict:
    summary = summarize(scored)
    unparsed = [s.index for s in scored if not s.parsed]
    write_json(out_dir / "summary.json", {"name": name, **(meta or {}), "summary": summary,
                                          "unparseable_predictions": unparsed})
    write_text(out_dir / "summary.md", f"# {name}\n\n" + markdown_table(summary) +
               f"\nEM: Spider's exact set match. EX: execution accuracy (test-suite rules). Strict canonical match: "
               "both queries identical after sqlglot canonicalisation (mlx-sql's own, stricter).\n"
               f"\n{len(unparsed)} predictions did not parse (scored wrong).\n" + retries_note(meta or {}) +
               votes_note(meta or {}))
    write_jsonl(out_dir / "per_example.jsonl", scored_to_json(scored))
    accuracy_bars(out_dir / "accuracy.png", {name: summary}, title=f"{name}: execution accuracy by hardness")
    return summary


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test on the questions two runs disagree about: how often a fair coin would split
    them at least this unevenly. A few points of EX on a few hundred questions is often inside chance."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class Comparison:
    table: str
    gained: list[dict]
    lost: list[dict]

    @property
    def flips(self) -> str:
        """The paired verdict: questions that flipped each way, and whether that split could be chance."""
        return (f"{len(self.gained)} questions flipped to correct, {len(self.lost)} to wrong "
                f"(exact sign test p = {sign_test(len(self.gained), len(self.lost)):.3g})")


def load_report(run: Path, hint: str = "") -> tuple[dict, list[dict]]:
    """summary.json and the per_example.jsonl rows of an evaluation folder; `hint` says how to make one."""
    paths = (run / "summary.json", run / "per_example.jsonl")
    for path in paths:
        if not path.is_file():
            raise MlxSqlError(f"not an evaluation folder ({path.name} missing){hint}", run)
    try:
        summary = json.loads(paths[0].read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MlxSqlError(f"not valid JSON ({exc.msg}, line {exc.lineno})", paths[0]) from None
    rows = []
    for number, line in enumerate(paths[1].read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MlxSqlError(f"line {number}: not valid JSON ({exc.msg})", paths[1]) from None
    return summary, rows


def compare_runs(baseline: Path, candidate: Path, out: Path | None = None) -> Comparison:
    (a, rows_a), (b, rows_b) = load_report(baseline), load_report(candidate)
    lines = [f"| hardness | count | EM {a['name']} | EM {b['name']} | Δ EM | EX {a['name']} | EX {b['name']} | Δ EX |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for level in ROWS:
        sa, sb = a["summary"][level], b["summary"][level]
        lines.append(f"| {level} | {sb['count']} | {sa['exact_set_match']:.1f} | {sb['exact_set_match']:.1f} | "
                     f"{sb['exact_set_match'] - sa['exact_set_match']:+.1f} | {sa['execution_accuracy']:.1f} | "
                     f"{sb['execution_accuracy']:.1f} | {sb['execution_accuracy'] - sa['execution_accuracy']:+.1f} |")
    by_index = {r["index"]: r for r in rows_a}
    gained = [r for r in rows_b if r["execution_match"] and not by_index.get(r["index"], {}).get("execution_match")]
    lost = [r for r in rows_b if not r["execution_match"] and by_index.get(r["index"], {}).get("execution_match")]
    result = Comparison("\n".join(lines) + "\n", gained, lost)
    if out is not None:
        write_text(out / "comparison.md", result.table + f"\n{result.flips}.\n")
        accuracy_bars(out / "comparison.png", {a["name"]: a["summary"], b["name"]: b["summary"]},
                      title="execution accuracy by hardness")
    return result
