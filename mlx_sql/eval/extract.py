"""Pull the SQL out of what a model said: fences, chatter, several statements.

`statement_finished` tells generation when more text can no longer change what `extract_sql` returns,
so decoding can stop there; the two share one reading of the text.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```(?:sql|sqlite)?[ \t]*\n?(.*?)(?:```|$)", re.S | re.I)
# SELECT, or a CTE (WITH name [(cols)] AS ( ...): plain "with" in prose is not a query.
_START = re.compile(r"\b(SELECT\b|WITH\s+(?:RECURSIVE\s+)?\w+\s*(?:\([^)]*\))?\s*AS\s*\()", re.I)


def _first_statement(body: str) -> tuple[str, bool]:
    """The text up to the first ; outside a string literal or a blank line, and whether one was reached."""
    statement, in_string = [], None
    for ch in body:
        if in_string:
            in_string = None if ch == in_string else in_string
        elif ch in ("'", '"'):
            in_string = ch
        elif ch == ";":
            return "".join(statement), True
        statement.append(ch)
    text = "".join(statement)
    parts = re.split(r"\n\s*\n", text, maxsplit=1)
    return parts[0], len(parts) > 1


def _sql_body(text: str) -> tuple[str, str]:
    """Where the query is, and what kind of place that is: bare SQL at the start ("bare"), else the
    first fence ("open fence" / "closed fence"), else the first SQL in the prose ("prose")."""
    stripped = text.lstrip()
    if _START.match(stripped):
        return stripped, "bare"
    fenced = _FENCE.search(text)
    if fenced:
        closed = text.find("```", fenced.start() + 3) != -1
        return fenced.group(1), "closed fence" if closed else "open fence"
    return text, "prose"


def extract_sql(text: str) -> str:
    """The first SQL statement in `text`, one line, without the trailing semicolon ('' if none)."""
    body, _ = _sql_body(text)
    start = _START.search(body)
    if not start:
        return ""
    sql, _ = _first_statement(body[start.start():])
    return " ".join(sql.split())


def statement_finished(text: str) -> bool:
    """True once more text cannot change `extract_sql(text)`: the answer began with SQL (or opened a
    fence) and its first statement ended, or the fence closed."""
    body, kind = _sql_body(text)
    if kind == "prose":
        return False  # a fence may still come
    if kind == "closed fence":
        return True
    start = _START.search(body)
    return bool(start) and _first_statement(body[start.start():])[1]
