"""How a long process stops: `kill` (SIGTERM) unwinds as Ctrl-C does, so checkpoints are saved, SQL workers
closed and files finished, and the same command resumes. (A process started with `nohup … &` ignores Ctrl-C:
SIGTERM is then the way to stop it.)"""

from __future__ import annotations

import signal


def _exit(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """From now on SIGTERM raises SystemExit(143) in the main thread: context managers and `finally` run."""
    signal.signal(signal.SIGTERM, _exit)
