"""Streaming JSONL: one record in memory at a time, whatever the file size."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from mlx_sql.errors import MlxSqlError

log = logging.getLogger(__name__)


@dataclass
class ReadStats:
    read: int = 0
    skipped: int = 0


def iter_jsonl(path: str | Path, required: Sequence[str] = (), strict: bool = True,
               stats: ReadStats | None = None, start_line: int = 1) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record). A bad line raises (strict) or is skipped with a warning.

    `start_line` lets a resumed reader skip what it already consumed without parsing it.
    """
    path = Path(path)
    stats = stats if stats is not None else ReadStats()
    if path.is_dir():
        raise MlxSqlError("is a folder, not a JSONL file", path)
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise MlxSqlError("file not found", path) from None
    except OSError as exc:
        raise MlxSqlError(f"cannot read: {exc.strerror}", path) from None
    with handle:
        try:
            yield from _records(handle, path, required, strict, stats, start_line)
        except UnicodeDecodeError:
            raise MlxSqlError("not a UTF-8 text file (a binary file?)", path) from None


def _records(handle, path: Path, required: Sequence[str], strict: bool, stats: ReadStats,
             start_line: int) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, line in enumerate(handle, start=1):
        if line_no < start_line or not line.strip():
            continue
        problem = None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON ({exc.msg} at column {exc.colno})"
        else:
            if not isinstance(record, dict):
                problem = f"expected a JSON object, got {type(record).__name__}"
            else:
                missing = [k for k in required if not isinstance(record.get(k), str)]
                if missing:
                    problem = f"missing or non-string field '{missing[0]}'"
        if problem:
            if strict:
                raise MlxSqlError(f"line {line_no}: {problem}", path)
            log.warning("%s: line %d: %s (skipped)", path, line_no, problem)
            stats.skipped += 1
            continue
        stats.read += 1
        yield line_no, record
