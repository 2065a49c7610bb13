"""GRPO (issue #32) on tiny random models: the loss's form, the reference model, the mechanics, exact resume."""

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
import scripted_grpo
from mlx.utils import tree_flatten, tree_map

from mlx_sql.models.loading import load_model
from mlx_sql.train.adapters import adapter_config, apply_adapters
from mlx_sql.train.batches import make_batch
from mlx_sql.train.encode import Encoder
from mlx_sql.train.grpo import GRPO, adapters_off, group_advantages, grpo_loss
from mlx_sql.train.losses import completion_log_probs, example_losses
from mlx_sql.train.trainer import train

RECORD = {"instruction": "Write SQL.", "input": "### Schema ###\nCREATE TABLE t (a INT);\n\n### Question ###\nAll a?",
          "output": "SELECT a FROM t", "db_id": "x", "question": "All a?"}


def adapted(tiny_recipe, *sets):
    recipe = tiny_recipe("llama", "train.rank=8", "train.alpha=16", *sets, examples=8)
    model, tokenizer, base = load_model(recipe.model)
    apply_adapters(model, adapter_config(model, recipe.train, base))
    return recipe, model, tokenizer, Encoder.for_model(model, tokenizer)


def randomize_adapters(model, seed=0):
    """LoRA's B starts at zero (the adapter does nothing); give it values so the policy moves off the base."""
    rng = np.random.default_rng(seed)
    for _, m in model.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.array(rng.normal(0, 0.05, m.lora_b.shape).astype(np.float32))


def test_advantages_are_normalised_within_the_group_and_uniform_groups_carry_nothing():
    adv = group_advantages([1.0, 0.0, 0.1, 0.0])
    assert abs(float(adv.mean())) < 1e-6 and adv[0] == adv.max() and adv[1] == adv[3]
    assert group_advantages([1.0, 1.0, 1.0]) is None and group_advantages([0.0, 0.0]) is None


def test_kl_is_zero_with_the_adapter_at_init_and_the_reference_is_the_base(tiny_recipe):
    _, model, _, encoder = adapted(tiny_recipe)
    batch = make_batch(encoder, [RECORD, {**RECORD, "output": "SELECT count(*) FROM t"}], True, 512)
    with adapters_off(model):
        reference = completion_log_probs(model, batch)[0]
    policy = completion_log_probs(model, batch)[0]
    np.testing.assert_allclose(np.array(reference), np.array(policy), atol=1e-6)
    _, _, kl = grpo_loss(model, batch, mx.array([1.0, -1.0]), reference, 0.2, 0.04)
    assert abs(kl.item()) < 1e-6
    randomize_adapters(model)
    moved = completion_log_probs(model, batch)[0]
    with adapters_off(model):  # off again: exactly the base, whatever the adapter holds
        np.testing.assert_allclose(np.array(completion_log_probs(model, batch)[0]), np.array(reference), atol=1e-5)
    assert not np.allclose(np.array(moved), np.array(reference), atol=1e-4)
    _, _, kl = grpo_loss(model, batch, mx.array([1.0, -1.0]), reference, 0.2, 0.04)
    assert kl.item() > 0


def test_one_answer_without_clip_or_kl_is_the_policy_gradient(tiny_recipe):
    """G = 1, no clipping, no KL: the gradient is -A times the gradient of the answer's mean token log-prob."""
    _, model, _, encoder = adapted(tiny_recipe)
    randomize_adapters(model)
    batch = make_batch(encoder, [RECORD], True, 512)
    advantage = 0.7
    _, grads = nn.value_and_grad(model, grpo_loss)(model, batch, mx.array([advantage]),
                                                     mx.zeros((int(batch.mask[:, 1:].sum().item()),)), 1e9, 0.0)

    def mean_log_prob(model, batch):
        sums, counts = example_losses(model, batch)
        return -(sums / counts).sum()

    _, expected = nn.value_and_grad(model, mean_log_prob)(model, batch)
    for (name, g), (_, e) in zip(tree_flatten(grads), tree_flatten(expected)):
        np.testing.assert_allclose(np.array(g), -advantage * np.array(e), rtol=1e-4, atol=1e-6, err_msg=name)


