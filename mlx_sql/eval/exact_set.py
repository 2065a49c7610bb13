"""Spider's "exact set match": compare queries clause by clause as sets, ignoring values.

Follows the published rules of Spider's evaluation.py in match mode: SELECT, WHERE,
GROUP BY, HAVING, ORDER BY, LIMIT (present or not), the INTERSECT / UNION / EXCEPT
branch and nested queries must agree as multisets of units, in any order; literal values
are ignored; aliases are resolved to table names; a foreign-key column counts as the primary
key it references; join conditions are not compared, the multiset of tables is; DISTINCT is ignored
(the official script's DISABLE_DISTINCT, on in both taoyds/spider and test-suite-sql-eval).

Like the official scorer, a query its parser cannot read gets no credit, however right it is: a
column alias in a SELECT list (`SELECT sum(x) AS total`), a TRUE / FALSE literal, and any join but a
bare JOIN (INNER, LEFT, CROSS, NATURAL, USING) make that parser fail, so every published EM counts
them as misses, and so does this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from mlx_sql.data.schema import Schema
from mlx_sql.eval.normalize import fix_double_quoted_strings
from mlx_sql.sqltools import parse_sqlite

AGGS = {exp.Count: "count", exp.Sum: "sum", exp.Avg: "avg", exp.Min: "min", exp.Max: "max"}
SET_OPS = {exp.Union: "union", exp.Intersect: "intersect", exp.Except: "except"}
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
    limit: Any  # present or not; a nested query compares its value too
    iuen: tuple | None
    distinct: bool | None = None  # compared in nested queries only
    joins: tuple = ()  # ON conditions: compared in nested queries only


@dataclass(frozen=True)
class _Scope:
    """How the official evaluator treats a query, which depends on where it sits.

    The outer query and its INTERSECT / UNION / EXCEPT branches are rebuilt before comparison:
    DISTINCT dropped, and a foreign-key column counted as its key, but only for columns of the
    tables in the outer query's FROM (`fk_tables`). A query nested in a condition or in FROM is
    compared as parsed (`nested`): DISTINCT, clause order, join conditions and LIMIT's value count,
    foreign keys are not mapped; only its literal values are ignored.
    """

    fk_tables: frozenset = frozenset()
    nested: bool = False


NESTED = _Scope(nested=True)


class _Resolver:
    def __init__(self, schema: Schema):
        self.columns = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
        self.fk = {(fk.table.lower(), fk.column.lower()): (fk.ref_table.lower(), fk.ref_column.lower())
                   for fk in schema.foreign_keys}

    def column(self, col: exp.Column, aliases: dict[str, str], tables: list[str], scope: _Scope) -> str:
        name = col.name.lower()
        if name == "*":
            return "*"
        table = aliases.get(col.table.lower(), col.table.lower()) if col.table else None
        if table is None:
            table = next((t for t in tables if name in self.columns.get(t, ())), tables[0] if tables else "")
        key = (table, name)
        if table in scope.fk_tables:
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


def _set_branches(tree: exp.Expression) -> tuple[list[exp.Expression], list[str]]:
    """`A UNION B EXCEPT C` as branches [A, B, C] and operators [union, except].

    sqlglot nests such chains to the left, `(A UNION B) EXCEPT C`; Spider's parser reads each
    operator as applying to everything after it, `A UNION (B EXCEPT C)`. Flattening first lets
    the shape nest to the right, as the official one does, without losing a branch.
    """
    if isinstance(tree, exp.SetOperation):
        left, left_ops = _set_branches(tree.this)
        right, right_ops = _set_branches(tree.expression)
        return left + right, left_ops + [SET_OPS[type(tree)]] + right_ops
    return [tree], []


def _ordered(items: list, nested: bool) -> tuple:
    """A multiset (sorted) where the official rebuilds the query; as written in a nested query."""
    reprs = [repr(i) for i in items]
    return tuple(reprs if nested else sorted(reprs))


class _Builder:
    def __init__(self, resolver: _Resolver):
        self.r = resolver

    def unit(self, node: exp.Expression, aliases: dict, tables: list, scope: _Scope) -> Any:
        """A value unit: aggregate + column(s), with literals replaced by 'value'."""
        if isinstance(node, (exp.Alias, exp.Paren)):
            return self.unit(node.this, aliases, tables, scope)
        if isinstance(node, exp.Distinct):  # count(DISTINCT x): DISABLE_DISTINCT drops it outside nested queries
            units = tuple(self.unit(e, aliases, tables, scope) for e in node.expressions)
            unit = units[0] if len(units) == 1 else units
            return ("distinct", unit) if scope.nested else unit
        for kind, name in AGGS.items():
            if isinstance(node, kind):
                return (name, self.unit(node.this, aliases, tables, scope) if node.this else "*")
        if isinstance(node, exp.Star):
            return "*"
        if isinstance(node, exp.Column):
            return self.r.column(node, aliases, tables, scope)
        if isinstance(node, (exp.Literal, exp.Null, exp.Boolean)):
            return "value"
        if isinstance(node, (exp.Select, exp.Subquery, exp.SetOperation)):
            return ("sub", self.shape(node.this if isinstance(node, exp.Subquery) else node, NESTED))
        if isinstance(node, exp.Binary):
            return (type(node).__name__.lower(), self.unit(node.this, aliases, tables, scope),
                    self.unit(node.expression, aliases, tables, scope))
        return node.sql(dialect="sqlite").lower()

    def condition(self, cond: exp.Expression, aliases: dict, tables: list, scope: _Scope) -> tuple:
        negated = isinstance(cond, exp.Not)
        inner = cond.this if negated else cond
        op = next((name for kind, name in OPS.items() if isinstance(inner, kind)), type(inner).__name__.lower())
        left = self.unit(inner.this, aliases, tables, scope) if inner.args.get("this") is not None else None
        if isinstance(inner, exp.In):
            query = inner.args.get("query")
            right = self.unit(query, aliases, tables, scope) if query is not None else "value"
        elif isinstance(inner, exp.Between):
            right = ("value", "value")
        else:
            other = inner.args.get("expression")
            right = self.unit(other, aliases, tables, scope) if other is not None else None
        return (negated, op, left, right)

    def shape(self, tree: exp.Expression, scope: _Scope | None = None) -> Shape:
        """The shape of a query; `scope` None means the outermost query (its FROM decides FK mapping)."""
        if isinstance(tree, exp.Subquery):
            return self.shape(tree.this, scope)
        branches, ops = _set_branches(tree)
        if scope is None:
            first = branches[0].this if isinstance(branches[0], exp.Subquery) else branches[0]
            scope = _Scope(fk_tables=frozenset(_from_tables(first)))
        shape = self._select(branches[-1], scope)
        for branch, op in zip(reversed(branches[:-1]), reversed(ops)):
            shape = Shape(**{**self._select(branch, scope).__dict__, "iuen": (op, shape)})
        return shape

    def _select(self, select: exp.Expression, scope: _Scope) -> Shape:
        if isinstance(select, exp.Subquery):
            select = select.this
        if not isinstance(select, exp.Select):
            raise TypeError(f"not a SELECT: {type(select).__name__}")
        nested = scope.nested
        aliases: dict[str, str] = {}
        tables: list[str] = []
        table_units: list[Any] = []
        for source in _from_sources(select):
            if isinstance(source, exp.Table):
                tables.append(source.name.lower())
                table_units.append(source.name.lower())
                if source.alias:
                    aliases[source.alias.lower()] = source.name.lower()
            elif isinstance(source, exp.Subquery):
                table_units.append(("sub", self.shape(source.this, NESTED)))
        joins: list[Any] = []
        if nested:
            for join in select.args.get("joins") or []:
                on_conds, _ = _conditions(join.args.get("on"))
                joins.extend(self.condition(c, aliases, tables, scope) for c in on_conds)
        where_conds, connectors = _conditions(select.args["where"].this if select.args.get("where") else None)
        having_conds, _ = _conditions(select.args["having"].this if select.args.get("having") else None)
        group = select.args.get("group")
        order = select.args.get("order")
        order_units = _ordered([self.unit(o.this, aliases, tables, scope) for o in order.expressions],
                               nested) if order else ()
        direction = ("desc" if order and any(o.args.get("desc") for o in order.expressions) else "asc") if order else ""
        limit = select.args.get("limit")
        limit_value = limit is not None
        if nested and limit is not None:
            limit_value = limit.expression.sql(dialect="sqlite") if limit.expression is not None else True
        return Shape(
            select=_ordered([self.unit(e, aliases, tables, scope) for e in select.expressions], nested),
            tables=_ordered(table_units, nested),
            where=_ordered([self.condition(c, aliases, tables, scope) for c in where_conds], nested),
            where_connectors=tuple(connectors) if nested else tuple(sorted(connectors)),
            group=_ordered([self.unit(g, aliases, tables, scope) for g in (group.expressions if group else [])],
                           nested),
            having=_ordered([self.condition(c, aliases, tables, scope) for c in having_conds], nested),
            order=(order_units, direction),
            limit=limit_value,
            iuen=None,
            distinct=bool(select.args.get("distinct")) if nested else None,
            joins=tuple(repr(j) for j in joins),
        )


def _from_sources(select: exp.Select) -> list[exp.Expression]:
    """What a SELECT's FROM and JOINs read: tables and subqueries, in order."""
    from_ = select.args.get("from") or select.args.get("from_")
    return ([from_.this] if from_ is not None else []) + [j.this for j in select.args.get("joins") or []]


