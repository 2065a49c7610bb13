"""SQL from structure templates, instantiated on one database.

Each template is a Spider-style query shape (a filter, a join along a foreign key, GROUP BY/HAVING, ORDER BY
LIMIT, nested IN/NOT IN, a set operation) filled with columns of a compatible kind and values read from the
database as stored, and says its question in plain template words (`synth.questions = "template"` uses them
as they are: stilted but exact, and free; "model" has the teacher write the question from the SQL). The
shapes cover Spider's hardness levels; a level is drawn first (`LEVEL_WEIGHTS`), then one of its templates
that this database can fill. Written here from the clause mix of text-to-SQL benchmarks,
not copied from any benchmark's queries, so they work on any SQLite file.
"""

from __future__ import annotations

import random
import re
from typing import Callable, NamedTuple

from mlx_sql.sqlite import quote_identifier as q
from mlx_sql.synth.profile import ColumnProfile, DatabaseProfile, TableProfile

LEVEL_WEIGHTS = {"easy": 0.2, "medium": 0.35, "hard": 0.25, "extra": 0.2}
NAME_HINTS = ("name", "title", "label", "description")


def literal(value) -> str:
    """A value as an SQL literal, spelled exactly as stored."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def label(table: TableProfile, rng: random.Random, avoid: ColumnProfile | None = None) -> ColumnProfile | None:
    """A column that names a row for a person (names, titles), else any shown text or number column."""
    texts = [c for c in table.of_kind("text", "date") if c is not avoid]
    named = [c for c in texts if any(h in c.name.lower() for h in NAME_HINTS)]
    pool = named or texts or [c for c in table.of_kind("number") if c is not avoid]
    return rng.choice(pool) if pool else None


class Join(NamedTuple):
    """A foreign key: the child table's column `fk` refers to the parent table's `pk`."""

    child: TableProfile
    fk: str
    parent: TableProfile
    pk: str

    @property
    def clause(self) -> str:
        """The FROM clause every join template shares: the child as T1, the parent as T2."""
        return f"{q(self.child.name)} AS T1 JOIN {q(self.parent.name)} AS T2 ON T1.{q(self.fk)} = T2.{q(self.pk)}"


class Draw:
    """Random choices over one database's profile; each returns None where the database has nothing to fit."""

    def __init__(self, profile: DatabaseProfile, rng: random.Random):
        self.p, self.rng = profile, rng
        self.tables = [t for t in profile.tables if t.rows > 0]

    def table(self, need: Callable[[TableProfile], bool] = lambda t: True) -> TableProfile | None:
        fitting = [t for t in self.tables if need(t)]
        return self.rng.choice(fitting) if fitting else None

    def column(self, table: TableProfile, *kinds: str, avoid: ColumnProfile | None = None,
               categorical: bool = False) -> ColumnProfile | None:
        pool = [c for c in table.of_kind(*kinds) if c is not avoid and (c.categorical or not categorical)]
        return self.rng.choice(pool) if pool else None

    def value(self, column: ColumnProfile):
        return self.rng.choice(column.values)

    def join(self) -> Join | None:
        """A foreign key between two non-empty tables."""
        joins = self.p.joins
        if not joins:
            return None
        child, fk, parent, pk = self.rng.choice(joins)
        return Join(self.p.table(child), fk, self.p.table(parent), pk)

    def chain(self) -> list[tuple[TableProfile, str, TableProfile, str]] | None:
        """Two foreign keys that meet at a table: t1 -> t2 and t3 -> t2, or t1 -> t2 -> t3."""
        joins = self.p.joins
        ends = {j: {j[0].lower(), j[2].lower()} for j in joins}
        pairs = [(a, b) for a in joins for b in joins if a != b and ends[a] & ends[b] and len(ends[a] | ends[b]) == 3]
        if not pairs:
            return None
        a, b = self.rng.choice(pairs)
        return [(self.p.table(x[0]), x[1], self.p.table(x[2]), x[3]) for x in (a, b)]


