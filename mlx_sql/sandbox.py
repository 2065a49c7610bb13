"""Run untrusted SQL (model predictions, synthesized queries) on databases without risk.

Every query runs in a worker process on a read-only connection (`mode=ro`,
`PRAGMA query_only`), with an authorizer that refuses ATTACH, DETACH, writes,
schema changes and pragmas that set things, a progress handler that stops it at
the deadline, and a cap on fetched rows. A crash in SQLite kills only the worker;
the pool is rebuilt and the query is scored as an error.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from mlx_sql.sqlite import open_readonly

MAX_ROWS = 100_000
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}


@dataclass(frozen=True)
class ExecResult:
    rows: tuple[tuple, ...] | None
    error: str | None = None
    columns: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def capped(self) -> bool:
        """It returned more rows than the cap: `rows` holds the first ones, and it is not a result to compare."""
        return self.error is not None and self.error.startswith("more than ")

    @property
    def runs(self) -> bool:
        """SQLite accepted and ran the query (it may still have hit our time or row limit)."""
        return self.error is None or self.error == "timeout" or self.capped


def _authorizer(action: int, arg1, arg2, db_name, trigger) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None and arg1 in ("table_info", "foreign_key_list"):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def execute_here(db_path: str, sql: str, timeout: float, max_rows: int = MAX_ROWS) -> ExecResult:
    """Execute in this process (the worker body; tests call it directly too)."""
    try:
        conn = open_readonly(db_path)
    except Exception as exc:  # missing file, not a database
        return ExecResult(None, f"database: {exc}")
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    conn.set_authorizer(_authorizer)
    try:
        cursor = conn.execute(sql)
        rows = cursor.fetchmany(max_rows + 1)
        columns = tuple(d[0] for d in cursor.description or ())
        if len(rows) > max_rows:  # the first rows still go back: `ask` shows them, nothing compares them
            return ExecResult(tuple(tuple(r) for r in rows[:max_rows]), f"more than {max_rows} rows", columns)
        return ExecResult(tuple(tuple(r) for r in rows), None, columns)
    except sqlite3.OperationalError as exc:
        message = "timeout" if "interrupted" in str(exc) else str(exc)
        return ExecResult(None, message)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError, MemoryError) as exc:
        return ExecResult(None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()


def _worker_start(parent: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops them: one line for the user, not a traceback
    from every worker. And they end with it: a main process killed outright (SIGTERM from a service manager,
    SIGKILL) runs no cleanup, and the pool's workers, blocked on a queue whose writing end they hold themselves,
    would otherwise live on as orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


def _exit_when_orphaned(parent: int, every: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


class Executor:
    """A pool of worker processes executing queries with a deadline."""

    def __init__(self, workers: int = 2, timeout: float = 10.0, max_rows: int = MAX_ROWS):
        self.workers, self.timeout, self.max_rows = workers, timeout, max_rows
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process whose MLX/OpenBLAS threads are busy can deadlock it
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_start, initargs=(os.getpid(),))
            # start the workers with Ctrl-C blocked from their first instruction (a blocked signal stays blocked
            # across fork and exec; their initializer then ignores it): one arriving while a worker still imports
            # would otherwise print its traceback. Here it waits, blocked, and is raised once they have started.
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                for started in [self._pool.submit(time.sleep, 0.01) for _ in range(self.workers)]:
                    started.result()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return self._pool

    def run(self, db_path: str | Path, sql: str) -> ExecResult:
        future = self._get_pool().submit(execute_here, str(db_path), sql, self.timeout, self.max_rows)
        try:
            # the worker stops itself at the deadline; the margin covers process start-up and fetching
            return future.result(timeout=self.timeout + 30)
        except BrokenProcessPool:
            self._pool = None
            return ExecResult(None, "the query crashed its worker")
        except FutureTimeout:
            self.close(kill=True)
            return ExecResult(None, "timeout")

    def close(self, kill: bool = False) -> None:
        if self._pool is not None:
            if kill:
                for process in list(getattr(self._pool, "_processes", {}).values()):
                    process.kill()
            self._pool.shutdown(wait=not kill, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)  # interrupted or failed: don't wait for running queries
