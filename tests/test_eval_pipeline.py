import json
import subprocess
import sys

import pytest

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.pipeline import evaluate_predictions, select_questions
from mlx_sql.eval.report import compare_runs, sign_test
from mlx_sql.eval.scoring import read_predictions

from conftest import MINISPIDER


def gold_file(tmp_path, root, split="dev"):
    questions = load_benchmark(root).questions(split)
    path = tmp_path / "gold.sql"
    path.write_text("".join(f"{q.query}\t{q.db_id}\n" for q in questions))
    return path, questions


def test_gold_scores_100_on_the_mini_benchmark(tmp_path):
    path, questions = gold_file(tmp_path, MINISPIDER)
    report = evaluate_predictions(path, MINISPIDER, "dev", tmp_path / "out", "gold")
    assert report.summary["all"] == {"count": len(questions), "canonical_match": 100.0, "exact_set_match": 100.0,
                                     "execution_accuracy": 100.0}
    levels = {level: report.summary[level]["count"] for level in ("easy", "medium", "hard", "extra")}
    assert all(levels.values()), levels  # the mini benchmark's dev set covers every hardness level
    for name in ("summary.json", "summary.md", "per_example.jsonl", "accuracy.png"):
        assert (tmp_path / "out" / name).is_file()
    assert (tmp_path / "out" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.spider
def test_gold_scores_100_on_real_spider_dev(tmp_path, spider_dir):
    path = tmp_path / "dev_gold.sql"
    path.write_text((spider_dir / "dev_gold.sql").read_text())
    report = evaluate_predictions(path, spider_dir, "dev", tmp_path / "out", "gold")
    assert report.skipped == 62  # wta_1 is absent
    assert report.summary["all"] == {"count": 972, "canonical_match": 100.0, "exact_set_match": 100.0,
                                     "execution_accuracy": 100.0}


def test_wrong_broken_and_unparseable_predictions_are_scored_not_fatal(tmp_path):
    questions = load_benchmark(MINISPIDER).questions("dev")
    lines = [json.dumps({"index": q.index, "sql": q.query}) for q in questions]
    lines[0] = json.dumps({"index": questions[0].index, "sql": "SELECT count(*) FROM patients"})  # wrong answer
    lines[1] = json.dumps({"index": questions[1].index, "sql": "SELEC name FRM doctors"})          # garbage
    lines[2] = json.dumps({"index": questions[2].index, "sql": "DROP TABLE doctors"})              # hostile
    del lines[3]                                                                                      # missing
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = evaluate_predictions(path, MINISPIDER, "dev", tmp_path / "out", "mixed")
    flags = [(s.canonical_match, s.execution_match) for s in report.scored[:4]]
    assert flags == [(False, False)] * 4
    assert report.scored[1].parsed is False and report.scored[3].error == "empty"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert questions[1].index in summary["unparseable_predictions"]
    n = len(questions)
    assert report.summary["all"]["execution_accuracy"] == pytest.approx(100 * (n - 4) / n)


def test_prediction_file_errors(tmp_path):
    questions = load_benchmark(MINISPIDER).questions("dev")
    short = tmp_path / "short.sql"
    short.write_text("SELECT 1\n")
    with pytest.raises(MlxSqlError, match=f"1 lines for {len(questions)} questions"):
        read_predictions(short, questions)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"index": 0, "sql": "SELECT 1"}\n{"sql": 3}\n')
    with pytest.raises(MlxSqlError, match="line 2: expected"):
        read_predictions(bad, questions)


def test_compare_lists_flips_both_ways(tmp_path):
    questions = load_benchmark(MINISPIDER).questions("dev")
    base = [q.query for q in questions]
    cand = list(base)
    base[0] = "SELECT 1"      # baseline wrong, candidate right
    cand[1] = "SELECT 1"      # candidate wrong, baseline right
    for name, preds in (("base", base), ("cand", cand)):
        (tmp_path / f"{name}.sql").write_text("\n".join(p.replace("\n", " ") for p in preds) + "\n")
        evaluate_predictions(tmp_path / f"{name}.sql", MINISPIDER, "dev", tmp_path / name, name)
    result = compare_runs(tmp_path / "base", tmp_path / "cand", tmp_path / "cmp")
    assert [r["index"] for r in result.gained] == [questions[0].index]
    assert [r["index"] for r in result.lost] == [questions[1].index]
    assert "| all |" in result.table and (tmp_path / "cmp" / "comparison.png").is_file()
    cli = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--compare", str(tmp_path / "base"),
                          "--compare", str(tmp_path / "cand")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "1 questions flipped to correct, 1 to wrong (exact sign test p = 1)" in cli.stdout
    assert "(exact sign test p = 1)." in (tmp_path / "cmp" / "comparison.md").read_text()


