"""Derive a Spider tables.json from SQLite databases.

The mini benchmark keeps only .sql scripts in git; its tables.json is derived
from the built databases so it can never disagree with them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from mlx_sql.data.inferred_keys import infer_foreign_keys
from mlx_sql.fileio import write_json
from mlx_sql.sqlite import database_for_script, open_readonly, quote_identifier, table_columns, user_tables


def spider_type(declared: str) -> str:
    """Map a declared SQLite type to Spider's coarse column type."""
    t = declared.upper()
    if any(k in t for k in ("INT", "REAL", "NUM", "DEC", "FLOA", "DOUB")):
        return "number"
    if any(k in t for k in ("DATE", "TIME")):
        return "time"
    if "BOOL" in t:
        return "boolean"
    if any(k in t for k in ("CHAR", "TEXT", "CLOB")):
        return "text"
    return "others"


def _natural(name: str) -> str:
    return name.replace("_", " ").lower()


def tables_entry(db_id: str, conn: sqlite3.Connection) -> dict[str, Any]:
    tables = user_tables(conn)
    columns: list[list[Any]] = [[-1, "*"]]
    types = ["text"]
    primary_keys: list[Any] = []
    index: dict[tuple[str, str], int] = {}
    first_pk: dict[str, str] = {}
    names: dict[str, list[str]] = {}
    primary: dict[str, list[str]] = {}
    for t_idx, table in enumerate(tables):
        pk_cols = []
        for cid, name, declared, _notnull, _default, pk in table_columns(conn, table):
            index[(table.lower(), name.lower())] = len(columns)
            names.setdefault(table, []).append(name)
            if pk:
                pk_cols.append((pk, len(columns)))
                if pk == 1:
                    first_pk[table.lower()] = name.lower()
            columns.append([t_idx, name])
            types.append(spider_type(declared or ""))
        pk_ids = [i for _, i in sorted(pk_cols)]
        primary[table] = [columns[i][1] for i in pk_ids]
        if pk_ids:
            primary_keys.append(pk_ids[0] if len(pk_ids) == 1 else pk_ids)
    foreign_keys = []
    for table in tables:
        for row in conn.execute(f"PRAGMA foreign_key_list({quote_identifier(table)})"):
            src = index.get((table.lower(), row[3].lower()))
            # `REFERENCES t` without a column means t's primary key
            dst = index.get((row[2].lower(), (row[4] or first_pk.get(row[2].lower(), "")).lower()))
            if src is not None and dst is not None:
                foreign_keys.append([src, dst])
    if not foreign_keys:  # none declared: those the names suggest and the rows confirm
        foreign_keys = [[index[(t.lower(), c.lower())], index[(r.lower(), k.lower())]]
                        for t, c, r, k in infer_foreign_keys(conn, names, primary)]
    return {
        "column_names": [[t, _natural(c) if t >= 0 else c] for t, c in columns],
        "column_names_original": columns,
        "column_types": types,
        "db_id": db_id,
        "foreign_keys": foreign_keys,
        "primary_keys": primary_keys,
        "table_names": [_natural(t) for t in tables],
        "table_names_original": tables,
    }


def write_tables_json_from_scripts(root: Path) -> Path:
    """Write tables.json from every database/<db>/<db>.sql (its .sqlite where one exists, else a cached build)."""
    entries = []
    for script in sorted((root / "database").glob("*/*.sql")):
        db_id = script.parent.name
        if script.stem != db_id:
            continue
        db_path = database_for_script(script)
        conn = open_readonly(db_path)
        try:
            entries.append(tables_entry(db_id, conn))
        finally:
            conn.close()
    out = root / "tables.json"
    write_json(out, entries)
    return out
