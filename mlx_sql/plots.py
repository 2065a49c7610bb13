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
    return _save(fig, path)


def reward_curve(path: Path, steps: Sequence[int], reward: Sequence[float], all_right: Sequence[float],
                 all_wrong: Sequence[float], title: str = "") -> Path:
    """GRPO's mean reward a step, and the share of its groups that carried no signal (all right, all wrong)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(steps, reward, label="mean reward", linewidth=1.6)
    ax.plot(steps, all_right, label="groups all right", linewidth=1.0, alpha=0.8)
    ax.plot(steps, all_wrong, label="groups all wrong", linewidth=1.0, alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def accuracy_bars(path: Path, summaries: dict[str, dict[str, dict[str, float]]], metric: str = "execution_accuracy",
                  title: str = "") -> Path:
    """Grouped bars by hardness level, one bar per run (baseline, adapter, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    levels = ["easy", "medium", "hard", "extra", "all"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    width = 0.8 / max(1, len(summaries))
    for i, (name, summary) in enumerate(summaries.items()):
        values = [summary[level][metric] for level in levels]
        bars = ax.bar(np.arange(len(levels)) + i * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(np.arange(len(levels)) + width * (len(summaries) - 1) / 2,
                  [f"{lv}\n(n={next(iter(summaries.values()))[lv]['count']})" for lv in levels])
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)
