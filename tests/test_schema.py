import json
import sqlite3

import pytest

from mlx_sql.data.benchmark import load_benchmark, read_tables_json
from mlx_sql.data.schema import SCHEMA_HEADER, render_schema, schema_from_tables_json
from mlx_sql.errors import MlxSqlError


@pytest.fixture(scope="module")
def bench(minispider):
    return load_benchmark(minispider)


def test_types_keys_and_foreign_keys_come_from_sqlite(bench):
    schema = bench.schema("company_hr", "train")
    employees = schema.table("employees")
    assert [c.type for c in employees.columns][:3] == ["INTEGER", "TEXT", "TEXT"]
    assert employees.primary_key == ["emp_id"]
    assert schema.table("assignments").primary_key == ["emp_id", "project_id"]
    arrows = {fk.arrow() for fk in schema.foreign_keys}
    assert "employees.manager_id -> employees.emp_id" in arrows
    assert "assignments.project_id -> projects.project_id" in arrows


def test_ddl_rendering(bench):
    text = render_schema(bench.schema("company_hr", "train"), "ddl")
    assert text.startswith(SCHEMA_HEADER + "\nCREATE TABLE departments (\n  dept_id INTEGER PRIMARY KEY,")
    assert "  PRIMARY KEY (emp_id, project_id)," in text
    assert "  FOREIGN KEY (dept_id) REFERENCES departments(dept_id)" in text
    tail = text.split("Foreign keys:\n")[1].splitlines()
    assert "projects.dept_id -> departments.dept_id" in tail
    assert text.count("CREATE TABLE") == 4


def test_compact_rendering_with_sample_rows(bench):
    text = render_schema(bench.schema("online_store", "dev"), "compact", sample_rows=2)
    assert "categories(category_id INTEGER PK, name TEXT)" in text
    assert "  row: 1 | Books" in text and "  row: 2 | Electronics" in text
    assert text.count("  row: ") == 2 * 5
    assert "order_items.product_id -> products.product_id" in text


def test_ddl_sample_rows_are_a_comment(bench):
    text = render_schema(bench.schema("online_store", "dev").subset(["categories"]), "ddl", sample_rows=3)
    assert "/* 3 example rows from categories:\ncategory_id | name\n1 | Books\n2 | Electronics\n3 | Kitchen\n*/" in text


def test_tables_json_only_and_quoting(tmp_path):
    entry = {"db_id": "p", "table_names_original": ["people", "visits"],
             "column_names_original": [[-1, "*"], [0, "People_ID"], [0, "Home Town"], [1, "Visit_ID"], [1, "People_ID"]],
             "column_types": ["text", "number", "text", "number", "number"],
             "primary_keys": [1, 3], "foreign_keys": [[4, 1]]}
    schema = schema_from_tables_json(entry)
    text = render_schema(schema, "ddl")
    assert '  "Home Town" TEXT' in text and "People_ID NUMERIC PRIMARY KEY" in text
    assert "visits.People_ID -> people.People_ID" in text


def test_malformed_tables_json_names_file_and_entry(tmp_path):
    bad = tmp_path / "tables.json"
    bad.write_text(json.dumps([{"db_id": "x", "table_names_original": [], "column_names_original": []}]))
    with pytest.raises(MlxSqlError, match=r"tables.json: entry 0 \(db_id 'x'\): missing 'column_types'"):
        read_tables_json(bad)
    bad.write_text("[{")
    with pytest.raises(MlxSqlError, match="tables.json: invalid JSON"):
        read_tables_json(bad)
    bad.write_text(json.dumps([{"db_id": "x", "table_names_original": ["t"], "column_names_original": [[0, "a"]],
                                "column_types": ["text"], "foreign_keys": [[0, 5]]}]))
    with pytest.raises(MlxSqlError, match="bad foreign key"):
        read_tables_json(bad)


def test_bird_layout_with_evidence(tmp_path):
    root = tmp_path / "bird"
    (root / "dev_databases" / "shop").mkdir(parents=True)
    conn = sqlite3.connect(root / "dev_databases" / "shop" / "shop.sqlite")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, price REAL)")
    conn.execute("INSERT INTO item VALUES (1, 2.5)")
    conn.commit()
    conn.close()
    (root / "dev_tables.json").write_text(json.dumps([{
        "db_id": "shop", "table_names_original": ["item"], "column_names_original": [[-1, "*"], [0, "id"], [0, "price"]],
        "column_types": ["text", "number", "number"], "primary_keys": [1], "foreign_keys": []}]))
    (root / "dev.json").write_text(json.dumps([{"question_id": 0, "db_id": "shop", "question": "Cheap items?",
                                                "evidence": "cheap means price < 3", "SQL": "SELECT id FROM item WHERE price < 3"}]))
    bench = load_benchmark(root)
    assert bench.layout == "bird" and list(bench.splits) == ["dev"]
    (q,) = bench.questions("dev")
    assert q.evidence == "cheap means price < 3" and q.query.startswith("SELECT id")
    assert bench.schema("shop", "dev").table("item").columns[1].type == "REAL"


def test_missing_benchmark_pieces(tmp_path):
    with pytest.raises(MlxSqlError, match="benchmark folder not found"):
        load_benchmark(tmp_path / "nope")
    with pytest.raises(MlxSqlError, match="not a Spider or BIRD folder"):
        load_benchmark(tmp_path)
