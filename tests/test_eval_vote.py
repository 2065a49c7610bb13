"""Result voting (`eval.samples`): candidates grouped by what they return, the largest group wins, ties to the
earliest; failing candidates have no vote; everything reproducible per seed; pass@k / vote@k from one run."""

import json

from mlx_lm import load

from conftest import MINISPIDER, loopback_server, sqlite_file, voting_model
from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.pruning import approx_tokens
from mlx_sql.eval.ask import Asker
from mlx_sql.sandbox import execute_here
from mlx_sql.eval.backends import MLXBackend
from mlx_sql.eval.pipeline import eval_records, evaluate_model
from mlx_sql.eval.vote import headroom, vote_on_record, winner
from mlx_sql.recipe import load_recipe

RECORD = {"instruction": "Write SQL.", "input": "schema\n\n### Question ###\nWho lives in Paris?"}


def _shop(tmp_path):
    return sqlite_file(tmp_path / "shop.sqlite",
                       "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT);"
                       "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Oslo'), (3, 'Cy', 'Paris');")


class Scripted:
    """A backend whose sample for seed s is answers[s - 1]; records every seed asked for."""

    def __init__(self, answers):
        self.answers, self.seeds = answers, []

    def generate(self, record, temperature=0.0, seed=0):
        self.seeds.append(seed)
        return self.answers[seed - 1]


