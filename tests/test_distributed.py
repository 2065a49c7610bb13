"""Data-parallel training over mx.distributed, for real: two local processes on MLX's ring backend."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

LAUNCH = Path(sys.executable).parent / "mlx.launch"
pytestmark = pytest.mark.skipif(not LAUNCH.is_file(), reason="mlx.launch is not installed")


def launch(n, *args, timeout=300):
    """`mlx.launch -n N --backend ring python -m mlx_sql ARGS` (the CLI, as a user starts it)."""
    script = Path(sys.executable).parent / "mlx-sql"
    return subprocess.run([str(LAUNCH), "-n", str(n), "--backend", "ring", str(script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def sets(*overrides):
    return [x for s in overrides for x in ("--set", s)]


def weights(folder):
    return {k: np.array(v) for k, v in mx.load(str(folder / "adapters.safetensors")).items()}


def losses(folder):
    return [json.loads(l)["train_loss"] for l in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["schema_shared", "unshared"])
def test_two_processes_equal_one_with_the_same_global_batch(tiny_recipe, tmp_path, mode):
    from mlx_sql.train.trainer import train

    common = ("train.iters=4", "train.dropout=0.1", "train.eval_every=1000", "train.save_every=1000",
              f"train.batching={mode}")
    one = tiny_recipe("llama", *common, "train.grad_accumulation=4", name="one", examples=60)
    train(one)  # one process, 4 micro-batches a step
    two = tmp_path / "two"
    result = launch(2, "train", one.source, *sets(*common, "train.grad_accumulation=2",
                                                 f'train.adapter_dir="{two}"'))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 4 steps on 2 processes") == 1  # rank 0 alone reports, and says so
    assert "data-parallel: 2 processes" in result.stdout
    assert {json.loads(line)["world_size"] for line in (two / "metrics.jsonl").read_text().splitlines()} == {2}
    np.testing.assert_allclose(losses(two), losses(one.adapter_dir), rtol=1e-4)
    a, b = weights(one.adapter_dir), weights(two)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)
    position = json.loads((two / "checkpoint" / "position.json").read_text())
    assert position["world_size"] == 2 and position["step"] == 4


def test_grpo_on_two_processes_equals_one(tiny_recipe, tmp_path, monkeypatch):
    """GRPO's sampling seeds come from the step's global micro-batch index, so two ranks draw exactly the answers
    one process draws for the same micro-batches: same rewards, same update."""
    import scripted_grpo
    from mlx_sql.train.trainer import train

    scripted_grpo.patch(monkeypatch.setattr)
    common = ("train.objective=grpo", "train.iters=2", "train.batch_size=1", "train.grpo_group=4",
              "train.grpo_max_tokens=6", "train.lr=1e-2", "train.eval_every=1000", "train.save_every=1000",
              "data.valid_fraction=0")
    one = tiny_recipe("llama", *common, "train.grad_accumulation=2", name="one", examples=8)
    train(one)
    two = tmp_path / "two"
    script = Path(__file__).parent / "scripted_grpo.py"
    result = subprocess.run([str(LAUNCH), "-n", "2", "--backend", "ring", sys.executable, str(script), str(one.source),
                             *common, "train.grad_accumulation=1", f'train.adapter_dir="{two}"'],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained 2 steps on 2 processes" in result.stdout
    rows = [[json.loads(line)["objective"] for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (one.adapter_dir, two)]
    assert [r["groups"] for r in rows[1]] == [2, 2]
    for mine, theirs in zip(*rows):  # the same draws and rewards; the KL summed in another order; times differ;
        # each process keeps its own reference prefixes, so how often they were reused differs too
        same = [k for k in mine if k not in ("kl", "reference_prefix_reused") and not k.endswith("_s")]
        assert {k: mine[k] for k in same} == {k: theirs[k] for k in same}
        assert mine["kl"] == pytest.approx(theirs["kl"], rel=1e-5)
    assert sum(r["groups"] - r["skipped_groups"] for r in rows[0]) >= 1  # some group carried a signal
    a, b = weights(one.adapter_dir), weights(two)
    assert any(np.abs(v).max() > 0 for k, v in a.items() if "lora_b" in k)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_resume_with_another_world_size_is_refused(tiny_recipe):
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=4", name="r")
    train(recipe, stop_after=2)
    result = launch(2, "train", recipe.source, "--resume", *sets("train.iters=4"))
    # mlx.launch itself exits 0; each rank reports and exits 2, and the launcher says so
    assert "trained with 1 process(es); resume it with the same number (here: 2)" in result.stderr
    assert "exited with code 2" in result.stderr


def test_a_rank_that_dies_stops_the_others(tiny_recipe, tmp_path):
    recipe = tiny_recipe("llama", "train.iters=400", "train.eval_every=1000", "train.save_every=1000", name="d",
                         examples=60)
    script = Path(sys.executable).parent / "mlx-sql"
    proc = subprocess.Popen([str(LAUNCH), "-n", "2", "--backend", "ring", str(script), "train", str(recipe.source),
                             *sets("train.iters=400")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    metrics = recipe.adapter_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.2)
    ranks = subprocess.run(["pgrep", "-f", f"mlx-sql train {recipe.source}"], capture_output=True, text=True)
    pids = sorted(int(p) for p in ranks.stdout.split())
    assert len(pids) >= 2, ranks.stdout
    os.kill(pids[-1], 9)  # one rank dies
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        pytest.fail("the surviving rank hung after its peer died")
    # the launcher stops the surviving rank (mlx.launch's own exit code is 0 either way)
    assert "exited with code" in proc.stderr.read()
    assert len(metrics.read_text().splitlines()) < 400


def test_the_plan_for_two_machines_is_what_two_processes_run(tiny_recipe):
    from mlx_sql.train.plan import cluster_plan

    recipe = tiny_recipe("llama", "train.batch_size=4", "train.grad_accumulation=2", "train.epochs=1",
                         "train.eval_every=1000", "train.save_every=1000", name="p", examples=40)
    planned = cluster_plan(recipe, 2, 64e9)
    assert (planned.micro_batch, planned.grad_accumulation, planned.global_batch) == (4, 1, 8)
    result = launch(2, "train", recipe.source, *sets(f"train.batch_size={planned.micro_batch}",
                                                     f"train.grad_accumulation={planned.grad_accumulation}"))
    assert result.returncode == 0 and "exited with code" not in result.stderr, result.stderr[-3000:]
    rows = (recipe.adapter_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == planned.steps_per_epoch
