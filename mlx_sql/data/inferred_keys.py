"""Foreign keys a database never declared, read from column names and checked against its rows.

Many real SQLite files have no FOREIGN KEY clause at all: CSV imports, exports from other systems, apps that
never declared constraints. Their schema text would then show no joins, and synthesized pairs would never join.
Where a database declares none, `orders.customer_id` is taken to refer to `customers.id` (or
`Orders.CustomerID` to `Customers.CustomerID`) when every non-null value of a bounded sample of the column
occurs in that key. A database that declares any foreign key is taken at its word.
"""

from __future__ import annotations

import sqlite3
import time

from mlx_sql.sqlite import quote_identifier as q

SAMPLE = 500  # distinct values of a column checked against the key it would refer to
MAX_SECONDS = 5.0  # for the whole database: a huge table leaves the rest unchecked rather than stall `ask`


def singular(name: str) -> str:
    """`customers` → `customer`, `categories` → `category`, `boxes` → `box`: enough to name a key after its table."""
    low = name.lower()
    if low.endswith("ies") and len(low) > 4:
        return low[:-3] + "y"
    if low.endswith(("ses", "xes", "ches", "shes")):
        return low[:-2]
    return low[:-1] if low.endswith("s") and not low.endswith("ss") else low


def names_key_of(column: str, table: str, key: str) -> bool:
    """Whether `column` is named as a reference to `table`'s key `key` (`customer_id` → customers.id,
    `CustomerID` → Customers.CustomerID)."""
    if key.lower() != "id":
        return column.lower() == key.lower()
    flat = column.lower().replace("_", "")
    return flat in {singular(table).replace("_", "") + "id", table.lower().replace("_", "") + "id"}


def table_key(table: str, columns: list[str], primary: list[str]) -> str | None:
    """A table's single-column key: the declared one, else a column named `id`, else one named after the table."""
    if len(primary) == 1:
        return primary[0]
    if primary:
        return None
    return next((c for c in columns if c.lower() == "id"), None) or \
        next((c for c in columns if names_key_of(c, table, "id")), None)


def infer_foreign_keys(conn: sqlite3.Connection, columns: dict[str, list[str]], primary: dict[str, list[str]],
                       max_seconds: float = MAX_SECONDS) -> list[tuple[str, str, str, str]]:
    """(table, column, referenced table, referenced column) for each reference the names suggest and the rows
    confirm: the column holds a value, and every one of its first `SAMPLE` distinct values is in the key.
    The deadline is a progress handler on `conn`, removed at the end (sqlite3 cannot read back one set before):
    pass a connection that has none of its own."""
    keys = {t: k for t in columns if (k := table_key(t, columns[t], primary.get(t, [])))}
    deadline = time.monotonic() + max_seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    found = []
    try:
        for child, names in columns.items():
            for column in names:
                if column == keys.get(child) and column.lower() == "id":
                    continue
                for parent, key in keys.items():
                    if parent == child or not names_key_of(column, parent, key):
                        continue
                    try:
                        present, missing = conn.execute(
                            f"SELECT count(*), sum(v NOT IN (SELECT {q(key)} FROM {q(parent)})) FROM (SELECT DISTINCT "
                            f"{q(column)} AS v FROM {q(child)} WHERE {q(column)} IS NOT NULL LIMIT {SAMPLE})").fetchone()
                    except sqlite3.Error:  # the deadline, or a table SQLite cannot read
                        continue
                    if present and not missing:
                        found.append((child, column, parent, key))
    finally:
        conn.set_progress_handler(None, 0)
    return found
