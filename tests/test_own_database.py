"""Your own database (issue #15): SQLite files + question/SQL pairs → data build → train → eval → ask."""

import csv
import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from mlx_sql.data.own import find_databases, read_pairs
from mlx_sql.errors import MlxSqlError

SHOP = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT);
CREATE TABLE products (product_id INTEGER PRIMARY KEY, title TEXT, price REAL);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers, order_date TEXT);
CREATE TABLE order_items (order_id INTEGER REFERENCES orders(order_id),
                          product_id INTEGER REFERENCES products(product_id), quantity INTEGER);
INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Oslo'), (3, 'Cy', 'Paris'), (4, 'Di', 'Rome');
INSERT INTO products VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', 30.0);
INSERT INTO orders VALUES (1, 1, '2026-10-02'), (2, 1, '2026-11-05'), (3, 3, '2026-11-20'), (4, 4, '2026-11-28');
INSERT INTO order_items VALUES (1, 1, 3), (1, 2, 1), (2, 3, 1), (3, 1, 10), (4, 2, 2);
"""
PAIRS = [
    ("How many customers are there?", "SELECT count(*) FROM customers"),
    ("List the names of customers in Paris.", "SELECT name FROM customers WHERE city = 'Paris'"),
    ("What is the most expensive product?", "SELECT title FROM products ORDER BY price DESC LIMIT 1"),
    ("How many orders were placed in November 2026?",
     "SELECT count(*) FROM orders WHERE order_date LIKE '2026-11%'"),
    ("Which customers have placed an order?",
     "SELECT DISTINCT T1.name FROM customers AS T1 JOIN orders AS T2 ON T1.customer_id = T2.customer_id"),
    ("What is the average product price?", "SELECT avg(price) FROM products"),
    ("How many items of each product were ordered?",
     "SELECT product_id, sum(quantity) FROM order_items GROUP BY product_id"),
    ("List all cities of customers.", "SELECT DISTINCT city FROM customers"),
    ("How many products cost more than 10?", "SELECT count(*) FROM products WHERE price > 10"),
    ("Which customer lives in Rome?", "SELECT name FROM customers WHERE city = 'Rome'"),
    ("How many orders did Ada place?",
     "SELECT count(*) FROM orders AS T1 JOIN customers AS T2 ON T1.customer_id = T2.customer_id WHERE T2.name = 'Ada'"),
    ("What is the cheapest product?", "SELECT title FROM products ORDER BY price ASC LIMIT 1"),
]


def make_shop(folder):
    path = folder / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(SHOP)
    conn.commit()
    conn.close()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "mlx_sql", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def write_pairs(path, pairs, broken=()):
    with open(path, "w") as f:
        for q, s in [*pairs, *broken]:
            f.write(json.dumps({"question": q, "sql": s}) + "\n")
    return path


def test_pairs_formats_and_their_errors(tmp_path):
    dbs = find_databases(make_shop(tmp_path))
    assert list(dbs) == ["shop"]
    jsonl = write_pairs(tmp_path / "p.jsonl", PAIRS[:2])
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"instruction": "Write SQL.", "input": "### Schema ###\n...\n\n### Question ###\n"
                                "How many customers are there?", "output": "SELECT count(*) FROM customers"}) + "\n")
    with open(tmp_path / "p.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["question", "sql"])
        writer.writerows(PAIRS[:3])
    assert [p.question for p in read_pairs(jsonl, dbs)] == [q for q, _ in PAIRS[:2]]
    assert read_pairs(seed, dbs)[0].question == "How many customers are there?"
    csv_pairs = read_pairs(tmp_path / "p.csv", dbs)
    assert [(p.sql, p.line, p.db_id) for p in csv_pairs] == [(s, n, "shop") for n, (_, s) in enumerate(PAIRS[:3], 2)]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("q,query\nx,y\n")
    with pytest.raises(MlxSqlError, match="bad.csv: line 1: a CSV header with question,sql"):
        read_pairs(bad_csv, dbs)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"question": "x", "sql": "SELECT 1"}\nnot json\n')
    with pytest.raises(MlxSqlError, match="bad.jsonl: line 2: invalid JSON"):
        read_pairs(bad_json, dbs)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"question": "x", "sql": "SELECT 1", "db_id": "crm"}) + "\n")
    with pytest.raises(MlxSqlError, match="db_id 'crm' is not one of the databases \\(shop\\)"):
        read_pairs(other, dbs)
    with pytest.raises(MlxSqlError, match="not an SQLite database"):
        find_databases(jsonl)


def test_own_database_end_to_end_and_the_database_is_never_written(tmp_path, tiny_model):
    """The README's "Your own database" path: data build → train → eval → ask, on a database made here."""
    shop = make_shop(tmp_path)
    (tmp_path / "shop.sql").write_text("CREATE TABLE nothing (x);")  # a script beside it must not rebuild it
    before = digest(shop)
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS, broken=[("Broken?", "SELECT nope FROM customers")])
    recipe = tmp_path / "shop.toml"
    recipe.write_text(f'name = "shop"\n[model]\npath = "{tiny_model("gemma3_text")}"\n'
                      f'[data]\nsqlite = "{shop}"\npairs = "{pairs}"\nout_dir = "{tmp_path / "data"}"\n'
                      'dev_fraction = 0.25\nvalid_fraction = 0\nschema_format = "compact"\n'
                      f'[train]\nadapter_dir = "{tmp_path / "adapter"}"\nrank = 32\nalpha = 64\nlr = 3e-3\n'
                      'warmup_steps = 10\nbatch_size = 12\nbatching = "unshared"\niters = 60\neval_every = 1000\n'
                      'save_every = 1000\n[eval]\nmax_tokens = 48\nbatch_size = 4\n')
    built = cli("data", "build", recipe)
    assert built.returncode == 0, built.stderr
    assert "pairs.jsonl:13: no such column: nope" in built.stdout  # reported, left out
    assert "wrote 9 train and 0 valid" in built.stdout
    strict = cli("data", "build", recipe, "--strict")
    assert strict.returncode == 2 and "1 gold queries failed (--strict)" in strict.stderr

    tables = json.loads((tmp_path / "data" / "benchmark" / "tables.json").read_text())[0]
    assert tables["table_names_original"] == ["customers", "products", "orders", "order_items"]
    names = [c for _, c in tables["column_names_original"]]
    fks = {(names[a], names[b]) for a, b in tables["foreign_keys"]}
    assert ("customer_id", "customer_id") in fks and ("product_id", "product_id") in fks
    dev = json.loads((tmp_path / "data" / "benchmark" / "dev.json").read_text())
    assert len(dev) == 3  # 12 good pairs, a quarter held out, the same every time

    trained = cli("train", recipe)
    assert trained.returncode == 0, trained.stderr
    evaluated = cli("eval", "--adapter", tmp_path / "adapter", "--out", tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["summary"]["all"]["count"] == 3 and summary["split"] == "dev"
    assert "EM %" in evaluated.stdout and (tmp_path / "eval" / "accuracy.png").is_file()

    question = "How many customers are there?"  # a training question: the overfit adapter answers it
    answered = cli("ask", "--adapter", tmp_path / "adapter", "--db", shop, "--json", question)
    assert answered.returncode == 0, answered.stderr
    result = json.loads(answered.stdout.strip().splitlines()[-1])
    assert result["sql"] == "SELECT count(*) FROM customers" and result["rows"] == [[4]]
    shown = cli("ask", "--adapter", tmp_path / "adapter", "--db", shop, question)
    assert shown.returncode == 0 and "SELECT count(*) FROM customers" in shown.stdout and "1 row\n" in shown.stdout
    sql_only = cli("ask", "--adapter", tmp_path / "adapter", "--db", shop, "--sql-only", question)
    assert sql_only.stdout.strip().splitlines()[-1] == "SELECT count(*) FROM customers"
    loop = cli("ask", "--adapter", tmp_path / "adapter", "--db", shop, input=f"{question}\n{question}\n\n")
    assert loop.returncode == 0 and loop.stdout.count("SELECT count(*) FROM customers") == 2

    missing = cli("ask", "--adapter", tmp_path / "adapter", "--db", tmp_path / "nope.sqlite", question)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'nope.sqlite'}: database not found"
    assert digest(shop) == before  # after build, training, eval and four asks: byte-identical
    assert (tmp_path / "data" / "benchmark" / "database" / "shop" / "shop.sqlite").resolve() == shop.resolve()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlx_lm_server(tiny_model):
    """A real `mlx_lm.server` with a tiny model on 127.0.0.1, stopped after the test."""
    port = _free_port()
    folder = tiny_model("llama")
    proc = subprocess.Popen([sys.executable, "-m", "mlx_lm", "server", "--model", str(folder), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlx_lm.server exited")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlx_lm.server did not come up in 120 s")
    yield url, str(folder)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_openai_compatible_backend_against_a_real_mlx_lm_server(mlx_lm_server, tmp_path, minispider):
    from mlx_sql.eval.backends import OpenAIBackend

    url, folder = mlx_lm_server
    backend = OpenAIBackend(folder, url, timeout=60, max_tokens=8)
    record = {"instruction": "Write SQL.", "input": "### Schema ###\nt(a)\n\n### Question ###\nHow many?"}
    first, second = backend.generate(record), backend.generate(record)
    assert isinstance(first, str) and first == second  # greedy: the same answer twice
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "{folder}"\n[data]\npath = "{minispider}"\n[eval]\nbackend = "openai"\n'
                      f'max_tokens = 8\n[openai]\nbase_url = "{url}"\nmodel = "{folder}"\n')
    result = cli("eval", "--recipe", recipe, "--max-examples", 3, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "openai" and summary["summary"]["all"]["count"] == 3
    assert len((tmp_path / "out" / "predictions.jsonl").read_text().splitlines()) == 3
    shop = make_shop(tmp_path)
    asked = cli("ask", "--recipe", recipe, "--db", shop, "--sql-only", "How many customers are there?")
    # a random tiny model may not write SQL: then it says so in one line
    assert asked.returncode == 0 or "not a SQLite query" in asked.stderr, asked.stderr
    down = OpenAIBackend(folder, f"http://127.0.0.1:{_free_port()}", timeout=5)
    with pytest.raises(MlxSqlError, match="chat server request failed"):
        down.generate(record)
