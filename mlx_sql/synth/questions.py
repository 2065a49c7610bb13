"""From SQL to the question a user would ask, and a check that the question means the SQL.

The writer sees the schema and the query and answers with one question. The check is a round trip: a model
answers that question as text-to-SQL does at inference (the same prompt `eval` and `ask` build), and the pair
is kept only where its query returns the same result as the synthesized one (the evaluator's result
equality). A question that lost a filter, or names a column the SQL never reads, fails it.
"""

from __future__ import annotations

import re
from typing import Any

from mlx_sql.data.examples import SQL_HEADER

WRITE_INSTRUCTION = ("Below are a SQLite database's schema and one SQL query over it. Write the question, in plain "
                     "English, that a user of this database would ask to get exactly this query's result. Mention "
                     "every condition and value the query uses; do not mention SQL, tables or column names "
                     "literally where plain words do. Reply with the question only.\n\n"
                     "For example, on a library's database:\n"
                     "SQL: SELECT title FROM books WHERE year > 2000\n"
                     "Question: What are the titles of the books published after 2000?\n"
                     "SQL: SELECT T2.name, count(*) FROM loans AS T1 JOIN members AS T2 ON T1.member_id = T2.id "
                     "GROUP BY T1.member_id\n"
                     "Question: How many loans has each member made? Give the member's name and the count.\n"
                     "SQL: SELECT name FROM members WHERE id NOT IN (SELECT member_id FROM loans)\n"
                     "Question: Which members have never borrowed a book?")
LEVEL_HINTS = {
    "easy": "that reads one table, with at most one filter, one aggregate or one ordering",
    "medium": "that joins two tables along a foreign key, or groups rows (GROUP BY), or filters on two conditions",
    "hard": "with a nested query (IN, NOT IN, or a comparison with a subquery), or GROUP BY with HAVING, or "
            "UNION / INTERSECT / EXCEPT",
    "extra": "that combines several of: joins over three tables, GROUP BY with HAVING, ORDER BY with LIMIT, a "
             "nested query, a set operation",
}
SQL_INSTRUCTION = ("Below is a SQLite database's schema with sample rows. Write one SQL query a user of this "
                   "database might want answered, {hint}. Use only its tables and columns, and values spelled "
                   "exactly as in the sample rows. Reply with the SQL only.")
_SQL_WORDS = re.compile(r"\b(SELECT|FROM|WHERE|JOIN|GROUP BY)\b")


def sql_record(schema_text: str, level: str) -> dict[str, Any]:
    """The prompt asking a model for a query of one Spider hardness level."""
    return {"instruction": SQL_INSTRUCTION.format(hint=LEVEL_HINTS[level]), "input": schema_text}


def question_record(schema_text: str, sql: str) -> dict[str, Any]:
    """The prompt asking a model for the question behind `sql`; the schema is its shared prefix."""
    return {"instruction": WRITE_INSTRUCTION, "input": f"{schema_text}\n\n{SQL_HEADER}\n{sql}"}


def clean_question(text: str) -> str:
    """The question in what a model wrote: its first non-empty line, without labels, quotes or fences;
    '' when that is not a question (SQL, too short, too long)."""
    lines = [line.strip() for line in text.strip().strip("`").splitlines() if line.strip()]
    if not lines:
        return ""
    line = re.sub(r"^(?:\*\*)?(?:question|q|user)\s*[:.-]\s*(?:\*\*)?\s*", "", lines[0], flags=re.I)
    line = line.strip().strip('"“”\'').strip()
    if len(line) < 8 or len(line) > 300 or _SQL_WORDS.search(line) or "```" in line:
        return ""
    return line
