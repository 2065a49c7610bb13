"""One error type for everything a user can get wrong.

The CLI prints these as a single line (no traceback) and exits non-zero, so every
message must say which file and what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path


class MlxSqlError(Exception):
    """A user-facing error: bad input, missing file, impossible request."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)