def test_the_largest_result_group_wins_and_failures_have_no_vote(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    backend = Scripted(["SELECT name FROM customers WHERE city = 'Paris'",
                        "SELECT nope FROM customers",  # fails: no vote
                        "SELECT c.name FROM customers AS c WHERE c.city LIKE 'paris'",  # same rows, other SQL
                        "SELECT name FROM customers WHERE city = 'Oslo'"])
    voted = vote_on_record(backend, RECORD, "SELECT name FROM customers", run, samples=5, temperature=0.7)
    assert backend.seeds == [1, 2, 3, 4]
    assert voted.sql == "SELECT name FROM customers WHERE city = 'Paris'" and voted.winner == 1
    assert sorted(voted.result.rows) == [("Ada",), ("Cy",)]
    assert [c.group for c in voted.candidates] == [0, 1, None, 1, 4]
    assert voted.overturned  # the greedy answer returned all three customers


def test_ties_go_to_the_earliest_candidate_so_one_sample_is_greedy(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    backend = Scripted(["SELECT name FROM customers WHERE city = 'Oslo'"])
    voted = vote_on_record(backend, RECORD, "SELECT name FROM customers WHERE city = 'Paris'", run, 2, 0.7)
    assert voted.winner == 0 and not voted.overturned and voted.sql.endswith("'Paris'")
    alone = vote_on_record(Scripted([]), RECORD, "SELECT name FROM customers", run, 1, 0.7)
    assert alone.winner == 0 and len(alone.candidates) == 1
    assert winner([0, 1, 1, 0], [False] * 4) == 0  # 2 against 2: the group holding candidate 0
    assert winner([None, 1, 2, 2], [False] * 4) == 2


def test_empty_results_win_only_where_nothing_returned_rows(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    empty = "SELECT name FROM customers WHERE city = 'paris'"  # misspelt value: no rows
    backend = Scripted([empty, "SELECT name FROM customers WHERE city = 'Paris'"])
    voted = vote_on_record(backend, RECORD, empty, run, 3, 0.7)
    assert voted.sql.endswith("'Paris'") and voted.winner == 2
    plain = vote_on_record(Scripted([empty, "SELECT name FROM customers WHERE city = 'Paris'"]), RECORD, empty, run,
                           3, 0.7, prefer_nonempty=False)
    assert plain.winner == 0 and plain.result.rows == ()


def test_an_empty_result_outvotes_rows_only_with_the_majority_asked():
    from mlx_sql.eval.vote import winner

    groups, empty = [0, 0, 0, 0, 4, 4], [True] * 4 + [False] * 2  # 4 votes for no rows, 2 for some rows
    assert winner(groups, empty) == 4  # by default an empty result never outvotes rows
    assert winner(groups, empty, empty_majority=2) == 0  # twice the votes: it does
    assert winner(groups, empty, empty_majority=3) == 4
    assert winner(groups, empty, prefer_nonempty=False) == 0
    assert winner([0, 0, None], [True, True, True], empty_majority=2) == 0  # nothing returned rows


def test_when_every_candidate_fails_retries_go_on_from_the_next_seed(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    backend = Scripted(["SELECT a FROM b", "no SQL", "SELECT zz FROM customers", "SELECT count(*) FROM customers"])
    voted = vote_on_record(backend, RECORD, "SELECT nope", run, samples=3, temperature=0.7, retries=3)
    assert backend.seeds == [1, 2, 3, 4] and voted.sql == "SELECT count(*) FROM customers"
    assert voted.result.rows == ((3,),) and [c.seed for c in voted.candidates] == [0, 1, 2, 3, 4]
    none = vote_on_record(Scripted(["SELECT a FROM b"] * 9), RECORD, "SELECT nope", run, 2, 0.7, retries=2)
    assert none.winner is None and none.sql == "SELECT nope" and len(none.candidates) == 4


def test_a_candidate_that_times_out_has_no_vote(tmp_path):
    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 0.2)  # noqa: E731
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    voted = vote_on_record(Scripted(["SELECT count(*) FROM customers"]), RECORD, slow, run, 2, 0.7)
    assert voted.sql == "SELECT count(*) FROM customers" and voted.candidates[0].group is None


def test_headroom_counts_pass_and_vote_at_every_k():
    right = {"group": 0, "rows": 1, "correct": True}
    answers = [
        [dict(right), {"group": 1, "rows": 1, "correct": False}, {"group": 1, "rows": 1, "correct": False}],
        [{"group": None, "rows": None, "correct": False}, {"group": 1, "rows": 2, "correct": True},
         {"group": 2, "rows": 2, "correct": False}],
    ]
    got = headroom(answers, [1, 2, 3])
    assert got[1] == {"pass": 50.0, "vote": 50.0}
    assert got[2] == {"pass": 100.0, "vote": 100.0}  # a tie keeps the greedy answer; the second's lone runner wins
    assert got[3] == {"pass": 100.0, "vote": 50.0}  # two wrong outvote the greedy answer in the first


def test_mlx_shared_prompt_samples_match_one_by_one_and_repeat(tiny_model, tmp_path):
    model, tok = load(str(tiny_model("llama")))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "{tiny_model("llama")}"\n[data]\npath = "{MINISPIDER}"\n')
    bench = load_benchmark(MINISPIDER)
    (record,) = eval_records(bench, bench.questions("dev")[:1], load_recipe(recipe), "dev", approx_tokens)
    ours = MLXBackend(model, tok, 12)
    many = ours.generate_many(record, [1, 2, 3], 1.0)
    assert ours.generate_many(record, [1, 2, 3], 1.0) == many
    assert [ours.generate(record, temperature=1.0, seed=s) for s in (1, 2, 3)] == many
    assert len(set(many)) > 1


def test_llamacpp_shared_prompt_batch_is_reproducible_and_greedy_at_zero(smollm2_gguf):
    from mlx_sql.eval.backends import LlamaCppBackend

    gguf, tok = smollm2_gguf
    backend = LlamaCppBackend(gguf, max_tokens=24, context_window=1024, tokenizer=tok)
    record = {"instruction": "Write one SQLite query.", "input": "CREATE TABLE t (a INT, b TEXT);\n\n"
              "### Question ###\nHow many rows have a above 3?"}
    many = backend.generate_many(record, [1, 2, 3, 4], 1.2)
    assert backend.generate_many(record, [1, 2, 3, 4], 1.2) == many  # the cached prompt changes nothing
    assert len(set(many)) > 1
    alone = backend.generate(record, temperature=1.2, seed=3)  # one row: reproducible too (a batch of other
    assert backend.generate(record, temperature=1.2, seed=3) == alone  # size may round differently in llama.cpp)
    greedy = backend.generate(record)
    assert backend.generate_many(record, [7, 8], 0.0) == [greedy, greedy]  # rows at temperature 0 are the argmax


def test_evaluation_and_ask_vote_against_a_loopback_server(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n')
    server = loopback_server(voting_model)
    url = f'ollama.base_url="http://127.0.0.1:{server.server_port}"'
    try:
        voting = load_recipe(recipe, [url, "eval.samples=4"])
        report = evaluate_model(voting, tmp_path / "vote", "vote", backend="ollama", model_name="m", max_examples=1)
        with Asker(voting, _shop(tmp_path), "ollama", model_name="m") as asker:
            answer = asker.ask("How many customers are there?")
    finally:
        server.shutdown()
    assert report.summary["all"]["execution_accuracy"] == 100.0
    (prediction,) = [json.loads(line) for line in (tmp_path / "vote" / "predictions.jsonl").read_text().splitlines()]
    assert prediction["sql"] == "SELECT count(*) FROM doctors" and prediction["winner"] == 1
    assert [c["correct"] for c in prediction["candidates"]] == [False, True, True, False]
    assert [c["group"] for c in prediction["candidates"]] == [0, 1, 1, None]
    summary = json.loads((tmp_path / "vote" / "summary.json").read_text())
    assert (summary["samples"], summary["overturned"], summary["overturned_fixed"], summary["overturned_broke"]) \
        == (4, 1, 1, 0)
    assert "Result voting (`eval.samples = 4`)" in (tmp_path / "vote" / "summary.md").read_text()
    assert answer.ok and answer.sql == "SELECT count(*) FROM customers" and answer.rows == [[3]]
    assert [c["group"] for c in answer.candidates] == [0, 1, 1, None] and answer.agreement == (2, 4)


def test_ask_says_each_stage_as_it_starts(tmp_path):
    """A person waits seconds for a voted answer on a CPU: `say` hears what it is waiting for, stage by stage —
    early stop's check and its vote, or the retries of an answer that did not run."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n')
    shop = _shop(tmp_path)
    failing = lambda body: {"model": body["model"], "message": {"role": "assistant", "content": "SELECT nope"}}  # noqa: E731
    heard = {}
    for name, model, sets in (("vote", voting_model, ["eval.samples=4", "eval.vote_early_stop=true"]),
                              ("retries", failing, ["eval.samples=1", "eval.retries=2"])):
        server = loopback_server(model)
        try:
            url = f'ollama.base_url="http://127.0.0.1:{server.server_port}"'
            with Asker(load_recipe(recipe, [url, *sets]), shop, "ollama", model_name="m") as asker:
                heard[name] = []
                asker.ask("How many customers are there?", say=heard[name].append)
        finally:
            server.shutdown()
    assert heard["vote"] == ["reading the schema", "writing the SQL", "sampling a second answer to check the first",
                             "the first two disagree: sampling 2 more to vote"]
    assert heard["retries"] == ["reading the schema", "writing the SQL",
                                "it did not run: sampling another answer (1 of 2)",
                                "it did not run: sampling another answer (2 of 2)"]


def _ask_with_a_vote_of_4(tmp_path, model):
    """`mlx-sql ask` about the shop, `model` answering over loopback, as text and as --json: (both runs, the
    requests the model got)."""
    import subprocess
    import sys

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n')
    shop = _shop(tmp_path)
    server = loopback_server(model)
    sets = ["--set", f'ollama.base_url="http://127.0.0.1:{server.server_port}"', "--set", "eval.samples=4"]
    try:
        done = [subprocess.run([sys.executable, "-m", "mlx_sql", "ask", "--recipe", str(recipe), "--backend", "ollama",
                                "--model", "m", "--db", str(shop), *sets, *extra,
                                "How many customers are there?"], capture_output=True, text=True, timeout=120)
                for extra in ([], ["--json"])]
    finally:
        server.shutdown()
    return done, server.requests


def test_ask_prints_how_many_candidates_agreed(tmp_path):
    done, _ = _ask_with_a_vote_of_4(tmp_path, voting_model)
    assert done[0].returncode == 0, done[0].stderr
    assert "2 of 4 candidates returned these rows" in done[0].stdout
    assert json.loads(done[1].stdout)["agreement"] == [2, 4]


def test_ask_shows_the_first_rows_of_a_result_over_the_cap(tmp_path):
    """A query returning more rows than the cap is cut, not refused: `ask` shows its first 10,000 rows and says it
    returns more. Such a candidate has no vote (its result is incomplete), so none of the 4 returned a complete
    result, and it is kept, not retried: it ran."""
    many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) SELECT x FROM c"
    done, requests = _ask_with_a_vote_of_4(
        tmp_path, lambda body: {"model": body["model"], "message": {"role": "assistant", "content": many}})
    assert [d.returncode for d in done] == [0, 0], done[0].stderr
    assert "the first 10000 rows: the query returns more" in done[0].stdout
    assert "none of 4 candidates returned a complete result" in done[0].stdout
    answer = json.loads(done[1].stdout)
    assert answer["truncated"] is True and answer["row_count"] == 10_000 and answer["rows"][-1] == [10_000]
    assert answer["agreement"] == [0, 4] and answer["error"] is None
    assert len(requests) == 8  # 4 candidates an ask, kept, not retried


def test_each_question_and_seed_has_its_own_stream():
    """A seed alone would give candidate k the same draws on every question (correlated candidates)."""
    from mlx_sql.models.verify import draw_rng

    first = draw_rng(3, [1, 2, 3]).random(4)
    assert (draw_rng(3, [1, 2, 3]).random(4) == first).all()
    assert not (draw_rng(3, [1, 2, 4]).random(4) == first).any()
    assert not (draw_rng(4, [1, 2, 3]).random(4) == first).any()


def test_llamacpp_keeps_a_schema_prefix_on_disk_for_the_next_process(smollm2_gguf, tmp_path, monkeypatch):
    """A one-shot ask computes a database's schema once: the next process loads its keys and values."""
    from mlx_sql.eval.backends import LlamaCppBackend

    gguf, tok = smollm2_gguf
    monkeypatch.setenv("MLX_SQL_CACHE", str(tmp_path))
    columns = ", ".join(f"c{i} INT" for i in range(60))
    record = {"instruction": "Write one SQLite query.", "input": f"CREATE TABLE t ({columns});\n\n"
              "### Question ###\nHow many rows have c3 above 3?"}
    from mlx_sql.models.llama_cpp_batch import SharedPromptSampler

    fed: list[tuple[int, int]] = []  # the token ranges each process computed
    feed = SharedPromptSampler._feed
    monkeypatch.setattr(SharedPromptSampler, "_feed",
                        lambda self, ids, start, end: (fed.append((start, end)), feed(self, ids, start, end)))
    first = LlamaCppBackend(gguf, max_tokens=16, context_window=1024, tokenizer=tok)
    greedy = first.generate(record)
    (saved,) = (tmp_path / "llama-state").glob("*.state")
    prefix, total = fed[0][1], fed[1][1]
    assert fed == [(0, prefix), (prefix, total)] and prefix >= 128
    fed.clear()
    second = LlamaCppBackend(gguf, max_tokens=16, context_window=1024, tokenizer=tok)
    assert second.generate(record) == greedy and fed == [(prefix, total)]  # the schema came from the file
    fed.clear()
    saved.write_bytes(saved.read_bytes()[:1000])  # a damaged file is computed afresh, not trusted
    third = LlamaCppBackend(gguf, max_tokens=16, context_window=1024, tokenizer=tok)
    assert third.generate(record) == greedy and fed == [(0, prefix), (prefix, total)]


def test_mlx_keeps_a_schema_prefix_on_disk_for_the_next_process(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MLX_SQL_CACHE", str(tmp_path))
    model, tok = load(str(tiny_model("llama")))
    columns = ", ".join(f"c{i} INT" for i in range(60))
    record = {"instruction": "Write one SQLite query.", "input": f"CREATE TABLE t ({columns});\n\n"
              "### Question ###\nHow many rows have c3 above 3?"}
    first = MLXBackend(model, tok, 12, state_id="tiny")
    greedy = first.generate(record)
    (saved,) = (tmp_path / "mlx-state").glob("*.safetensors")
    import mlx_sql.train.prefix_cache as prefix_cache
    from mlx_sql.train.prefix_cache import CollectCache

    calls = []  # prefix computations: each makes one CollectCache per layer

    class Counting(CollectCache):
        def __init__(self):
            calls.append(1)
            super().__init__()

    monkeypatch.setattr(prefix_cache, "CollectCache", Counting)  # where prefix_keys_values makes them
    second = MLXBackend(model, tok, 12, state_id="tiny")
    assert second.generate(record) == greedy and calls == []  # the prefix came from the file, not the model
    saved.write_bytes(b"damaged")
    third = MLXBackend(model, tok, 12, state_id="tiny")
    assert third.generate(record) == greedy and len(calls) == len(model.layers)  # damaged: computed afresh
    other = MLXBackend(model, tok, 12, state_id="another adapter")
    assert other._state_file(first.encoder.encode({**record, "output": ""}).prefix) != saved


def test_training_split_sampling_keeps_the_first_correct_candidate(tmp_path):
    """retry_until = "correct" with eval.samples: the K candidates come in one go, the first right one is kept."""
    from test_eval_retry import _gold_on_second_sample

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\npath = "x/y"\n[data]\npath = "{MINISPIDER}"\n[eval]\nsplit = "train"\n')
    golds = {q.question: q.query for q in load_benchmark(MINISPIDER).questions("train")}
    server = loopback_server(_gold_on_second_sample(golds))
    url = f'ollama.base_url="http://127.0.0.1:{server.server_port}"'
    try:
        report = evaluate_model(load_recipe(recipe, [url, "eval.retries=4", 'eval.retry_until="correct"',
                                                     "eval.samples=3"]),
                                tmp_path / "c", "c", backend="ollama", model_name="m", max_examples=2)
    finally:
        server.shutdown()
    assert report.summary["all"]["execution_accuracy"] == 100.0
    predictions = [json.loads(line) for line in (tmp_path / "c" / "predictions.jsonl").read_text().splitlines()]
    assert [[c["correct"] for c in p["candidates"]] for p in predictions] == [[False, False, True]] * 2
    assert [p["sql"] for p in predictions] == [golds[s.question] for s in report.scored]


def test_early_stop_ends_the_vote_where_two_answers_agree(tmp_path):
    """eval.vote_early_stop: the first sample alone, then the rest only where it disagrees with the greedy answer;
    where it goes on, the answer is the full vote's, from the same seeds."""
    from mlx_sql.eval.vote import vote_is_right

    db = _shop(tmp_path)
    run = lambda sql: execute_here(str(db), sql, 5.0)  # noqa: E731
    paris = "SELECT name FROM customers WHERE city = 'Paris'"
    agreeing = Scripted(["SELECT c.name FROM customers AS c WHERE c.city = 'Paris'", paris, paris])
    voted = vote_on_record(agreeing, RECORD, paris, run, 4, 0.7, early_stop=True)
    assert agreeing.seeds == [1] and len(voted.candidates) == 2 and voted.sql == paris
    oslo = "SELECT name FROM customers WHERE city = 'Oslo'"
    answers = [oslo, "SELECT name FROM customers WHERE city = 'Oslo' OR 0", oslo]
    went_on = Scripted(answers)
    early = vote_on_record(went_on, RECORD, paris, run, 4, 0.7, early_stop=True)
    full = vote_on_record(Scripted(answers), RECORD, paris, run, 4, 0.7)
    assert went_on.seeds == [1, 2, 3] and early.sql == full.sql == oslo and early.winner == full.winner == 1
    # an empty agreement settles nothing: a misspelt filter returns no rows for both
    empty = "SELECT name FROM customers WHERE city = 'paris'"
    quiet = Scripted([empty, paris, paris])
    assert vote_on_record(quiet, RECORD, empty, run, 4, 0.7, early_stop=True).sql == paris and quiet.seeds == [1, 2, 3]
    # the replay from recorded candidates agrees with the run
    recorded = [dict(c, correct=c["rows"] == 2) for c in voted.to_json()] + [{"group": 2, "rows": 1, "correct": False}] * 3
    assert vote_is_right(recorded, 5, early_stop=True) and not vote_is_right(recorded, 5)
