"""On the real Spider at ../shared/spider (MLX_SQL_SPIDER); skipped where it is absent."""

import json
import re

import pytest

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.build import build_dataset
from mlx_sql.recipe import load_recipe
from mlx_sql.sqltools import tables_in_query

pytestmark = pytest.mark.spider


def test_loader_handles_what_the_copy_lacks(spider_dir):
    bench = load_benchmark(spider_dir)
    train, dev = bench.questions("train"), bench.questions("dev")
    assert (len(train), len(dev)) == (7000, 1034)
    missing = {q.db_id for q in train + dev if not bench.has_database(q.db_id, "train")}
    assert missing == {"baseball_1", "soccer_1", "wta_1"}


def test_build_writes_every_training_question_and_keeps_gold_tables(spider_dir, write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(f'[model]\npath = "x/y"\n[data]\npath = "{spider_dir}"\n'
                                      f'out_dir = "{tmp_path}"\ndistractor_tables = 1\n'))
    report = build_dataset(recipe)
    assert report.train + report.valid == 7000 - 96
    assert report.skipped_missing_db == {"baseball_1": 82, "soccer_1": 14}
    bench = load_benchmark(spider_dir)
    for name in ("train.jsonl", "valid.jsonl"):
        for line in (tmp_path / name).read_text().splitlines():
            record = json.loads(line)
            shown = {t.lower() for t in re.findall(r'^CREATE TABLE "?([^"(]+?)"? \(', record["input"], re.M)}
            gold = tables_in_query(record["output"], bench.schema(record["db_id"], "train").table_names)
            assert gold and {t.lower() for t in gold} <= shown, record["question"]
