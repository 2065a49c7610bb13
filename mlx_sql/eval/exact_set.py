"""Spider's "exact set match": compare queries clause by clause as sets, ignoring values.

Follows the published rules of Spider's evaluation.py in match mode: SELECT, WHERE,
GROUP BY, HAVING, ORDER BY, LIMIT (present or not), the INTERSECT / UNION / EXCEPT
branch and nested queries must agree as multisets of units, in any order; literal values
are ignored; aliases are resolved to table names; a foreign-key column counts as the primary
key it references; join conditions are not compared, the multiset of tables is; DISTINCT is ignored
(the official script's DISABLE_DISTINCT, on in both taoyds/spider and test-suite-sql-eval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from mlx_sql.data.schema import Schema
from mlx_sql.eval.normalize import fix_double_quoted_strings
from mlx_sql.sqltools import parse_sqlite

AGGS = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}
OPS = {exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<=", exp.In: "in",
       exp.Like: "like", exp.Between: "between", exp.Is: "is"}


@dataclass(frozen=True)
class Shape:
    select: tuple
    tables: tuple  # sorted: a multiset, as the official lists are (a self-join names its table twice)
    where: tuple
    where_connectors: tuple
    group: tuple
    having: tuple
    order: tuple
    limit: bool
    iuen: tuple | None


class _Resolver:
    def __init__(self, schema: Schema):
        self.columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
        self.fk = {(fk.table.lower(), fk.column.lower()): (fk.ref_table.lower(), fk.ref_column.lower())
                   for fk in schema.foreign_keys}

    def column(self, col: exp.Column, aliases: dict[str, str], tables: list[str]) -> str:
        name = col.name.lower()
        if name == "*":
            return "*"
        table = aliases.get(col.table.lower(), col.table.lower()) if col.table else None
        if table is None:
            table = next((t for t in tables if name in self.columns.get(t, ())), tables[0] if tables else "")
        key = (table, name)
        while key in self.fk and self.fk[key] != key:  # FK column counts as the key it references
            key = self.fk[key]
        return f"{key[0]}.{key[1]}"


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], list[str]]:
    if node is None:
        return [], []
    if isinstance(node, exp.Paren):
        return _conditions(node.this)
    if isinstance(node, (exp.And, exp.Or)):
        left, lc = _conditions(node.this)
        right, rc = _conditions(node.expression)
        return left + right, lc + ["and" if isinstance(node, exp.And) else "or"] + rc
    return [node], []


class _Builder:
    def __init__(self, resolver: _Resolver):
        self.r = resolver

    def unit(self, node: exp.Expression, aliases: dict, tables: list) -> Any:
        """A value unit: aggregate + column(s), with literals replaced by 'value'."""
        if isinstance(node, (exp.Alias, exp.Paren)):
            return self.unit(node.this, aliases, tables)
        if isinstance(node, exp.Distinct):  # count(DISTINCT x) scores as count(x), as DISABLE_DISTINCT does
            units = tuple(self.unit(e, aliases, tables) for e in node.expressions)
            return units[0] if len(units) == 1 else units
        for kind, name in AGGS.items():
            if isinstance(node, kind):
                return (name, self.unit(node.this, aliases, tables) if node.this else "*")
        if isinstance(node, exp.Star):
            return "*"
        if isinstance(node, exp.Column):
            return self.r.column(node, aliases, tables)
        if isinstance(node, (exp.Literal, exp.Null, exp.Boolean)):
            return "value"
        if isinstance(node, (exp.Select, exp.Subquery, exp.SetOperation)):
            return ("sub", self.shape(node.this if isinstance(node, exp.Subquery) else node))
        if isinstance(node, exp.Binary):
            return (type(node).__name__.lower(), self.unit(node.this, aliases, tables),
                    self.unit(node.expression, aliases, tables))
        return node.sql(dialect="sqlite").lower()

    def condition(self, cond: exp.Expression, aliases: dict, tables: list) -> tuple:
        negated = isinstance(cond, exp.Not)
        inner = cond.this if negated else cond
        op = next((name for kind, name in OPS.items() if isinstance(inner, kind)), type(inner).__name__.lower())
        left = self.unit(inner.this, aliases, tables) if inner.args.get("this") is not None else None
        if isinstance(inner, exp.In):
            query = inner.args.get("query")
            right = self.unit(query, aliases, tables) if query is not None else "value"
        elif isinstance(inner, exp.Between):
            right = ("value", "value")
        else:
            other = inner.args.get("expression")
            right = self.unit(other, aliases, tables) if other is not None else None
        return (negated, op, left, right)

    def shape(self, tree: exp.Expression) -> Shape:
        if isinstance(tree, exp.Subquery):
            return self.shape(tree.this)
        if isinstance(tree, exp.SetOperation):
            left = self.shape(tree.this)
            op = {exp.Union: "union", exp.Intersect: "intersect", exp.Except: "except"}[type(tree)]
            return Shape(**{**left.__dict__, "iuen": (op, self.shape(tree.expression))})
        select: exp.Select = tree
        aliases: dict[str, str] = {}
        tables: list[str] = []
        table_units: list[Any] = []
        from_ = select.args.get("from") or select.args.get("from_")
        sources = ([from_.this] if from_ is not None else []) + [j.this for j in select.args.get("joins") or []]
        for source in sources:
            if isinstance(source, exp.Table):
                tables.append(source.name.lower())
                table_units.append(source.name.lower())
                if source.alias:
                    aliases[source.alias.lower()] = source.name.lower()
            elif isinstance(source, exp.Subquery):
                table_units.append(("sub", self.shape(source.this)))
        where_conds, connectors = _conditions(select.args["where"].this if select.args.get("where") else None)
        having_conds, _ = _conditions(select.args["having"].this if select.args.get("having") else None)
        group = select.args.get("group")
        order = select.args.get("order")
        order_units = tuple(sorted(repr(self.unit(o.this, aliases, tables)) for o in order.expressions)) if order else ()
        direction = ("desc" if order and any(o.args.get("desc") for o in order.expressions) else "asc") if order else ""
        return Shape(
            select=tuple(sorted(repr(self.unit(e, aliases, tables)) for e in select.expressions)),
            tables=tuple(sorted(repr(t) for t in table_units)),
            where=tuple(sorted(repr(self.condition(c, aliases, tables)) for c in where_conds)),
            where_connectors=tuple(sorted(connectors)),
            group=tuple(sorted(repr(self.unit(g, aliases, tables)) for g in (group.expressions if group else []))),
            having=tuple(sorted(repr(self.condition(c, aliases, tables)) for c in having_conds)),
            order=(order_units, direction),
            limit=select.args.get("limit") is not None,
            iuen=None,
        )


def query_shape(sql: str, schema: Schema) -> Shape | None:
    names = schema.table_names + [c.name for t in schema.tables for c in t.columns]
    tree = parse_sqlite(fix_double_quoted_strings(sql, names))
    if tree is None:
        return None
    try:
        return _Builder(_Resolver(schema)).shape(tree)
    except (AttributeError, KeyError, TypeError):
        return None


def exact_set_match(gold: str, prediction: str, schema: Schema) -> bool:
    g, p = query_shape(gold, schema), query_shape(prediction, schema)
    return g is not None and g == p
