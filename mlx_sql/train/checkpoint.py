"""Checkpoints that let `--resume` continue exactly: weights, optimizer, step and data position.

No RNG state is stored: the trainer reseeds from (seed, step) before every step, so dropout
after a resume draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_dir

CHECKPOINT_DIR = "checkpoint"


@dataclass
class Position:
    step: int = 0
    batches_done: int = 0
    tokens_seen: int = 0
    examples_seen: int = 0
    truncated: int = 0
    seconds: float = 0.0
    world_size: int = 1  # processes that trained it (data-parallel); resume needs the same number


def save_checkpoint(folder: Path, model: nn.Module, optimizer: optim.Optimizer, position: Position) -> Path:
    target = folder / CHECKPOINT_DIR
    with atomic_dir(target) as tmp:
        mx.save_safetensors(str(tmp / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
        files = {name: _digest(tmp / name) for name in FILES}
        (tmp / "position.json").write_text(json.dumps({**asdict(position), "files": files}, indent=2))
    return target


FILES = ("adapters.safetensors", "optimizer.safetensors")


def _digest(path: Path) -> dict[str, object]:
    return {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _check_files(source: Path, recorded: dict[str, dict]) -> None:
    """A checkpoint whose files are not the ones it recorded (truncated, replaced) is never loaded."""
    for name in FILES:
        path = source / name
        if not path.is_file():
            raise MlxSqlError(f"checkpoint is incomplete: {name} is missing; train without --resume", source)
        if name in recorded and _digest(path) != recorded[name]:
            raise MlxSqlError(f"checkpoint is damaged: {name} has {path.stat().st_size} bytes, not the "
                              f"{recorded[name]['bytes']} it was saved with (or differs); train without --resume",
                              source)


def load_checkpoint(folder: Path, model: nn.Module, optimizer: optim.Optimizer) -> Position:
    source = folder / CHECKPOINT_DIR
    if not (source / "position.json").is_file():
        raise MlxSqlError("no checkpoint to resume from (train without --resume first)", folder)
    try:
        saved = json.loads((source / "position.json").read_text())
    except json.JSONDecodeError:
        raise MlxSqlError("checkpoint is damaged: position.json is not JSON; train without --resume", source) from None
    _check_files(source, saved.pop("files", {}))
    model.load_weights(list(mx.load(str(source / "adapters.safetensors")).items()), strict=False)
    optimizer.init(model.trainable_parameters())
    optimizer.state = tree_unflatten(list(mx.load(str(source / "optimizer.safetensors")).items()))
    return Position(**saved)
