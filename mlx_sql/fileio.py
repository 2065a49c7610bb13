"""Atomic file writes shared by every stage.

A crash or Ctrl-C half way through a write must never leave a truncated file over
a good one, so everything is written to a temporary file in the same folder and
renamed into place (rename is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from mlx_sql.errors import MlxSqlError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_root() -> Path:
    """Where imported models, assembled GGUFs and databases built from scripts go (MLX_SQL_CACHE)."""
    return Path(os.environ.get("MLX_SQL_CACHE", Path.home() / ".cache" / "mlx-sql"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix); rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give them the mode any new file gets here
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a file for writing that only appears at `path` once it is complete."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` once everything in it is written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{os.getpid()}") if path.exists() else None
        if old is not None:
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path) as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line; return how many were written."""
    count = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False))
            f.write("\n")
            count += 1
    return count


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | Path) -> None:
    """Refuse, before any work, an output whose folder cannot be written (read-only mount, no permission)."""
    path = Path(path)
    anchor = _nearest_existing(path if path.is_dir() else path.parent)
    if not anchor.is_dir():
        raise MlxSqlError(f"cannot write here: {anchor} is a file, not a folder", path)
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise MlxSqlError(f"cannot write here: {anchor} is read-only or not yours", path)
    if path.exists() and not path.is_dir() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise MlxSqlError(f"cannot replace it: {path.parent} is read-only or not yours", path)


def output_file(path: str | Path, overwrite: bool) -> Path:
    """An output file to write: not a folder, writable, and never an existing file unless --overwrite."""
    path = Path(path)
    if path.is_dir():
        raise MlxSqlError("is a folder: give a file name for the output", path)
    if path.exists() and not overwrite:
        raise MlxSqlError("already exists; --overwrite to replace it, or choose another --out", path)
    check_writable(path)
    return path


def output_folder(path: str | Path, overwrite: bool) -> Path:
    """An output folder that will be replaced as a whole: never one that holds anything unless --overwrite
    (a user's files in it would be lost)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MlxSqlError("exists and is not a folder", path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise MlxSqlError("already exists and is not empty; --overwrite to replace it (everything in it is "
                          "deleted), or choose another --out", path)
    check_writable(path)
    check_writable(path.parent)  # the finished folder is renamed into place beside it
    return path
