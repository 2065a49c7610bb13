"""The benchmarks rewrite only their own section of RESULTS.md."""

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from results import update_section  # noqa: E402


def test_a_section_is_replaced_in_place_and_a_new_one_appended(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nintro\n\n<!-- a -->\n## A\n\nold a\n<!-- /a -->\n\n<!-- b -->\n## B\n\nb\n<!-- /b -->\n")
    update_section("a", "A (script)", "| x |\n|---|\n| 1 |", path)
    update_section("c", "C", "new c", path)
    text = path.read_text()
    assert "old a" not in text and "| 1 |" in text
    assert text.index("<!-- a -->") < text.index("<!-- b -->") < text.index("<!-- c -->")
    assert text.count("<!-- a -->") == 1 and "intro" in text and "\nb\n" in text
    assert "CPU cores" in text[text.index("## A (script)"):text.index("<!-- /a -->")]


def test_the_validation_table_keeps_rows_of_variants_not_run_again():
    from spider_validation import earlier_rows

    text = ("x\n<!-- spider-validation-m -->\n## T\n\n| variant | all EX |\n|---|---:|\n| base, ddl | 42.5 |\n"
            "| LoRA, rows3 | 42.0 |\n\nLoRA, rows3: 60 steps, 195 examples of Spider train\nQuestions per level: 5\n"
            "<!-- /spider-validation-m -->\n| LoRA, elsewhere | 1 |\n")
    rows, budgets = earlier_rows(text, "spider-validation-m")
    assert rows == ["| base, ddl | 42.5 |", "| LoRA, rows3 | 42.0 |"]
    assert budgets == {"LoRA, rows3": "LoRA, rows3: 60 steps, 195 examples of Spider train"}
    assert earlier_rows("no section", "spider-validation-m") == ([], {})


def test_own_answers_of_a_hardness_or_harder(tmp_path):
    """`data.own_answers=sampled:medium` trains on the report's correct answers to medium-or-harder questions."""
    import json

    from spider_validation import at_least

    from mlx_sql.data.own_answers import load_own_answers

    report = tmp_path / "sampled-320"
    report.mkdir()
    (report / "summary.json").write_text(json.dumps({"split": "train", "summary": {}}))
    rows = [{"db_id": "d", "question": f"q{i}", "prediction": f"SELECT {i}", "hardness": level,
             "execution_match": i != 3}
            for i, level in enumerate(["easy", "medium", "hard", "extra", "easy"])]
    (report / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    medium_up = at_least(report, "medium")
    assert medium_up.name == "sampled-320-medium-up"
    assert load_own_answers(medium_up, "train") == {("d", "q1"): "SELECT 1", ("d", "q2"): "SELECT 2"}
    with pytest.raises(SystemExit, match="not a Spider hardness level"):
        at_least(report, "medium-hard")
