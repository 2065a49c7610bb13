"""Which synthesized queries are worth a question: they run, return something, and are new.

A query is dropped when SQLite rejects it or it times out (the sandbox's limits), when its result is empty or
degenerate (only NULLs, or one 0: a filter that matched nothing, counted), when it is not a plain SELECT,
when another kept query of the same database returned the same rows, or when it repeats a kept query's
skeleton (the query with its literals blanked): many values in one shape teach the shape once.
"""

from __future__ import annotations

import hashlib
import json
import re

from sqlglot import exp

from mlx_sql.sandbox import ExecResult
from mlx_sql.sqltools import parse_sqlite

MAX_KEPT_ROWS = 1000  # a result this long is a listing, not an answer anyone reads


def skeleton(sql: str) -> str:
    """The query's shape: literals blanked, identifiers and keywords lower-cased, spacing normalised."""
    tree = parse_sqlite(sql)
    if tree is None:
        text = re.sub(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b", "_", sql)
        return " ".join(text.lower().split())
    tree = tree.transform(lambda node: exp.Placeholder() if isinstance(node, exp.Literal) else node)
    return " ".join(tree.sql(dialect="sqlite").lower().split())


def _normal(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, bytes):
        return value.hex()
    return value


def result_key(rows: tuple[tuple, ...] | list) -> str:
    """A digest of a result as a multiset of rows (row order ignored; 1 and 1.0 the same)."""
    normal = sorted(json.dumps([_normal(v) for v in row], default=str) for row in rows)
    return hashlib.sha256("\n".join(normal).encode()).hexdigest()[:20]


def verdict(sql: str, result: ExecResult) -> str:
    """"ok", or why the query is dropped: "not a select", "fails", "empty", "degenerate", "too many rows"."""
    tree = parse_sqlite(sql)
    if tree is None or not isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        return "not a select"
    if not result.ok:
        return "fails"
    rows = result.rows or ()
    if not rows:
        return "empty"
    if len(rows) > MAX_KEPT_ROWS:
        return "too many rows"
    values = [v for row in rows for v in row]
    if all(v is None for v in values) or (len(values) == 1 and values[0] in (0, 0.0)):
        return "degenerate"
    return "ok"


class Novelty:
    """Results and skeletons already kept for one database; a query repeating either is not new."""

    def __init__(self) -> None:
        self.results: set[str] = set()
        self.skeletons: set[str] = set()

    def why_not_new(self, sql: str, rows) -> str | None:
        if result_key(rows) in self.results:
            return "same result"
        if skeleton(sql) in self.skeletons:
            return "same skeleton"
        return None

    def add(self, sql: str, rows) -> None:
        self.results.add(result_key(rows))
        self.skeletons.add(skeleton(sql))
