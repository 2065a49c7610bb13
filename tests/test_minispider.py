import re
import sqlite3

import pytest

from mlx_sql.data.benchmark import load_benchmark


@pytest.fixture(scope="module")
def bench(minispider):
    return load_benchmark(minispider)


def test_size_and_cross_database_split(bench):
    train, dev = bench.questions("train"), bench.questions("dev")
    train_dbs, dev_dbs = {q.db_id for q in train}, {q.db_id for q in dev}
    assert len(train) >= 240 and len(train_dbs) == 4
    assert len(dev) >= 90 and len(dev_dbs) == 2
    assert not train_dbs & dev_dbs
    assert len(bench.tables_json("train")) >= 6
    assert len({q.question for q in train + dev}) == len(train + dev)


def test_every_gold_query_executes_and_returns_rows(bench):
    for split in ("train", "dev"):
        for q in bench.questions(split):
            conn = sqlite3.connect(bench.db_path(q.db_id, split))
            rows = conn.execute(q.query).fetchall()
            conn.close()
            assert rows and rows != [(None,)], (q.db_id, q.question)


def test_databases_have_keys_and_rows(bench):
    for db_id in bench.tables_json("train"):
        schema = bench.schema(db_id, "train")
        assert schema.foreign_keys, db_id
        assert all(t.primary_key for t in schema.tables), db_id
        conn = sqlite3.connect(bench.db_path(db_id, "train"))
        assert all(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] >= 5 for t in schema.table_names)
        conn.close()


@pytest.mark.parametrize("pattern", [r"\bJOIN\b", r"\bGROUP BY\b", r"\bHAVING\b", r"\(SELECT\b", r"\bINTERSECT\b",
                                     r"\bUNION\b", r"\bEXCEPT\b", r"\bORDER BY\b.*\bLIMIT\b", r"\bNOT IN\b"])
def test_both_splits_cover_spider_constructs(bench, pattern):
    for split in ("train", "dev"):
        assert any(re.search(pattern, q.query) for q in bench.questions(split)), (split, pattern)


def test_built_databases_match_their_scripts(bench, minispider):
    script = minispider / "database" / "clinic" / "clinic.sql"
    count = script.read_text().count("INSERT INTO patients")
    conn = sqlite3.connect(bench.db_path("clinic", "dev"))
    assert conn.execute("SELECT count(*) FROM patients").fetchone()[0] == count
