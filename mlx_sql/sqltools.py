"""SQL analysis with sqlglot, shared by schema pruning and evaluation."""

from __future__ import annotations

import re
from typing import Iterable

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_sqlite(sql: str) -> exp.Expression | None:
    """Parse one SQLite statement; None when sqlglot cannot read it."""
    try:
        tree = sqlglot.parse_one(sql.strip().rstrip(";"), read="sqlite")
    except (ParseError, TokenError, ValueError):
        return None
    return tree


def tables_in_query(sql: str, known_tables: Iterable[str]) -> set[str]:
    """The known tables a query reads, spelled as in `known_tables`.

    Where sqlglot cannot parse the query, every known table whose name appears as
    a word is returned instead: a superset, so pruning never drops a needed table.
    """
    by_lower = {t.lower(): t for t in known_tables}
    tree = parse_sqlite(sql)
    found: set[str] = set()
    if tree is not None:
        cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            name = table.name.lower()
            if name in by_lower and name not in cte_names:
                found.add(by_lower[name])
            elif name not in cte_names:
                tree = None  # a name we cannot place: fall back to the word scan as well
    if tree is None:
        words = {w.lower() for w in WORD.findall(sql)}
        quoted = {q.lower() for q in re.findall(r'[`"\[]([^`"\]]+)[`"\]]', sql)}
        found |= {by_lower[w] for w in (words | quoted) if w in by_lower}
    return found
