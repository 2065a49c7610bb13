"""Spider's hardness levels (easy / medium / hard / extra), computed on sqlglot's tree.

Follows the published rules of Spider's evaluation.py (`eval_hardness`): component1
counts WHERE, GROUP BY, ORDER BY, LIMIT, joins, ORs and LIKEs; component2 counts nested
queries (in conditions, and the right side of INTERSECT / UNION / EXCEPT); "others"
counts multiple aggregates, select columns, where conditions and group-by columns.
Spider's aggregate count includes negated conditions (its cond units store NOT where
val units store the aggregate); that quirk is kept so levels agree with the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from mlx_sql.sqltools import parse_sqlite

LEVELS = ("easy", "medium", "hard", "extra")
AGGREGATES = (exp.Count, exp.Sum, exp.Avg, exp.Min, exp.Max)
COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.In, exp.Like, exp.Between, exp.Is, exp.Not)


@dataclass
class _Select:
    select: exp.Select
    right: exp.Expression | None  # the other side of a set operation


def _split_set_operation(tree: exp.Expression) -> _Select | None:
    if isinstance(tree, exp.SetOperation):
        left = tree.this
        while isinstance(left, exp.SetOperation):
            left = left.this
        return _Select(left, tree.expression) if isinstance(left, exp.Select) else None
    if isinstance(tree, exp.Subquery):
        return _split_set_operation(tree.this)
    return _Select(tree, None) if isinstance(tree, exp.Select) else None


def _conditions(node: exp.Expression | None) -> tuple[list[exp.Expression], int]:
    """Flatten AND/OR into (conditions, number of ORs), as Spider's parser lists them."""
    if node is None:
        return [], 0
    if isinstance(node, exp.Paren):
        return _conditions(node.this)
    if isinstance(node, (exp.And, exp.Or)):
        left, lo = _conditions(node.this)
        right, ro = _conditions(node.expression)
        return left + right, lo + ro + isinstance(node, exp.Or)
    return [node], 0


def _is_negated(cond: exp.Expression) -> bool:
    return isinstance(cond, exp.Not)


def _is_like(cond: exp.Expression) -> bool:
    inner = cond.this if isinstance(cond, exp.Not) else cond
    return isinstance(inner, exp.Like)


def _nested_in(cond: exp.Expression) -> int:
    """Subqueries directly used as a value of this condition (Spider's val1/val2 being a query)."""
    count = 0
    for sub in cond.find_all(exp.Select, exp.SetOperation):
        parent = sub.parent
        while parent is not None and parent is not cond and not isinstance(parent, (exp.Select, exp.SetOperation)):
            parent = parent.parent
        if parent is cond:  # outermost query inside the condition (a UNION in a subquery counts once)
            count += 1
    return count


def _has_agg(node: exp.Expression) -> bool:
    target = node.this if isinstance(node, (exp.Alias, exp.Ordered)) else node
    return isinstance(target, AGGREGATES)


def _components(select: exp.Select, right: exp.Expression | None) -> tuple[int, int, int]:
    where_conds, where_ors = _conditions(select.args.get("where").this if select.args.get("where") else None)
    having_conds, having_ors = _conditions(select.args.get("having").this if select.args.get("having") else None)
    joins = select.args.get("joins") or []
    join_conds, join_ors = [], 0
    for join in joins:
        conds, ors = _conditions(join.args.get("on"))
        join_conds += conds
        join_ors += ors
    group = select.args.get("group")
    group_cols = group.expressions if group else []
    order = select.args.get("order")
    order_items = order.expressions if order else []

    comp1 = bool(where_conds) + bool(group_cols) + bool(order_items) + bool(select.args.get("limit"))
    comp1 += len(joins)  # tables in FROM beyond the first
    comp1 += where_ors + having_ors + join_ors
    comp1 += sum(_is_like(c) for c in join_conds + where_conds + having_conds)

    comp2 = sum(_nested_in(c) for c in join_conds + where_conds + having_conds) + (right is not None)

    aggs = sum(_has_agg(e) for e in select.expressions)
    aggs += sum(_is_negated(c) for c in where_conds + having_conds)
    aggs += sum(_has_agg(e) for e in group_cols) + sum(_has_agg(e) for e in order_items)
    others = (aggs > 1) + (len(select.expressions) > 1) + (len(where_conds) > 1) + (len(group_cols) > 1)
    return comp1, comp2, others


def hardness(sql: str) -> str:
    """Spider's level for a (gold) query; 'extra' for SQL that does not parse."""
    tree = parse_sqlite(sql)
    parts = _split_set_operation(tree) if tree is not None else None
    if parts is None:
        return "extra"
    return level(*_components(parts.select, parts.right))


def level(c1: int, c2: int, others: int) -> str:
    """Spider's thresholds on (component1, component2, others) counts."""
    if c1 <= 1 and others == 0 and c2 == 0:
        return "easy"
    if (others <= 2 and c1 <= 1 and c2 == 0) or (c1 <= 2 and others < 2 and c2 == 0):
        return "medium"
    if (others > 2 and c1 <= 2 and c2 == 0) or (2 < c1 <= 3 and others <= 2 and c2 == 0) or \
            (c1 <= 1 and others == 0 and c2 <= 1):
        return "hard"
    return "extra"