# Each template: Draw -> (SQL, the question in the template's own words) or None. Names say the shape; levels
# are what Spider's hardness usually gives it.
Made = tuple[str, str]
OP_WORDS = {">": "greater than", "<": "less than", ">=": "at least", "<=": "at most"}
AGG_WORDS = {"max": "maximum", "min": "minimum", "avg": "average", "sum": "total"}


def words(name: str) -> str:
    """A column or table name as words: `Main_Industry` -> "main industry", `StuID` -> "stu id"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " "))
    return " ".join(spaced.lower().split())


def plural(name: str) -> str:
    w = words(name)
    if w.endswith(("s", "x", "ch", "sh")):
        return w if w.endswith("s") else w + "es"
    return w[:-1] + "ies" if w.endswith("y") and w[-2:-1] not in "aeiou" else w + "s"


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article: "an order id", "a name" (by the first letter; "a user id" too)."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def said(value) -> str:
    """A value as a question names it: text as stored, in quotes; numbers bare."""
    return f'"{value}"' if isinstance(value, str) else repr(value)


def extreme(column: ColumnProfile, direction: str) -> str:
    if column.kind == "date":
        return "latest" if direction == "DESC" else "earliest"
    return "highest" if direction == "DESC" else "lowest"


def select_column(d: Draw) -> Made | None:
    t = d.table()
    c = t and label(t, d.rng)
    if not c:
        return None
    distinct = "DISTINCT " if c.categorical else ""
    return (f"SELECT {distinct}{q(c.name)} FROM {q(t.name)}",
            f"List the {'distinct ' if distinct else ''}{words(c.name)} values of all {plural(t.name)}.")


def count_rows(d: Draw) -> Made | None:
    t = d.table()
    return t and (f"SELECT count(*) FROM {q(t.name)}", f"How many {plural(t.name)} are there?")


def filter_equal(d: Draw) -> Made | None:
    t = d.table(lambda t: len(t.of_kind("text")) >= 1)
    f = t and d.column(t, "text")
    c = f and label(t, d.rng, avoid=f)
    if not c:
        return None
    v = d.value(f)
    return (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(f.name)} = {literal(v)}",
            f"What is the {words(c.name)} of the {plural(t.name)} whose {words(f.name)} is {said(v)}?")


def filter_number(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("number")))
    n = t and d.column(t, "number")
    c = n and label(t, d.rng, avoid=n)
    if not c:
        return None
    op, v = d.rng.choice(list(OP_WORDS)), d.value(n)
    return (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(n.name)} {op} {literal(v)}",
            f"What is the {words(c.name)} of the {plural(t.name)} with {with_article(words(n.name))} "
            f"{OP_WORDS[op]} {said(v)}?")


def aggregate(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("number")))
    n = t and d.column(t, "number")
    if not n:
        return None
    funcs = d.rng.sample(list(AGG_WORDS), d.rng.choice([1, 2]))
    return (f"SELECT {', '.join(f'{f}({q(n.name)})' for f in funcs)} FROM {q(t.name)}",
            f"What is the {' and the '.join(AGG_WORDS[f] for f in funcs)} {words(n.name)} of all {plural(t.name)}?")


def count_filter(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("text", "number")))
    f = t and d.column(t, "text", "number", categorical=True)
    if not f:
        return None
    v = d.value(f)
    return (f"SELECT count(*) FROM {q(t.name)} WHERE {q(f.name)} = {literal(v)}",
            f"How many {plural(t.name)} have the {words(f.name)} {said(v)}?")


def top_one(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("number", "date")))
    n = t and d.column(t, "number", "date")
    c = n and label(t, d.rng, avoid=n)
    if not c:
        return None
    way = d.rng.choice(["DESC", "ASC"])
    return (f"SELECT {q(c.name)} FROM {q(t.name)} ORDER BY {q(n.name)} {way} LIMIT 1",
            f"What is the {words(c.name)} of the {words(t.name)} with the {extreme(n, way)} {words(n.name)}?")


def group_count(d: Draw) -> Made | None:
    t = d.table()
    g = t and d.column(t, "text", "number", categorical=True)
    return g and (f"SELECT {q(g.name)}, count(*) FROM {q(t.name)} GROUP BY {q(g.name)}",
                  f"How many {plural(t.name)} are there for each {words(g.name)}?")


def group_aggregate(d: Draw) -> Made | None:
    t = d.table()
    g = t and d.column(t, "text", categorical=True)
    n = g and d.column(t, "number", avoid=g)
    if not n:
        return None
    f = d.rng.choice(list(AGG_WORDS))
    return (f"SELECT {q(g.name)}, {f}({q(n.name)}) FROM {q(t.name)} GROUP BY {q(g.name)}",
            f"What is the {AGG_WORDS[f]} {words(n.name)} of the {plural(t.name)} for each {words(g.name)}?")


def group_top(d: Draw) -> Made | None:
    t = d.table()
    g = t and d.column(t, "text", "number", categorical=True)
    if not g:
        return None
    way = d.rng.choice(["DESC", "ASC"])
    return (f"SELECT {q(g.name)} FROM {q(t.name)} GROUP BY {q(g.name)} ORDER BY count(*) {way} LIMIT 1",
            f"Which {words(g.name)} is the {'most' if way == 'DESC' else 'least'} common among the {plural(t.name)}?")


def order_limit(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("number")))
    n = t and d.column(t, "number")
    c = n and label(t, d.rng, avoid=n)
    if not c:
        return None
    way, k = d.rng.choice(["DESC", "ASC"]), d.rng.choice([3, 5])
    return (f"SELECT {q(c.name)}, {q(n.name)} FROM {q(t.name)} ORDER BY {q(n.name)} {way} LIMIT {k}",
            f"List the {words(c.name)} and {words(n.name)} of the {k} {plural(t.name)} with the {extreme(n, way)} "
            f"{words(n.name)}.")


def two_filters(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("text")) and bool(t.of_kind("number")))
    f = t and d.column(t, "text")
    n = f and d.column(t, "number")
    c = n and label(t, d.rng, avoid=f)
    if not c:
        return None
    joiner, op, v, v2 = d.rng.choice(["AND", "OR"]), d.rng.choice([">", "<"]), d.value(f), d.value(n)
    return (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(f.name)} = {literal(v)} {joiner} "
            f"{q(n.name)} {op} {literal(v2)}",
            f"What is the {words(c.name)} of the {plural(t.name)} whose {words(f.name)} is {said(v)} "
            f"{joiner.lower()} whose {words(n.name)} is {OP_WORDS[op]} {said(v2)}?")


def like_filter(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("text")))
    f = t and d.column(t, "text")
    found = [w for v in (f.values if f else []) for w in str(v).split() if len(w) >= 4 and w.isalpha()]
    c = found and label(t, d.rng)
    if not c:
        return None
    word = d.rng.choice(found)
    return (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(f.name)} LIKE {literal('%' + word + '%')}",
            f"What is the {words(c.name)} of the {plural(t.name)} whose {words(f.name)} contains {said(word)}?")


def join_filter(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    if d.rng.random() < 0.5:  # show the child, filter on the parent; or the other way round
        shown, filtered, s_alias, f_alias = child, parent, "T1", "T2"
    else:
        shown, filtered, s_alias, f_alias = parent, child, "T2", "T1"
    c, f = label(shown, d.rng), d.column(filtered, "text", "number")
    if not c or not f:
        return None
    v = d.value(f)
    sql = (f"SELECT {'DISTINCT ' if shown is parent else ''}{s_alias}.{q(c.name)} FROM {j.clause} "
           f"WHERE {f_alias}.{q(f.name)} = {literal(v)}")
    if shown is child:
        return sql, (f"What is the {words(c.name)} of the {plural(child.name)} whose {words(parent.name)} has the "
                     f"{words(f.name)} {said(v)}?")
    return sql, (f"What are the distinct {words(c.name)} values of the {plural(parent.name)} that have "
                 f"{with_article(words(child.name))} with the {words(f.name)} {said(v)}?")


def join_select(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    a, b = label(child, d.rng), label(parent, d.rng)
    return a and b and (f"SELECT T1.{q(a.name)}, T2.{q(b.name)} FROM {j.clause}",
                        f"List the {words(a.name)} of each {words(child.name)} together with the {words(b.name)} of "
                        f"its {words(parent.name)}.")


def having(d: Draw) -> Made | None:
    t = d.table()
    g = t and d.column(t, "text", "number", categorical=True)
    if not g:
        return None
    k, op = d.rng.choice([2, 3, 5]), d.rng.choice([">=", ">", "<"])
    amount = {">=": "at least", ">": "more than", "<": "fewer than"}[op]
    return (f"SELECT {q(g.name)} FROM {q(t.name)} GROUP BY {q(g.name)} HAVING count(*) {op} {k}",
            f"Which {words(g.name)} values have {amount} {k} {plural(t.name)}?")


def not_in(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c = label(parent, d.rng)
    if not c:
        return None
    word = d.rng.choice(["NOT IN", "IN"])
    have = "have no" if word == "NOT IN" else "have at least one"
    return (f"SELECT {q(c.name)} FROM {q(parent.name)} WHERE {q(pk)} {word} (SELECT {q(fk)} FROM {q(child.name)})",
            f"What is the {words(c.name)} of the {plural(parent.name)} that {have} {words(child.name)}?")


def in_filtered(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c, f = label(parent, d.rng), d.column(child, "text", "number")
    if not c or not f:
        return None
    v = d.value(f)
    return (f"SELECT {q(c.name)} FROM {q(parent.name)} WHERE {q(pk)} IN (SELECT {q(fk)} FROM {q(child.name)} "
            f"WHERE {q(f.name)} = {literal(v)})",
            f"What is the {words(c.name)} of the {plural(parent.name)} that have "
            f"{with_article(words(child.name))} whose {words(f.name)} is {said(v)}?")


def above_average(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("number")))
    n = t and d.column(t, "number")
    c = n and label(t, d.rng, avoid=n)
    if not c:
        return None
    op = d.rng.choice([">", "<"])
    return (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(n.name)} {op} (SELECT avg({q(n.name)}) FROM {q(t.name)})",
            f"What is the {words(c.name)} of the {plural(t.name)} whose {words(n.name)} is "
            f"{'above' if op == '>' else 'below'} the average {words(n.name)}?")


def join_group(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c = label(parent, d.rng)
    return c and (f"SELECT T2.{q(c.name)}, count(*) FROM {j.clause} GROUP BY T1.{q(fk)}",
                  f"For each {words(parent.name)}, what is its {words(c.name)} and how many {plural(child.name)} "
                  f"does it have?")


def join_top(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c = label(parent, d.rng)
    if not c:
        return None
    way = d.rng.choice(["DESC", "ASC"])
    return (f"SELECT T2.{q(c.name)} FROM {j.clause} GROUP BY T1.{q(fk)} ORDER BY count(*) {way} LIMIT 1",
            f"What is the {words(c.name)} of the {words(parent.name)} with the {'most' if way == 'DESC' else 'fewest'} "
            f"{plural(child.name)}?")


def set_operation(d: Draw) -> Made | None:
    t = d.table(lambda t: bool(t.of_kind("text", "number")))
    f = t and d.column(t, "text", "number", categorical=True)
    c = f and label(t, d.rng, avoid=f)
    if not c or len(f.values) < 2:
        return None
    v1, v2 = d.rng.sample(f.values, 2)
    op = d.rng.choice(["UNION", "INTERSECT", "EXCEPT"])
    sql = (f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(f.name)} = {literal(v1)} {op} "
           f"SELECT {q(c.name)} FROM {q(t.name)} WHERE {q(f.name)} = {literal(v2)}")
    pick = f"{words(c.name)} values of {plural(t.name)}"
    question = {"UNION": f"Which {pick} have the {words(f.name)} {said(v1)} or {said(v2)}?",
                "INTERSECT": f"Which {pick} occur both with the {words(f.name)} {said(v1)} and with {said(v2)}?",
                "EXCEPT": f"Which {pick} occur with the {words(f.name)} {said(v1)} but never with {said(v2)}?"}[op]
    return sql, question


def except_join(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c, f = label(parent, d.rng), d.column(child, "text", "number")
    if not c or not f:
        return None
    v = d.value(f)
    return (f"SELECT {q(c.name)} FROM {q(parent.name)} EXCEPT SELECT T2.{q(c.name)} FROM {j.clause} "
            f"WHERE T1.{q(f.name)} = {literal(v)}",
            f"Which {words(c.name)} values of {plural(parent.name)} have no {words(child.name)} with the "
            f"{words(f.name)} {said(v)}?")


def join_having(d: Draw) -> Made | None:
    j = d.join()
    if not j:
        return None
    child, fk, parent, pk = j
    c = label(parent, d.rng)
    if not c:
        return None
    k = d.rng.choice([1, 2, 3])
    return (f"SELECT T2.{q(c.name)}, count(*) FROM {j.clause} GROUP BY T1.{q(fk)} HAVING count(*) > {k} "
            f"ORDER BY count(*) DESC",
            f"Which {plural(parent.name)} have more than {k} {plural(child.name)}? Give their {words(c.name)} and "
            f"how many, the most first.")


def three_tables(d: Draw) -> Made | None:
    chain = d.chain()
    if not chain:
        return None
    (a, a_col, a_ref, a_ref_col), (b, b_col, b_ref, b_ref_col) = chain
    # the two keys share a table; name the three tables in join order T1, T2, T3
    tables = [a, a_ref]
    third = b if b.name.lower() not in {t.name.lower() for t in tables} else b_ref
    aliases = {a.name.lower(): "T1", a_ref.name.lower(): "T2", third.name.lower(): "T3"}
    c, f = label(a, d.rng), d.column(third, "text", "number")
    if not c or not f:
        return None
    v = d.value(f)
    on_b = f"{aliases[b.name.lower()]}.{q(b_col)} = {aliases[b_ref.name.lower()]}.{q(b_ref_col)}"
    return (f"SELECT DISTINCT T1.{q(c.name)} FROM {q(a.name)} AS T1 JOIN {q(a_ref.name)} AS T2 ON T1.{q(a_col)} = "
            f"T2.{q(a_ref_col)} JOIN {q(third.name)} AS T3 ON {on_b} WHERE T3.{q(f.name)} = {literal(v)}",
            f"What are the distinct {words(c.name)} values of the {plural(a.name)} linked through their "
            f"{words(a_ref.name)} to {with_article(words(third.name))} with the {words(f.name)} {said(v)}?")


TEMPLATES: dict[str, list[Callable[[Draw], Made | None]]] = {
    "easy": [select_column, count_rows, filter_equal, filter_number, aggregate, count_filter, top_one],
    "medium": [group_count, group_aggregate, group_top, order_limit, two_filters, like_filter, join_filter, join_select],
    "hard": [having, not_in, in_filtered, above_average, join_group, join_top, set_operation],
    "extra": [except_join, join_having, three_tables],
}


def template_sql(profile: DatabaseProfile, rng: random.Random, tries: int = 20) -> tuple[str, str, str] | None:
    """(template name, SQL, the template's question) for one draw: a level by LEVEL_WEIGHTS, then a template of
    it this database fits."""
    d = Draw(profile, rng)
    if not d.tables:
        return None
    levels, weights = list(LEVEL_WEIGHTS), list(LEVEL_WEIGHTS.values())
    for _ in range(tries):
        level = rng.choices(levels, weights)[0]
        template = rng.choice(TEMPLATES[level])
        made = template(d)
        if made:
            return template.__name__, made[0], made[1]
    return None
