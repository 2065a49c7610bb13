"""`mlx-sql ask`: a question about your own SQLite database, answered with SQL and its rows.

Everything is the evaluator's: the schema is read from the database's catalogue and rendered and
pruned as in training, the SQL comes from the same backends (MLX, llama.cpp, Ollama, any
OpenAI-compatible server) and the same extraction, it is checked by sqlglot and run in the same
sandbox (read-only connection, no writes / ATTACH / pragmas / extensions, a timeout, a row cap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_sql.data.benchmark import Question
from mlx_sql.data.examples import make_record
from mlx_sql.data.own import find_databases, read_schema
from mlx_sql.data.pruning import PromptSchemas, token_counter
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.quoting import sql_reader
from mlx_sql.eval.retry import Say, quiet, retry_until_it_runs
from mlx_sql.eval.vote import vote_on_record
from mlx_sql.recipe import Recipe
from mlx_sql.sandbox import Executor
from mlx_sql.sqlite import reading
from mlx_sql.sqltools import parse_sqlite

ROW_CAP = 10_000


def _plain(value: Any) -> Any:
    """A cell as JSON can carry it (blobs as a short note)."""
    return f"<{len(value)} bytes>" if isinstance(value, (bytes, bytearray, memoryview)) else value


@dataclass
class Answer:
    question: str
    sql: str
    raw: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    error: str | None = None  # why there are no rows: unparseable SQL or SQLite's error
    candidates: list[dict[str, Any]] = field(default_factory=list)  # with result voting: each tried, its group
    truncated: bool = False  # the query returns more than ROW_CAP rows: these are the first ROW_CAP

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def agreement(self) -> tuple[int, int] | None:
        """(candidates that returned this answer's result, candidates tried) with result voting, else None: how
        sure the vote was — 15 of 16 is not 4 of 16."""
        if not self.candidates:
            return None
        won = next((c for c in self.candidates if c["sql"] == self.sql and c["group"] is not None), None)
        agreeing = 0 if won is None else sum(c["group"] == won["group"] for c in self.candidates)
        return agreeing, len(self.candidates)

    def to_json(self) -> dict[str, Any]:
        return {"question": self.question, "sql": self.sql, "columns": self.columns, "rows": self.rows,
                "row_count": len(self.rows), "truncated": self.truncated, "error": self.error,
                **({"candidates": self.candidates, "agreement": list(self.agreement or ())} if self.candidates else {})}


class Asker:
    """One database, one model: ask as many questions as you like."""

    def __init__(self, recipe: Recipe, db: str | Path, backend: str, adapter: Path | None = None,
                 model_name: str | None = None, timeout: float = 10.0):
        from mlx_sql.eval.pipeline import backend_model, make_backend

        (self.db_id, self.db_path), *more = find_databases(db).items()
        if more or Path(db).is_dir():
            raise MlxSqlError("ask needs one database file, not a folder", db)
        self.schema = read_schema(self.db_id, self.db_path)
        if not self.schema.tables:
            raise MlxSqlError("the database has no tables", self.db_path)
        self.recipe = recipe
        model_name = backend_model(recipe, adapter, backend, model_name)
        self.backend = make_backend(recipe, adapter if backend == "mlx" else None, backend, model_name)
        tokenizer = getattr(self.backend, "tokenizer", None)
        self.schemas = PromptSchemas(recipe.data, token_counter(tokenizer))  # one database: rendered once
        self.to_sql = sql_reader(self.schema)
        self.executor = Executor(workers=1, timeout=timeout, max_rows=ROW_CAP)

    def prompt(self, question: str) -> dict[str, Any]:
        with reading(self.db_path):  # sample rows and matching values are read from the database
            text = self.schemas.text(self.schema, question)
            values = self.schemas.values(self.schema, question)
        return make_record(Question(self.db_id, question, ""), text, self.recipe.data.instruction, values)

    def ask(self, question: str, execute: bool = True, say: Say = quiet) -> Answer:
        """The model's SQL for `question`, checked, run and (with the recipe's `eval.samples`) voted on; `say`
        hears each stage as it starts — answering takes seconds to tens of seconds on a laptop's CPU."""
        question = question.strip()
        if not question:
            raise MlxSqlError("empty question")
        say("reading the schema")
        record = self.prompt(question)
        say("writing the SQL")
        raw = self.backend.generate(record)
        sql = self.to_sql(raw)
        run = lambda query: self.executor.run(self.db_path, query)  # noqa: E731
        result, candidates = None, []
        if execute and self.recipe.eval.samples > 1:  # several answers, voted by what they return
            e = self.recipe.eval
            voted = vote_on_record(self.backend, record, sql, run, e.samples, e.retry_temperature, e.retries,
                                   e.vote_prefer_nonempty, e.vote_early_stop, say, self.to_sql)
            sql, result, candidates = voted.sql, voted.result, voted.to_json()
        elif execute and self.recipe.eval.retries:  # the first of the greedy answer and its samples that runs
            retried = retry_until_it_runs(self.backend.generate, record, sql, run, self.recipe.eval.retries,
                                          self.recipe.eval.retry_temperature, say, self.to_sql)
            sql, result = retried.sql, retried.result
        if not sql or parse_sqlite(sql) is None:
            return Answer(question, sql, raw, error="the model's answer is not a SQLite query", candidates=candidates)
        if not execute:
            return Answer(question, sql, raw)
        return self._answer(question, sql, raw, result or run(sql), candidates)

    def run_sql(self, sql: str, question: str = "") -> Answer:
        """Run SQL a person wrote or edited, with the same checks and sandbox as the model's."""
        sql = sql.strip()
        if not sql:
            raise MlxSqlError("empty SQL")
        if parse_sqlite(sql) is None:
            return Answer(question, sql, sql, error="not a SQLite query (it does not parse)")
        return self._answer(question, sql, sql, self.executor.run(self.db_path, sql), [])

    @staticmethod
    def _answer(question: str, sql: str, raw: str, result: Any, candidates: list[dict[str, Any]]) -> Answer:
        if not result.ok and not result.capped:
            return Answer(question, sql, raw, error=f"SQLite: {result.error}", candidates=candidates)
        return Answer(question, sql, raw, list(result.columns), [list(r) for r in result.rows], candidates=candidates,
                      truncated=result.capped)

    def describe(self, values: int = 3) -> dict[str, Any]:
        """The database for a person to browse: tables, columns, keys, and a few rows of each table."""
        tables = []
        with reading(self.db_path):
            for table in self.schema.tables:
                headers, rows = self.schema.sample_rows(table.name, values)
                tables.append({"name": table.name,
                               "columns": [{"name": c.name, "type": c.type, "primary_key": c.primary_key}
                                           for c in table.columns],
                               "sample": {"columns": list(headers), "rows": [[_plain(v) for v in r] for r in rows]}})
        return {"database": self.db_id, "tables": tables,
                "foreign_keys": [fk.arrow() for fk in self.schema.foreign_keys]}

    def close(self) -> None:
        self.executor.close(kill=True)

    def __enter__(self) -> "Asker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ask_recipe(adapter: Path | None, recipe_file: Path | None, gguf: Path | None,
               overrides: list[str]) -> tuple[Recipe, str]:
    """The recipe that describes the model (and how its prompts look), and the backend it implies."""
    from mlx_sql.recipe import DataConfig, ModelConfig, load_recipe

    given = [x for x in (adapter, recipe_file, gguf) if x is not None]
    if len(given) != 1:
        raise MlxSqlError("ask: give one of --adapter DIR, --recipe FILE or --gguf FILE")
    if gguf is not None:
        if not gguf.is_file():
            raise MlxSqlError("GGUF file not found", gguf)
        return Recipe("ask", ModelConfig(gguf=str(gguf)), DataConfig()), "llamacpp"
    if adapter is not None and not (adapter / "recipe.toml").is_file():
        raise MlxSqlError("not a trained adapter folder (no recipe.toml)", adapter)
    recipe = load_recipe(recipe_file or adapter / "recipe.toml", overrides, check_data=False)
    return recipe, recipe.eval.backend
