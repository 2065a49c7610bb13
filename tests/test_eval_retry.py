"""Execution-guided decoding (`eval.retries`): when SQLite rejects the greedy answer, samples are drawn
until one runs; a query that runs is never retried, and sampling is reproducible per seed."""

import json

import pytest
from mlx_lm import load

from conftest import MINISPIDER, loopback_server, sqlite_file
from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.own_answers import load_own_answers
from mlx_sql.errors import MlxSqlError
from mlx_sql.data.pruning import approx_tokens
from mlx_sql.eval.ask import Asker
from mlx_sql.sandbox import execute_here
from mlx_sql.eval.backends import MLXBackend, NaiveMLXBackend
from mlx_sql.eval.pipeline import eval_records, evaluate_model
from mlx_sql.eval.retry import retry_until_it_runs
from mlx_sql.recipe import load_recipe

RECORD = {"instruction": "Write SQL.", "input": "schema\n\n### Question ###\nHow many customers?"}


def _shop(tmp_path):
    return sqlite_file(tmp_path / "shop.sqlite",
                       "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT);"
                       "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Oslo');")


def test_samples_until_one_runs_and_keeps_what_failed(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    calls = []

    def generate(record, temperature=0.0, seed=0):
        calls.append((temperature, seed))
        return ["SELECT count(T1.names) FROM customers AS T1", "no SQL here",
                "```sql\nSELECT count(*) FROM customers;\n```"][seed - 1]

    got = retry_until_it_runs(generate, RECORD, "SELECT count(cust) FROM customers", run, retries=5, temperature=0.7)
    assert got.sql == "SELECT count(*) FROM customers" and got.result.rows == ((2,),)
    assert calls == [(0.7, 1), (0.7, 2), (0.7, 3)]  # stops at the first that runs
    assert got.failed == [{"sql": "SELECT count(cust) FROM customers", "error": "no such column: cust"},
                          {"sql": "SELECT count(T1.names) FROM customers AS T1", "error": "no such column: T1.names"},
                          {"sql": "", "error": "no SQL in the answer"}]


def test_a_query_that_runs_is_kept_and_nothing_running_keeps_the_greedy_answer(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    never = lambda record, **kw: pytest.fail("no sample was needed")  # noqa: E731
    empty = retry_until_it_runs(never, RECORD, "SELECT name FROM customers WHERE 0", run, 3, 0.8)
    assert empty.sql == "SELECT name FROM customers WHERE 0" and empty.result.rows == () and empty.failed == []
    untried = retry_until_it_runs(never, RECORD, "SELECT nope", run, 0, 0.8)
    assert untried.sql == "SELECT nope" and untried.result.error == "no such column: nope"
    slow = retry_until_it_runs(never, RECORD, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                               "SELECT count(*) FROM c", lambda sql: execute_here(str(db), sql, 0.2), 3, 0.8)
    assert slow.result.error == "timeout" and slow.failed == []  # it ran; too slow is not "does not run"
    wrong = retry_until_it_runs(lambda record, **kw: "SELECT zebra FROM customers", RECORD, "SELECT nope", run, 2, 0.8)
    assert wrong.sql == "SELECT nope" and wrong.result.error == "no such column: nope"
    assert [f["sql"] for f in wrong.failed] == ["SELECT nope", "SELECT zebra FROM customers", "SELECT zebra FROM customers"]


def test_mlx_sampling_is_greedy_at_zero_and_reproducible_per_seed(tiny_model, tmp_path):
    model, tok = load(str(tiny_model("llama")))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "{tiny_model("llama")}"\n[data]\npath = "{MINISPIDER}"\n')
    bench = load_benchmark(MINISPIDER)
    (record,) = eval_records(bench, bench.questions("dev")[:1], load_recipe(recipe), "dev", approx_tokens)
    ours = MLXBackend(model, tok, 16)
    greedy = ours.generate(record)
    assert ours.generate(record, temperature=0.0, seed=5) == greedy
    samples = [ours.generate(record, temperature=1.0, seed=s) for s in (1, 2, 3)]
    assert [ours.generate(record, temperature=1.0, seed=s) for s in (1, 2, 3)] == samples
    assert len(set(samples + [greedy])) > 1  # a random tiny model's top-40 draws differ from its argmax
    naive = NaiveMLXBackend(model, tok, 16)
    assert naive.generate(record, temperature=1.0, seed=4) == naive.generate(record, temperature=1.0, seed=4)


def test_llamacpp_sampling_is_reproducible_per_seed_on_the_real_smollm2(smollm2_gguf):
    from mlx_sql.eval.backends import LlamaCppBackend

    gguf, tok = smollm2_gguf
    backend = LlamaCppBackend(gguf, max_tokens=24, context_window=1024, tokenizer=tok)
    record = {"instruction": "Write one SQLite query.", "input": "CREATE TABLE t (a INT, b TEXT);\n\n"
              "### Question ###\nHow many rows have a above 3?"}
    greedy = backend.generate(record)
    assert backend.generate(record) == greedy
    first = [backend.generate(record, temperature=1.2, seed=s) for s in (1, 2, 3)]
    assert [backend.generate(record, temperature=1.2, seed=s) for s in (1, 2, 3)] == first
    assert len(set(first + [greedy])) > 1


def _greedy_wrong(body):
    """An Ollama /api/chat answer: greedy, a column that does not exist; sampled, the right query."""
    sampled = body["options"]["temperature"] > 0
    table = "customers" if "customer" in body["messages"][0]["content"].split("### Question ###")[-1] else "doctors"
    sql = f"SELECT count(*) FROM {table}" if sampled else f"SELECT count(T1.full_name) FROM {table} AS T1"
    return {"model": body["model"], "message": {"role": "assistant", "content": sql}}


def test_evaluation_and_ask_with_retries_against_a_loopback_server(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n')
    server = loopback_server(_greedy_wrong)
    url = f'ollama.base_url="http://127.0.0.1:{server.server_port}"'
    try:
        once = evaluate_model(load_recipe(recipe, [url]), tmp_path / "once", "once", backend="ollama",
                              model_name="m", max_examples=1)
        assert once.summary["all"]["execution_accuracy"] == 0.0 and len(server.requests) == 1
        retrying = load_recipe(recipe, [url, "eval.retries=3", "eval.retry_temperature=0.6"])
        report = evaluate_model(retrying, tmp_path / "retry", "retry", backend="ollama", model_name="m", max_examples=1)
        shop = _shop(tmp_path)
        with Asker(retrying, shop, "ollama", model_name="m") as asker:
            answer = asker.ask("How many customers are there?")
        with Asker(load_recipe(recipe, [url]), shop, "ollama", model_name="m") as asker:
            plain = asker.ask("How many customers are there?")
    finally:
        server.shutdown()
    assert report.summary["all"]["execution_accuracy"] == 100.0  # "How many doctors work at the clinic?"
    greedy, sampled = [body["options"] for _, body in server.requests[1:3]]
    assert greedy["temperature"] == 0 and "top_k" not in greedy
    assert (sampled["temperature"], sampled["seed"], sampled["top_k"]) == (0.6, 1, 40)
    (prediction,) = [json.loads(line) for line in (tmp_path / "retry" / "predictions.jsonl").read_text().splitlines()]
    assert prediction["sql"] == "SELECT count(*) FROM doctors"
    assert prediction["failed"] == [{"sql": "SELECT count(T1.full_name) FROM doctors AS T1",
                                     "error": "no such column: T1.full_name"}]
    summary = json.loads((tmp_path / "retry" / "summary.json").read_text())
    assert (summary["retries"], summary["retried"]) == (3, 1)
    assert answer.ok and answer.sql == "SELECT count(*) FROM customers" and answer.rows == [[2]]
    assert plain.error == "SQLite: no such column: T1.full_name"


def _gold_on_second_sample(golds):
    """Ollama answers on the train split: greedy and the first sample run but miss the gold result; the
    second sample is the gold query."""
    def answer(body):
        question = body["messages"][0]["content"].split("### Question ###")[-1].strip()
        seed = body["options"].get("seed", 0) if body["options"]["temperature"] > 0 else 0
        sql = {0: "SELECT -987654", 1: "SELECT -987654 AS x"}.get(seed, golds[question])
        return {"model": body["model"], "message": {"role": "assistant", "content": sql}}
    return answer


def test_retries_until_correct_collect_own_answers_on_the_train_split_only(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n[eval]\nsplit = "train"\n')
    golds = {q.question: q.query for q in load_benchmark(MINISPIDER).questions("train")}
    server = loopback_server(_gold_on_second_sample(golds))
    url = f'ollama.base_url="http://127.0.0.1:{server.server_port}"'
    try:
        until_runs = evaluate_model(load_recipe(recipe, [url, "eval.retries=4"]), tmp_path / "runs", "runs",
                                    backend="ollama", model_name="m", max_examples=3)
        assert len(server.requests) == 3  # every greedy query ran: nothing retried
        until_correct = load_recipe(recipe, [url, "eval.retries=4", 'eval.retry_until="correct"'])
        report = evaluate_model(until_correct, tmp_path / "correct", "correct", backend="ollama", model_name="m",
                                max_examples=3)
        assert len(server.requests) == 3 + 3 * 3  # greedy, seed 1, seed 2 (the gold) for each question
        with pytest.raises(MlxSqlError, match='retry_until = "correct" reads the gold results.*set eval.split = '
                                              '"train" \\(it is \'dev\'\\)'):
            evaluate_model(load_recipe(recipe, [url, "eval.retries=4", 'eval.retry_until="correct"', 'eval.split="dev"']),
                           tmp_path / "dev", "dev", backend="ollama", model_name="m", max_examples=3)
        assert len(server.requests) == 12 and not (tmp_path / "dev").exists()
    finally:
        server.shutdown()
    assert until_runs.summary["all"]["execution_accuracy"] == 0.0
    assert report.summary["all"]["execution_accuracy"] == 100.0
    predictions = [json.loads(line) for line in (tmp_path / "correct" / "predictions.jsonl").read_text().splitlines()]
    assert [p["sql"] for p in predictions] == [golds[s.question] for s in report.scored]
    assert all(p["failed"] == [{"sql": "SELECT -987654", "error": "ran, wrong result"},
                               {"sql": "SELECT -987654 AS x", "error": "ran, wrong result"}] for p in predictions)
    summary = json.loads((tmp_path / "correct" / "summary.json").read_text())
    assert (summary["retry_until"], summary["retried"], summary["split"]) == ("correct", 3, "train")
    assert "Not a score" in (tmp_path / "correct" / "summary.md").read_text()
    assert load_own_answers(tmp_path / "correct", "train") == {(s.db_id, s.question): s.prediction
                                                                for s in report.scored}
