"""The memory plan predicts MLX's measured training peak on the tiny models, within ±25%."""

import os
import subprocess
import sys

import pytest

from mlx_sql.train.plan import make_plan
from mlx_sql.train.trainer import train



@pytest.fixture
def recipe_for(tiny_recipe):
    def make(arch, *overrides):
        return tiny_recipe(arch, "data.valid_fraction=0", "train.epochs=1", "train.eval_every=1000",
                           "train.save_every=1000", *overrides, examples=80, name="plan")
    return make


@pytest.mark.parametrize("arch, overrides", [
    ("llama", ["train.batching=schema_shared"]),
    ("llama", ["train.batching=unshared", "train.batch_size=8"]),
    ("gemma3_text", ["train.batching=unshared", "train.grad_checkpoint=true", "train.batch_size=8"]),
    ("gemma3_text", ["train.batching=schema_shared", "train.batch_size=8"]),
    ("t5-v1_1", ["train.batching=unshared", "train.num_layers=-1", "train.batch_size=8"]),
    ("t5", ["train.batching=unshared", "train.num_layers=2", "train.batch_size=8"]),  # decoder only
])
def test_prediction_within_25_percent_of_measured_peak(recipe_for, arch, overrides):
    recipe = recipe_for(arch, *overrides)
    plan, verdicts, _ = make_plan(recipe)
    measured = max(h.peak_memory_gb for h in train(recipe).history) * 1e9  # a whole epoch: the longest batch too
    print(f"plan {arch} {overrides}: {plan.total / 1e6:.1f} MB predicted, {measured / 1e6:.1f} MB measured", flush=True)
    assert 0.75 <= plan.total / measured <= 1.25, (plan, measured)
    assert verdicts[0].status == "fits" and [v.machine for v in verdicts] == ["this machine", "8 GB Mac", "16 GB Mac"]


def test_a_run_that_wont_fit_is_refused_with_advice(recipe_for):
    sets = ["--set", "train.batching=unshared", "--set", "train.batch_size=8"]
    recipe = recipe_for("llama", "train.batching=unshared", "train.batch_size=8")
    env = {**os.environ, "MLX_SQL_MEMORY_GB": "0.2"}
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), *sets], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {recipe.source}: memory plan: needs ~0.")
    assert "won't fit" in line and "--set train.batch_size=1" in line and "--force" in line
    shown = subprocess.run([sys.executable, "-m", "mlx_sql", "plan", str(recipe.source), *sets], capture_output=True,
                           text=True, env=env, timeout=300)
    assert shown.returncode == 0 and "won't fit" in shown.stdout and "activations" in shown.stdout
    forced = subprocess.run([sys.executable, "-m", "mlx_sql", "train", str(recipe.source), *sets, "--force",
                             "--set", "train.iters=1"], capture_output=True, text=True, env=env, timeout=300)
    assert forced.returncode == 0, forced.stderr


def test_cluster_plan_all_reduces_the_adapter_the_trainer_updates(recipe_for):
    from mlx_sql.train.plan import USABLE_SHARE, cluster_plan

    recipe = recipe_for("llama", "train.batching=unshared", "train.batch_size=8", "train.iters=1")
    trained = train(recipe)
    big = cluster_plan(recipe, 2, 64e9)
    assert big.gradient_bytes == 4 * trained.trainable_parameters  # float32 gradients, one all-reduce a step
    assert big.ring_bytes == big.gradient_bytes  # 2 (N-1)/N with N = 2
    # the recipe's global batch (8) is kept: 2 ranks x micro-batch 4, no accumulation
    assert (big.micro_batch, big.grad_accumulation, big.global_batch, big.recipe_batch) == (4, 1, 8, 8)
    assert big.status == "fits" and big.steps_per_epoch is not None
    four = cluster_plan(recipe, 4, 64e9)
    assert (four.micro_batch, four.grad_accumulation, four.global_batch) == (2, 1, 8)
    assert four.ring_bytes == 1.5 * four.gradient_bytes
    assert four.peak < big.peak  # a rank holds one micro-batch: fewer rows, less memory

    # machines so small that only one row fits a rank: accumulation makes up the global batch
    one_row = cluster_plan(recipe, 8, 64e9).peak  # 8 machines: micro-batch 1
    small = cluster_plan(recipe, 2, one_row / USABLE_SHARE * 1.001)
    assert small.micro_batch < 4 and small.peak <= USABLE_SHARE * small.memory
    assert small.global_batch >= 8 and small.global_batch == small.micro_batch * small.grad_accumulation * 2
    hopeless = cluster_plan(recipe, 2, one_row / 2)
    assert hopeless.status == "won't fit" and hopeless.micro_batch == 1


def test_plan_for_several_machines_on_the_command_line(recipe_for):
    recipe = recipe_for("llama", "train.batching=unshared", "train.batch_size=8")
    sets = ["--set", "train.batching=unshared", "--set", "train.batch_size=8"]
    shown = subprocess.run([sys.executable, "-m", "mlx_sql", "plan", str(recipe.source), *sets, "--machines", "2",
                            "--machine-gb", "16", "--machine-gb", "0.001"], capture_output=True, text=True,
                           timeout=300)
    assert shown.returncode == 0, shown.stderr
    out = " ".join(shown.stdout.split())
    assert "2 x 16.0 GB machines: each rank needs" in out and "with micro-batch 4: fits" in out
    assert "--set train.batch_size=4 --set train.grad_accumulation=1 (global batch 8" in out
    assert "kB of float32 gradients" in out and "10 Gb Ethernet >=" in out
    assert "micro-batch 1: won't fit" in out
    assert "more machines do not make a rank smaller" in out
    bad = subprocess.run([sys.executable, "-m", "mlx_sql", "plan", str(recipe.source), "--machines", "0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--machines must be at least 1" in bad.stderr
