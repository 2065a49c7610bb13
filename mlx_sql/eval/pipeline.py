"""Evaluation entry points the CLI calls: score a predictions file, write the reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.eval.report import write_report
from mlx_sql.eval.scoring import Scored, read_predictions, score


@dataclass
class EvalReport:
    out_dir: Path
    summary: dict
    scored: list[Scored]
    skipped: int


def evaluate_predictions(predictions: Path, data: Path, split: str, out_dir: Path, name: str,
                         timeout: float = 10.0, advance: Callable[[Scored], None] | None = None,
                         on_total: Callable[[int], None] | None = None) -> EvalReport:
    bench = load_benchmark(data)
    questions = bench.questions(split)
    preds = read_predictions(predictions, questions)
    kept = [(q, p) for q, p in zip(questions, preds) if bench.has_database(q.db_id, split)]
    if on_total:
        on_total(len(kept))
    scored = score([q for q, _ in kept], [p for _, p in kept], bench, split, timeout, advance)
    summary = write_report(out_dir, name, scored, {"predictions": str(predictions), "data": str(data),
                                                   "split": split, "skipped_missing_database": len(questions) - len(kept)})
    return EvalReport(out_dir, summary, scored, len(questions) - len(kept))
