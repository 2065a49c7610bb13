"""Execution-guided decoding: when SQLite rejects the greedy answer, sample others until one runs.

A small model's failures are mostly queries that do not run at all ("no such column: T2.name": the
column is in another table), and its less likely readings of the schema are often right. On Spider-train
databases held out of training, Qwen2.5-Coder-0.5B's greedy query did not run for 50 of 200 questions;
up to 4 samples at temperature 0.8 raised execution accuracy from 50.0% to 56.0% (benchmarks/RESULTS.md),
where showing the model SQLite's error in a follow-up turn had changed nothing (it repeated its query).
Only failing questions pay for more generations, and the query runs read-only, in the sandbox that
scores it.

On the training split the same loop can instead look for an answer that returns the gold result
(`eval.retry_until = "correct"`): the model's own correct queries, for rejection-sampling finetuning
(`data.own_answers`). That peeks at the gold answer, so it makes training data, never a score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mlx_sql.sandbox import ExecResult
from mlx_sql.eval.extract import extract_sql

Generate = Callable[..., str]  # (record, temperature=, seed=) -> model text, as every backend's `generate`
Say = Callable[[str], None]  # what the decoding is doing now, for a person waiting on it (ask's status line)


def quiet(text: str) -> None:
    """Say nothing: evaluation and synthesis decode thousands of answers with no one watching each."""


@dataclass
class Retried:
    sql: str  # the first candidate accepted (by default: that ran), else the greedy answer
    result: ExecResult  # what running `sql` gave
    failed: list[dict[str, str]] = field(default_factory=list)  # candidates not accepted, with SQLite's error


def runs(result: ExecResult) -> bool:
    return result.runs


def retry_until(generate: Generate, record: dict[str, Any], sql: str, run: Callable[[str], ExecResult],
                retries: int, temperature: float, accept: Callable[[ExecResult], bool] = runs,
                say: Say = quiet, to_sql: Callable[[str], str] = extract_sql) -> Retried:
    """The first of `sql` and up to `retries` samples (seeds 1, 2, …) whose result `accept`s; else `sql`."""
    failed: list[dict[str, str]] = []
    candidate, first = sql, None
    for seed in range(1, retries + 2):
        result = run(candidate) if candidate.strip() else ExecResult(None, "no SQL in the answer")
        first = first or result
        if accept(result):
            return Retried(candidate, result, failed)
        failed.append({"sql": candidate, "error": result.error or ("ran, wrong result" if result.runs else "")})
        if seed <= retries:
            say(f"it did not run: sampling another answer ({seed} of {retries})")
            candidate = to_sql(generate(record, temperature=temperature, seed=seed))
    return Retried(sql, first, failed)


def retry_until_it_runs(generate: Generate, record: dict[str, Any], sql: str, run: Callable[[str], ExecResult],
                        retries: int, temperature: float, say: Say = quiet,
                        to_sql: Callable[[str], str] = extract_sql) -> Retried:
    """The first of `sql` and up to `retries` samples that SQLite runs. A query that ran out of time
    ran: it is kept, not retried."""
    return retry_until(generate, record, sql, run, retries, temperature, say=say, to_sql=to_sql)
