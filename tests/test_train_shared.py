"""Schema-shared batches compute exactly what training each example alone computes."""


import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm import load

from mlx_sql.data.benchmark import load_benchmark
from mlx_sql.data.build import database_tables
from mlx_sql.data.examples import make_record
from mlx_sql.data.schema import render_schema
from mlx_sql.recipe import DataConfig, TrainConfig
from mlx_sql.train.adapters import adapter_config, apply_adapters
from mlx_sql.train.batches import collate
from mlx_sql.train.encode import Encoder
from mlx_sql.train.losses import batch_loss, example_losses

from conftest import MINISPIDER


def library_records(n=4):
    bench = load_benchmark(MINISPIDER)
    questions = [q for q in bench.questions("train") if q.db_id == "library"][:n]
    tables = database_tables(bench, questions, DataConfig(), "train")
    schema = render_schema(bench.schema("library", "train").subset(tables["library"]))
    return [make_record(q, schema, "Write SQL.") for q in questions]


def lora_model(folder):
    model, tok = load(str(folder))
    model.set_dtype(mx.float32)
    mx.random.seed(3)
    apply_adapters(model, adapter_config(model, TrainConfig(rank=4, target_modules=["q_proj", "v_proj", "down_proj"]), "x"))
    # give lora_b non-zero values so the adapters matter in the comparison
    model.update(nn.utils.tree_map(lambda p: p + 0.01 * mx.random.normal(p.shape), model.trainable_parameters()))
    return model, tok


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
def test_shared_prefix_equals_unshared_losses_and_gradients(tiny_model, arch):
    model, tok = lora_model(tiny_model(arch))
    encoded = [Encoder(tok).encode(r) for r in library_records()]
    assert len({e.prefix for e in encoded}) == 1 and len(encoded[0].prefix) > 100
    shared = collate(encoded, shared=True, max_seq_length=4096)
    unshared = collate(encoded, shared=False, max_seq_length=4096)
    assert shared.real_tokens < unshared.real_tokens

    s_sum, s_cnt = example_losses(model, shared)
    u_sum, u_cnt = example_losses(model, unshared)
    np.testing.assert_array_equal(np.array(s_cnt), np.array(u_cnt))
    np.testing.assert_allclose(np.array(s_sum), np.array(u_sum), rtol=1e-4, atol=1e-4)

    grad_fn = nn.value_and_grad(model, batch_loss)
    (_, _), g_shared = grad_fn(model, shared)
    (_, _), g_unshared = grad_fn(model, unshared)
    flat_s, flat_u = dict(tree_flatten(g_shared)), dict(tree_flatten(g_unshared))
    assert flat_s.keys() == flat_u.keys() and len(flat_s) > 0
    for name in flat_s:
        np.testing.assert_allclose(np.array(flat_s[name]), np.array(flat_u[name]), rtol=2e-3, atol=2e-5,
                                   err_msg=name)


def test_only_completion_tokens_carry_loss(tiny_model):
    _, tok = load(str(tiny_model("llama")))
    records = library_records(2)
    encoder = Encoder(tok)
    batch = collate([encoder.encode(r) for r in records], shared=False, max_seq_length=4096)
    for row, record in enumerate(records):
        e = encoder.encode(record)
        mask = np.array(batch.mask[row])
        start = len(e.prefix) + e.completion_start
        assert mask[:start].sum() == 0
        assert mask[start:e.length].all() and mask[e.length:].sum() == 0
        completion_ids = np.array(batch.tokens[row])[start:e.length].tolist()
        assert tok.decode(completion_ids) == record["output"] + "<|im_end|>\n"


