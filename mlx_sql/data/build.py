"""`mlx-sql data build`: benchmark questions → schema-injected train/valid JSONL."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from mlx_sql.data.benchmark import Benchmark, Question, recipe_benchmark
from mlx_sql.data.examples import RECORD_KEYS, make_record, render_prompt_completion
from mlx_sql.data.jsonl import iter_jsonl
from mlx_sql.data.own_answers import OwnAnswers, load_own_answers, load_sometimes_right
from mlx_sql.data.hub import load_hf_questions
from mlx_sql.data.pruning import (PromptSchemas, TokenCounter, approx_tokens, prompt_schema, prune_for_training,
                                  token_counter)
from mlx_sql.data.schema import render_schema
from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import write_jsonl
from mlx_sql.recipe import DataConfig, Recipe
from mlx_sql.sqltools import tables_in_query

PERCENTILES = (50, 90, 99, 100)


@dataclass
class LengthStats:
    unit: str
    prompt: dict[str, int] = field(default_factory=dict)
    completion: dict[str, int] = field(default_factory=dict)


@dataclass
class BuildReport:
    out_dir: Path
    train: int
    valid: int
    skipped_missing_db: dict[str, int]
    lengths: LengthStats
    failed_gold: list[str] = field(default_factory=list)  # own databases: "file:line: error" per pair left out
    own_targets: int = 0  # training targets that are the model's own SQL (data.own_answers)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_missing_db.values())


def _percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {("max" if p == 100 else f"p{p}"): int(np.percentile(arr, p)) for p in PERCENTILES}


def training_questions(bench: Benchmark, cfg: DataConfig) -> list[Question]:
    if cfg.hf_dataset:
        return load_hf_questions(cfg.hf_dataset, cfg.train_split)
    if cfg.pairs and cfg.path:  # pairs on the benchmark's databases (mlx-sql synth's) instead of its questions
        from mlx_sql.data.own import check_gold, read_pairs

        files = {db_id: bench.db_path(db_id, cfg.train_split) for db_id in bench.tables_json(cfg.train_split)}
        pairs, failed = check_gold(read_pairs(cfg.pairs, files), files, Path(cfg.pairs))
        if not pairs:
            raise MlxSqlError(f"none of the pairs' queries ran; first: {failed[0]}", cfg.pairs)
        return [Question(p.db_id, p.question, p.sql, index=i) for i, p in enumerate(pairs)]
    return bench.questions(cfg.train_split)


def split_by_database(questions: list[Question], cfg: DataConfig) -> tuple[list[Question], list[Question]]:
    """Whole databases (seeded order) go to validation until they hold `valid_fraction` of the questions;
    `max_examples` then caps the training questions. Validation schemas are never seen in training."""
    by_db: dict[str, list[Question]] = {}
    for q in questions:
        by_db.setdefault(q.db_id, []).append(q)
    order = sorted(by_db)
    random.Random(f"{cfg.seed}:valid-databases").shuffle(order)
    want = math.ceil(len(questions) * cfg.valid_fraction) if cfg.valid_fraction > 0 else 0
    valid: list[Question] = []
    while order and len(valid) < want and len(order) > 1:
        valid.extend(by_db[order.pop()])
    train = [q for db_id in order for q in by_db[db_id]]
    random.Random(cfg.seed).shuffle(train)
    return train[: cfg.max_examples or len(train)], valid


def split_questions(questions: list[Question], cfg: DataConfig) -> tuple[list[Question], list[Question]]:
    """Seeded shuffle, optional cap, then the first `valid_fraction` become the validation set."""
    if cfg.valid_by == "database":
        return split_by_database(questions, cfg)
    order = list(questions)
    random.Random(cfg.seed).shuffle(order)
    if cfg.max_examples:
        order = order[: cfg.max_examples]
    n_valid = math.ceil(len(order) * cfg.valid_fraction) if cfg.valid_fraction > 0 else 0
    if n_valid >= len(order):
        n_valid = max(0, len(order) - 1)
    return order[n_valid:], order[:n_valid]


def database_tables(bench: Benchmark, questions: list[Question], cfg: DataConfig, split: str) -> dict[str, set[str]]:
    """Per database: every table its questions read, plus distractors — one schema per database."""
    gold: dict[str, set[str]] = {}
    for q in questions:
        names = bench.schema(q.db_id, split).table_names
        gold.setdefault(q.db_id, set()).update(tables_in_query(q.query, names) or names)
    out = {}
    for db_id, tables in gold.items():
        others = sorted(set(bench.schema(db_id, split).table_names) - tables)
        rng = random.Random(f"{cfg.seed}:{db_id}")
        out[db_id] = tables | set(rng.sample(others, min(cfg.distractor_tables, len(others))))
    return out


def database_schemas(bench: Benchmark, questions: list[Question], cfg: DataConfig, split: str,
                     count_tokens: TokenCounter = approx_tokens) -> dict[str, str]:
    """Per database, the one schema text its questions share in schema-shared batches. With
    `train_schema = "inference"`: the whole schema where inference shows it whole, else every table
    the database's questions read and then those that best match them, cut to the budget."""
    if not cfg.prune:
        return {db_id: render_schema(bench.schema(db_id, split), cfg.schema_format, cfg.sample_rows)
                for db_id in {q.db_id for q in questions}}
    if cfg.train_schema == "gold":
        return {db_id: render_schema(bench.schema(db_id, split).subset(tables), cfg.schema_format, cfg.sample_rows)
                for db_id, tables in database_tables(bench, questions, cfg, split).items()}
    by_db: dict[str, list[Question]] = {}
    for q in questions:
        by_db.setdefault(q.db_id, []).append(q)
    out = {}
    for db_id, group in by_db.items():
        schema = bench.schema(db_id, split)
        gold = set().union(*(tables_in_query(q.query, schema.table_names) for q in group))
        out[db_id] = prompt_schema(schema, " ".join(q.question for q in group), cfg, count_tokens, required=gold)
    return out


