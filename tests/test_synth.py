"""`mlx-sql synth` (issue #31): pairs from a database with no pairs as input, on databases built here.

The teacher is scripted — a Python object, or a real HTTP server on 127.0.0.1 speaking the OpenAI chat API —
so every filter's decision is known: it writes one bad and some good queries, a question per query, and
answers some questions wrongly, which the round trip must catch.
"""

import hashlib
import json
import random
import re
import sqlite3
import subprocess
import sys

import pytest

from conftest import loopback_server
from mlx_sql.data.examples import QUESTION_HEADER, SQL_HEADER
from mlx_sql.data.own import read_schema
from mlx_sql.errors import MlxSqlError
from mlx_sql.recipe import load_recipe
from mlx_sql.sandbox import ExecResult, execute_here
from mlx_sql.synth.filters import Novelty, result_key, skeleton, verdict
from mlx_sql.synth.profile import profile_database
from mlx_sql.synth.run import run_synthesis
from mlx_sql.synth.templates import TEMPLATES, template_sql

SHOP = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, age INTEGER);
CREATE TABLE products (id INTEGER PRIMARY KEY, title TEXT, category TEXT, price REAL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                     product_id INTEGER REFERENCES products(id), amount REAL, status TEXT, day TEXT);
"""


def make_shop(folder, name="shop.sqlite"):
    path = folder / name
    conn = sqlite3.connect(path)
    conn.executescript(SHOP)
    rng = random.Random(0)
    cities = ["Paris", "São Paulo", "Lyon", "Berlin", "Oslo"]
    for i, n in enumerate(["Ana", "Bruno", "Chloé", "David", "Eva", "Farid", "Greta", "Hugo", "Ines", "Jonas"], 1):
        conn.execute("INSERT INTO customers VALUES (?,?,?,?)", (i, n, rng.choice(cities), rng.randint(18, 80)))
    for i in range(1, 9):
        conn.execute("INSERT INTO products VALUES (?,?,?,?)",
                     (i, f"Item {chr(64 + i)}", rng.choice(["books", "games", "garden"]), round(rng.uniform(3, 90), 2)))
    for i in range(1, 61):
        conn.execute("INSERT INTO orders VALUES (?,?,?,?,?,?)",
                     (i, rng.randint(1, 10), rng.randint(1, 8), round(rng.uniform(5, 500), 2),
                      rng.choice(["shipped", "pending", "cancelled"]), f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"))
    conn.commit()
    conn.close()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ScriptedTeacher:
    """Writes queries (a bad one every third call), one question per query ("What is result N?"), and answers
    a question with its query — except every fourth, answered with a query that returns something else."""

    def __init__(self, stop_after: int | None = None):
        self.queries: list[str] = []
        self.calls = 0
        self.stop_after = stop_after

    def generate(self, record, temperature=0.0, seed=0):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        text = record["input"]
        if SQL_HEADER in text:
            sql = text.split(SQL_HEADER, 1)[1].strip()
            if sql not in self.queries:
                self.queries.append(sql)
            return f"Question: What is result {self.queries.index(sql)}?\n"
        if QUESTION_HEADER in text:
            n = int(re.search(r"result (\d+)", text.split(QUESTION_HEADER, 1)[1]).group(1))
            return "SELECT 12345" if n % 4 == 3 else f"```sql\n{self.queries[n]}\n```"
        return ["SELECT nope FROM customers", "SELECT name FROM customers WHERE city = 'Paris'",
                "SELECT count(*) FROM orders WHERE status = 'shipped'"][seed % 3]


def recipe_for(tmp_path, db, *sets, tiny="unused"):
    path = tmp_path / "shop.toml"
    path.write_text(f'name = "shop"\n[model]\npath = "{tiny}"\n[data]\nsqlite = "{db}"\n'
                    f'[synth]\nper_db = 12\nout_dir = "{tmp_path / "synth"}"\n')
    return load_recipe(path, list(sets), check_data=False)


def test_templates_fill_every_shape_with_queries_that_run(tmp_path):
    db = make_shop(tmp_path)
    profile = profile_database("shop", db, read_schema("shop", db))
    kinds = {c.name: c.kind for t in profile.tables for c in t.columns}
    assert kinds["city"] == "text" and kinds["price"] == "number" and kinds["day"] == "date"
    city = next(c for t in profile.tables for c in t.columns if c.name == "city")
    assert city.categorical and "São Paulo" in profile.table("customers").columns[2].values + ["São Paulo"]
    assert not next(c for c in profile.table("customers").columns if c.name == "name").categorical  # all distinct
    assert sorted(profile.joins) == [("orders", "customer_id", "customers", "id"), ("orders", "product_id", "products", "id")]
    fired, verdicts = set(), []
    for i in range(400):
        name, sql, question = template_sql(profile, random.Random(i))
        fired.add(name)
        assert question[0].isupper() and question[-1] in "?." and "_" not in question and "SELECT" not in question
        assert not re.search(r"\ba [aeiou]", question.split('"')[0]), question  # "an order", not "a order"
        verdicts.append(verdict(sql, execute_here(str(db), sql, 5)))
    assert fired == {f.__name__ for shapes in TEMPLATES.values() for f in shapes}
    assert "fails" not in verdicts and "not a select" not in verdicts  # a template never writes broken SQL
    assert verdicts.count("ok") > 300


def test_filters_say_why_a_query_is_dropped():
    assert verdict("SELECT a FROM t", ExecResult(None, "no such table: t")) == "fails"
    assert verdict("SELECT a FROM t", ExecResult(())) == "empty"
    assert verdict("SELECT count(*) FROM t", ExecResult(((0,),))) == "degenerate"
    assert verdict("SELECT a, b FROM t", ExecResult(((None, None), (None, None)))) == "degenerate"
    assert verdict("DELETE FROM t", ExecResult(())) == "not a select"
    assert verdict("SELECT a FROM t", ExecResult(tuple((i,) for i in range(1001)))) == "too many rows"
    assert verdict("SELECT a FROM t UNION SELECT b FROM u", ExecResult(((1,),))) == "ok"
    assert skeleton("SELECT a FROM t WHERE b = 'x' AND c > 3") == skeleton("select a from t where b = 'y' and c > 10")
    assert skeleton("SELECT a FROM t WHERE b = 'x'") != skeleton("SELECT a FROM t WHERE c = 'x'")
    assert result_key([(1, "a"), (2.0, "b")]) == result_key([(2, "b"), (1, "a")])
    seen = Novelty()
    seen.add("SELECT a FROM t WHERE b = 1", [(1,)])
    assert seen.why_not_new("SELECT c FROM u", [(1,)]) == "same result"
    assert seen.why_not_new("SELECT a FROM t WHERE b = 2", [(5,)]) == "same skeleton"
    assert seen.why_not_new("SELECT c FROM u", [(5,)]) is None


def test_kept_pairs_run_hold_their_result_and_the_database_is_untouched(tmp_path):
    db = make_shop(tmp_path)
    before = digest(db)
    recipe = recipe_for(tmp_path, db)
    report = run_synthesis(recipe, backend=ScriptedTeacher())
    assert digest(db) == before
    pairs = [json.loads(line) for line in (tmp_path / "synth" / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == report.kept == 12
    for pair in pairs:
        result = execute_here(str(db), pair["sql"], 5)
        assert result.ok and len(result.rows) == pair["rows"] and result_key(result.rows) == pair["result"]
        assert pair["db_id"] == "shop" and pair["question"].startswith("What is result ")
    assert len({p["result"] for p in pairs}) == len(pairs) and len({skeleton(p["sql"]) for p in pairs}) == len(pairs)
    lines = [json.loads(line) for line in (tmp_path / "synth" / "candidates.jsonl").read_text().splitlines()]
    outcomes = {line["outcome"] for line in lines}
    # the teacher's broken query fails, its repeated ones are not new, its wrong answers fail the round trip
    assert {"fails", "kept", "round trip differs"} <= outcomes and outcomes & {"same result", "same skeleton"}
    assert {p["source"] for p in pairs} == {"templates", "model"}
    saved = json.loads((tmp_path / "synth" / "report.json").read_text())
    assert saved["kept"] == 12 and sum(saved["all"]["hardness"].values()) == 12
    assert saved["all"]["tried"] == len(lines) and saved["all"]["outcomes"]["kept"] == 12
    # the templates' own words: no teacher call for their questions
    worded = run_synthesis(recipe_for(tmp_path, db, 'synth.questions="template"', 'synth.sources=["templates"]',
                                      'synth.check="none"'), overwrite=True, backend=ScriptedTeacher())
    assert all(not p.startswith("What is result") for p in
               (json.loads(x)["question"] for x in (tmp_path / "synth" / "pairs.jsonl").read_text().splitlines()))
    assert worded.kept > 0
    # no round trip: the questions the check refused are kept too
    unchecked = run_synthesis(recipe_for(tmp_path, db, 'synth.check="none"'), overwrite=True, backend=ScriptedTeacher())
    assert unchecked.databases[0].outcomes["round trip differs"] == 0


class SecondTry(ScriptedTeacher):
    """Answers every fourth question wrongly when greedy (seed 0), then, sampled, with its own wording of the
    query (the same rows by another SQL)."""

    def generate(self, record, temperature=0.0, seed=0):
        text = record["input"]
        if QUESTION_HEADER in text and seed > 0:
            n = int(re.search(r"result (\d+)", text.split(QUESTION_HEADER, 1)[1]).group(1))
            return f"```sql\nSELECT * FROM ({self.queries[n]}) AS mine\n```"
        return super().generate(record, temperature, seed)


def test_pairs_can_keep_the_answering_models_own_sql(tmp_path):
    db = make_shop(tmp_path)
    report = run_synthesis(recipe_for(tmp_path, db, 'synth.target="answer"', "synth.answer_retries=2"),
                           backend=SecondTry())
    assert report.databases[0].outcomes["round trip differs"] == 0  # the sampled answer matched where greedy did not
    pairs = [json.loads(line) for line in (tmp_path / "synth" / "pairs.jsonl").read_text().splitlines()]
    own = [p for p in pairs if p["sql"] != p["synthesized_sql"]]
    assert own and all(p["sql"].startswith("SELECT * FROM (") for p in own)
    for pair in pairs:
        result = execute_here(str(db), pair["sql"], 5)
        assert result.ok and result_key(result.rows) == pair["result"]
    lines = [json.loads(line) for line in (tmp_path / "synth" / "candidates.jsonl").read_text().splitlines()]
    assert {line["answers_drawn"] for line in lines if line["outcome"] == "kept"} == {1, 2}
    with pytest.raises(MlxSqlError, match='synth.target = "answer" keeps the round trip'):
        recipe_for(tmp_path, db, 'synth.target="answer"', 'synth.check="none"')
    with pytest.raises(MlxSqlError, match=r"synth.target: 'answer' -> 'sql'"):
        run_synthesis(recipe_for(tmp_path, db, "synth.answer_retries=2"), resume=True, backend=SecondTry())


def test_an_interrupted_run_resumes_to_the_same_pairs_without_duplicates(tmp_path):
    db = make_shop(tmp_path)
    (tmp_path / "whole").mkdir()
    whole = run_synthesis(recipe_for(tmp_path / "whole", db), backend=ScriptedTeacher())
    expected = (tmp_path / "whole" / "synth" / "pairs.jsonl").read_text()
    recipe = recipe_for(tmp_path, db)
    with pytest.raises(KeyboardInterrupt):
        run_synthesis(recipe, backend=ScriptedTeacher(stop_after=15))
    partial = (tmp_path / "synth" / "candidates.jsonl").read_text().splitlines()
    assert 0 < len(partial) < whole.databases[0].tried
    with pytest.raises(MlxSqlError, match="already holds a synthesis run; --resume"):
        run_synthesis(recipe, backend=ScriptedTeacher())
    teacher = ScriptedTeacher()  # numbers its questions as the interrupted one did (a model needs no such memory)
    for line in map(json.loads, partial):
        if line.get("question") and line["sql"] not in teacher.queries:
            teacher.queries.append(line["sql"])
    resumed = run_synthesis(recipe, resume=True, backend=teacher)
    lines = [json.loads(x) for x in (tmp_path / "synth" / "candidates.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == list(range(len(lines)))  # each candidate decided once
    assert resumed.kept == whole.kept
    got = [(p["sql"], p["result"]) for p in map(json.loads, (tmp_path / "synth" / "pairs.jsonl").read_text().splitlines())]
    assert got == [(p["sql"], p["result"]) for p in map(json.loads, expected.splitlines())]
    with pytest.raises(MlxSqlError, match=r"synth.per_db: 12 -> 20"):
        run_synthesis(recipe_for(tmp_path, db, "synth.per_db=20"), resume=True, backend=ScriptedTeacher())


def test_empty_work_is_an_error(tmp_path):
    empty = tmp_path / "empty.sqlite"
    conn = sqlite3.connect(empty)
    conn.execute("PRAGMA user_version = 1")  # a real SQLite file, with no tables
    conn.commit()
    conn.close()
    with pytest.raises(MlxSqlError, match="empty.sqlite: the database has no tables$"):
        run_synthesis(recipe_for(tmp_path, empty), backend=ScriptedTeacher())
    conn = sqlite3.connect(empty)
    conn.execute("CREATE TABLE t (a TEXT)")
    conn.close()
    with pytest.raises(MlxSqlError, match="the database has no tables with rows to ask about"):
        run_synthesis(recipe_for(tmp_path, empty), backend=ScriptedTeacher())
    db = make_shop(tmp_path)

    class Silent(ScriptedTeacher):
        def generate(self, record, temperature=0.0, seed=0):
            return "SELECT name FROM customers" if SQL_HEADER in record["input"] else super().generate(record, temperature, seed)

    with pytest.raises(MlxSqlError, match=r"no pair survived the filters \(no question \d+"):
        run_synthesis(recipe_for(tmp_path, db, "synth.attempts=2"), overwrite=True, backend=Silent())
    with pytest.raises(MlxSqlError, match="'nope' is not one of the databases"):
        run_synthesis(recipe_for(tmp_path, db, 'synth.databases=["nope"]'), overwrite=True, backend=ScriptedTeacher())


def test_synth_cli_with_an_openai_compatible_teacher_then_data_build_reads_the_pairs(tmp_path, tiny_model):
    db = make_shop(tmp_path)
    before = digest(db)
    teacher = ScriptedTeacher()

    def answer(body):
        record = {"input": body["messages"][-1]["content"]}
        return {"choices": [{"message": {"content": teacher.generate(record, body["temperature"], body.get("seed", 0))}}]}

    server = loopback_server(answer)
    try:
        recipe = tmp_path / "shop.toml"
        recipe.write_text(f'name = "shop"\n[model]\npath = "{tiny_model("llama")}"\n'
                          f'[data]\nsqlite = "{db}"\nout_dir = "{tmp_path / "data"}"\ndev_fraction = 0.25\n'
                          f'[synth]\nper_db = 8\nbackend = "openai"\nout_dir = "{tmp_path / "synth"}"\n'
                          f'[openai]\nbase_url = "http://127.0.0.1:{server.server_port}"\n')
        unsynthesized = subprocess.run([sys.executable, "-m", "mlx_sql", "data", "build", str(recipe)],
                                       capture_output=True, text=True)
        assert unsynthesized.returncode != 0 and "or write them with `mlx-sql synth" in unsynthesized.stderr
        run = subprocess.run([sys.executable, "-m", "mlx_sql", "synth", str(recipe)], capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert re.search(r"8 pairs in \d+ seconds \(done\)", run.stdout) and "pairs kept" in run.stdout
        again = subprocess.run([sys.executable, "-m", "mlx_sql", "synth", str(recipe)], capture_output=True, text=True)
        assert again.returncode != 0 and again.stderr.count("\n") == 1 and "--resume" in again.stderr
        built = subprocess.run([sys.executable, "-m", "mlx_sql", "data", "build", str(recipe)], capture_output=True,
                               text=True, timeout=300)
        assert built.returncode == 0, built.stderr
        assert "wrote 5 train and 1 valid" in built.stdout  # 8 pairs (no data.pairs: synth's), 2 held out for dev
        trained = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe), "--set", "train.iters=2",
                                  "--set", f'train.adapter_dir="{tmp_path / "adapter"}"'], capture_output=True,
                                 text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr
        assert (tmp_path / "adapter" / "adapters.safetensors").is_file()
    finally:
        server.shutdown()
    assert digest(db) == before


def test_pairs_synthesized_on_a_benchmarks_databases_train_with_its_schemas(tmp_path, minispider, tiny_model):
    """A benchmark folder's databases of one split (Spider's dev databases, for the adapted setting): synth reads
    their schemas and contents, never their questions; data.pairs then replaces the training questions."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer

    path = tmp_path / "r.toml"
    path.write_text(f'name = "r"\n[model]\npath = "{tiny_model("llama")}"\n[data]\npath = "{minispider}"\n'
                    f'out_dir = "{tmp_path / "data"}"\nvalid_fraction = 0\nschema_format = "ddl"\n'
                    f'[synth]\nper_db = 3\nsplit = "dev"\ndatabases = ["clinic", "library"]\n'
                    f'out_dir = "{tmp_path / "synth"}"\n')
    report = run_synthesis(load_recipe(path, check_data=False), backend=ScriptedTeacher())
    assert [d.db_id for d in report.databases] == ["clinic", "library"] and report.kept == 6
    recipe = load_recipe(path, [f'data.pairs="{tmp_path / "synth" / "pairs.jsonl"}"'])
    built = build_dataset(recipe, load_tokenizer(recipe.model))
    assert built.train == 6
    records = [json.loads(x) for x in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    pairs = [json.loads(x) for x in (tmp_path / "synth" / "pairs.jsonl").read_text().splitlines()]
    assert sorted(r["output"] for r in records) == sorted(p["sql"] for p in pairs)
    assert all("CREATE TABLE" in r["input"] and "What is result" in r["input"] for r in records)


MESSY = """
CREATE TABLE "Order Details" ("Order ID" INTEGER REFERENCES "group"("key"), "Unit Price" REAL, Qty INT,
                              "Note's" TEXT, blobby BLOB, "Line Total" REAL AS ("Unit Price" * Qty));
CREATE TABLE "group" ("key" INTEGER PRIMARY KEY, "select" TEXT, "Created-At" TEXT, "ÉtatÉ" TEXT, "nothing" TEXT);
CREATE TABLE empty_one (a INTEGER, b TEXT);
CREATE TABLE untyped (x, y, z);
CREATE TABLE wr (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID;
CREATE VIEW v_totals AS SELECT "Order ID" AS oid, sum("Unit Price") AS total FROM "Order Details" GROUP BY 1;
CREATE VIRTUAL TABLE notes_fts USING fts5(body);
INSERT INTO notes_fts VALUES ('first note'), ('second note');
"""


def make_messy(folder):
    """Names real databases have and Spider rarely does: SQL keywords, spaces, quotes, accents; BLOBs, untyped
    columns, an all-NULL column, a generated column, an empty table, a WITHOUT ROWID table, a view, a full-text
    index."""
    path = folder / "messy.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MESSY)
    rng = random.Random(0)
    for i in range(1, 30):
        conn.execute('INSERT INTO "group" VALUES (?,?,?,?,NULL)', (i, rng.choice(["O'Brien", 'say "hi"', "Ünïcode"]),
                     f"2025-0{rng.randint(1, 9)}-0{rng.randint(1, 9)} 10:00:00", rng.choice(["Nord", "Süd", "East-West"])))
    for _ in range(200):
        conn.execute('INSERT INTO "Order Details" VALUES (?,?,?,?,?)', (rng.randint(1, 29), round(rng.uniform(1, 99), 2),
                     rng.randint(1, 5), rng.choice(["50% off", "a_b", "x;y", None]), b"\x00\x01"))
    for i in range(40):
        conn.execute("INSERT INTO untyped VALUES (?,?,?)", (rng.choice([1, "two", 3.5]), rng.choice("abc"), i))
        conn.execute("INSERT INTO wr VALUES (?,?)", (f"k{i}", i))
    conn.commit()
    conn.close()
    return path


def test_templates_run_on_a_database_named_the_way_real_ones_are(tmp_path):
    from mlx_sql.data.schema import render_schema

    db = make_messy(tmp_path)
    before = digest(db)
    schema = read_schema("messy", db)
    text = render_schema(schema, "ddl", 2)
    assert 'CREATE TABLE "group" (' in text and '"select" TEXT' in text  # words SQLite reserves are quoted,
    assert "  key INTEGER PRIMARY KEY" in text  # those it reads as names (as Spider's `FROM match`) are not
    assert 'CREATE TABLE "Order Details" (' in text and '"Note\'s" TEXT' in text and "<2-byte blob>" in text
    assert 'FOREIGN KEY ("Order ID") REFERENCES "group"(key)' in text
    assert '"Line Total" REAL' in text  # a generated column is read like any other
    assert "notes_fts" not in text  # a full-text index and its shadow tables: the sandbox runs no such module
    profile = profile_database("messy", db, read_schema("messy", db))
    verdicts, joined = [], 0
    for i in range(300):
        _, sql, question = template_sql(profile, random.Random(i))
        joined += ' JOIN "group" AS T2 ON T1."Order ID" = T2.key' in sql
        verdicts.append(verdict(sql, execute_here(str(db), sql, 5)))
    assert "fails" not in verdicts and verdicts.count("ok") > 250 and joined > 20
    assert digest(db) == before


def test_joins_a_database_never_declared_are_inferred_from_names_and_checked_against_its_rows(tmp_path):
    from mlx_sql.data.schema import render_schema

    db = make_shop(tmp_path)
    conn = sqlite3.connect(db)  # the same shop as a CSV import leaves it: no FOREIGN KEY clause, no primary keys
    conn.executescript("""
        CREATE TABLE o2 AS SELECT * FROM orders; DROP TABLE orders; ALTER TABLE o2 RENAME TO orders;
        CREATE TABLE Category (CategoryID INTEGER, label TEXT);
        INSERT INTO Category VALUES (1, 'a'), (2, 'b');
        CREATE TABLE Item (ItemID INTEGER, CategoryID INTEGER, customers_id INTEGER);
        INSERT INTO Item VALUES (1, 1, 1), (2, 2, 99);""")
    conn.close()
    schema = read_schema("shop", db)
    assert sorted(fk.arrow() for fk in schema.foreign_keys) == [
        "Item.CategoryID -> Category.CategoryID", "orders.customer_id -> customers.id",
        "orders.product_id -> products.id"]  # not Item.customers_id: 99 is no customer
    assert "FOREIGN KEY (customer_id) REFERENCES customers(id)" in render_schema(schema, "ddl")
    profile = profile_database("shop", db, schema)
    assert next(c for c in profile.table("orders").columns if c.name == "customer_id").key
    joined = [sql for i in range(300) if " JOIN " in (sql := template_sql(profile, random.Random(i))[1])]
    assert len(joined) > 30 and all(verdict(sql, execute_here(str(db), sql, 5)) != "fails" for sql in joined)
    declared = make_shop(tmp_path, "declared.sqlite")
    conn = sqlite3.connect(declared)
    conn.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, customer_id INTEGER); INSERT INTO notes VALUES (1, 1);")
    conn.close()
    arrows = [fk.arrow() for fk in read_schema("shop", declared).foreign_keys]
    assert "notes.customer_id -> customers.id" not in arrows and len(arrows) == 2  # declared keys are taken at their word
