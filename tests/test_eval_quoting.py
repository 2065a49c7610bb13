"""Names SQLite reads only quoted ("Customer Accounts", "Unit Price"), written bare by a model, are quoted as the
schema spells them — and nothing else in a query changes."""

import json

import pytest

from conftest import loopback_server, sqlite_file
from mlx_sql.eval.ask import Asker
from mlx_sql.eval.pipeline import evaluate_model
from mlx_sql.eval.quoting import name_quoter
from mlx_sql.recipe import load_recipe

NAMES = ["Customer Accounts", "Account ID", "city", "Official_ratings_(millions)", "18_49_Rating_Share", "e-mail",
         "Order Details", "orders", "order_id"]


@pytest.mark.parametrize("written, runs_as", [
    ("SELECT count(*) FROM Customer Accounts WHERE city = 'Oslo'",
     "SELECT count(*) FROM \"Customer Accounts\" WHERE city = 'Oslo'"),
    ("SELECT T1.Account_ID FROM customer_accounts AS T1",
     'SELECT T1."Account ID" FROM "Customer Accounts" AS T1'),
    ('SELECT "Account_ID", "account id" FROM "Customer_Accounts"',  # quoted, but spelt as the model likes
     'SELECT "Account ID", "Account ID" FROM "Customer Accounts"'),
    ("SELECT max(Official_ratings_(millions)), 18_49_Rating_Share FROM x",
     'SELECT max("Official_ratings_(millions)"), "18_49_Rating_Share" FROM x'),
    ("SELECT e-mail FROM Order Details JOIN orders USING (order_id)",
     'SELECT "e-mail" FROM "Order Details" JOIN orders USING (order_id)'),
    ("SELECT city FROM t WHERE note = 'Customer Accounts' OR x = \"Order Details\"",  # a string stays a string
     "SELECT city FROM t WHERE note = 'Customer Accounts' OR x = \"Order Details\""),
    ("SELECT MyCustomer_Accounts, Customer_Accounts2 FROM t",  # part of a longer word: not a mention
     "SELECT MyCustomer_Accounts, Customer_Accounts2 FROM t"),
])
def test_bare_mentions_are_quoted_and_the_rest_left_alone(written, runs_as):
    assert name_quoter(NAMES)(written) == runs_as


def test_a_run_that_may_be_a_table_and_its_alias_is_left_alone():
    fix = name_quoter(["Customer", "Customer Accounts", "Account ID"])
    assert fix("SELECT * FROM Customer Accounts") == "SELECT * FROM Customer Accounts"  # table Customer AS Accounts
    assert fix("SELECT * FROM Customer_Accounts") == 'SELECT * FROM "Customer Accounts"'  # one word: only one name


def test_what_may_be_an_expression_or_a_number_is_left_alone():
    fix = name_quoter(["t", "e", "mail", "e-mail", "2019", "year", "Unit Price"])
    assert fix("SELECT e-mail FROM t WHERE year = 2019") == "SELECT e-mail FROM t WHERE year = 2019"
    assert fix("SELECT Unit_Price * 2019 FROM t") == 'SELECT "Unit Price" * 2019 FROM t'


def test_a_schema_of_plain_names_changes_no_query():
    fix = name_quoter(["singer", "Singer_ID", "concert", "Name"])
    for sql in ("SELECT Name FROM singer", 'SELECT "Singer ID" FROM singer', "SELECT name FROM Singer ID"):
        assert fix(sql) == sql


def _accounts(tmp_path):
    return sqlite_file(tmp_path / "accounts.sqlite",
                       'CREATE TABLE "Customer Accounts" ("Account ID" INTEGER PRIMARY KEY, "Full Name" TEXT, city TEXT);'
                       "INSERT INTO \"Customer Accounts\" VALUES (1, 'Ada', 'Oslo'), (2, 'Bo', 'Oslo'), (3, 'Cy', 'Rome');")


BARE = {"how many accounts are in oslo?": "SELECT count(Account_ID) FROM Customer Accounts WHERE city = 'Oslo'",
        "who lives in rome?": "SELECT Full_Name FROM Customer_Accounts WHERE city = 'Rome'"}


def _bare_model(body):
    question = body["messages"][0]["content"].split("### Question ###")[-1].strip().lower()
    return {"model": body["model"], "message": {"role": "assistant", "content": BARE[question]}}


def test_ask_and_eval_run_the_quoted_query_on_a_real_database(tmp_path):
    """The model writes the names bare; `ask` answers with the rows, and `eval` scores its held-out question right."""
    db = _accounts(tmp_path)
    before = db.read_bytes()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"question": q, "sql": s}) + "\n" for q, s in [
        ("How many accounts are in Oslo?", "SELECT count(*) FROM \"Customer Accounts\" WHERE city = 'Oslo'"),
        ("Who lives in Rome?", "SELECT \"Full Name\" FROM \"Customer Accounts\" WHERE city = 'Rome'")]))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "accounts"\n[model]\npath = "x/y"\n[data]\nsqlite = "{db}"\npairs = "{pairs}"\n'
                      f'out_dir = "{tmp_path / "data"}"\ndev_fraction = 0.5\n')
    server = loopback_server(_bare_model)
    try:
        loaded = load_recipe(recipe, [f'ollama.base_url="http://127.0.0.1:{server.server_port}"'])
        with Asker(loaded, db, "ollama", model_name="m") as asker:
            answer = asker.ask("How many accounts are in Oslo?")
        report = evaluate_model(loaded, tmp_path / "eval", "quoted", backend="ollama", model_name="m")
    finally:
        server.shutdown()
    assert answer.ok and answer.rows == [[2]]
    assert answer.sql == "SELECT count(\"Account ID\") FROM \"Customer Accounts\" WHERE city = 'Oslo'"
    assert report.summary["all"]["count"] == 1 and report.summary["all"]["execution_accuracy"] == 100.0
    assert db.read_bytes() == before
