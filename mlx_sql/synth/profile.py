"""What a database holds, read once and read-only: each column's kind and some of its values as stored.

Templates need to know which columns can be compared with a number, which hold names a question would
filter on, which are keys, and values spelled exactly as the database spells them. Kinds come from the values
SQLite stores (`typeof`), not the declared type, since SQLite accepts any declaration. Reading is bounded: a
few hundred distinct values per column, and a deadline for the whole database.
"""

from __future__ import annotations

import functools
import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mlx_sql.data.schema import Schema
from mlx_sql.sqlite import open_readonly, quote_identifier

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
VALUES_PER_COLUMN = 12
SCAN_PER_COLUMN = 500
MAX_SECONDS = 20.0


@dataclass
class ColumnProfile:
    table: str
    name: str
    kind: str  # "number", "text", "date" or "other" (blobs, empty columns)
    values: list = field(default_factory=list)  # some distinct non-null values, as stored
    distinct: int = 0  # distinct non-null values seen (up to SCAN_PER_COLUMN)
    key: bool = False  # a primary or foreign key, or named like an id: joined on, not averaged or shown
    filled: int = 0  # non-null values seen (up to SCAN_PER_COLUMN)

    @property
    def categorical(self) -> bool:
        """Worth grouping by: a few distinct values, each held by two rows or more on average."""
        return 1 < self.distinct <= 30 and 2 * self.distinct <= self.filled and not self.key


@dataclass
class TableProfile:
    name: str
    rows: int
    columns: list[ColumnProfile]

    def of_kind(self, *kinds: str, keys: bool = False) -> list[ColumnProfile]:
        return [c for c in self.columns if c.kind in kinds and (keys or not c.key) and c.values]


@dataclass
class DatabaseProfile:
    db_id: str
    path: Path
    schema: Schema
    tables: list[TableProfile]
    partial: bool = False  # the deadline stopped the scan

    def table(self, name: str) -> TableProfile:
        return next(t for t in self.tables if t.name.lower() == name.lower())

    @functools.cached_property
    def to_sql(self) -> Callable[[str], str]:
        """Model text → a query on this database, read as eval reads it (`eval.quoting.sql_reader`)."""
        from mlx_sql.eval.quoting import sql_reader

        return sql_reader(self.schema)

    @property
    def joins(self) -> list[tuple[str, str, str, str]]:
        """(table, column, referenced table, referenced column) of each foreign key between two non-empty tables."""
        names = {t.name.lower() for t in self.tables if t.rows}
        return [(fk.table, fk.column, fk.ref_table, fk.ref_column) for fk in self.schema.foreign_keys
                if fk.table.lower() in names and fk.ref_table.lower() in names
                and fk.table.lower() != fk.ref_table.lower()]


def _kind(types: dict[str, int], values: list) -> str:
    if not types:
        return "other"
    main = max(types, key=types.get)
    if main in ("integer", "real"):
        return "number"
    if main == "text":
        texts = [v for v in values if isinstance(v, str)]
        return "date" if texts and all(DATE.match(v) for v in texts) else "text"
    return "other"


def _looks_like_key(name: str) -> bool:
    """`id`, `customer_id`, `CustomerId`, `StuID`: joined on, never a quantity."""
    return name.lower() == "id" or name.lower().endswith("_id") or name.endswith(("Id", "ID"))


def profile_database(db_id: str, path: Path, schema: Schema, seed: int = 0,
                     max_seconds: float = MAX_SECONDS) -> DatabaseProfile:
    """Every table's row count and every column's kind and sample values, read-only and bounded."""
    rng = random.Random(f"{seed}:{db_id}:profile")
    keyed = {(fk.table.lower(), fk.column.lower()) for fk in schema.foreign_keys}
    keyed |= {(fk.ref_table.lower(), fk.ref_column.lower()) for fk in schema.foreign_keys}
    conn = open_readonly(path)
    deadline = time.monotonic() + max_seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    tables, partial = [], False
    try:
        for table in schema.tables:
            tab = quote_identifier(table.name)
            try:
                rows = conn.execute(f"SELECT count(*) FROM {tab}").fetchone()[0]
            except sqlite3.Error:
                partial = partial or time.monotonic() > deadline
                continue
            columns = []
            for column in table.columns:
                col = quote_identifier(column.name)
                try:
                    types = dict(conn.execute(f"SELECT typeof({col}), count(*) FROM (SELECT {col} FROM {tab} "
                                              f"WHERE {col} IS NOT NULL LIMIT {SCAN_PER_COLUMN}) GROUP BY 1"))
                    seen = [r[0] for r in conn.execute(f"SELECT DISTINCT {col} FROM {tab} WHERE {col} IS NOT NULL "
                                                       f"LIMIT {SCAN_PER_COLUMN}")]
                except sqlite3.Error:
                    partial = partial or time.monotonic() > deadline
                    types, seen = {}, []
                values = [v for v in seen if not isinstance(v, bytes) and not (isinstance(v, str) and (
                    not v.strip() or len(v) > 60 or "\n" in v))]
                key = (column.primary_key and column.name.lower() != "name" or (table.name.lower(), column.name.lower())
                       in keyed or _looks_like_key(column.name))
                columns.append(ColumnProfile(table.name, column.name, _kind(types, values),
                                             rng.sample(values, min(VALUES_PER_COLUMN, len(values))), len(seen), key,
                                             sum(types.values())))
            tables.append(TableProfile(table.name, rows, columns))
    finally:
        conn.close()
    return DatabaseProfile(db_id, Path(path), schema, tables, partial)
