"""Spider- and BIRD-layout benchmarks on disk.

Spider: tables.json, train_spider.json (+ train_others.json), dev.json and
database/<db>/<db>.sqlite. BIRD: {train,dev}.json with `SQL` and `evidence`,
{train,dev}_tables.json and {train,dev}_databases/<db>/<db>.sqlite.
A database kept as a `<db>.sql` script (the bundled mini benchmark) is built
into its `.sqlite` on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_sql.data.schema import Schema, schema_from_tables_json
from mlx_sql.data.tables_json import write_tables_json_from_scripts
from mlx_sql.errors import MlxSqlError
from mlx_sql.sqlite import database_for_script

TABLES_KEYS = ("db_id", "table_names_original", "column_names_original", "column_types")


@dataclass(frozen=True)
class Question:
    db_id: str
    question: str
    query: str
    evidence: str = ""
    index: int = 0


@dataclass
class SplitFiles:
    questions: list[Path]
    tables: Path
    databases: Path


@dataclass
class Benchmark:
    root: Path
    layout: str
    splits: dict[str, SplitFiles]
    _tables: dict[Path, dict[str, dict[str, Any]]] = field(default_factory=dict, repr=False)
    _schemas: dict[tuple[str, str], Schema] = field(default_factory=dict, repr=False)

    def tables_json(self, split: str) -> dict[str, dict[str, Any]]:
        path = self._split(split).tables
        if path not in self._tables:
            self._tables[path] = read_tables_json(path)
        return self._tables[path]

    def _split(self, split: str) -> SplitFiles:
        if split not in self.splits:
            raise MlxSqlError(f"no '{split}' split here (have: {', '.join(self.splits)})", self.root)
        return self.splits[split]

    def db_path(self, db_id: str, split: str) -> Path:
        folder = self._split(split).databases / db_id
        sqlite_path = folder / f"{db_id}.sqlite"
        script = folder / f"{db_id}.sql"
        if not sqlite_path.is_file() and script.is_file():
            return database_for_script(script)
        return sqlite_path

    def has_database(self, db_id: str, split: str) -> bool:
        return self.db_path(db_id, split).is_file()

    def schema(self, db_id: str, split: str) -> Schema:
        key = (split, db_id)
        if key not in self._schemas:
            entry = self.tables_json(split).get(db_id)
            if entry is None:
                raise MlxSqlError(f"database '{db_id}' is not described in tables.json", self._split(split).tables)
            path = self.db_path(db_id, split)
            self._schemas[key] = schema_from_tables_json(entry, path if path.is_file() else None)
        return self._schemas[key]

    def questions(self, split: str) -> list[Question]:
        out: list[Question] = []
        for path in self._split(split).questions:
            out.extend(read_questions(path, start=len(out)))
        return out


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlxSqlError("file not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MlxSqlError(f"invalid JSON: {exc}", path) from None


def read_tables_json(path: Path) -> dict[str, dict[str, Any]]:
    """Validate a tables.json and index it by db_id."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise MlxSqlError(f"expected a list of databases, got {type(data).__name__}", path)
    out: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise MlxSqlError(f"entry {i}: expected an object, got {type(entry).__name__}", path)
        missing = [k for k in TABLES_KEYS if k not in entry]
        if missing:
            raise MlxSqlError(f"entry {i} (db_id {entry.get('db_id')!r}): missing '{missing[0]}'", path)
        n_cols, n_tables = len(entry["column_names_original"]), len(entry["table_names_original"])
        if len(entry["column_types"]) != n_cols:
            raise MlxSqlError(f"entry {i} (db_id {entry['db_id']!r}): {len(entry['column_types'])} column_types "
                              f"for {n_cols} columns", path)
        for col in entry["column_names_original"]:
            if not (isinstance(col, list) and len(col) == 2 and -1 <= col[0] < n_tables):
                raise MlxSqlError(f"entry {i} (db_id {entry['db_id']!r}): bad column {col!r}", path)
        for fk in entry.get("foreign_keys", []):
            if not (isinstance(fk, list) and len(fk) == 2 and all(0 <= c < n_cols for c in fk)):
                raise MlxSqlError(f"entry {i} (db_id {entry['db_id']!r}): bad foreign key {fk!r}", path)
        out[entry["db_id"]] = entry
    return out