def test_the_prompt_held_fixed_gives_the_same_loss_and_kl_and_a_gradient_through_the_answers_only(tiny_recipe):
    """grpo_prompt_grad = false: the sampler's prefix keys/values stand in for the loss's own prefix pass."""
    from dataclasses import replace

    recipe, model, tokenizer, encoder = adapted(tiny_recipe, "train.grpo_prompt_grad=false")
    randomize_adapters(model)
    grpo = GRPO(model, tokenizer, encoder, recipe.train, lambda record, text: 0.0)
    answers = grpo.sample(RECORD, [1, 2, 3], step=0)
    fixed = grpo.group_batch(RECORD, answers)
    assert fixed.prefix_kv is not None and fixed.prefix_kv[0][0].shape[2] == fixed.prefix.shape[1]
    whole = replace(fixed, prefix_kv=None)
    advantages = mx.array([1.0, -0.5, -0.5])
    with adapters_off(model):
        reference = completion_log_probs(model, whole)[0]
    loss_and_grad = nn.value_and_grad(model, grpo_loss)
    (loss_whole, _, kl_whole), grads_whole = loss_and_grad(model, whole, advantages, reference, 0.2, 0.04)
    (loss_fixed, _, kl_fixed), grads_fixed = loss_and_grad(model, fixed, advantages, reference, 0.2, 0.04)
    assert abs(loss_fixed.item() - loss_whole.item()) < 1e-4 and abs(kl_fixed.item() - kl_whole.item()) < 1e-4
    differ = [name for (name, a), (_, b) in zip(tree_flatten(grads_fixed), tree_flatten(grads_whole))
              if not np.allclose(np.array(a), np.array(b), atol=1e-7)]
    assert differ and all(np.isfinite(np.array(g)).all() for _, g in tree_flatten(grads_fixed))
    _, _, _, kl, _ = grpo.gradients(fixed, advantages)  # the reference pass runs its own prefix, adapter off
    assert abs(kl.item() - kl_whole.item()) < 1e-4


def test_the_reference_prefix_is_kept_and_reused_exactly(tiny_recipe):
    """The base weights never change: a later question on the same schema reuses the reference's prefix
    keys/values and gets what a whole reference pass gives; at most REFERENCE_PREFIXES schemas are kept."""
    from dataclasses import replace

    from mlx_sql.train.grpo import REFERENCE_PREFIXES

    recipe, model, tokenizer, encoder = adapted(tiny_recipe, "train.grpo_prompt_grad=false")
    randomize_adapters(model)
    grpo = GRPO(model, tokenizer, encoder, recipe.train, lambda record, text: 0.0)
    other = {**RECORD, "question": "How many a?", "input": RECORD["input"].replace("All a?", "How many a?")}
    batches = [grpo.group_batch(r, grpo.sample(r, [1, 2], step=0)) for r in (RECORD, other)]
    assert np.array_equal(np.array(batches[0].prefix), np.array(batches[1].prefix))  # one schema, two questions
    for i, batch in enumerate(batches):
        reference, reused = grpo.reference_log_probs(batch)  # the batch holds the sampler's (adapter's) prefix
        assert reused is (i == 1)
        with adapters_off(model):
            whole = np.array(completion_log_probs(model, replace(batch, prefix_kv=None))[0])
        np.testing.assert_allclose(np.array(reference), whole, atol=1e-6)
        assert not np.allclose(np.array(completion_log_probs(model, batch)[0]), whole, atol=1e-4)
    for n in range(REFERENCE_PREFIXES):  # as many other schemas push the first out
        schema = {**RECORD, "input": RECORD["input"].replace("(a INT)", f"(a INT, b{n} TEXT)")}
        assert not grpo.reference_log_probs(grpo.group_batch(schema, grpo.sample(schema, [1], step=0)))[1]
    assert len(grpo.reference_kv) == REFERENCE_PREFIXES
    assert not grpo.reference_log_probs(batches[0])[1]


@pytest.mark.parametrize("prompt_grad", ["true", "false"])
def test_a_reward_that_favours_one_answer_raises_its_probability(tiny_recipe, prompt_grad):
    recipe, model, tokenizer, encoder = adapted(tiny_recipe, "train.grpo_group=16", "train.grpo_max_tokens=1",
                                                "train.grpo_kl=0", "train.grpo_temperature=1.0",
                                                f"train.grpo_prompt_grad={prompt_grad}")
    from mlx_sql.eval.backends.base import prompt_ids

    prefix, question = prompt_ids(encoder, RECORD)
    prompt = mx.array([[*prefix, *question]])
    first = model(prompt)[0, -1]
    ranked = np.argsort(-np.array(first.astype(mx.float32)))
    # a likely-enough first token (not the top one) that is a word of its own: its text encodes back to it
    token = next(int(t) for t in ranked[2:60] if (w := tokenizer.decode([int(t)])).strip() == w and w.isalpha()
                 and tokenizer.encode(w, add_special_tokens=False) == [int(t)])
    target = tokenizer.decode([token])
    grpo = GRPO(model, tokenizer, encoder, recipe.train, lambda record, text: float(text == target))
    grpo.extract = lambda text: text  # reward the raw one-token answer
    optimizer = optim.SGD(learning_rate=0.5)

    def probability() -> float:
        return float(mx.softmax(model(prompt)[0, -1].astype(mx.float32))[token].item())

    before = probability()
    steps_with_signal = 0
    for step in range(12):
        grads, _, n, stats, _ = grpo.question(RECORD, step, 0, 0)
        if grads is not None:
            steps_with_signal += 1
            grads, _ = optim.clip_grad_norm(tree_map(lambda g: g / n, grads), 1.0)  # as the trainer steps
            optimizer.update(model, grads)
            mx.eval(model.trainable_parameters(), optimizer.state)
    assert steps_with_signal >= 3
    assert probability() > 10 * before  # 0.011 -> about 0.55


