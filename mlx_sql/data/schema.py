"""Database schemas and how they are shown to a model.

Types and primary keys come from the SQLite file when it is there (it is the
truth the query runs against), else from tables.json; foreign keys are the union
of both, since Spider annotates links that the DDL does not declare.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mlx_sql.errors import MlxSqlError
from mlx_sql.sqlite import open_readonly, quote_identifier, table_columns

SCHEMA_HEADER = "### Schema ###"
SAMPLE_VALUE_CHARS = 40
TABLES_JSON_TYPES = {"number": "NUMERIC", "text": "TEXT", "time": "DATETIME", "boolean": "BOOLEAN", "others": ""}


@dataclass
class Column:
    name: str
    type: str = ""
    primary_key: bool = False


@dataclass
class Table:
    name: str
    columns: list[Column]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary_key]


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref_table: str
    ref_column: str

    def arrow(self) -> str:
        return f"{self.table}.{self.column} -> {self.ref_table}.{self.ref_column}"


@dataclass
class Schema:
    db_id: str
    tables: list[Table]
    foreign_keys: list[ForeignKey]
    db_path: Path | None = None
    _samples: dict[tuple[str, int], tuple[list[str], list[tuple]]] = field(default_factory=dict, repr=False)

    @property
    def table_names(self) -> list[str]:
        return [t.name for t in self.tables]

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name.lower() == name.lower():
                return t
        raise KeyError(name)

    def subset(self, names: Iterable[str]) -> "Schema":
        """The same schema limited to `names`, in the database's own table order."""
        keep = {n.lower() for n in names}
        tables = [t for t in self.tables if t.name.lower() in keep]
        fks = [fk for fk in self.foreign_keys if fk.table.lower() in keep and fk.ref_table.lower() in keep]
        return Schema(self.db_id, tables, fks, self.db_path, self._samples)

    def sample_rows(self, table: str, n: int) -> tuple[list[str], list[tuple]]:
        key = (table, n)
        if key not in self._samples:
            self._samples[key] = _fetch_samples(self.db_path, table, n) if self.db_path else ([], [])
        return self._samples[key]


def _fetch_samples(db_path: Path, table: str, n: int) -> tuple[list[str], list[tuple]]:
    conn = open_readonly(db_path)
    try:
        cur = conn.execute(f"SELECT * FROM {quote_identifier(table)} LIMIT {int(n)}")
        return [d[0] for d in cur.description], cur.fetchall()
    except sqlite3.Error:
        return [], []
    finally:
        conn.close()


def _pk_indices(entry: dict[str, Any]) -> set[int]:
    out: set[int] = set()
    for pk in entry.get("primary_keys", []):
        out.update(pk if isinstance(pk, list) else [pk])
    return out


def schema_from_tables_json(entry: dict[str, Any], db_path: Path | None = None) -> Schema:
    """Build a Schema from one tables.json entry, refined by the SQLite file when present."""
    names = entry["table_names_original"]
    pks = _pk_indices(entry)
    tables = [Table(name, []) for name in names]
    columns: list[tuple[int, str]] = []
    for idx, ((t_idx, col), col_type) in enumerate(zip(entry["column_names_original"], entry["column_types"])):
        columns.append((t_idx, col))
        if t_idx < 0:
            continue
        tables[t_idx].columns.append(Column(col, TABLES_JSON_TYPES.get(col_type, col_type.upper()), idx in pks))
    fks: list[ForeignKey] = []
    for src, dst in entry.get("foreign_keys", []):
        (st, sc), (dt, dc) = columns[src], columns[dst]
        fk = ForeignKey(names[st], sc, names[dt], dc)
        if fk not in fks:
            fks.append(fk)
    schema = Schema(entry["db_id"], tables, fks, db_path)
    if db_path is not None and db_path.is_file():
        _refine_from_sqlite(schema, db_path)
    return schema


