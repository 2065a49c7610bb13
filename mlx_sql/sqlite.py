"""SQLite access shared by the data stage and the evaluator.

Benchmark databases are read-only inputs: every connection here is opened with
`mode=ro` so nothing the project does can change them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import sqlite3
from pathlib import Path
from typing import Iterator

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_path, cache_root


def _decode(raw: bytes) -> str:
    # Some Spider databases hold text that is not valid UTF-8.
    return raw.decode("utf-8", errors="replace")


def readonly_uri(path: Path) -> str:
    """`mode=ro`, and for a WAL-mode file closed cleanly (no `-wal` beside it) also `immutable=1`: a read-only
    connection to a WAL database otherwise leaves `-wal` and `-shm` files next to the user's database."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with open(path, "rb") as handle:
        header = handle.read(20)
    if len(header) == 20 and header[18] == 2 and not Path(f"{path}-wal").exists():  # file format 2: WAL
        uri += "&immutable=1"
    return uri


def user_tables(conn: sqlite3.Connection) -> list[str]:
    """The tables a question can be about, in creation order: not SQLite's own (`sqlite_%`), and no virtual
    table (a full-text or spatial index, `notes_fts`) nor the shadow tables it keeps its index in
    (`notes_fts_data`, …): the sandbox runs no virtual-table module, so a query on one could only fail."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                        "ORDER BY rowid").fetchall()
    virtual = tuple(name.lower() for name, sql in rows if (sql or "").upper().startswith("CREATE VIRTUAL TABLE"))
    return [name for name, _ in rows
            if name.lower() not in virtual and not name.lower().startswith(tuple(v + "_" for v in virtual))]


def table_columns(conn: sqlite3.Connection, table: str) -> list[tuple]:
    """`PRAGMA table_info`'s rows (cid, name, type, notnull, default, pk), generated columns included:
    `table_info` hides them, yet a query reads them like any other (`total AS (price * qty)`)."""
    rows = conn.execute(f"PRAGMA table_xinfo({quote_identifier(table)})").fetchall()
    return [row[:6] for row in rows if row[6] != 1]  # 1: a virtual table's hidden column


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection; a file that is not a readable SQLite database is a one-line error here."""
    path = Path(path)
    if not path.is_file():
        raise MlxSqlError("database file not found", path)
    with reading(path):
        conn = sqlite3.connect(readonly_uri(path), uri=True, check_same_thread=False)
        conn.text_factory = _decode
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return conn


@contextlib.contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Turn SQLite's errors while reading a user's database (damaged, truncated, not SQLite) into one line."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise MlxSqlError(f"cannot read the database: {exc}", path) from None


def build_from_script(script: str | Path, db_path: str | Path) -> Path:
    """Create `db_path` from a .sql script, atomically (a half-built database never appears)."""
    script, db_path = Path(script), Path(db_path)
    with atomic_path(db_path) as tmp:
        tmp.unlink()
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(script.read_text(encoding="utf-8"))
            conn.commit()
        except sqlite3.Error as exc:
            raise MlxSqlError(f"SQL script failed: {exc}", script) from None
        finally:
            conn.close()
    return db_path


def database_for_script(script: str | Path) -> Path:
    """The database a `<db>.sql` script stands for: the `.sqlite` beside it when one exists (used as it is:
    a user's database is never rebuilt or replaced), else a copy built from the script in the cache,
    keyed by the script's contents."""
    script = Path(script)
    beside = script.with_suffix(".sqlite")
    if beside.is_file():
        return beside
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:16]
    built = cache_root() / "databases" / f"{script.stem}-{digest}" / beside.name
    if not built.is_file():
        build_from_script(script, built)
    return built


# SQLite's keywords (sqlite.org/lang_keywords.html). Most may still name a table or column unquoted (SQLite falls
# back to reading them as names: Spider writes `FROM match`); the rest — `group`, `order`, `from` — must be quoted
# wherever they are written, in the statements we run and in the schema text the model copies from.
SQLITE_KEYWORDS = frozenset("""
ABORT ACTION ADD AFTER ALL ALTER ALWAYS ANALYZE AND AS ASC ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY CASCADE
CASE CAST CHECK COLLATE COLUMN COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT CURRENT_DATE CURRENT_TIME
CURRENT_TIMESTAMP DATABASE DEFAULT DEFERRABLE DEFERRED DELETE DESC DETACH DISTINCT DO DROP EACH ELSE END ESCAPE
EXCEPT EXCLUDE EXCLUSIVE EXISTS EXPLAIN FAIL FILTER FIRST FOLLOWING FOR FOREIGN FROM FULL GENERATED GLOB GROUP
GROUPS HAVING IF IGNORE IMMEDIATE IN INDEX INDEXED INITIALLY INNER INSERT INSTEAD INTERSECT INTO IS ISNULL JOIN
KEY LAST LEFT LIKE LIMIT MATCH MATERIALIZED NATURAL NO NOT NOTHING NOTNULL NULL NULLS OF OFFSET ON OR ORDER
OTHERS OUTER OVER PARTITION PLAN PRAGMA PRECEDING PRIMARY QUERY RAISE RANGE RECURSIVE REFERENCES REGEXP REINDEX
RELEASE RENAME REPLACE RESTRICT RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET TABLE TEMP TEMPORARY THEN
TIES TO TRANSACTION TRIGGER UNBOUNDED UNION UNIQUE UPDATE USING VACUUM VALUES VIEW VIRTUAL WHEN WHERE WINDOW WITH
WITHOUT""".split())


@functools.cache
def reserved_words() -> frozenset[str]:
    """The keywords this SQLite refuses as a bare table or column name, in the places a query puts names."""
    refused = set()
    for word in SQLITE_KEYWORDS:
        conn = sqlite3.connect(":memory:")
        try:
            conn.execute(f"CREATE TABLE {word} ({word} INT, b INT)")
            conn.execute(f"SELECT b, {word} FROM {word} WHERE {word} = 1 GROUP BY {word} ORDER BY {word}")
            conn.execute(f"SELECT T1.{word}, count(*) FROM {word} AS T1 JOIN {word} AS T2 ON T1.{word} = T2.{word} "
                         f"WHERE T1.b IN (SELECT {word} FROM {word})")
        except sqlite3.Error:
            refused.add(word)
        finally:
            conn.close()
    return frozenset(refused)


def quote_identifier(name: str) -> str:
    """Quote a table or column name only where SQL needs it: spaces, punctuation, a leading digit, non-ASCII
    letters, a keyword SQLite will not read as a name."""
    if name and name.replace("_", "a").isascii() and name.replace("_", "a").isalnum() and not name[0].isdigit() \
            and name.upper() not in reserved_words():
        return name
    return '"' + name.replace('"', '""') + '"'
