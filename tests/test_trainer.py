"""The training loop on tiny models: it learns, resumes exactly, and writes what mlx-lm reads."""

import json
import tracemalloc

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import load

from mlx_sql.recipe import load_recipe
from mlx_sql.train.batches import BatchPlan
from mlx_sql.train.trainer import train


ALL = '["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]'


@pytest.fixture
def recipe_for(tiny_recipe):
    def make(arch, *overrides, examples=20, name="run"):
        return tiny_recipe(arch, f"train.target_modules={ALL}", *overrides, examples=examples, name=name)
    return make


FIT = ("train.rank=32", "train.alpha=64", "train.lr=3e-3", "train.warmup_steps=10", "train.batch_size=20",
       "train.batching=unshared", "train.eval_every=1000", "train.save_every=1000", "data.valid_fraction=0",
       "data.schema_format=compact", "data.distractor_tables=0")


def test_overfits_twenty_examples_to_near_zero(recipe_for):
    result = train(recipe_for("gemma3_text", *FIT, "train.iters=60", examples=20))
    assert result.history[0].train_loss > 5.0
    assert result.final_train_loss < 0.35, [round(h.train_loss, 2) for h in result.history[::5]]


@pytest.mark.parametrize("arch", ["llama", "phi3", "phi"])
def test_loss_falls(recipe_for, arch):
    # Random tiny llama/phi3 models (no post-norms) need many more steps for LoRA to memorise;
    # the point here is that the loop learns on each architecture.
    result = train(recipe_for(arch, *FIT, "train.iters=25", examples=20))
    assert result.final_train_loss < 0.75 * result.history[0].train_loss, [h.train_loss for h in result.history]


def test_phi2_shared_schema_batches_equal_unshared_losses(recipe_for):
    """Phi-2 (partial rotary, LayerNorm, biases) through the shared-prefix path: the same first-step loss as
    full sequences, so its prefix cache is right."""
    common = ("train.iters=1", "train.eval_every=1000", "train.save_every=1000", "data.valid_fraction=0")
    shared = train(recipe_for("phi", *common, "train.batching=schema_shared"))
    unshared = train(recipe_for("phi", *common, "train.batching=unshared"))
    assert shared.history[0].train_loss > 0
    assert abs(shared.history[0].train_loss - unshared.history[0].train_loss) < 0.05 * unshared.history[0].train_loss


def test_outputs_metrics_plot_and_recipe(recipe_for):
    recipe = recipe_for("llama", "train.iters=6", "train.eval_every=3", "train.save_every=3")
    result = train(recipe)
    out = result.out_dir
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["val_loss"] is not None for r in rows] == [False, False, True, False, False, True]
    for key in ("train_loss", "lr", "tokens_per_s", "examples_per_s", "peak_memory_gb"):
        assert all(r[key] > 0 for r in rows), key
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_recipe(out / "recipe.toml").train.iters == 6
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2
    assert config["lora_parameters"]["scale"] == 2.0


def test_same_seed_same_loss_curve(recipe_for):
    a = train(recipe_for("llama", "train.iters=4", name="a"))
    b = train(recipe_for("llama", "train.iters=4", name="b"))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]


