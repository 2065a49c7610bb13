"""Do two result sets answer the question the same way? (the test-suite evaluator's rules)

Rows are compared as multisets; order matters only when the gold query has an
ORDER BY; the prediction's columns may come in another order when one permutation
of them makes the rows match; NULLs equal NULLs; 1 equals 1.0.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Sequence

Row = tuple
MAX_PERMUTATION_COLUMNS = 8


def _norm(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _rows(rows: Sequence[Row]) -> list[Row]:
    return [tuple(_norm(v) for v in row) for row in rows]


def _same(gold: list[Row], pred: list[Row], ordered: bool) -> bool:
    return gold == pred if ordered else Counter(gold) == Counter(pred)


def _candidate_permutations(gold: list[Row], pred: list[Row], width: int):
    """Column orders worth trying: each gold column may map only to a pred column with the same values."""
    gold_cols = [Counter(r[i] for r in gold) for i in range(width)]
    pred_cols = [Counter(r[i] for r in pred) for i in range(width)]
    options = [[j for j in range(width) if pred_cols[j] == gold_cols[i]] for i in range(width)]
    if any(not o for o in options):
        return
    for perm in itertools.product(*options):
        if len(set(perm)) == width:
            yield perm


def results_match(gold: Sequence[Row], pred: Sequence[Row], order_matters: bool) -> bool:
    gold_rows, pred_rows = _rows(gold), _rows(pred)
    if len(gold_rows) != len(pred_rows):
        return False
    if not gold_rows:
        return True
    width = len(gold_rows[0])
    if any(len(r) != width for r in pred_rows):
        return False
    if _same(gold_rows, pred_rows, order_matters):
        return True
    if width > MAX_PERMUTATION_COLUMNS:
        return False
    for perm in _candidate_permutations(gold_rows, pred_rows, width):
        permuted = [tuple(r[j] for j in perm) for r in pred_rows]
        if _same(gold_rows, permuted, order_matters):
            return True
    return False


def result_overlap(gold: Sequence[Row], pred: Sequence[Row]) -> float:
    """How much of the gold result a wrong one holds, in [0, 1]: the mean of cell precision and cell recall
    (each result's values as a multiset, compared as `results_match` compares them) and the row counts' ratio.
    A dense signal for training (partial credit), never a score: only `results_match` decides right."""
    gold_cells = Counter(v for row in _rows(gold) for v in row)
    pred_cells = Counter(v for row in _rows(pred) for v in row)
    if not gold_cells or not pred_cells:
        return 1.0 if not gold_cells and not pred_cells else 0.0
    shared = sum((gold_cells & pred_cells).values())
    precision, recall = shared / sum(pred_cells.values()), shared / sum(gold_cells.values())
    rows = min(len(gold), len(pred)) / max(len(gold), len(pred))
    return (precision + recall + rows) / 3
