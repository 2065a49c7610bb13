"""Training targets from the model's own answers (self-distillation).

Finetuned on Spider's gold SQL, a small instruct model drifts to the gold queries' style (lowercase,
T1/T2 aliases) and, measured on held-out databases, loses accuracy it had. Where the untrained model
already returns the gold result, its own query is kept as the target: its style is unchanged there,
and what the gradient has to teach is concentrated on the questions it got wrong.

The answers come from an evaluation report (`mlx-sql eval --set eval.split=train`): its
per_example.jsonl says, per question, which SQL the model wrote and whether it executed to the gold
result. Only the training split is accepted, so dev can never leak into training this way.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlx_sql.errors import MlxSqlError

OwnAnswers = dict[tuple[str, str], str]  # (db_id, question) -> SQL that returned the gold result


def load_own_answers(folder: Path, split: str) -> OwnAnswers:
    """The execution-correct predictions of the report in `folder`, which must answer `split`."""
    summary_path, rows_path = folder / "summary.json", folder / "per_example.jsonl"
    for path in (summary_path, rows_path):
        if not path.is_file():
            raise MlxSqlError(f"not an evaluation folder ({path.name} missing); make one with "
                              "`mlx-sql eval --recipe RECIPE --set eval.split=train`", folder)
    try:
        answered = json.loads(summary_path.read_text(encoding="utf-8")).get("split")
    except json.JSONDecodeError as exc:
        raise MlxSqlError(f"not valid JSON ({exc.msg}, line {exc.lineno})", summary_path) from None
    if answered != split:
        raise MlxSqlError(f"this report answers the '{answered}' split; own answers must come from the "
                          f"'{split}' split the recipe trains on", summary_path)
    answers: OwnAnswers = {}
    seen = 0
    for number, line in enumerate(rows_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key, sql, correct = (row["db_id"], row["question"]), row["prediction"], row["execution_match"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else f"missing field {exc}"
            raise MlxSqlError(f"line {number}: not a scored prediction ({why})", rows_path) from None
        seen += 1
        if correct is True and isinstance(sql, str) and sql.strip():
            answers[key] = sql.strip()
    if not answers:
        raise MlxSqlError(f"none of its {seen} predictions returned the gold result: nothing to train on "
                          "from it", rows_path)
    return answers