def test_grpo_training_resumes_exactly_and_reports_its_metrics(tiny_recipe, monkeypatch):
    """The trainer's own loop with a reward that needs no database: sampling is seeded by step, so an
    interrupted, resumed run equals an uninterrupted one."""
    scripted_grpo.patch(monkeypatch.setattr)
    common = ("train.objective=grpo", "train.iters=4", "train.batch_size=2", "train.grpo_group=4",
              "train.grpo_max_tokens=6", "train.lr=1e-2", "train.save_every=100", "data.valid_fraction=0")
    full = train(tiny_recipe("llama", *common, examples=8, name="full"))
    part = tiny_recipe("llama", *common, examples=8, name="part")
    train(part, stop_after=2)
    resumed = train(part, resume=True)
    assert [h.step for h in resumed.history] == [3, 4]
    a = mx.load(str(full.out_dir / "adapters.safetensors"))
    b = mx.load(str(resumed.out_dir / "adapters.safetensors"))
    assert any(float(mx.abs(v).max().item()) > 0 for k, v in a.items() if "lora_b" in k)  # it learned something
    for name in a:
        np.testing.assert_allclose(np.array(a[name]), np.array(b[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    rows = [json.loads(line) for line in (part.adapter_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        o = row["objective"]
        # batches are cut at database boundaries: a step holds one or two questions
        assert o["groups"] in (1, 2) and 0 <= o["reward_mean"] <= 1 and o["answer_tokens"] >= 0
        assert 0 <= o["all_right_share"] + o["all_wrong_share"] <= 1 and o["kl"] >= 0
        assert o["sampling_s"] > 0 and o["reward_s"] >= 0 and o["loss_s"] >= 0  # where the step's time went
    assert (part.adapter_dir / "reward.png").is_file()



def test_grpo_refuses_what_it_cannot_do(tiny_recipe):
    from mlx_sql.errors import MlxSqlError

    with pytest.raises(MlxSqlError, match="needs a decoder model and train.batching"):
        train(tiny_recipe("llama", "train.objective=grpo", "train.batching=unshared", "train.iters=1", name="u"))
    with pytest.raises(MlxSqlError, match="reference model is this model with its adapter off"):
        train(tiny_recipe("llama", "train.objective=grpo", "train.method=full", "train.iters=1", name="f"))


def test_a_run_starts_from_a_trained_adapter(tiny_recipe):
    """GRPO from an SFT adapter (the rft recipe's, say): train.init_adapter sets the new run's adapters to it."""
    from mlx_sql.errors import MlxSqlError

    first = train(tiny_recipe("llama", "train.iters=2", "train.lr=1e-2", name="sft"))
    start = train(tiny_recipe("llama", "train.iters=2", f'train.init_adapter="{first.out_dir}"', name="next"),
                  stop_after=0)
    a, b = mx.load(str(first.out_dir / "adapters.safetensors")), mx.load(str(start.out_dir / "adapters.safetensors"))
    assert set(a) == set(b) and any(float(mx.abs(v).max().item()) > 0 for k, v in a.items() if "lora_b" in k)
    for name in a:
        np.testing.assert_array_equal(np.array(a[name]), np.array(b[name]), err_msg=name)
    with pytest.raises(MlxSqlError, match="do not match this run's .*first difference"):
        train(tiny_recipe("llama", "train.iters=2", "train.rank=4", f'train.init_adapter="{first.out_dir}"',
                          name="other"))


def test_the_plan_predicts_a_grpo_steps_peak(tiny_recipe, monkeypatch):
    from mlx_sql.train.plan import make_plan

    scripted_grpo.patch(monkeypatch.setattr, modulus=2)
    recipe = tiny_recipe("llama", "train.objective=grpo", "train.iters=4", "train.batch_size=1", "train.grpo_group=8",
                         "train.grpo_max_tokens=24", "train.save_every=100", "data.valid_fraction=0", examples=8,
                         name="plan")
    plan, _, _ = make_plan(recipe)
    history = train(recipe).history
    assert sum(h.objective["groups"] - h.objective["skipped_groups"] for h in history) >= 2  # steps that learned
    measured = max(h.peak_memory_gb for h in history) * 1e9
    print(f"grpo plan: {plan.total / 1e6:.1f} MB predicted, {measured / 1e6:.1f} MB measured", flush=True)
    assert 0.75 <= plan.total / measured <= 1.25, (plan, measured)


def test_a_grpo_run_that_wont_fit_is_advised_on_its_group_not_its_batch(tiny_recipe, monkeypatch):
    """A GRPO step holds one question's group at a time: a smaller batch saves nothing, a smaller group does."""
    from mlx_sql.train.plan import make_plan

    recipe = tiny_recipe("llama", "train.objective=grpo", "train.batch_size=4", "train.grpo_group=32",
                         "train.grpo_max_tokens=256", "data.valid_fraction=0", examples=8, name="plan-advice")
    plan, _, _ = make_plan(recipe)
    monkeypatch.setenv("MLX_SQL_MEMORY_GB", f"{plan.total / 1e9 / 0.7:.6f}")  # tight: 70% of this "machine"
    _, verdicts, advice = make_plan(recipe)
    assert verdicts[0].status != "fits"
    assert "--set train.grpo_group=16" in advice and not any("batch_size" in a for a in advice), advice


def test_the_execution_reward_reads_the_benchmarks_databases(tiny_recipe):
    """No reward patched: the trainer's own reward runs each answer on the question's database in the sandbox.
    A random model writes no SQL, so every group is all wrong, counted, and skipped."""
    recipe = tiny_recipe("llama", "train.objective=grpo", "train.iters=1", "train.batch_size=2", "train.grpo_group=2",
                         "train.grpo_max_tokens=4", "data.valid_fraction=0", examples=4, name="real")
    (report,) = train(recipe).history
    assert report.objective["groups"] >= 1 and report.objective["all_wrong_share"] == 1.0
    assert report.objective["skipped_groups"] == report.objective["groups"] and report.objective["reward_mean"] == 0.0


def test_execution_reward_scores_right_running_and_failing_answers(minispider):
    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.sandbox import Executor
    from mlx_sql.train.grpo import execution_reward

    bench = load_benchmark(minispider)
    question = bench.questions("train")[0]
    record = {"db_id": question.db_id, "output": question.query}
    with Executor(workers=1, timeout=5) as executor:
        reward = execution_reward(bench, "train", executor, 0.1)
        assert reward(record, question.query) == 1.0
        assert reward(record, "SELECT 123456789") == 0.1  # runs, another result
        assert reward(record, "SELECT nope FROM nowhere") == 0.0


def test_partial_credit_grows_with_how_much_of_the_result_a_wrong_answer_holds(tmp_path):
    """grpo_reward_partial: among answers that run but return another result, the closer earns more; right is
    still 1, a failure 0, and with no partial weight every wrong result earns the same."""
    import sqlite3

    from mlx_sql.sandbox import Executor
    from mlx_sql.train.grpo import execution_reward

    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript("CREATE TABLE item (id INTEGER, name TEXT, price REAL);"
                           "INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', 30.0), (4, 'cup', 4.0);")
    conn.close()

    class Bench:
        def db_path(self, db_id, split):
            return path

        def schema(self, db_id, split):
            from mlx_sql.data.own import read_schema

            return read_schema(db_id, path)

    record = {"db_id": "shop", "output": "SELECT name FROM item WHERE price > 3"}  # book, lamp, cup
    with Executor(workers=1, timeout=5) as executor:
        dense, flat = (execution_reward(Bench(), "train", executor, 0.1, w) for w in (0.5, 0.0))
        answers = {"right": "SELECT name FROM item WHERE 3 < price",
                   "one of three": "SELECT name FROM item WHERE price > 20",
                   "two of three": "SELECT name FROM item WHERE price > 10",
                   "all four": "SELECT name FROM item",
                   "unrelated": "SELECT id FROM item WHERE id > 9",
                   "fails": "SELECT nope FROM item"}
        scores = {name: dense(record, sql) for name, sql in answers.items()}
        assert scores["right"] == 1.0 and scores["fails"] == 0.0
        assert scores["unrelated"] == pytest.approx(0.1)  # nothing in common: runs credit only
        assert 0.1 < scores["one of three"] < scores["two of three"] < 0.55  # at most runs + half the rest
        assert 0.1 < scores["all four"] < 0.55
        assert {flat(record, sql) for name, sql in answers.items() if name not in ("right", "fails")} == {0.1}
