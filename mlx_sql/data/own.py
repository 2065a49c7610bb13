"""Your own SQLite databases and question/SQL pairs, as a Spider-layout benchmark the whole pipeline reads.

`[data] sqlite` names a database file or a folder of them, `[data] pairs` a file of question/SQL pairs:
JSONL `{question, sql[, db_id]}`, the seed format `{instruction, input, output}` (the question is the
input's `### Question ###` part, or the whole input), or CSV with a `question,sql[,db_id]` header. The
schema comes from each database's own catalogue; every gold query is run read-only first, and pairs
that fail are reported with file, line and SQLite's error (and left out, or the build stops under
`--strict`). The benchmark folder (tables.json, train_spider.json, dev.json, and database/<db>/<db>.sqlite
as a *link* to your file) is written under the recipe's data folder: your database is only ever opened
read-only, never copied, rebuilt or written.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from mlx_sql.data.examples import QUESTION_HEADER
from mlx_sql.data.schema import Schema, schema_from_tables_json
from mlx_sql.data.tables_json import tables_entry
from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import write_json
from mlx_sql.recipe import DataConfig
from mlx_sql.sqlite import open_readonly, reading

SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


@dataclass(frozen=True)
class Pair:
    question: str
    sql: str
    db_id: str
    line: int


@dataclass
class OwnDataReport:
    root: Path
    databases: dict[str, Path]
    train: int
    dev: int
    failed: list[str] = field(default_factory=list)  # "file:line: error" for each gold query that did not run


def find_databases(spec: str | Path) -> dict[str, Path]:
    """db_id → file, for one SQLite file or every SQLite file in a folder (db_id = file stem)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SQLITE_SUFFIXES and p.is_file())
        if not files:
            raise MlxSqlError(f"no SQLite files ({', '.join(SQLITE_SUFFIXES)}) in this folder", path)
    elif path.is_file():
        files = [path]
    else:
        raise MlxSqlError("database not found", path)
    out: dict[str, Path] = {}
    for f in files:
        with open(f, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise MlxSqlError("not an SQLite database", f)
        if f.stem in out:
            raise MlxSqlError(f"two databases named '{f.stem}' ({out[f.stem].name}, {f.name})", path)
        out[f.stem] = f.resolve()
    return out


def read_schema(db_id: str, path: Path) -> Schema:
    """A user's database's schema from its own catalogue (read-only; a damaged file is a one-line error)."""
    conn = open_readonly(path)
    try:
        with reading(path):
            return schema_from_tables_json(tables_entry(db_id, conn), path)
    finally:
        conn.close()


def _question_of(text: str) -> str:
    return text.split(QUESTION_HEADER, 1)[1].strip() if QUESTION_HEADER in text else text.strip()


def _row_to_pair(row: dict, line: int, path: Path, default_db: str | None) -> Pair:
    if "instruction" in row and "output" in row:  # the seed format
        question, sql = _question_of(str(row.get("input", ""))), row.get("output")
    else:
        question, sql = row.get("question"), row.get("sql", row.get("query"))
    db_id = row.get("db_id") or default_db
    for key, value in (("question", question), ("sql", sql)):
        if not isinstance(value, str) or not value.strip():
            raise MlxSqlError(f"line {line}: missing or empty '{key}'", path)
    if not db_id:
        raise MlxSqlError(f"line {line}: no db_id, and there are several databases", path)
    return Pair(question.strip(), sql.strip(), str(db_id), line)


def read_pairs(path: str | Path, databases: dict[str, Path]) -> list[Pair]:
    """Pairs from JSONL (ours or the seed format) or CSV; one-line errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MlxSqlError("pairs file not found" if not path.exists() else "not a file", path)
    default_db = next(iter(databases)) if len(databases) == 1 else None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MlxSqlError("not a UTF-8 text file", path) from None
    pairs: list[Pair] = []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = [h.strip().lower() for h in reader.fieldnames or []]
        if "question" not in header or "sql" not in header:
            raise MlxSqlError(f"line 1: a CSV header with question,sql[,db_id] is needed (found: "
                              f"{','.join(header) or 'nothing'})", path)
        for row in reader:
            n = reader.line_num
            if None in row:  # DictReader files fields past the header under None
                raise MlxSqlError(f"line {n}: {len(header) + len(row[None])} fields, the header has {len(header)}: "
                                  "quote a value that holds a comma (\"SELECT a, b FROM t\")", path)
            clean = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            pairs.append(_row_to_pair(clean, n, path, default_db))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise MlxSqlError(f"line {n}: invalid JSON ({exc.msg}); JSONL wants one object a line, "
                                  "or use a .csv file with a question,sql header", path) from None
            if not isinstance(row, dict):
                raise MlxSqlError(f"line {n}: expected a JSON object", path)
            pairs.append(_row_to_pair(row, n, path, default_db))
    if not pairs:
        raise MlxSqlError("no question/SQL pairs in the file", path)
    unknown = sorted({p.db_id for p in pairs} - set(databases))
    if unknown:
        raise MlxSqlError(f"db_id '{unknown[0]}' is not one of the databases ({', '.join(databases)})", path)
    return pairs


def check_gold(pairs: list[Pair], databases: dict[str, Path], path: Path,
               timeout: float = 10.0) -> tuple[list[Pair], list[str]]:
    """Run every gold query read-only (the evaluator's sandbox); (pairs that ran, "file:line: error")."""
    from mlx_sql.sandbox import execute_here

    ok, failed = [], []
    for pair in pairs:
        result = execute_here(str(databases[pair.db_id]), pair.sql, timeout)
        if result.ok:
            ok.append(pair)
        else:
            failed.append(f"{path}:{pair.line}: {result.error}")
    return ok, failed


def split_pairs(pairs: list[Pair], cfg: DataConfig) -> tuple[list[Pair], list[Pair]]:
    """Deterministic train/dev: by question, or by whole database (unseen schemas) when asked or when there
    are several databases and `dev_by` is auto."""
    by = cfg.dev_by
    dbs = sorted({p.db_id for p in pairs})
    if by == "auto":
        by = "database" if len(dbs) > 1 else "question"
    rng = random.Random(f"{cfg.seed}:own-dev")
    if by == "database":
        if len(dbs) < 2:
            raise MlxSqlError("data.dev_by = 'database' needs two or more databases")
        rng.shuffle(dbs)
        n_dev = max(1, min(len(dbs) - 1, round(len(dbs) * cfg.dev_fraction)))
        dev_dbs = set(dbs[:n_dev])
        return [p for p in pairs if p.db_id not in dev_dbs], [p for p in pairs if p.db_id in dev_dbs]
    order = list(pairs)
    rng.shuffle(order)
    n_dev = min(len(order) - 1, math.ceil(len(order) * cfg.dev_fraction)) if cfg.dev_fraction > 0 else 0
    dev = sorted(order[:n_dev], key=lambda p: p.line)
    return sorted(order[n_dev:], key=lambda p: p.line), dev


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target)


def build_own_benchmark(cfg: DataConfig, root: Path, strict: bool = False) -> OwnDataReport:
    """Write the Spider-layout folder for the user's databases and pairs under `root`."""
    databases = find_databases(cfg.sqlite)
    pairs_path = Path(cfg.pairs)
    pairs, failed = check_gold(read_pairs(pairs_path, databases), databases, pairs_path)
    if failed and strict:
        raise MlxSqlError(f"{len(failed)} gold queries failed (--strict); first: {failed[0]}", pairs_path)
    if not pairs:
        raise MlxSqlError(f"none of the gold queries ran; first: {failed[0]}", pairs_path)
    train, dev = split_pairs(pairs, cfg)
    entries = []
    for db_id, file in databases.items():
        conn = open_readonly(file)
        try:
            entries.append(tables_entry(db_id, conn))
        finally:
            conn.close()
        _link(file, root / "database" / db_id / f"{db_id}.sqlite")
    write_json(root / "tables.json", entries)
    for name, items in (("train_spider.json", train), ("dev.json", dev)):
        write_json(root / name, [{"db_id": p.db_id, "question": p.question, "query": p.sql} for p in items])
    return OwnDataReport(root, databases, len(train), len(dev), failed)
