"""`mlx-sql synth RECIPE`: which databases, which teacher, which folder; then the pipeline.

Databases are the recipe's own (`[data] sqlite`, a file or a folder) or a benchmark folder's databases of
one split (`[data] path`, `synth.split`): only their schemas and contents are read, never their questions.
The teacher is `synth.teacher`'s model (a recipe file) or the recipe's own, through any backend the
evaluator has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mlx_sql.data.own import find_databases, read_schema
from mlx_sql.data.schema import Schema
from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import check_writable
from mlx_sql.recipe import Recipe, load_recipe
from mlx_sql.synth.pipeline import SynthReport, Synthesizer, load_profiles, synthesize

RUN_FILES = ("candidates.jsonl", "pairs.jsonl", "report.json", "settings.json")


def synth_databases(recipe: Recipe) -> tuple[dict[str, Schema], dict[str, Path]]:
    """(schemas, files) of the databases to synthesize on, filtered by synth.databases."""
    d, wanted = recipe.data, recipe.synth.databases
    if d.sqlite:
        files = find_databases(d.sqlite)
        schemas = {db_id: read_schema(db_id, path) for db_id, path in files.items() if not wanted or db_id in wanted}
    elif d.path:
        from mlx_sql.data.benchmark import load_benchmark

        bench = load_benchmark(d.path, d.layout)
        split = recipe.synth.split
        ids = [db_id for db_id in bench.tables_json(split) if bench.has_database(db_id, split)]
        schemas = {db_id: bench.schema(db_id, split) for db_id in ids if not wanted or db_id in wanted}
        files = {db_id: bench.db_path(db_id, split) for db_id in schemas}
    else:
        raise MlxSqlError("synth needs databases: [data] sqlite (a file or folder) or [data] path (a benchmark "
                          "folder)", recipe.source)
    unknown = sorted(set(wanted) - set(schemas))
    if unknown:
        raise MlxSqlError(f"synth.databases: '{unknown[0]}' is not one of the databases", recipe.source)
    if not schemas:
        raise MlxSqlError("no databases to synthesize on", recipe.source)
    return schemas, {db_id: files[db_id] for db_id in schemas}


def teacher(recipe: Recipe) -> Any:
    """The backend that writes queries and questions, and answers them in the round trip."""
    from mlx_sql.eval.pipeline import make_backend

    cfg = load_recipe(recipe.synth.teacher, check_data=False) if recipe.synth.teacher else recipe
    return make_backend(cfg, None, recipe.synth.backend or recipe.eval.backend)


def prepare_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """A new run never mixes with an earlier one's files: continue it (--resume) or replace them (--overwrite)."""
    check_writable(out)
    ours = [out / name for name in RUN_FILES if (out / name).exists()]
    if resume and not (out / "candidates.jsonl").is_file():
        raise MlxSqlError("--resume: no synthesis run here to continue", out)
    if ours and not resume and not overwrite:
        raise MlxSqlError("already holds a synthesis run; --resume to continue it, or --overwrite to start again",
                          out)
    if overwrite and not resume:
        for path in ours:
            path.unlink()


def run_synthesis(recipe: Recipe, resume: bool = False, overwrite: bool = False, backend: Any = None,
                  on_start: Callable[[int], None] = lambda total: None,
                  on_kept: Callable[[str, int], None] = lambda db, n: None) -> SynthReport:
    """Synthesize pairs for the recipe's databases into recipe.synth_dir (see `pipeline`)."""
    from mlx_sql.data.pruning import token_counter
    from mlx_sql.sandbox import Executor

    out = recipe.synth_dir
    prepare_folder(out, resume, overwrite)
    schemas, files = synth_databases(recipe)
    profiles = load_profiles(recipe, schemas, files)
    writer = backend or teacher(recipe)
    on_start(len(profiles) * recipe.synth.per_db)
    with Executor(workers=1, timeout=recipe.eval.timeout) as executor:
        synthesizer = Synthesizer(recipe, writer, writer, lambda path, sql: executor.run(path, sql),
                                  token_counter(getattr(writer, "tokenizer", None)), out)
        return synthesize(recipe, profiles, synthesizer, resume, on_kept)
