"""data.own_answers: the model's own execution-correct SQL replaces the gold target (self-distillation)."""

import json

import pytest

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.build import build_dataset
from mlx_sql.data.own_answers import load_own_answers
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.pipeline import evaluate_predictions, select_questions
from mlx_sql.recipe import load_recipe

from conftest import MINISPIDER


def scored_report(tmp_path, split: str, predict) -> tuple:
    """A real evaluation report of `predict(question) -> SQL or None` over the split's questions."""
    questions = load_benchmark(MINISPIDER).questions(split)
    lines = [json.dumps({"index": q.index, "sql": sql}) for q in questions if (sql := predict(q)) is not None]
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    report = evaluate_predictions(tmp_path / "predictions.jsonl", MINISPIDER, split, tmp_path / f"eval-{split}", "own")
    return report, questions


def lower_select(q):
    """Same result as the gold query, different text: what 'the model's own style' looks like."""
    return "select" + q.query[len("SELECT"):] if q.query.startswith("SELECT") and q.index % 2 == 0 else None


def recipe(write_recipe, tmp_path, *overrides):
    path = write_recipe(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\nout_dir = "{tmp_path / "out"}"\n')
    return load_recipe(path, list(overrides))


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_correct_own_answers_replace_the_gold_target_and_only_in_training(write_recipe, tmp_path):
    report, questions = scored_report(tmp_path, "train", lower_select)
    correct = {(s.db_id, s.question): s.prediction for s in report.scored if s.execution_match}
    assert len(correct) > 50
    built = build_dataset(recipe(write_recipe, tmp_path, f'data.own_answers="{report.out_dir}"',
                                 "data.valid_fraction=0.1"))
    train, valid = read(built.out_dir / "train.jsonl"), read(built.out_dir / "valid.jsonl")
    gold = {(q.db_id, q.question): q.query for q in questions}
    own = [r for r in train if (r["db_id"], r["question"]) in correct]
    assert built.own_targets == len(own) > 40
    assert all(r["output"] == correct[(r["db_id"], r["question"])] and r["output"].startswith("select ")
               for r in own)
    assert all(r["output"] == gold[(r["db_id"], r["question"])] for r in train if r not in own)
    assert all(r["output"] == gold[(r["db_id"], r["question"])] for r in valid)  # eval loss stays on the gold


def test_a_wrong_answer_is_never_a_target(tmp_path):
    report, _ = scored_report(tmp_path, "train", lambda q: "SELECT -987654" if q.index % 2 else q.query)
    answers = load_own_answers(report.out_dir, "train")
    assert answers and "SELECT -987654" not in answers.values()
    assert len(answers) == sum(s.execution_match for s in report.scored)


def test_own_answers_must_come_from_the_training_split(tmp_path):
    report, _ = scored_report(tmp_path, "dev", lambda q: q.query)
    with pytest.raises(MlxSqlError, match="answers the 'dev' split; own answers must come from the 'train'"):
        load_own_answers(report.out_dir, "train")


def test_bad_own_answer_folders_are_one_line_errors(tmp_path, write_recipe):
    with pytest.raises(MlxSqlError, match="not an evaluation folder \\(summary.json missing\\)"):
        load_own_answers(tmp_path, "train")
    report, _ = scored_report(tmp_path, "train", lambda q: "SELECT -987654")
    with pytest.raises(MlxSqlError, match=r"none of its 243 predictions returned the gold result"):
        load_own_answers(report.out_dir, "train")
    rows = report.out_dir / "per_example.jsonl"
    rows.write_text(rows.read_text().splitlines()[0] + "\n{\"db_id\": \"library\"}\n")
    with pytest.raises(MlxSqlError, match="line 2: not a scored prediction \\(missing or unknown field 'question'\\)") as err:
        load_own_answers(report.out_dir, "train")
    assert str(rows) in str(err.value)


def test_answers_for_no_training_question_are_an_error(tmp_path, write_recipe):
    report, _ = scored_report(tmp_path, "train", lambda q: q.query if q.db_id == "airline" else None)
    with pytest.raises(MlxSqlError, match="none of the .* training questions is among its"):
        build_dataset(recipe(write_recipe, tmp_path, f'data.own_answers="{report.out_dir}"',
                             'data.valid_by="database"', "data.valid_fraction=0.2", "data.seed=0"))


def test_select_questions_keeps_only_what_keep_accepts():
    bench = load_benchmark(MINISPIDER)
    _, usable, _ = select_questions(bench, "train", keep=lambda q: q.index % 10 == 0)
    assert [q.index for q in usable] == list(range(0, 243, 10))


def test_data_build_says_how_many_targets_are_the_models_own(write_recipe, tmp_path, tiny_model):
    from typer.testing import CliRunner

    from mlx_sql.cli.app import app

    report, _ = scored_report(tmp_path, "train", lower_select)
    path = write_recipe(f'[model]\npath = "{tiny_model("llama")}"\n[data]\npath = "{MINISPIDER}"\n'
                        f'out_dir = "{tmp_path / "out"}"\n')
    result = CliRunner().invoke(app, ["data", "build", str(path), "--set", f'data.own_answers="{report.out_dir}"'])
    assert result.exit_code == 0, result.output
    built = read(tmp_path / "out" / "train.jsonl")
    own = sum(r["output"].startswith("select ") for r in built)
    assert f"{own} of the {len(built)} training targets are the model's own SQL" in " ".join(result.output.split())
    missing = CliRunner().invoke(app, ["data", "build", str(path), "--set", f'data.own_answers="{tmp_path / "nope"}"'])
    assert missing.exit_code != 0
    assert "data.own_answers: path" in str(missing.exception) and "nope' does not exist" in str(missing.exception)


def test_own_answers_only_trains_on_the_models_correct_sql_and_nothing_else(write_recipe, tmp_path):
    report, questions = scored_report(tmp_path, "train", lower_select)
    correct = {(s.db_id, s.question): s.prediction for s in report.scored if s.execution_match}
    built = build_dataset(recipe(write_recipe, tmp_path, f'data.own_answers="{report.out_dir}"',
                                 "data.own_answers_only=true", "data.valid_fraction=0.1"))
    train, valid = read(built.out_dir / "train.jsonl"), read(built.out_dir / "valid.jsonl")
    assert built.train == len(train) == built.own_targets > 40
    assert all(r["output"] == correct[(r["db_id"], r["question"])] for r in train)  # no gold-style target left
    gold = {(q.db_id, q.question): q.query for q in questions}
    assert valid and all(r["output"] == gold[(r["db_id"], r["question"])] for r in valid)
    everything = build_dataset(recipe(write_recipe, tmp_path, f'data.own_answers="{report.out_dir}"',
                                      "data.valid_fraction=0.1", f'data.out_dir="{tmp_path / "all"}"'))
    assert everything.train > built.train and everything.valid == built.valid


def test_own_answers_only_needs_own_answers(write_recipe, tmp_path):
    with pytest.raises(MlxSqlError, match="data.own_answers_only trains on the model's own correct answers: set "
                                          "data.own_answers"):
        build_dataset(recipe(write_recipe, tmp_path, "data.own_answers_only=true"))


def test_own_answers_of_a_hardness_or_harder(write_recipe, tmp_path):
    """data.own_answers_hardness = "medium": the easy questions' own answers are not trained on at all (with
    own_answers_only), or keep their gold target (without); a report with nothing that hard is an error."""
    from mlx_sql.eval.hardness import LEVELS

    report, _ = scored_report(tmp_path, "train", lambda q: q.query)
    hardness = {(s.db_id, s.question): s.hardness for s in report.scored}
    everything = load_own_answers(report.out_dir, "train")
    medium_up = load_own_answers(report.out_dir, "train", "medium")
    assert {hardness[k] for k in everything} == set(LEVELS)
    assert medium_up == {k: v for k, v in everything.items() if hardness[k] != "easy"} and len(medium_up) > 50
    built = build_dataset(recipe(write_recipe, tmp_path, f'data.own_answers="{report.out_dir}"',
                                 "data.own_answers_only=true", 'data.own_answers_hardness="hard"'))
    train = read(built.out_dir / "train.jsonl")
    assert train and {hardness[(r["db_id"], r["question"])] for r in train} == {"hard", "extra"}
    (tmp_path / "easy").mkdir()
    easy_only, _ = scored_report(tmp_path / "easy", "train",
                                 lambda q: q.query if hardness[(q.db_id, q.question)] == "easy" else "SELECT -1")
    with pytest.raises(MlxSqlError, match="none of its 243 predictions to a question medium or harder returned"):
        load_own_answers(easy_only.out_dir, "train", "medium")
    with pytest.raises(MlxSqlError, match="own_answers_hardness"):
        recipe(write_recipe, tmp_path, 'data.own_answers_hardness="medium-hard"')
    from dataclasses import fields

    from mlx_sql.recipe import DataConfig

    # the recipe spells the levels out (importing the scorer would load sqlglot for every command): same levels
    choices = next(f.metadata["choices"] for f in fields(DataConfig) if f.name == "own_answers_hardness")
    assert choices == LEVELS


def test_sometimes_right_keeps_only_the_questions_whose_candidates_disagree(write_recipe, tmp_path):
    """data.sometimes_right: from a report scored with several candidates a question, only the questions some but
    not all of them answered right are trained on (GRPO's informative groups)."""
    from mlx_sql.data.own_answers import load_sometimes_right

    report, questions = scored_report(tmp_path, "train", lambda q: q.query)
    folder = report.out_dir
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "samples": 4}))
    pattern = {0: [True, True, True, True], 1: [False, False, False, False], 2: [True, False, False, True],
               3: [False, True, False, False]}  # all right, all wrong, mixed, mixed
    lines = [json.dumps({"index": q.index, "sql": q.query,
                         "candidates": [{"sql": q.query, "correct": c} for c in pattern[q.index % 4]]})
             for q in questions]
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    mixed = {(q.db_id, q.question) for q in questions if q.index % 4 in (2, 3)}
    assert load_sometimes_right(folder, "train") == mixed
    built = build_dataset(recipe(write_recipe, tmp_path, f'data.sometimes_right="{folder}"', "data.valid_fraction=0.1"))
    train = read(built.out_dir / "train.jsonl")
    assert train and all((r["db_id"], r["question"]) in mixed for r in train)
    assert len(train) == built.train >= len(mixed) * 0.7  # the held-out databases' questions are not trained on
    with pytest.raises(MlxSqlError, match="answers the 'train' split; the questions to keep must come from the "
                                          "'dev' split"):
        load_sometimes_right(folder, "dev")
    (folder / "summary.json").write_text(json.dumps({**summary, "samples": 1}))
    with pytest.raises(MlxSqlError, match="one answer a question: score it with eval.samples > 1"):
        load_sometimes_right(folder, "train")
    (folder / "summary.json").write_text(json.dumps({**summary, "samples": 4}))
    (folder / "predictions.jsonl").write_text("\n".join(json.dumps({"index": q.index, "candidates": [
        {"correct": True}, {"correct": True}]}) for q in questions) + "\n")
    with pytest.raises(MlxSqlError, match="none of its \\d+ questions was answered right only sometimes"):
        build_dataset(recipe(write_recipe, tmp_path, f'data.sometimes_right="{folder}"'))