def group_by_database(questions: list[Question], seed: int) -> list[Question]:
    """Databases in a shuffled order, each database's questions together and shuffled."""
    rng = random.Random(f"{seed}:group")
    by_db: dict[str, list[Question]] = {}
    for q in questions:
        by_db.setdefault(q.db_id, []).append(q)
    order = sorted(by_db)
    rng.shuffle(order)
    out: list[Question] = []
    for db_id in order:
        group = by_db[db_id]
        rng.shuffle(group)
        out.extend(group)
    return out


def records_for(bench: Benchmark, questions: list[Question], cfg: DataConfig, split: str,
                on_record: Callable[[dict[str, Any]], None] | None = None,
                shared: dict[str, str] | None = None, own: OwnAnswers | None = None,
                count_tokens: TokenCounter = approx_tokens) -> Iterator[dict[str, Any]]:
    """Records in order; `shared`: each database's one schema text (`database_schemas`); with `own`, a
    question the model already answers correctly keeps its own SQL."""
    schemas = PromptSchemas(cfg, count_tokens)
    for q in questions:
        schema = bench.schema(q.db_id, split)
        if shared is not None:
            text = shared[q.db_id]
        elif cfg.prune and cfg.train_schema == "inference":
            text = schemas.text(schema, q.question, required=tables_in_query(q.query, schema.table_names))
        else:
            if cfg.prune:
                rng = random.Random(f"{cfg.seed}:{q.db_id}:{q.index}")
                schema = prune_for_training(schema, q.query, cfg.distractor_tables, rng)
            text = render_schema(schema, cfg.schema_format, cfg.sample_rows)
        record = make_record(q, text, cfg.instruction, schemas.values(bench.schema(q.db_id, split), q.question))
        if own and (q.db_id, q.question) in own:
            record["output"] = own[(q.db_id, q.question)]
        if on_record:
            on_record(record)
        yield record


def build_from_train_file(recipe: Recipe) -> BuildReport:
    """A ready {instruction, input, output} JSONL: validated line by line, then split into train/valid."""
    cfg = recipe.data
    rng = random.Random(cfg.seed)
    records = [r for _, r in iter_jsonl(cfg.train_file, RECORD_KEYS)]
    if not records:
        raise MlxSqlError("no records to train on: the file is empty", cfg.train_file)
    if cfg.max_examples:
        records = records[: cfg.max_examples]
    valid_ids = set(rng.sample(range(len(records)), min(len(records) - 1, math.ceil(len(records) * cfg.valid_fraction))))
    out = recipe.data_dir
    n_train = write_jsonl(out / "train.jsonl", (r for i, r in enumerate(records) if i not in valid_ids))
    n_valid = write_jsonl(out / "valid.jsonl", (r for i, r in enumerate(records) if i in valid_ids))
    return BuildReport(out, n_train, n_valid, {}, LengthStats("records"))


