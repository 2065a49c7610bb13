"""Which tables of a schema go into a prompt.

Inference has no gold query: the whole schema when it fits a token budget, else the
tables ranked by word overlap with the question, cut to the budget. Training shows
either the same (`data.train_schema = "inference"`, with the gold tables always
kept, so a target never names a table the prompt hides), or only the tables the
gold query reads plus a few distractors (`"gold"`).
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Collection

from mlx_sql.data.schema import Schema, render_schema
from mlx_sql.sqltools import tables_in_query

TokenCounter = Callable[[str], int]


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token for English and SQL)."""
    return len(text) // 4 + 1


def token_counter(tokenizer: Any) -> TokenCounter:
    """The model's own count where there is a tokenizer (Spider schemas with sample rows run ~1.3x the estimate)."""
    if tokenizer is None:
        return approx_tokens
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


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
                        count_tokens: TokenCounter = approx_tokens, required: Collection[str] = ()) -> Schema:
    """Keep the `required` tables, then the best-ranked others whose rendering fits `budget` tokens
    (always at least one table)."""
    must = {n.lower() for n in required}
    kept: list[str] = [n for n in schema.table_names if n.lower() in must]
    for name in rank_tables(schema, question):
        if name.lower() in must:
            continue
        trial = schema.subset(kept + [name])
        if kept and count_tokens(render_schema(trial, fmt, sample_rows)) > budget:
            continue
        kept.append(name)
    return schema.subset(kept)


def whole_schema(schema: Schema, cfg: Any, count_tokens: TokenCounter) -> tuple[str, bool]:
    """The whole schema rendered, and whether it goes into prompts as it is (always, without pruning)."""
    rendered = render_schema(schema, cfg.schema_format, cfg.sample_rows)
    return rendered, not cfg.prune or count_tokens(rendered) <= cfg.schema_token_budget


def prompt_schema(schema: Schema, question: str, cfg: Any, count_tokens: TokenCounter,
                  whole: tuple[str, bool] | None = None, required: Collection[str] = ()) -> str:
    """The schema text a prompt shows: whole when it fits `cfg.schema_token_budget` (so a database's
    questions share it), else the `required` and best-matching tables, cut to the budget. `whole` is
    the whole rendering and whether it fits, when the caller already has it; `cfg` a DataConfig."""
    text, fits = whole if whole is not None else whole_schema(schema, cfg, count_tokens)
    if fits:
        return text
    pruned = prune_for_inference(schema, question, cfg.schema_token_budget, cfg.schema_format, cfg.sample_rows,
                                 count_tokens, required)
    return render_schema(pruned, cfg.schema_format, cfg.sample_rows)


class PromptSchemas:
    """`prompt_schema` for many questions: each database's whole schema is rendered and measured once."""

    def __init__(self, cfg: Any, count_tokens: TokenCounter):
        self.cfg, self.count_tokens = cfg, count_tokens
        self._whole: dict[str, tuple[str, bool]] = {}

    def values(self, schema: Schema, question: str) -> str:
        """The values block for `question`: the database's values it names (`data.question_values`; "" when 0)."""
        from mlx_sql.data.values import values_block

        return values_block(schema.db_path, question, getattr(self.cfg, "question_values", 0))

    def text(self, schema: Schema, question: str, required: Collection[str] = ()) -> str:
        if schema.db_id not in self._whole:
            self._whole[schema.db_id] = whole_schema(schema, self.cfg, self.count_tokens)
        return prompt_schema(schema, question, self.cfg, self.count_tokens, self._whole[schema.db_id], required)
