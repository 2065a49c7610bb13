"""Where a run's numbers go besides its own folder: plain log lines, and the trackers a recipe names.

`[logging] level = "info"` writes one plain line per training step and per evaluation on stderr (a progress
bar is no use in a file). `report_to = ["wandb"]` sends every step's metrics — the loss, and an objective's
own (GRPO's reward, skipped groups, KL) — the plots, and the evaluation summary to Weights & Biases, under
`[logging] project`; an optional extra, never needed (WANDB_MODE=offline keeps the run on this machine).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError

log = logging.getLogger("mlx_sql")


class _Stderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (not when the handler was made)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(level: str) -> None:
    """mlx_sql's logger at `level`, writing plain lines to stderr (once)."""
    log.setLevel(level.upper())
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
        log.propagate = False


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numbers as `a/b` keys; what is not a number is left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


class Tracker:
    """One run's connection to the recipe's trackers (none: every call does nothing)."""

    def __init__(self, recipe: Any, kind: str, folder: Path):
        cfg = recipe.logging
        configure_logging(cfg.level)
        self.wandb_run = None
        if "wandb" in cfg.report_to:
            try:
                import wandb
            except ImportError:
                raise MlxSqlError("logging.report_to = [\"wandb\"] needs the wandb package: pip install "
                                  "'mlx-sql[tracking]'", recipe.source or recipe.name) from None
            folder.mkdir(parents=True, exist_ok=True)
            self.wandb = wandb
            self.wandb_run = wandb.init(project=cfg.project, name=f"{recipe.name}-{kind}", job_type=kind,
                                        config=recipe.to_dict(), dir=str(folder), reinit="create_new")

    def step(self, metrics: dict[str, Any], step: int) -> None:
        if self.wandb_run is not None:
            self.wandb_run.log(flat(metrics), step=step)

    def images(self, paths: dict[str, Path]) -> None:
        if self.wandb_run is not None:
            shown = {name: self.wandb.Image(str(path)) for name, path in paths.items() if Path(path).is_file()}
            if shown:
                self.wandb_run.log(shown)

    def summary(self, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            self.wandb_run.summary.update(flat(values))

    def finish(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