def read_questions(path: Path, start: int = 0) -> list[Question]:
    """Read a Spider (`query`) or BIRD (`SQL`, `evidence`) question file."""
    data = _load_json(path)
    if not isinstance(data, list):
        raise MlxSqlError(f"expected a list of questions, got {type(data).__name__}", path)
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise MlxSqlError(f"entry {i}: expected an object", path)
        query = item.get("query", item.get("SQL"))
        for key, value in (("db_id", item.get("db_id")), ("question", item.get("question")), ("query", query)):
            if not isinstance(value, str):
                raise MlxSqlError(f"entry {i}: missing or non-string '{key}'", path)
        out.append(Question(item["db_id"], item["question"].strip(), query.strip(),
                            (item.get("evidence") or "").strip(), start + i))
    return out


def detect_layout(root: Path) -> str:
    if (root / "tables.json").is_file():
        return "spider"
    if (root / "dev_tables.json").is_file() or (root / "train_tables.json").is_file():
        return "bird"
    raise MlxSqlError("not a Spider or BIRD folder: no tables.json, dev_tables.json or train_tables.json", root)


def load_benchmark(root: str | Path, layout: str = "auto") -> Benchmark:
    root = Path(root)
    if not root.is_dir():
        raise MlxSqlError("benchmark folder not found", root)
    _materialize_tables_json(root)
    layout = detect_layout(root) if layout == "auto" else layout
    splits: dict[str, SplitFiles] = {}
    if layout == "spider":
        train = [p for p in (root / "train_spider.json", root / "train_others.json") if p.is_file()]
        if train:
            splits["train"] = SplitFiles(train, root / "tables.json", root / "database")
        if (root / "dev.json").is_file():
            splits["dev"] = SplitFiles([root / "dev.json"], root / "tables.json", root / "database")
    elif layout == "bird":
        for split in ("train", "dev"):
            if (root / f"{split}.json").is_file():
                splits[split] = SplitFiles([root / f"{split}.json"], root / f"{split}_tables.json",
                                           root / f"{split}_databases")
    else:
        raise MlxSqlError(f"unknown layout {layout!r} (use spider or bird)", root)
    for files in splits.values():
        if not files.tables.is_file():
            raise MlxSqlError("file not found", files.tables)
    if not splits:
        raise MlxSqlError(f"no question files found for the {layout} layout", root)
    return Benchmark(root, layout, splits)


def _materialize_tables_json(root: Path) -> None:
    """Write tables.json for a benchmark whose databases all live as .sql scripts (the mini benchmark)."""
    scripts = [p for p in (root / "database").glob("*/*.sql") if p.stem == p.parent.name]
    if not scripts:
        return
    tables = root / "tables.json"
    if not tables.is_file() or tables.stat().st_mtime < max(p.stat().st_mtime for p in scripts):
        write_tables_json_from_scripts(root)


def recipe_benchmark(recipe: Any, strict: bool = False) -> tuple[Benchmark, Any]:
    """The benchmark a recipe names: a Spider/BIRD folder, or the user's own databases and pairs, laid out
    as a Spider folder under the recipe's data folder (and the report of that, else None)."""
    data = recipe.data
    if data.sqlite:
        from mlx_sql.data.own import build_own_benchmark

        report = build_own_benchmark(data, recipe.data_dir / "benchmark", strict)
        return load_benchmark(report.root, "spider"), report
    if not data.path:
        raise MlxSqlError("this recipe trains on data.train_file: it names no benchmark to evaluate on "
                          "(set data.path or data.sqlite)", recipe.source)
    return load_benchmark(data.path, data.layout), None
