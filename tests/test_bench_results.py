"""The benchmarks rewrite only their own section of RESULTS.md."""

import sys

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
            "| LoRA, rows3 | 42.0 |\n| LoRA in MLX, rows3 | 42.5 |\n\nLoRA, rows3: 60 steps, 195 examples of Spider train\nQuestions per level: 5\n"
            "Paired, LoRA, rows3 against base, ddl: 3 questions flipped to correct, 1 to wrong (p = 0.625).\n"
            "<!-- /spider-validation-m -->\n| LoRA, elsewhere | 1 |\n")
    rows, budgets = earlier_rows(text, "spider-validation-m")
    assert rows == ["| base, ddl | 42.5 |", "| LoRA, rows3 | 42.0 |", "| LoRA in MLX, rows3 | 42.5 |"]
    pair = "Paired, LoRA, rows3 against base, ddl"
    assert budgets == {"LoRA, rows3": "LoRA, rows3: 60 steps, 195 examples of Spider train",
                       pair: f"{pair}: 3 questions flipped to correct, 1 to wrong (p = 0.625)."}
    assert earlier_rows("no section", "spider-validation-m") == ([], {})


def test_adapters_are_paired_with_the_first_base_variant(tmp_path):
    """The section says, per adapter, which questions flipped each way against the untrained model, and the
    sign test's p: real reports of minispider's dev questions, two answers changed each way and one more."""
    from spider_validation import paired

    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.eval.pipeline import evaluate_predictions

    spider = ROOT / "benchmarks" / "minispider"
    gold = [q.query.replace("\n", " ") for q in load_benchmark(spider).questions("dev")]
    variants = {"base, ddl": ["SELECT 1", "SELECT 1", *gold[2:]],
                "LoRA, a": [*gold[:2], "SELECT 1", "SELECT 1", "SELECT 1", *gold[5:]],
                "LoRA, b": ["SELECT 1", *gold[1:]]}
    folders = {}
    for label, answers in variants.items():
        (tmp_path / f"{len(folders)}.sql").write_text("\n".join(answers) + "\n")
        folders[label] = tmp_path / str(len(folders))
        evaluate_predictions(tmp_path / f"{len(folders) - 1}.sql", spider, "dev", folders[label], label)
    lines = paired(folders)
    assert lines == {
        "Paired, LoRA, a against base, ddl": "Paired, LoRA, a against base, ddl: 2 questions flipped to correct, "
                                             "3 to wrong (exact sign test p = 1).",
        "Paired, LoRA, b against base, ddl": "Paired, LoRA, b against base, ddl: 1 questions flipped to correct, "
                                             "0 to wrong (exact sign test p = 1)."}
    assert paired({"LoRA, a": folders["LoRA, a"]}) == {}
    retried = paired({"base, ddl": folders["base, ddl"], "base, ddl-retry4": folders["LoRA, b"],
                      "LoRA, a-retry4": folders["LoRA, a"]})  # paired with the base that decodes alike
    assert retried == {"Paired, LoRA, a-retry4 against base, ddl-retry4": "Paired, LoRA, a-retry4 against base, "
                                                                           "ddl-retry4: 1 questions flipped to correct, "
                                                                           "3 to wrong (exact sign test p = 0.625)."}


def test_more_sampled_questions_reuse_the_answers_of_fewer(tmp_path):
    """--own-questions 640 after 320: the 320 finished answers (sampled ones too) are kept, not drawn again;
    a folder with another suffix or an unfinished run is not taken for a smaller run."""
    import json

    from spider_validation import reuse_smaller

    def run(name, indices, finished=True):
        folder = tmp_path / name
        folder.mkdir()
        rows = [{"index": i, "db_id": "d", "question": f"q{i}"} for i in indices]
        (folder / "per_example.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "predictions.jsonl").write_text(
            "".join(json.dumps({"index": i, "db_id": "d", "sql": f"SELECT {i}", "failed": ["x"]}) + "\n"
                    for i in indices))
        if finished:
            (folder / "summary.json").write_text(json.dumps({"name": name, "summary": {}}))

    run("sampled-x-2", [0, 1])
    run("sampled-x-3", [0, 1, 2], finished=False)
    run("sampled-x-2-medium-up", [1])
    out = tmp_path / "sampled-x-4"
    reuse_smaller(out, {("d", f"q{i}") for i in range(4)})
    kept = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert kept == [{"index": i, "db_id": "d", "sql": f"SELECT {i}", "failed": ["x"]} for i in (0, 1)]
    (out / "predictions.jsonl").write_text("")
    reuse_smaller(out, {("d", f"q{i}") for i in range(4)})  # started already: left as it is
    assert (out / "predictions.jsonl").read_text() == ""


def test_a_variants_data_folder_name_has_no_toml_quotes(tmp_path):
    """The folder goes into `data.out_dir="…"`: a quote in its name once made a folder named `"` in the repo."""
    from argparse import Namespace

    from spider_validation import data_folder

    sets = 'data.own_answers="/runs/sampled-answers-640";data.own_answers_hardness="medium";train.lr=5e-5'
    folder = data_folder(Namespace(out=str(tmp_path), model="m"), sets)
    assert folder == tmp_path / "m" / "train-data-own_answers=sampled-answers-640-own_answers_hardness=medium"


def test_every_results_section_says_what_it_shows():
    """Each section opens with what it tells a reader, and every script that writes one passes that text."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "benchmarks"
    text = (root / "RESULTS.md").read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)\n\n(?:_[^\n]*_\n\n)?(.*)$", text, re.M)
    assert len(sections) >= 20
    for title, first in sections:
        assert first.startswith("**What this shows.**"), title
    for script in root.glob("*.py"):
        source = script.read_text(encoding="utf-8")
        calls = re.findall(r"update_section\((?:[^()]|\([^()]*\))*\)", source, re.S)
        for call in calls:
            assert "shows=" in call or script.name == "results.py", (script.name, call[:80])


def test_a_run_is_described_by_the_recipe_saved_beside_its_adapter_not_by_flags(tmp_path):
    from results import trained_with

    (tmp_path / "recipe.toml").write_text('[train]\nlr = 5e-5\nmax_seq_length = 2304\ninit_adapter = "runs/x/train-rft"\n')
    assert trained_with(tmp_path) == {"lr": 5e-5, "max_seq_length": 2304, "init_adapter": "runs/x/train-rft"}
    assert trained_with(tmp_path / "never-trained") == {}


def test_an_unfinished_run_is_saved_and_restored_without_losing_answers(tmp_path):
    from keep_partial import restore, save

    runs, partial = tmp_path / "runs", tmp_path / "partial"
    run = runs / "spider-validation" / "m" / "dev-x"
    run.mkdir(parents=True)
    (run / "predictions.jsonl").write_text('{"index": 0}\n{"index": 1}\n')
    assert "saved 2 answers" in save(run, runs, partial)
    assert [p.name for p in partial.iterdir()] == ["spider-validation--m--dev-x.predictions.jsonl.gz"]
    (run / "predictions.jsonl").write_text('{"index": 0}\n{"index": 1}\n{"index": 2}\n')  # it went on
    assert restore(runs, partial)[0].startswith("kept")  # a run further along is never cut back
    assert (run / "predictions.jsonl").read_text().count("index") == 3
    (run / "predictions.jsonl").unlink()  # a new checkout: runs/ is gone
    assert restore(runs, partial) == [f"restored 2 answers to {run / 'predictions.jsonl'}"]
    assert (run / "predictions.jsonl").read_text() == '{"index": 0}\n{"index": 1}\n'
