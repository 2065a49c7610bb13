"""Score predictions against gold, by hardness: EM (Spider's exact set match), EX (execution accuracy,
test-suite rules) and mlx-sql's own strict canonical match (identical after sqlglot canonicalisation)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from mlx_sql.data.benchmark import Benchmark, Question
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.compare import results_match
from mlx_sql.eval.exact_set import exact_set_match
from mlx_sql.sandbox import ExecResult, Executor
from mlx_sql.eval.hardness import LEVELS, hardness
from mlx_sql.eval.normalize import canonical, has_order_by, remove_distinct


@dataclass
class Scored:
    index: int
    db_id: str
    question: str
    gold: str
    prediction: str
    hardness: str
    canonical_match: bool
    execution_match: bool
    exact_set_match: bool
    parsed: bool
    error: str | None = None


def schema_names(bench: Benchmark, db_id: str, split: str) -> list[str]:
    schema = bench.schema(db_id, split)
    return schema.table_names + [c.name for t in schema.tables for c in t.columns]


def gold_result(q: Question, bench: Benchmark, split: str, executor: Executor,
                gold_cache: dict[int, ExecResult]) -> ExecResult:
    if q.index not in gold_cache:
        gold_cache[q.index] = executor.run(bench.db_path(q.db_id, split), remove_distinct(q.query))
    return gold_cache[q.index]


def gold_match(q: Question, bench: Benchmark, split: str, executor: Executor,
               gold_cache: dict[int, ExecResult]) -> Callable[[ExecResult], bool]:
    """Whether a prediction's result (run through `remove_distinct`, as scored) counts as EX-correct."""
    gold = gold_result(q, bench, split, executor, gold_cache)
    ordered = has_order_by(q.query, schema_names(bench, q.db_id, split))
    return lambda pred: gold.ok and pred.ok and results_match(gold.rows, pred.rows, ordered)


def score_one(q: Question, prediction: str, bench: Benchmark, split: str, executor: Executor,
              gold_cache: dict[int, ExecResult]) -> Scored:
    names = schema_names(bench, q.db_id, split)
    gold_canon, pred_canon = canonical(q.query, names), canonical(prediction, names)
    db_path = bench.db_path(q.db_id, split)
    gold = gold_result(q, bench, split, executor, gold_cache)
    pred = executor.run(db_path, remove_distinct(prediction)) if prediction.strip() else ExecResult(None, "empty")
    # a query SQLite rejects (clauses out of order, unknown column) never earns a match, however it parses
    set_match = pred.runs and exact_set_match(q.query, prediction, bench.schema(q.db_id, split))
    exact = pred.runs and gold_canon is not None and gold_canon == pred_canon
    execution = gold_match(q, bench, split, executor, gold_cache)(pred)
    error = pred.error or (None if gold.ok else f"gold failed: {gold.error}")
    return Scored(q.index, q.db_id, q.question, q.query, prediction, hardness(q.query), exact, execution,
                  set_match, pred_canon is not None, error)


def score(questions: Sequence[Question], predictions: Sequence[str], bench: Benchmark, split: str,
          timeout: float = 10.0, advance: Callable[[Scored], None] | None = None) -> list[Scored]:
    if len(questions) != len(predictions):
        raise MlxSqlError(f"{len(predictions)} predictions for {len(questions)} questions")
    out, gold_cache = [], {}
    with Executor(timeout=timeout) as executor:
        for q, p in zip(questions, predictions):
            scored = score_one(q, p, bench, split, executor, gold_cache)
            out.append(scored)
            if advance:
                advance(scored)
    return out


def summarize(scored: Iterable[Scored]) -> dict[str, dict[str, float]]:
    """{level: {count, exact_set_match (EM), execution_accuracy (EX), canonical_match}} for each hardness level and 'all' (percentages)."""
    groups: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        groups[s.hardness].append(s)
        groups["all"].append(s)
    out = {}
    for level in (*LEVELS, "all"):
        items = groups.get(level, [])
        n = len(items)
        out[level] = {"count": n,
                      "canonical_match": 100 * sum(s.canonical_match for s in items) / n if n else 0.0,
                      "exact_set_match": 100 * sum(s.exact_set_match for s in items) / n if n else 0.0,
                      "execution_accuracy": 100 * sum(s.execution_match for s in items) / n if n else 0.0}
    return out


def read_predictions(path: Path, questions: Sequence[Question]) -> list[str]:
    """Official format (one SQL a line, optionally `SQL<TAB>db_id`) or JSONL with `index` and `sql`."""
    if not path.exists():
        raise MlxSqlError("predictions file not found", path)
    if not path.is_file():
        raise MlxSqlError("not a regular file (give a predictions file)", path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise MlxSqlError("not a UTF-8 text file", path) from None
    if not any(line.strip() for line in lines):
        raise MlxSqlError("the predictions file is empty", path)
    if lines and lines[0].lstrip().startswith("{"):
        by_index: dict[int, str] = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                by_index[int(record["index"])] = str(record.get("sql", record.get("prediction", "")))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise MlxSqlError(f"line {n}: expected {{\"index\": N, \"sql\": \"...\"}} ({exc})", path) from None
        return [by_index.get(q.index, "") for q in questions]
    preds = [line.split("\t")[0] for line in lines]
    if len(preds) != len(questions):
        raise MlxSqlError(f"{len(preds)} lines for {len(questions)} questions of the split", path)
    return preds


def scored_to_json(scored: Sequence[Scored]) -> list[dict]:
    return [asdict(s) for s in scored]
