import json

import pytest
from mlx_lm.utils import load_tokenizer

import mlx_sql.data.build as build_mod
from mlx_sql.data.build import build_dataset
from mlx_sql.data.hub import load_hf_questions
from mlx_sql.errors import MlxSqlError
from mlx_sql.recipe import load_recipe

from conftest import MINISPIDER


@pytest.fixture
def recipe(write_recipe, tmp_path):
    def make(*overrides):
        path = write_recipe(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\nout_dir = "{tmp_path / "out"}"\n')
        return load_recipe(path, list(overrides))
    return make


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_build_minispider_with_real_token_counts(recipe, tiny_model):
    tok = load_tokenizer(tiny_model("llama"))
    report = build_dataset(recipe("data.valid_fraction=0.1"), tok)
    train, valid = read(report.out_dir / "train.jsonl"), read(report.out_dir / "valid.jsonl")
    assert (report.train, report.valid) == (len(train), len(valid)) == (218, 25)
    assert not {(r["db_id"], r["question"]) for r in train} & {(r["db_id"], r["question"]) for r in valid}
    assert {r["db_id"] for r in train + valid} == {"library", "airline", "company_hr", "music_festival"}
    assert report.lengths.unit == "tokens"
    assert set(report.lengths.prompt) == {"p50", "p90", "p99", "max"}
    assert 50 < report.lengths.prompt["p50"] <= report.lengths.prompt["max"]
    assert report.skipped == 0


def test_build_is_deterministic_and_capped(recipe):
    a = build_dataset(recipe("data.max_examples=40", "data.valid_fraction=0.25"))
    first = (a.out_dir / "train.jsonl").read_text()
    b = build_dataset(recipe("data.max_examples=40", "data.valid_fraction=0.25"))
    assert (b.train, b.valid) == (30, 10)
    assert (b.out_dir / "train.jsonl").read_text() == first
    assert a.lengths.unit.startswith("approx")


def test_a_failed_build_leaves_the_previous_files_intact(recipe, monkeypatch):
    report = build_dataset(recipe())
    before = (report.out_dir / "train.jsonl").read_bytes()
    calls = {"n": 0}
    real = build_mod.make_record

    def explode(*args):
        calls["n"] += 1
        if calls["n"] > 50:
            raise RuntimeError("disk on fire")
        return real(*args)

    monkeypatch.setattr(build_mod, "make_record", explode)
    with pytest.raises(RuntimeError):
        build_dataset(recipe("data.sample_rows=2"))
    assert (report.out_dir / "train.jsonl").read_bytes() == before
    assert sorted(p.name for p in report.out_dir.iterdir()) == ["train.jsonl", "valid.jsonl"]


def test_schema_options_reach_the_records(recipe):
    report = build_dataset(recipe("data.schema_format=compact", "data.sample_rows=1", "data.prune=false"))
    record = read(report.out_dir / "train.jsonl")[0]
    assert "CREATE TABLE" not in record["input"] and "  row: " in record["input"]
    assert record["input"].count("(") >= 4  # every table of the database, unpruned


def test_hf_questions_from_a_local_dataset(tmp_path, recipe):
    import datasets

    rows = [{"db_id": "library", "question": "How many books?", "query": "SELECT count(*) FROM books"},
            {"db_id": "airline", "question": "How many airports?", "query": "SELECT count(*) FROM airports"}]
    parquet_dir = tmp_path / "hf"
    parquet_dir.mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(parquet_dir / "train.parquet"))
    qs = load_hf_questions(str(parquet_dir), "train")
    assert [(q.db_id, q.query) for q in qs] == [(r["db_id"], r["query"]) for r in rows]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(saved))
    assert [q.question for q in load_hf_questions(str(saved), "train")] == ["How many books?", "How many airports?"]
    report = build_dataset(recipe(f'data.hf_dataset="{saved}"', "data.valid_fraction=0"))
    assert report.train == 2 and "CREATE TABLE books" in read(report.out_dir / "train.jsonl")[0]["input"] + \
        read(report.out_dir / "train.jsonl")[1]["input"]
    datasets.Dataset.from_list([{"db_id": "a", "text": "b"}]).to_parquet(str(parquet_dir / "train.parquet"))
    with pytest.raises(MlxSqlError, match="expected columns db_id, question and query"):
        load_hf_questions(str(parquet_dir), "train")


def test_schema_shared_recipes_get_one_schema_per_database_grouped(recipe):
    from mlx_sql.data.examples import QUESTION_HEADER

    report = build_dataset(recipe("data.valid_fraction=0"))  # batching defaults to schema_shared
    records = read(report.out_dir / "train.jsonl")
    order = [r["db_id"] for r in records]
    runs = [db for i, db in enumerate(order) if i == 0 or order[i - 1] != db]
    assert sorted(runs) == sorted(set(order))  # each database's questions are contiguous
    for db in set(order):
        assert len({r["input"].split(QUESTION_HEADER)[0] for r in records if r["db_id"] == db}) == 1
    per_question = read(build_dataset(recipe("data.valid_fraction=0", "train.batching=unshared")).out_dir
                        / "train.jsonl")
    assert len({r["input"].split(QUESTION_HEADER)[0] for r in per_question if r["db_id"] == "airline"}) > 1


@pytest.mark.parametrize("batching", ["unshared", "schema_shared"])
def test_inference_schemas_train_on_the_prompts_eval_builds(recipe, batching):
    """train_schema = "inference": a database whose schema fits the budget is shown whole, exactly as eval
    shows it; a larger one is cut to the budget around the gold tables, which are never dropped."""
    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.data.examples import QUESTION_HEADER
    from mlx_sql.data.pruning import approx_tokens
    from mlx_sql.eval.pipeline import eval_records
    from mlx_sql.sqltools import tables_in_query

    cfg = recipe("data.valid_fraction=0", "data.train_schema=inference", "data.schema_token_budget=260",
                 f"train.batching={batching}")
    records = read(build_dataset(cfg).out_dir / "train.jsonl")
    bench = load_benchmark(MINISPIDER)
    questions = {(q.db_id, q.question): q for q in bench.questions("train")}
    by_db: dict[str, set[str]] = {}
    for r in records:
        by_db.setdefault(r["db_id"], set()).add(r["input"].split(QUESTION_HEADER)[0])
    shown = [(r, questions[(r["db_id"], r["question"])]) for r in records]
    fitting = [(r, q) for r, q in shown if r["db_id"] in ("library", "music_festival")]  # ~200 tokens each
    assert fitting and [r["input"] for r, _ in fitting] == \
        [e["input"] for e in eval_records(bench, [q for _, q in fitting], cfg, "train", approx_tokens)]
    for r, q in shown:  # every database: the tables the answer reads are in its prompt
        schema = r["input"].split(QUESTION_HEADER)[0]
        gold = tables_in_query(q.query, bench.schema(q.db_id, "train").table_names)
        assert all(f"CREATE TABLE {t} " in schema for t in gold), q
    airline = bench.schema("airline", "train")
    if batching == "schema_shared":  # one text per database, holding every table its questions read
        assert all(len(texts) == 1 for texts in by_db.values())
    else:  # 321 tokens > 260: cut around each question
        assert len(by_db["airline"]) > 1
        assert all(s.count("CREATE TABLE") < len(airline.table_names) for s in by_db["airline"])
