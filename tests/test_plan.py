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