@pytest.mark.parametrize("mode", ["schema_shared", "unshared"])
def test_resume_equals_uninterrupted(recipe_for, mode):
    common = ("train.iters=8", "train.save_every=100", "train.dropout=0.1", "train.grad_accumulation=2",
              "train.warmup_steps=2", f"train.batching={mode}")
    full = train(recipe_for("llama", *common, name="full", examples=40))
    part = recipe_for("llama", *common, name="part", examples=40)
    train(part, stop_after=3)
    resumed = train(part, resume=True)
    assert [h.step for h in resumed.history] == [4, 5, 6, 7, 8]
    np.testing.assert_allclose([h.train_loss for h in resumed.history], [h.train_loss for h in full.history[3:]],
                               rtol=1e-5)
    a = mx.load(str(full.out_dir / "adapters.safetensors"))
    b = mx.load(str(resumed.out_dir / "adapters.safetensors"))
    for name in a:
        np.testing.assert_allclose(np.array(a[name]), np.array(b[name]), rtol=1e-5, atol=1e-6, err_msg=name)
    steps = [json.loads(l)["step"] for l in (part.adapter_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_a_checkpoint(recipe_for, stop):
    """Ctrl-C, or SIGTERM (`kill`, a machine shutting down: the CLI raises SystemExit), saves where it stopped."""
    recipe = recipe_for("llama", "train.iters=10", "train.save_every=100")

    def interrupt(report):
        if report.step == 2:
            raise stop

    with pytest.raises(stop):
        train(recipe, on_report=interrupt)
    position = json.loads((recipe.adapter_dir / "checkpoint" / "position.json").read_text())
    assert position["step"] == 2
    assert (recipe.adapter_dir / "adapters.safetensors").is_file()
    assert [h.step for h in train(recipe, resume=True).history][0] == 3


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_adapters_load_in_mlx_lm_with_identical_logits(recipe_for, method):
    recipe = recipe_for("llama", "train.iters=3", "train.lr=1e-2", f"train.method={method}", name=method)
    trained = {}

    def keep(report):
        trained["step"] = report.step

    from mlx_sql.models.loading import load_model
    from mlx_sql.train.trainer import Trainer

    model, tok, base = load_model(recipe.model)
    Trainer(model, tok, recipe, base, keep).run()
    model.eval()
    ids = mx.array([tok.encode("SELECT count(*) FROM books WHERE pages > 100")])
    ours = model(ids)
    theirs_model, _ = load(base, adapter_path=str(recipe.adapter_dir))
    theirs_model.set_dtype(mx.float32)
    theirs = theirs_model(ids)
    base_model, _ = load(base)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.array(base_model(ids)), np.array(theirs), atol=1e-3)  # the adapter changed something


def test_qlora_trains_on_a_4bit_base(recipe_for):
    recipe = recipe_for("llama", "model.quantize=4", "train.iters=25", "train.lr=1e-2",
                        "train.schedule=constant", "data.valid_fraction=0")
    from mlx_sql.models.loading import load_model
    from mlx_sql.train.trainer import Trainer

    model, tok, base = load_model(recipe.model)
    result = Trainer(model, tok, recipe, base).run()
    quantized = [m for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)]
    assert len(quantized) == 2 * 7  # every projection of both layers is 4-bit under its adapter
    assert quantized[0].bits == 4
    assert result.final_train_loss < result.history[0].train_loss - 1.0


def test_training_stream_memory_is_flat_in_dataset_size(recipe_for, tmp_path):
    recipe = recipe_for("llama")
    lines = (recipe.data_dir / "train.jsonl").read_text()
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text(lines * 5)
    big.write_text(lines * 250)  # 50x larger

    def peak(path):
        plan = BatchPlan(path, 4, shared=True, seed=0, window=64)
        tracemalloc.start()
        batches = sum(1 for _ in plan.epoch(0))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return batches, top

    (n_small, p_small), (n_big, p_big) = peak(small), peak(big)
    assert n_big >= 45 * n_small
    assert p_big < 1.5 * p_small + 200_000, (p_small, p_big)


def test_train_command_line(recipe_for, tmp_path):
    import subprocess
    import sys

    recipe = recipe_for("llama", "train.iters=3")
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), "--set", "train.iters=3"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "trained 3 steps" in result.stdout and "training" in result.stdout
    assert (recipe.adapter_dir / "adapters.safetensors").is_file()
    before = {p.name: p.read_bytes() for p in recipe.adapter_dir.rglob("*") if p.is_file()}
    longer = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), "--set", "train.iters=5",
                             "--resume"], capture_output=True, text=True, timeout=300)
    assert longer.returncode == 2  # 5 steps would stretch the cosine schedule the first 3 followed
    assert longer.stderr.startswith(f"error: {recipe.adapter_dir}: --resume continues the run as it was started, "
                                    "and train.iters: 3 -> 5 would change") and longer.stderr.count("\n") == 1
    assert {p.name: p.read_bytes() for p in recipe.adapter_dir.rglob("*") if p.is_file()} == before
    finished = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), "--set", "train.iters=3",
                               "--resume"], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 2 and "already finished its 3 steps" in finished.stderr
    missing = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), "--resume",
                              "--set", f'train.adapter_dir="{tmp_path / "nothing"}"'],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: {tmp_path / 'nothing'}: no checkpoint to resume from " \
                                     "(train without --resume first)"


