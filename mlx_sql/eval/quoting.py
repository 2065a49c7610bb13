"""Quote the names a model wrote bare that SQLite can only read quoted.

Real databases name tables and columns "Order Details", "Unit Price", "e-mail" or "18_49_Rating_Share".
Small models, trained mostly on snake_case schemas, write them bare (`FROM Order Details`, `T1.Unit_Price`),
and SQLite rejects the query ("no such table: Order") — every candidate alike, so neither retries nor voting
recover (seen with Qwen2.5-Coder-0.5B on a table named "Customer Accounts": 20 of 20 candidates failed).

Where a bare run of words can only mean one such name — its words, case aside, joined by spaces or
underscores — it is quoted as the schema spells it, as is a quoted name that differs from one only in that
way ("Unit_Price" for "Unit Price"). Strings and other quoted text are left alone, and so is what may mean
something else: a run whose first word is itself a bare name of the schema (`FROM Customer Accounts` may be
table Customer, aliased), one whose pieces are all bare names or numbers (`e-mail` where columns e and mail
exist), and a name that reads as a number (a column "2019" is never looked for: `year = 2019` stays a
number). Only names that need quotes are looked for: on a schema with none, SQL passes through unchanged.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Iterable

from mlx_sql.data.schema import Schema

BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# string literals and quoted names (the odd pieces of a split), left as they are
QUOTED = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\])""")
SEPARATOR = re.compile(r"[\s_]+")
PIECES = re.compile(r"[^\w]+")  # what splits an expression such as e-mail or a/b into its operands
NUMBER = re.compile(r"[\d\s_.]+\Z")


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key(text: str) -> str:
    """A name as compared: its words, lower case, one space between them."""
    return " ".join(w for w in SEPARATOR.split(text.lower()) if w)


def schema_names(schema: Schema) -> list[str]:
    return [t.name for t in schema.tables] + [c.name for t in schema.tables for c in t.columns]


def name_quoter(names: Iterable[str]) -> Callable[[str], str]:
    """A function that quotes, in a query, the bare (or wrongly spelt quoted) mentions of those of `names` that
    SQLite reads only quoted; the identity where there are none."""
    names = set(names)
    bare = {n.lower() for n in names if BARE.match(n)}
    wanted: dict[str, str] = {}
    for name in names:
        if not BARE.match(name) and _key(name) and not NUMBER.match(name):
            wanted.setdefault(_key(name), name)  # names equal but for case or separators: the first kept
    if not wanted:
        return lambda sql: sql
    words = sorted(wanted, key=len, reverse=True)  # the longest name first: "Order Details" before "Order"
    pattern = re.compile(r"(?<![\w\"'`\[])(" + "|".join(
        r"[\s_]+".join(re.escape(w) for w in key.split(" ")) for key in words) + r")(?![\w\"'`\]])", re.IGNORECASE)

    def bare_mention(match: re.Match) -> str:
        text = match.group(1)
        first = SEPARATOR.split(text)[0].lower()
        operands = [p.lower() for p in PIECES.split(text) if p]
        if text.lower() in bare or (re.search(r"\s", text) and first in bare) or \
                (len(operands) > 1 and all(p in bare or p.isdigit() for p in operands)):
            return text
        return quoted(wanted[_key(text)])

    def fix(sql: str) -> str:
        pieces = QUOTED.split(sql)
        for i, piece in enumerate(pieces):
            if i % 2 == 0:
                pieces[i] = pattern.sub(bare_mention, piece)
            elif piece.startswith('"') and piece[1:-1] not in names:
                name = wanted.get(_key(piece[1:-1].replace('""', '"')))
                pieces[i] = quoted(name) if name is not None else piece
        return "".join(pieces)

    return fix


def sql_reader(schema: Schema) -> Callable[[str], str]:
    """Model text → the query to run on `schema`'s database: `extract_sql`, then its bare names quoted. Eval,
    ask and synth read every answer through this, so a query is the same wherever it is made."""
    from mlx_sql.eval.extract import extract_sql

    fix = name_quoter(schema_names(schema))
    return lambda raw: fix(extract_sql(raw))


def per_database(schema_of: Callable[[str], Schema], read: bool = True) -> Callable[[str], Callable[[str], str]]:
    """db_id → its `sql_reader` (or, with `read=False`, its `name_quoter`, for SQL already extracted), each made
    the first time that database is asked for."""
    make = (lambda db_id: sql_reader(schema_of(db_id))) if read else \
        (lambda db_id: name_quoter(schema_names(schema_of(db_id))))
    return functools.cache(make)