def build_dataset(recipe: Recipe, tokenizer: Any = None, advance: Callable[[], None] | None = None,
                  on_total: Callable[[int], None] | None = None, strict: bool = False) -> BuildReport:
    """Write train.jsonl and valid.jsonl for the recipe; each file appears only when complete."""
    cfg = recipe.data
    if cfg.train_file:
        return build_from_train_file(recipe)
    bench, own = recipe_benchmark(recipe, strict)
    split = cfg.train_split
    questions = training_questions(bench, cfg)
    missing: Counter[str] = Counter(q.db_id for q in questions if not bench.has_database(q.db_id, split))
    usable = [q for q in questions if q.db_id not in missing]
    if not usable:
        why = (f"the databases of all {len(questions)} questions are missing (e.g. "
               f"{bench.db_path(questions[0].db_id, split)})" if questions else "the split has no questions")
        raise MlxSqlError(f"no training examples to build: {why}", bench.root)
    train, valid = split_questions(usable, cfg)
    if cfg.own_answers_only and not cfg.own_answers:
        raise MlxSqlError("data.own_answers_only trains on the model's own correct answers: set data.own_answers "
                          "to an evaluation folder of the train split too")
    answers = load_own_answers(Path(cfg.own_answers), split, cfg.own_answers_hardness) if cfg.own_answers else None
    own_targets = sum((q.db_id, q.question) in answers for q in train) if answers else 0
    if answers is not None and not own_targets:
        raise MlxSqlError(f"none of the {len(train)} training questions is among its {len(answers)} correct "
                          "answers (was it evaluated on other databases?)", cfg.own_answers)
    if cfg.own_answers_only:  # rejection-sampling finetuning: no gold-style target at all
        train = [q for q in train if (q.db_id, q.question) in answers]
    if cfg.sometimes_right:
        mixed = load_sometimes_right(Path(cfg.sometimes_right), split)
        train = [q for q in train if (q.db_id, q.question) in mixed]
        if not train:
            raise MlxSqlError(f"none of the training questions is among its {len(mixed)} answered right only "
                              "sometimes (was it evaluated on other questions?)", cfg.sometimes_right)
    if on_total:
        on_total(len(train) + len(valid))

    count = token_counter(tokenizer)
    prompt_lens: list[int] = []
    completion_lens: list[int] = []
    unit = "tokens" if tokenizer is not None else "approx. tokens (chars/4; no tokenizer)"

    def measure(record: dict[str, Any]) -> None:
        if tokenizer is not None:
            prompt, completion = render_prompt_completion(tokenizer, record)
            prompt_lens.append(len(tokenizer.encode(prompt, add_special_tokens=False)))
            completion_lens.append(len(tokenizer.encode(completion, add_special_tokens=False)))
        else:
            prompt_lens.append(len(record["instruction"] + record["input"]) // 4 + 1)
            completion_lens.append(len(record["output"]) // 4 + 1)
        if advance:
            advance()

    shared = None
    if recipe.train.batching == "schema_shared":
        # One schema per database, and each database's questions next to each other, so the trainer
        # can batch them and compute the schema once (see README, "Schema-shared batches").
        shared = database_schemas(bench, train + valid, cfg, split, count)
        train, valid = group_by_database(train, cfg.seed), group_by_database(valid, cfg.seed)
    out = recipe.data_dir
    n_train = write_jsonl(out / "train.jsonl", records_for(bench, train, cfg, split, measure, shared, answers, count))
    n_valid = write_jsonl(out / "valid.jsonl", records_for(bench, valid, cfg, split, measure, shared, None, count))
    return BuildReport(out, n_train, n_valid, dict(missing),
                       LengthStats(unit, _percentiles(prompt_lens), _percentiles(completion_lens)),
                       own.failed if own else [], own_targets)
