"""PNG charts people would rather look at than numbers (loss curves, accuracy bars)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mlx_sql.fileio import atomic_path


def loss_curve(path: Path, steps: Sequence[int], train: Sequence[float],
               val_steps: Sequence[int] = (), val: Sequence[float] = (), title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, train, label="train loss", linewidth=1.4)
    if val_steps:
        ax.plot(val_steps, val, "o-", label="validation loss", linewidth=1.4)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (SQL tokens only)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
