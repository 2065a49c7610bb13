"""What a new user hit in the first hour (issue #14): each case reproduced through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest

from mlx_sql.data.benchmark import load_benchmark

from conftest import MINISPIDER


def cli(*args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", "mlx_sql", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_error_line(result, *fragments):
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_version_and_bare_command():
    result = cli("--version")
    assert result.returncode == 0 and result.stdout.strip().startswith("mlx-sql ")
    bare = cli()
    assert bare.returncode == 2 and "train" in bare.stdout and "eval" in bare.stdout


def test_data_check_on_bad_files(tmp_path):
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_error_line(cli("data", "check", binary), str(binary), "not a UTF-8 text file")
    one_error_line(cli("data", "check", tmp_path), str(tmp_path), "is a folder")
    one_error_line(cli("data", "check", empty), str(empty), "no records")


def preds_file(tmp_path, questions, sql=None):
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps({"index": q.index, "sql": sql or q.query}) + "\n" for q in questions))
    return path


def test_eval_filters_options_and_empty_work(tmp_path):
    questions = load_benchmark(MINISPIDER).questions("dev")
    preds = preds_file(tmp_path, questions)
    out = tmp_path / "clinic"
    result = cli("eval", "--predictions", preds, "--data", MINISPIDER, "--split", "dev", "--db", "clinic",
                 "--max-examples", 5, "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["summary"]["all"]["count"] == 5
    assert {r["db_id"] for r in map(json.loads, (out / "per_example.jsonl").read_text().splitlines())} == {"clinic"}
    one_error_line(cli("eval", "--predictions", preds, "--data", MINISPIDER, "--db", "nope", "--out", tmp_path / "x"),
                   "no database 'nope' in the dev split", "clinic")
    one_error_line(cli("eval", "--predictions", "/dev/null", "--data", MINISPIDER, "--out", tmp_path / "y"),
                   "/dev/null", "not a regular file")
    # an existing report is not replaced unless asked
    again = cli("eval", "--predictions", preds, "--data", MINISPIDER, "--db", "clinic", "--max-examples", 1,
                "--out", out)
    one_error_line(again, "already holds a run", "--overwrite")
    assert json.loads((out / "summary.json").read_text())["summary"]["all"]["count"] == 5
    assert cli("eval", "--predictions", preds, "--data", MINISPIDER, "--db", "clinic", "--max-examples", 1,
               "--out", out, "--overwrite").returncode == 0
    assert json.loads((out / "summary.json").read_text())["summary"]["all"]["count"] == 1
    garbage = preds_file(tmp_path, questions, "SELEC name FRM nowhere")
    shown = cli("eval", "--predictions", garbage, "--data", MINISPIDER, "--db", "clinic", "--max-examples", 2,
                "--out", tmp_path / "garbage")
    assert shown.returncode == 0 and "2 predictions did not parse" in shown.stdout  # on the terminal too


def test_unknown_backend_and_base_gguf_under_an_adapters_name(tiny_recipe, tmp_path):
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=1")
    train(recipe)
    bogus = cli("eval", "--adapter", recipe.adapter_dir, "--backend", "bogus", "--out", tmp_path / "b")
    one_error_line(bogus, "--backend: 'bogus' is not one of mlx, ollama, llamacpp")
    assert not (tmp_path / "b" / "summary.json").exists()
    llama = cli("eval", "--adapter", recipe.adapter_dir, "--backend", "llamacpp", "--out", tmp_path / "l")
    one_error_line(llama, "fused/model-q8_0.gguf does not exist", "make fuse-and-export")


def test_data_build_without_databases_is_an_error(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("train_spider.json", "dev.json"):
        (bench / name).write_text((MINISPIDER / name).read_text())
    (bench / "tables.json").write_text(json.dumps(list(load_benchmark(MINISPIDER).tables_json("train").values())))
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'name = "x"\n[model]\npath = "{tmp_path}"\n[data]\npath = "{bench}"\n'
                      f'out_dir = "{tmp_path / "data"}"\n')
    one_error_line(cli("data", "build", recipe), "no training examples to build", "are missing")
    assert not (tmp_path / "data" / "train.jsonl").exists()


def test_train_refuses_to_replace_a_run(tiny_recipe):
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=1")
    train(recipe)
    before = (recipe.adapter_dir / "adapters.safetensors").read_bytes()
    one_error_line(cli("train", recipe.source, "--set", "train.iters=1"), "already holds a run", "--overwrite")
    assert (recipe.adapter_dir / "adapters.safetensors").read_bytes() == before
    assert cli("train", recipe.source, "--set", "train.iters=1", "--overwrite").returncode == 0


def test_recipe_check_lists_every_key_and_files_get_the_umask_mode(tiny_recipe):
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=1")
    shown = cli("recipe", "check", recipe.source)
    assert "# iters = (unset)" in shown.stdout and "batch_size = 4" in shown.stdout
    assert "# gguf = (unset)" in shown.stdout and "# hf_dataset = (unset)" in shown.stdout
    one_error_line(cli("recipe", "check", recipe.source, "--set", "train.learning_rate=1e-4"), "did you mean 'lr'")
    old = os.umask(0o022)
    try:
        train(recipe)
    finally:
        os.umask(old)
    for name in ("adapters.safetensors", "adapter_config.json", "metrics.jsonl", "recipe.toml"):
        assert (recipe.adapter_dir / name).stat().st_mode & 0o777 == 0o644, name


def test_plan_and_doctor_speak_the_same_unit(tiny_recipe):
    recipe = tiny_recipe("llama")
    plan = cli("plan", recipe.source).stdout
    doctor = cli("doctor", "--no-measure").stdout
    from mlx_sql.doctor import gigabytes, memory_bytes

    total = gigabytes(memory_bytes()[0])
    assert f"this machine ({total})" in plan and total in doctor


def _adapters(folder):
    return {k: np.array(v) for k, v in mx.load(str(folder / "adapters.safetensors")).items()}


def test_kill_9_loses_at_most_save_every_steps_and_resume_finishes_the_same(tiny_recipe):
    common = ("train.iters=12", "train.save_every=2", "train.eval_every=1000", "train.dropout=0.1")
    full = tiny_recipe("llama", *common, name="full", examples=40)
    cut = tiny_recipe("llama", *common, name="cut", examples=40)
    sets = [x for s in common for x in ("--set", s)]
    assert cli("train", full.source, *sets).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "mlx_sql", "train", str(cut.source), *sets],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = cut.adapter_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 5 <= done < 12
    saved = json.loads((cut.adapter_dir / "checkpoint" / "position.json").read_text())["step"]
    assert done - saved <= 2
    resumed = cli("train", cut.source, *sets, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == list(range(1, 13))
    a, b = _adapters(full.adapter_dir), _adapters(cut.adapter_dir)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_torn_checkpoint_is_detected_not_loaded(tiny_recipe):
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=2", "train.save_every=1")
    train(recipe)
    weights = recipe.adapter_dir / "checkpoint" / "adapters.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    one_error_line(cli("train", recipe.source, "--set", "train.iters=4", "--resume"),
                   "checkpoint is damaged: adapters.safetensors")


def _children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is gone as far as work goes
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_during_eval_leaves_no_sql_worker(tmp_path):
    questions = load_benchmark(MINISPIDER).questions("dev")[:3]
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    preds = preds_file(tmp_path, questions, endless)
    proc = subprocess.Popen([sys.executable, "-m", "mlx_sql", "eval", "--predictions", str(preds), "--data",
                             str(MINISPIDER), "--timeout", "60", "--out", str(tmp_path / "out")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:  # the spawned SQL workers (and multiprocessing's tracker)
        time.sleep(0.2)
        workers = _children(proc.pid)
    assert workers, "no worker started"
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]
