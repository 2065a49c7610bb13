"""Predicted SQL is untrusted: it is scored, never obeyed, and never takes the evaluation down."""

import hashlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlx_sql.eval.compare import results_match
from mlx_sql.sandbox import Executor, execute_here


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, price REAL);
        INSERT INTO item VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', NULL);
        CREATE TABLE big (x INTEGER);
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) INSERT INTO big SELECT i FROM n;
    """)
    conn.commit()
    conn.close()
    return path


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_runs(db):
    assert execute_here(str(db), "SELECT name FROM item ORDER BY id", 5).rows == (("pen",), ("book",), ("lamp",))


@pytest.mark.parametrize("sql", [
    "DROP TABLE item",
    "DELETE FROM item",
    "INSERT INTO item VALUES (9, 'x', 1)",
    "UPDATE item SET price = 0",
    "CREATE TABLE t (a)",
    "ATTACH DATABASE '/tmp/x.db' AS x",
    "PRAGMA query_only = OFF",
    "SELECT load_extension('/tmp/evil.so')",
    "VACUUM",
])
def test_writes_and_escapes_are_refused_and_the_file_is_untouched(db, sql):
    before = digest(db)
    with Executor(timeout=5) as executor:
        result = executor.run(db, sql)
    assert not result.ok and result.rows is None
    assert digest(db) == before
    assert not (db.parent / "x.db").exists()


def test_runaway_queries_stop_at_the_timeout(db):
    before = digest(db)
    with Executor(timeout=1.0) as executor:
        for sql in ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
                    "SELECT count(*) FROM big a, big b, big c"):
            start = time.monotonic()
            result = executor.run(db, sql)
            assert result.error == "timeout"
            assert time.monotonic() - start < 5
        assert executor.run(db, "SELECT count(*) FROM item").rows == ((3,),)  # the pool still works
    assert digest(db) == before


def test_errors_and_missing_databases_are_results(db, tmp_path):
    assert "no such table" in execute_here(str(db), "SELECT * FROM nope", 5).error
    assert "syntax error" in execute_here(str(db), "SELEC 1", 5).error
    assert execute_here(str(tmp_path / "missing.sqlite"), "SELECT 1", 5).error.startswith("database:")
    capped = execute_here(str(db), "SELECT x FROM big", 5, max_rows=100)
    assert capped.error == "more than 100 rows" and not capped.ok and capped.runs and capped.capped
    assert len(capped.rows) == 100 and capped.columns == ("x",)  # the first rows, for `ask` to show


@pytest.mark.parametrize("gold, pred, ordered, same", [
    ([(1,), (2,)], [(2,), (1,)], False, True),                 # order ignored without ORDER BY
    ([(1,), (2,)], [(2,), (1,)], True, False),                 # ...and enforced with it
    ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),    # multisets: duplicates count
    ([(1,), (1,)], [(1,)], False, False),
    ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], False, True),  # a column permutation
    ([(1, "a"), (2, "b")], [("b", 1), ("a", 2)], False, False),  # not one permutation for all rows
    ([(None, 1)], [(None, 1)], False, True),                    # NULL equals NULL
    ([(3,)], [(3.0,)], False, True),                            # 3 equals 3.0
    ([(0.1 + 0.2,)], [(0.3,)], False, False),                   # floats compare exactly, like the test suite
    ([], [], False, True),
    ([(1, 2)], [(1,)], False, False),
])
def test_result_comparison_rules(gold, pred, ordered, same):
    assert results_match(gold, pred, ordered) is same


def test_a_wal_database_is_read_without_leaving_files_beside_it(tmp_path):
    """Apps keep their SQLite files in WAL mode; a plain read-only connection to one would leave -wal and -shm
    files next to the user's database (it cannot remove them on close)."""
    from mlx_sql.data.own import read_schema

    path = tmp_path / "app.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes (body) VALUES (?)", [("a",), ("b",)])
    conn.commit()
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert [t.name for t in read_schema("app", path).tables] == ["notes"]
    assert execute_here(str(path), "SELECT count(*) FROM notes", 5).rows == ((2,),)
    with Executor(timeout=5) as ex:
        assert ex.run(path, "SELECT body FROM notes ORDER BY id").rows == (("a",), ("b",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.sqlite"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's first process may never reap the orphans it adopts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_workers_end_when_the_main_process_is_killed_outright(db):
    """SIGKILL (or SIGTERM from a service manager) runs no cleanup in the main process: its sandbox workers
    must notice they were orphaned and end, not live on."""
    script = (
        "import os, signal, sys\n"
        "from mlx_sql.sandbox import Executor\n"
        "ex = Executor(workers=2, timeout=5)\n"
        "assert ex.run(sys.argv[1], 'SELECT count(*) FROM item').rows == ((3,),)\n"
        "print(' '.join(str(p) for p in ex._pool._processes), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    done = subprocess.run([sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    workers = [int(p) for p in done.stdout.split()]
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers)


def test_result_overlap_is_a_share_of_the_gold_result():
    from mlx_sql.eval.compare import result_overlap

    gold = [("pen", 1.5), ("book", 12.0)]
    assert result_overlap(gold, [("book", 12), ("pen", 1.5)]) == 1.0  # 12 equals 12.0, order aside
    assert result_overlap(gold, [("pen", 1.5)]) == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert result_overlap(gold, [("cup", 4.0)]) == pytest.approx((0 + 0 + 0.5) / 3)  # only the row count
    assert result_overlap(gold, []) == 0.0 and result_overlap([], [("x",)]) == 0.0 and result_overlap([], []) == 1.0
