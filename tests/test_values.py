"""Values from the database that a question names (`data.question_values`): matched forgiving case, accents
and small misspellings, shown as stored, cached outside the database and rebuilt when it changes; the prompt's
shared prefix (instruction + schema) stays the same for every question of a database."""

import os
import sqlite3

from mlx_lm import load

from mlx_sql.data.benchmark import Question
from mlx_sql.data.examples import VALUES_HEADER, make_record
from mlx_sql.data.values import build_index, index_path, value_index, values_block
from mlx_sql.fileio import cache_root
from mlx_sql.train.encode import Encoder, prefix_key


def _orders(tmp_path, extra=()):
    path = tmp_path / "orders.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE orders (id INTEGER PRIMARY KEY, city TEXT, shift TEXT, code TEXT);")
    rows = [(1, "São Paulo", "Night shift", "A1"), (2, "Oslo", "Day shift", "B2"), (3, "Paris", "Night shift", "77"),
            *extra]
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return path


def test_values_the_question_names_are_found_as_stored(tmp_path):
    db = _orders(tmp_path)
    before = db.read_bytes()
    index = build_index(db)
    assert ("orders", "city", "São Paulo") in index.entries and not any(v == "77" for *_, v in index.entries)
    assert index.match("How many orders came from sao paulo?") == [("orders", "city", "São Paulo")]
    assert index.match("Orders of the nigth shift") == [("orders", "shift", "Night shift")]  # a misspelling
    assert index.match("How many orders are there?") == []
    assert db.read_bytes() == before


def test_the_index_is_cached_outside_the_database_and_rebuilt_when_it_changes(tmp_path):
    db = _orders(tmp_path)
    before = db.read_bytes()
    first = value_index(db)
    cached = index_path(db)
    assert cached.is_file() and cached.is_relative_to(cache_root()) and db.read_bytes() == before
    assert value_index(db) is first
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO orders VALUES (4, 'Reykjavík', 'Day shift', 'C3')")
    conn.commit()
    conn.close()
    os.utime(db, ns=(cached.stat().st_mtime_ns, cached.stat().st_mtime_ns + 10**9))
    assert not cached.is_file() or index_path(db) != cached
    assert ("orders", "city", "Reykjavík") in value_index(db).entries
    assert not cached.is_file()  # the stale index went


def test_the_index_is_bounded(tmp_path):
    db = _orders(tmp_path, [(i, f"city number {i}", "Day shift", f"code {i}") for i in range(10, 400)])
    index = build_index(db, max_per_column=50, max_values=70)
    assert len(index.entries) == 70 and index.partial
    assert sum(1 for t, c, _ in index.entries if c == "city") == 50  # per column, then in all
    assert build_index(db, max_seconds=0.0).entries == [] or build_index(db, max_seconds=0.0).partial


def test_the_values_block_sits_after_the_shared_prefix(tmp_path, tiny_model):
    db = _orders(tmp_path)
    _, tok = load(str(tiny_model("llama")))
    schema_text = "### Schema ###\nCREATE TABLE orders (id INTEGER, city TEXT, shift TEXT, code TEXT);"
    records = []
    for question in ("How many orders from sao paulo?", "Orders of the night shift in Paris?"):
        block = values_block(db, question, 6)
        assert block.startswith(VALUES_HEADER)
        records.append(make_record(Question("orders", question, ""), schema_text, "Write SQL.", block))
    assert "orders.city = 'São Paulo'" in records[0]["input"]
    assert "orders.shift = 'Night shift'" in records[1]["input"] and "orders.city = 'Paris'" in records[1]["input"]
    assert records[0]["input"].index(VALUES_HEADER) < records[0]["input"].index("### Question ###")
    encoder = Encoder(tok)
    first, second = (encoder.encode({**r, "output": ""}) for r in records)
    assert first.prefix == second.prefix and prefix_key(records[0]) == prefix_key(records[1])
    assert values_block(db, "How many orders?", 6) == "" and values_block(db, "sao paulo", 0) == ""
