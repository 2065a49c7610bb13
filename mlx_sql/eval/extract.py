"""Pull the SQL out of what a model said: fences, chatter, several statements."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```(?:sql|sqlite)?\s*(.*?)(?:```|$)", re.S | re.I)
_START = re.compile(r"\b(SELECT|WITH)\b", re.I)


def extract_sql(text: str) -> str:
    """The first SQL statement in `text`, one line, without the trailing semicolon ('' if none)."""
    fenced = _FENCE.search(text)
    body = fenced.group(1) if fenced else text
    start = _START.search(body)
    if not start:
        return ""
    body = body[start.start():]
    statement, in_string = [], None
    for ch in body:  # stop at the first ; outside a string literal
        if in_string:
            in_string = None if ch == in_string else in_string
        elif ch in ("'", '"'):
            in_string = ch
        elif ch == ";":
            break
        statement.append(ch)
    sql = "".join(statement)
    sql = re.split(r"\n\s*\n", sql)[0]  # a blank line ends the query (explanations follow)
    return " ".join(sql.split())


def statement_finished(text: str) -> bool:
    """True once the text holds a complete first statement (a ; after SQL, or a closing fence)."""
    start = _START.search(text)
    if not start:
        return False
    rest = text[start.start():]
    return ";" in rest or "```" in rest or "\n\n" in rest