def _refine_from_sqlite(schema: Schema, db_path: Path) -> None:
    conn = open_readonly(db_path)
    try:
        for table in schema.tables:
            info = table_columns(conn, table.name)
            by_name = {row[1].lower(): row for row in info}
            if not by_name:
                continue
            for col in table.columns:
                row = by_name.get(col.name.lower())
                if row is None:
                    continue
                declared, pk = (row[2] or "").strip(), row[5]
                col.type = declared.upper() or col.type
                col.primary_key = col.primary_key or pk > 0
            for row in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(table.name)})").fetchall():
                ref_table, src, dst = row[2], row[3], row[4]
                try:
                    target = schema.table(ref_table)
                except KeyError:
                    continue
                dst = dst or (target.primary_key[0] if target.primary_key else None)
                src_col = next((c.name for c in table.columns if c.name.lower() == str(src).lower()), None)
                dst_col = next((c.name for c in target.columns if dst and c.name.lower() == str(dst).lower()), None)
                if src_col and dst_col:
                    fk = ForeignKey(table.name, src_col, target.name, dst_col)
                    if fk not in schema.foreign_keys:
                        schema.foreign_keys.append(fk)
    except sqlite3.DatabaseError as exc:
        raise MlxSqlError(f"cannot read schema: {exc}", db_path) from None
    finally:
        conn.close()


def _format_value(value: Any) -> str:
    """A sample cell as the model should read it: a BLOB by its size, never its bytes."""
    if isinstance(value, bytes):
        return f"<{len(value)}-byte blob>"
    text = "NULL" if value is None else str(value)
    text = " ".join(text.split())
    return text if len(text) <= SAMPLE_VALUE_CHARS else text[: SAMPLE_VALUE_CHARS - 1] + "…"


def _render_ddl_table(schema: Schema, table: Table) -> str:
    pk = table.primary_key
    lines = []
    for col in table.columns:
        line = f"  {quote_identifier(col.name)}" + (f" {col.type}" if col.type else "")
        if len(pk) == 1 and col.primary_key:
            line += " PRIMARY KEY"
        lines.append(line)
    if len(pk) > 1:
        lines.append(f"  PRIMARY KEY ({', '.join(quote_identifier(c) for c in pk)})")
    for fk in schema.foreign_keys:
        if fk.table == table.name:
            lines.append(f"  FOREIGN KEY ({quote_identifier(fk.column)}) REFERENCES "
                         f"{quote_identifier(fk.ref_table)}({quote_identifier(fk.ref_column)})")
    return f"CREATE TABLE {quote_identifier(table.name)} (\n" + ",\n".join(lines) + "\n);"


def _render_compact_table(table: Table) -> str:
    cols = []
    for col in table.columns:
        text = quote_identifier(col.name) + (f" {col.type}" if col.type else "")
        cols.append(text + (" PK" if col.primary_key else ""))
    return f"{quote_identifier(table.name)}({', '.join(cols)})"


def _render_samples(schema: Schema, table: Table, n: int, fmt: str) -> str:
    headers, rows = schema.sample_rows(table.name, n)
    if not rows:
        return ""
    body = "\n".join(" | ".join(_format_value(v) for v in row) for row in rows)
    if fmt == "ddl":
        return f"/* {len(rows)} example rows from {table.name}:\n{' | '.join(headers)}\n{body}\n*/"
    return "\n".join("  row: " + " | ".join(_format_value(v) for v in row) for row in rows)


def render_schema(schema: Schema, fmt: str = "ddl", sample_rows: int = 0) -> str:
    """Render as `ddl` (CREATE TABLE) or `compact` (table(col type, ...)), then FK arrows."""
    if fmt not in ("ddl", "compact"):
        raise MlxSqlError(f"unknown schema format {fmt!r} (use ddl or compact)")
    blocks = []
    for table in schema.tables:
        block = _render_ddl_table(schema, table) if fmt == "ddl" else _render_compact_table(table)
        if sample_rows:
            samples = _render_samples(schema, table, sample_rows, fmt)
            block = f"{block}\n{samples}" if samples else block
        blocks.append(block)
    separator = "\n\n" if fmt == "ddl" else "\n"
    text = SCHEMA_HEADER + "\n" + separator.join(blocks)
    if schema.foreign_keys:
        text += "\n\nForeign keys:\n" + "\n".join(fk.arrow() for fk in schema.foreign_keys)
    return text
