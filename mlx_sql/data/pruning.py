"""Which tables of a schema go into a prompt.

Training: the tables the gold query reads, plus a few distractors so the model
still learns to choose. Inference: no gold query, so tables are ranked by word
overlap with the question and cut to a token budget.
"""

from __future__ import annotations

import random
import re
from typing import Callable

from mlx_sql.data.schema import Schema, render_schema
from mlx_sql.sqltools import tables_in_query

TokenCounter = Callable[[str], int]


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token for English and SQL)."""
    return len(text) // 4 + 1


def prune_for_training(schema: Schema, gold_sql: str, distractors: int, rng: random.Random) -> Schema:
    gold = tables_in_query(gold_sql, schema.table_names)
    if not gold:
        return schema
    others = [t for t in schema.table_names if t not in gold]
    extra = rng.sample(others, min(distractors, len(others)))
    return schema.subset(gold | set(extra))


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _words(text: str) -> set[str]:
    return {_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower().replace("_", " ")) if len(w) > 1}


def rank_tables(schema: Schema, question: str) -> list[str]:
    """Tables ordered by how much of their name (counted double) and columns the question mentions."""
    q = _words(question)
    scores = []
    for pos, table in enumerate(schema.tables):
        name_hits = len(q & _words(table.name))
        col_hits = len(q & set().union(*(_words(c.name) for c in table.columns))) if table.columns else 0
        scores.append((-(2 * name_hits + col_hits), pos, table.name))
    return [name for _, _, name in sorted(scores)]


def prune_for_inference(schema: Schema, question: str, budget: int, fmt: str = "ddl", sample_rows: int = 0,
                        count_tokens: TokenCounter = approx_tokens) -> Schema:
    """Keep the best-ranked tables whose rendering fits `budget` tokens (always at least one)."""
    kept: list[str] = []
    for name in rank_tables(schema, question):
        trial = schema.subset(kept + [name])
        if kept and count_tokens(render_schema(trial, fmt, sample_rows)) > budget:
            continue
        kept.append(name)
    return schema.subset(kept)
