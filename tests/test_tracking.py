"""[logging] (issue #32): plain log lines, and Weights & Biases offline — the run folder read back."""

import json
import time
from pathlib import Path

import pytest

from mlx_sql.eval.pipeline import evaluate_model
from mlx_sql.train.trainer import train


def wandb_records(path: Path):
    """The records of a W&B run file (LevelDB's log format: 32 KiB blocks of crc, length, type, data)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (2, 3):  # first / middle fragment
            buf = chunk if kind == 2 else buf + chunk
            continue
        if kind not in (1, 4):
            break
        record = pb.Record()
        record.ParseFromString(chunk if kind == 1 else buf + chunk)
        yield record


def read_run(folder: Path) -> tuple[list[dict], dict, str]:
    """(history rows, summary, display name) of the one offline run under `folder`, once wandb's writer
    (a process of its own) has written its exit record."""
    deadline = time.monotonic() + 60
    while True:
        files = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
        records = list(wandb_records(files[0])) if len(files) == 1 else []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    history, summary, name = [], {}, ""
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "run":
            name = record.run.display_name
    return history, summary, name


def test_training_and_evaluation_reach_wandb_offline(tiny_recipe, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    recipe = tiny_recipe("llama", "train.iters=3", "train.save_every=100", 'logging.report_to=["wandb"]',
                         'logging.project="mlx-sql-test"', 'logging.level="info"', "eval.max_tokens=8", name="tracked")
    train(recipe)
    history, summary, name = read_run(recipe.adapter_dir)
    steps = [row for row in history if "train_loss" in row]
    assert name == "tracked-train" and [row["_step"] for row in steps] == [1, 2, 3]
    assert all(row["train_loss"] > 0 and "lr" in row and "peak_memory_gb" in row for row in steps)
    assert summary["steps"] == 3 and abs(summary["train_loss"] - steps[-1]["train_loss"]) < 1e-6
    assert any(row.get("loss/_type") == "image-file" and row.get("loss/format") == "png" for row in history)  # loss.png
    assert "step 3/3  loss" in capsys.readouterr().err  # level = info: a plain line per step

    out = tmp_path / "eval"
    evaluate_model(recipe, out, "tracked-eval", recipe.adapter_dir, "mlx", max_examples=2)
    _, summary, name = read_run(out)
    assert name == "tracked-eval" and summary["eval/all/count"] == 2
    assert 0 <= summary["eval/all/execution_accuracy"] <= 100
    assert "tracked-eval: 2 questions, EX" in capsys.readouterr().err


def test_an_unknown_tracker_is_one_line(write_recipe):
    from mlx_sql.errors import MlxSqlError
    from mlx_sql.recipe import load_recipe

    path = write_recipe('[model]\npath = "x"\n[data]\ntrain_file = "t.jsonl"\n[logging]\nreport_to = ["tensorbored"]\n')
    with pytest.raises(MlxSqlError, match="logging.report_to: unknown tracker 'tensorbored'"):
        load_recipe(path, check_data=False)
    path = write_recipe('[model]\npath = "x"\n[data]\ntrain_file = "t.jsonl"\n[logging]\nuse_wandb = true\n')
    with pytest.raises(MlxSqlError, match="did you mean 'report_to'"):
        load_recipe(path, check_data=False)
