"""Training targets from the model's own answers (self-distillation).

Finetuned on Spider's gold SQL, a small instruct model drifts to the gold queries' style (lowercase,
T1/T2 aliases) and, measured on held-out databases, loses accuracy it had. Where the untrained model
already returns the gold result, its own query is kept as the target: its style is unchanged there,
and what the gradient has to teach is concentrated on the questions it got wrong.

The answers come from an evaluation report (`mlx-sql eval --set eval.split=train`): its
per_example.jsonl says, per question, which SQL the model wrote and whether it executed to the gold
result. Only the training split is accepted, so dev can never leak into training this way.

The same report, scored with several candidates a question (`eval.samples`), also says which questions the
model answers right only sometimes: the ones GRPO learns from (a group that is all right or all wrong carries
no signal), so `data.sometimes_right` keeps only those and no training step is spent sampling the rest.
"""

from __future__ import annotations

from pathlib import Path

from mlx_sql.errors import MlxSqlError

OwnAnswers = dict[tuple[str, str], str]  # (db_id, question) -> SQL that returned the gold result


def load_own_answers(folder: Path, split: str, at_least: str = "easy") -> OwnAnswers:
    """The execution-correct predictions of the report in `folder`, which must answer `split`, to questions of
    Spider hardness `at_least` or harder. Measured on held-out databases, the 0.5B trained on all its correct
    answers lost accuracy on hard questions; trained on the medium-or-harder ones it gained (RESULTS.md)."""
    from mlx_sql.eval.hardness import LEVELS
    from mlx_sql.eval.report import load_report

    summary, rows = load_report(folder, "; make one with `mlx-sql eval --recipe RECIPE --set eval.split=train`")
    rows_path = folder / "per_example.jsonl"
    if summary.get("split") != split:
        raise MlxSqlError(f"this report answers the '{summary.get('split')}' split; own answers must come from "
                          f"the '{split}' split the recipe trains on", folder / "summary.json")
    answers: OwnAnswers = {}
    floor = LEVELS.index(at_least)
    for number, row in enumerate(rows, 1):
        try:
            key, sql, correct = (row["db_id"], row["question"]), row["prediction"], row["execution_match"]
            hard_enough = LEVELS.index(row["hardness"]) >= floor
        except (KeyError, TypeError, ValueError) as exc:
            raise MlxSqlError(f"line {number}: not a scored prediction (missing or unknown field {exc})",
                              rows_path) from None
        if correct is True and hard_enough and isinstance(sql, str) and sql.strip():
            answers[key] = sql.strip()
    if not answers:
        which = "" if at_least == LEVELS[0] else f" to a question {at_least} or harder"
        raise MlxSqlError(f"none of its {len(rows)} predictions{which} returned the gold result: nothing to train "
                          "on from it", rows_path)
    return answers


def load_sometimes_right(folder: Path, split: str) -> set[tuple[str, str]]:
    """(db_id, question) of the questions some but not all of whose recorded candidates in the report in `folder`
    (`eval.samples` > 1 on `split`) returned the gold result."""
    from mlx_sql.eval.pipeline import load_done
    from mlx_sql.eval.report import load_report

    summary, rows = load_report(folder, "; make one with `mlx-sql eval --recipe RECIPE --set eval.split=train "
                                        "--set eval.samples=8`")
    if summary.get("split") != split:
        raise MlxSqlError(f"this report answers the '{summary.get('split')}' split; the questions to keep must come "
                          f"from the '{split}' split the recipe trains on", folder / "summary.json")
    if (summary.get("samples") or 1) < 2:
        raise MlxSqlError("this report has one answer a question: score it with eval.samples > 1 to tell which "
                          "questions are answered right only sometimes", folder / "summary.json")
    keys = {row["index"]: (row["db_id"], row["question"]) for row in rows if "index" in row}
    mixed = set()
    for index, record in load_done(folder / "predictions.jsonl").items():
        right = [bool(c.get("correct")) for c in record.get("candidates", [])]
        if index in keys and any(right) and not all(right):
            mixed.add(keys[index])
    if not mixed:
        raise MlxSqlError(f"none of its {len(rows)} questions was answered right only sometimes: nothing for GRPO "
                          "to learn from", folder)
    return mixed

