import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mlx_sql.cli.app import app

from conftest import MINISPIDER, ROOT

runner = CliRunner()


def mlx_sql(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "mlx_sql", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


@pytest.mark.parametrize("command", [[], ["doctor"], ["data"], ["data", "build"], ["data", "check"],
                                     ["recipe", "check"], ["train"], ["plan"], ["import-gguf"]])
def test_every_command_has_help(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_malformed_recipe_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[model]\npath = "a/b"\n[data]\npath = "{MINISPIDER}"\n[train]\nrnk = 4\n')
    result = mlx_sql("data", "build", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {bad}: train.rnk: unknown key (did you mean 'rank'?)"]
    assert "Traceback" not in result.stderr
    debug = mlx_sql("--debug", "data", "build", str(bad))
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_malformed_jsonl_line_is_one_line_error(tmp_path):
    data = tmp_path / "train.jsonl"
    good = json.dumps({"instruction": "i", "input": "s", "output": "SELECT 1"})
    data.write_text(f"{good}\n{{not json\n{good}\n")
    result = mlx_sql("data", "check", str(data))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {data}: line 2: invalid JSON")
    lenient = mlx_sql("data", "check", str(data), "--no-strict")
    assert lenient.returncode == 0 and "2 valid records, 1 bad lines skipped" in lenient.stdout


def test_data_build_command(tmp_path):
    out = tmp_path / "out"
    result = mlx_sql("data", "build", "recipes/smollm2-135m.toml", "--set", f'data.out_dir="{out}"')
    assert result.returncode == 0, result.stderr
    assert "wrote 223 train and 20 valid examples" in result.stdout
    assert len((out / "train.jsonl").read_text().splitlines()) == 223
    assert "p50" in result.stdout


def test_missing_recipe_file(tmp_path):
    result = mlx_sql("recipe", "check", str(tmp_path / "none.toml"))
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'none.toml'}: recipe file not found"


def test_doctor_reports_device_memory_and_speed():
    result = mlx_sql("doctor")
    assert result.returncode == 0, result.stderr
    for key in ("mlx", "default device", "memory", "mlx-lm", "sqlglot", "matmul"):
        assert key in result.stdout
    assert "GFLOP/s" in result.stdout