def test_truncation_cuts_the_schema_never_the_answer(tiny_model):
    _, tok = load(str(tiny_model("llama")))
    encoder = Encoder(tok)
    encoded = [encoder.encode(r) for r in library_records(3)]
    limit = max(len(e.segment) for e in encoded) + 20
    for shared in (True, False):
        batch = collate(encoded, shared=shared, max_seq_length=limit)
        assert batch.truncated == 3
        counts = np.array(batch.mask).sum(axis=1)
        assert counts.tolist() == [len(e.segment) - e.completion_start for e in encoded]
        longest = (batch.tokens.shape[1] + (batch.prefix.shape[1] if shared else 0))
        assert longest <= limit
    assert collate(encoded, shared=False, max_seq_length=10) is None  # answers longer than the limit: dropped


def test_gradient_checkpointing_keeps_unshared_gradients_and_other_models_alone(tiny_model):
    from mlx_sql.recipe import TrainConfig
    from mlx_sql.train.trainer import checkpointing_applies, enable_grad_checkpointing

    model, tok = lora_model(tiny_model("gemma3_text"))
    batch = collate([Encoder(tok).encode(r) for r in library_records()], shared=False, max_seq_length=4096)
    grad_fn = nn.value_and_grad(model, batch_loss)
    (_, _), plain = grad_fn(model, batch)
    enable_grad_checkpointing(model)
    (_, _), checkpointed = grad_fn(model, batch)
    for (name, a), (_, b) in zip(tree_flatten(plain), tree_flatten(checkpointed)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6, err_msg=name)
    other, _ = lora_model(tiny_model("gemma3_text"))
    assert all(getattr(layer, "_mlx_sql_checkpoint", False) for layer in model.layers)
    assert not any(getattr(layer, "_mlx_sql_checkpoint", False) for layer in other.layers)
    assert checkpointing_applies(TrainConfig(grad_checkpoint=True, batching="unshared"))
    assert not checkpointing_applies(TrainConfig(grad_checkpoint=True, batching="schema_shared"))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma3_text", "phi3"])
def test_output_head_is_the_models_own(tiny_model, arch):
    from mlx_sql.train.losses import output_logits

    model, _ = load(str(tiny_model(arch)))
    model.set_dtype(mx.float32)
    tokens = mx.array([[3, 17, 42, 99, 7, 250]])
    np.testing.assert_allclose(np.array(output_logits(model, model.model(tokens))), np.array(model(tokens)),
                               rtol=1e-5, atol=1e-5)


def _full_logit_losses(model, batch):
    """The reference: logits at every position, then the loss mask (what the trainer did before)."""
    from mlx_sql.train.prefix_cache import CollectCache, PrefixCache

    inputs, targets, mask = batch.tokens[:, :-1], batch.tokens[:, 1:], batch.mask[:, 1:]
    if batch.prefix is None:
        logits = model(inputs)
    else:
        collect = [CollectCache() for _ in model.layers]
        model.model(batch.prefix, cache=collect)
        logits = model(inputs, cache=[PrefixCache(c.keys, c.values) for c in collect])
    losses = nn.losses.cross_entropy(logits, targets, reduction="none") * mask
    return losses.sum(axis=1), mask.sum(axis=1)


@pytest.mark.parametrize("shared", [True, False])
def test_completion_only_logits_equal_full_logits(tiny_model, shared):
    model, tok = lora_model(tiny_model("qwen2"))
    batch = collate([Encoder(tok).encode(r) for r in library_records()], shared=shared, max_seq_length=4096)
    sums, counts = example_losses(model, batch)
    ref_sums, ref_counts = _full_logit_losses(model, batch)
    np.testing.assert_array_equal(np.array(counts), np.array(ref_counts))
    np.testing.assert_allclose(np.array(sums), np.array(ref_sums), rtol=1e-5, atol=1e-5)

    def ref_loss(m, b):
        s, c = _full_logit_losses(m, b)
        return s.sum(), c.sum()

    (_, _), grads = nn.value_and_grad(model, batch_loss)(model, batch)
    (_, _), ref_grads = nn.value_and_grad(model, ref_loss)(model, batch)
    for (name, a), (_, b) in zip(tree_flatten(grads), tree_flatten(ref_grads)):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6, err_msg=name)