def _from_tables(select: exp.Expression) -> list[str]:
    """Names of the tables (not subqueries) in a SELECT's FROM and JOINs."""
    if not isinstance(select, exp.Select):
        return []
    return [s.name.lower() for s in _from_sources(select) if isinstance(s, exp.Table)]


def official_parser_fails(tree: exp.Expression) -> bool:
    """Constructs the official `process_sql.py` rejects (its `get_sql` raises, the pair scores 0)."""
    # (sqlglot itself writes `ON TRUE` for a JOIN without ON, which the official reads fine)
    if any(b.arg_key != "on" for b in tree.find_all(exp.Boolean)):
        return True
    # it knows only a bare JOIN: INNER / LEFT / CROSS / NATURAL JOIN and USING (...) make it fail
    if any(j.args.get("side") or j.args.get("kind") or j.args.get("method") or j.args.get("using")
           for j in tree.find_all(exp.Join)):
        return True
    return any(isinstance(e, exp.Alias) for select in tree.find_all(exp.Select) for e in select.expressions)


def query_shape(sql: str, schema: Schema) -> Shape | None:
    names = schema.table_names + [c.name for t in schema.tables for c in t.columns]
    tree = parse_sqlite(fix_double_quoted_strings(sql, names))
    if tree is None or official_parser_fails(tree):
        return None
    try:
        return _Builder(_Resolver(schema)).shape(tree)
    except (AttributeError, KeyError, TypeError):
        return None


def exact_set_match(gold: str, prediction: str, schema: Schema) -> bool:
    g, p = query_shape(gold, schema), query_shape(prediction, schema)
    return g is not None and g == p
