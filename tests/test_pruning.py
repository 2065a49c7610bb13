import random

import pytest

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.pruning import prune_for_inference, prune_for_training, rank_tables
from mlx_sql.data.schema import render_schema
from mlx_sql.sqltools import tables_in_query

TABLES = ["singer", "concert", "singer_in_concert", "stadium"]


@pytest.mark.parametrize("sql, expected", [
    ("SELECT count(*) FROM singer", {"singer"}),
    ("SELECT T2.name FROM singer_in_concert AS T1 JOIN singer AS T2 ON T1.singer_id = T2.singer_id", {"singer", "singer_in_concert"}),
    ("SELECT name FROM stadium WHERE stadium_id NOT IN (SELECT stadium_id FROM concert)", {"stadium", "concert"}),
    ("SELECT name FROM SINGER WHERE country = \"France\"", {"singer"}),
    ("WITH c AS (SELECT * FROM concert) SELECT count(*) FROM c", {"concert"}),
    ("SELECT a FROM stadium INTERSECT SELECT a FROM concert", {"stadium", "concert"}),
])
def test_tables_in_query(sql, expected):
    assert tables_in_query(sql, TABLES) == expected


def test_unparseable_query_falls_back_to_a_superset():
    assert tables_in_query("SELEC name FRM singer JOIN concert ON ((", TABLES) == {"singer", "concert"}


@pytest.fixture(scope="module")
def bench(minispider):
    return load_benchmark(minispider)


def test_training_pruning_keeps_gold_plus_distractors(bench):
    schema = bench.schema("airline", "train")
    sql = "SELECT T1.flight_number FROM flights AS T1 JOIN airports AS T2 ON T1.origin = T2.airport_code"
    pruned = prune_for_training(schema, sql, distractors=1, rng=random.Random(0))
    assert {"flights", "airports"} <= set(pruned.table_names) and len(pruned.table_names) == 3
    assert pruned.table_names == [t for t in schema.table_names if t in pruned.table_names]
    assert all(fk.table in pruned.table_names and fk.ref_table in pruned.table_names for fk in pruned.foreign_keys)
    assert len(prune_for_training(schema, sql, 0, random.Random(0)).table_names) == 2


def test_every_minispider_training_example_keeps_its_gold_tables(bench):
    for q in bench.questions("train"):
        schema = bench.schema(q.db_id, "train")
        pruned = prune_for_training(schema, q.query, 0, random.Random(q.index))
        assert tables_in_query(q.query, schema.table_names) <= set(pruned.table_names), q


def test_inference_ranking_puts_mentioned_tables_first(bench):
    schema = bench.schema("clinic", "dev")
    assert rank_tables(schema, "Which medications were prescribed most often?")[0] == "prescriptions"
    assert rank_tables(schema, "List the names of all doctors")[0] == "doctors"


def test_inference_pruning_respects_the_token_budget(bench):
    schema = bench.schema("online_store", "dev")
    full = len(render_schema(schema)) // 4 + 1
    pruned = prune_for_inference(schema, "How many products are in each category?", budget=full // 2)
    assert 1 <= len(pruned.table_names) < len(schema.table_names)
    assert {"products", "categories"} <= set(pruned.table_names)
    assert len(render_schema(pruned)) // 4 + 1 <= full // 2
    tiny = prune_for_inference(schema, "How many products?", budget=1)
    assert tiny.table_names == ["products"]
    assert prune_for_inference(schema, "anything", budget=10**6).table_names == schema.table_names
