"""The questions asked of one database, kept across restarts — in the cache folder, never in the database."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from mlx_sql.fileio import cache_root

KEEP = 200  # the most recent entries shown


class History:
    def __init__(self, db_path: str | Path, root: Path | None = None):
        key = hashlib.sha256(str(Path(db_path).resolve()).encode()).hexdigest()[:16]
        self.path = (root or cache_root() / "history") / f"{Path(db_path).stem}-{key}.jsonl"
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Newest first; a torn last line (a crash while writing) is skipped."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines()[-KEEP:]:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out[::-1]