@pytest.mark.parametrize("wins,losses,p", [(0, 0, 1.0), (1, 1, 1.0), (5, 0, 0.0625), (17, 9, 0.168638),
                                           (0, 10, 0.00195313), (60, 30, 0.00206027)])
def test_sign_test_is_the_exact_two_sided_binomial(wins, losses, p):
    # 17 won / 9 lost is the validation split's rft-medium-up-lr5e-5 against the untrained model (RESULTS.md)
    assert sign_test(wins, losses) == pytest.approx(p, rel=1e-4)
    assert sign_test(losses, wins) == sign_test(wins, losses)


def test_eval_command_on_predictions(tmp_path):
    path, _ = gold_file(tmp_path, MINISPIDER)
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--predictions", str(path), "--data",
                             str(MINISPIDER), "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| all | 93 | 100.0 | 100.0 |" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--predictions", str(tmp_path / "nope.sql"),
                              "--data", str(MINISPIDER)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'nope.sql'}: predictions file not found"


def test_a_query_sqlite_rejects_never_earns_em(tmp_path):
    """`GROUP BY … WHERE …` parses in sqlglot but SQLite refuses it: no EM, no canonical match."""
    bench = load_benchmark(MINISPIDER)
    question = next(q for q in bench.questions("dev") if " WHERE " in q.query.upper() and " GROUP BY " in q.query.upper()
                    and " ORDER BY " not in q.query.upper() and " HAVING " not in q.query.upper())
    head, group = question.query.split(" GROUP BY ")
    select, where = head.split(" WHERE ")
    swapped = f"{select} GROUP BY {group} WHERE {where}"
    from mlx_sql.eval.exact_set import exact_set_match

    assert exact_set_match(question.query, swapped, bench.schema(question.db_id, "dev"))  # the parse alone matches
    lines = [json.dumps({"index": question.index, "sql": swapped})]
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = evaluate_predictions(path, MINISPIDER, "dev", tmp_path / "out", "swapped")
    (scored,) = [s for s in report.scored if s.index == question.index]
    assert "syntax error" in scored.error
    assert (scored.exact_set_match, scored.canonical_match, scored.execution_match) == (False, False, False)


def test_a_sample_is_seeded_spread_over_databases_and_in_benchmark_order():
    bench = load_benchmark(MINISPIDER)
    _, first, _ = select_questions(bench, "train", max_examples=30)
    _, sample, _ = select_questions(bench, "train", sample=30)
    indices = [q.index for q in sample]
    assert len(sample) == 30 and indices == sorted(indices)
    assert len({q.db_id for q in sample}) > len({q.db_id for q in first})  # the first 30 are a few databases
    assert [q.index for q in select_questions(bench, "train", sample=30)[1]] == indices
    assert [q.index for q in select_questions(bench, "train", sample=30, seed=1)[1]] != indices
    assert [q.index for q in select_questions(bench, "train", sample=30, max_examples=5)[1]] == indices[:5]
    everything = select_questions(bench, "train")[1]
    assert select_questions(bench, "train", sample=10_000)[1] == everything


def test_eval_command_scores_a_sample(tmp_path):
    path, questions = gold_file(tmp_path, MINISPIDER)
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--predictions", str(path), "--data",
                             str(MINISPIDER), "--sample", "20", "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    scored = [json.loads(line) for line in (tmp_path / "r" / "per_example.jsonl").read_text().splitlines()]
    assert len(scored) == 20 and len({row["db_id"] for row in scored}) > 1
    zero = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--predictions", str(path), "--data",
                           str(MINISPIDER), "--sample", "0"], capture_output=True, text=True, timeout=120)
    assert zero.returncode != 0 and "--sample" in zero.stderr