@pytest.mark.parametrize("mode", ["schema_shared", "unshared"])
def test_ctrl_c_inside_a_step_resumes_with_that_step(recipe_for, monkeypatch, mode):
    """Ctrl-C while a step's second micro-batch computes: the resumed run equals the uninterrupted one."""
    import mlx_sql.train.trainer as trainer

    common = ("train.iters=6", "train.save_every=100", "train.eval_every=1000", "train.grad_accumulation=2",
              "train.dropout=0.1", f"train.batching={mode}")
    full = train(recipe_for("llama", *common, name="full", examples=40))
    part = recipe_for("llama", *common, name="part", examples=40)
    original, calls = trainer.make_batch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # step 4, second micro-batch
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "make_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(part)
    monkeypatch.setattr(trainer, "make_batch", original)
    position = json.loads((part.adapter_dir / "checkpoint" / "position.json").read_text())
    assert (position["step"], position["batches_done"]) == (3, 6)
    resumed = train(part, resume=True)
    assert [h.step for h in resumed.history] == [4, 5, 6]
    np.testing.assert_allclose([h.train_loss for h in resumed.history], [h.train_loss for h in full.history[3:]],
                               rtol=1e-5)
    a, b = mx.load(str(full.out_dir / "adapters.safetensors")), mx.load(str(resumed.out_dir / "adapters.safetensors"))
    for name in a:
        np.testing.assert_allclose(np.array(a[name]), np.array(b[name]), rtol=1e-5, atol=1e-6, err_msg=name)


def test_empty_training_data_and_finished_runs_are_errors(recipe_for):
    from mlx_sql.errors import MlxSqlError

    recipe = recipe_for("llama", "train.iters=2")
    train(recipe)
    with pytest.raises(MlxSqlError, match="already finished its 2 steps: nothing to resume"):
        train(recipe, resume=True)
    (recipe.data_dir / "train.jsonl").write_text("")
    with pytest.raises(MlxSqlError, match="no training examples"):
        train(recipe)


def test_train_says_before_the_first_step_when_max_seq_length_cuts_schemas(recipe_for):
    import subprocess
    import sys

    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.train.batches import check_lengths, collate
    from mlx_sql.train.encode import Encoder

    recipe = recipe_for("llama", "train.iters=1", "train.batching=unshared")
    encoder = Encoder(load_tokenizer(recipe.model))
    train_file = recipe.data_dir / "train.jsonl"
    whole = check_lengths(train_file, encoder, 100_000)
    assert whole.cut == whole.dropped == 0 and whole.warning() is None and whole.examples > 0
    from mlx_sql.data.jsonl import iter_jsonl

    encoded = [encoder.encode(r) for _, r in iter_jsonl(train_file)]
    limit = sorted(e.length for e in encoded)[len(encoded) // 2]  # about half are longer
    counted = check_lengths(train_file, encoder, limit)
    # the trainer's own cutting rule, example by example, agrees with the count made before training
    assert counted.cut == sum(collate([e], shared=False, max_seq_length=limit).truncated for e in encoded) > 0
    assert counted.longest == max(e.length for e in encoded) and counted.dropped == 0
    keep = -(-counted.longest // 256) * 256
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), "--set", "train.iters=1",
                             "--set", "train.batching=\"unshared\"", "--set", f"train.max_seq_length={limit}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (f"warning: {counted.cut} of {counted.examples} training examples are longer than train.max_seq_length = {limit} "
            f"tokens (the longest: {counted.longest}): their schema's tail is cut") in result.stderr
    assert f"train.max_seq_length = {keep} keeps them whole" in result.stderr
    tiny = check_lengths(train_file, encoder, 8)
    assert tiny.dropped == tiny.examples and "left out" in tiny.warning()
