"""Values from the database that a question names, spelled as stored, for the prompt.

Sample rows show a model how a few values look; a question names values they rarely show ("orders from
São Paulo", "the night shift"), and the case or spelling in the database decides whether a filter returns
anything. As CodeS does, each database's distinct short text values are indexed once (coarse: by word,
accents and case folded), the question's words look up candidates (exactly, or within a small spelling
difference), and each candidate is checked against the question's phrases of its length (fine:
`difflib` similarity). The best matches go into the prompt as `table.column = 'value'` lines.

The index is built on first use, read-only, bounded (values per column, values in all, seconds), and cached
outside the database under the cache folder, keyed by the file's path, size and modification time, so a
changed file is indexed again and a user's database is never written to.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sqlite3
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from mlx_sql.fileio import cache_root, write_json
from mlx_sql.sqlite import open_readonly, quote_identifier, table_columns, user_tables

VALUES_HEADER = "### Values ###"
MAX_PER_COLUMN = 2000
MAX_VALUES = 100_000
MAX_SECONDS = 10.0
MIN_CHARS, MAX_CHARS = 3, 60
SIMILARITY = 0.85  # a phrase of the question and a value this alike (difflib ratio) match
STOPWORDS = frozenset("""a an and are as at be by did do does for from has have how in is it its many me much of on or
show that the their them there these this those to was what when where which who whose with all any each list give
find name names number count more most less than than per their our your""".split())


def fold(text: str) -> str:
    """Lower case, accents removed, runs of non-word characters as one space: how values and questions meet."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return " ".join(re.findall(r"\w+", text))


@dataclass
class ValueIndex:
    entries: list[tuple[str, str, str]]  # (table, column, value as stored)
    partial: bool = False  # a bound (values, seconds) stopped the build early
    _by_word: dict[str, list[int]] = field(default_factory=dict, repr=False)
    _by_initial: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, (_, _, value) in enumerate(self.entries):
            for word in set(fold(value).split()):
                if word not in STOPWORDS and len(word) > 1:
                    self._by_word.setdefault(word, []).append(i)
        for word in self._by_word:
            self._by_initial.setdefault(word[0], []).append(word)

    def _similar_words(self, word: str) -> list[str]:
        """Indexed words equal to `word` or a small spelling difference away (words of 4+ letters)."""
        if word in self._by_word and len(word) < 4:
            return [word]
        if len(word) < 4:
            return []
        pool = [w for w in self._by_initial.get(word[0], []) if abs(len(w) - len(word)) <= 2]
        return difflib.get_close_matches(word, pool, n=5, cutoff=0.8)

    def match(self, question: str, limit: int = 6) -> list[tuple[str, str, str]]:
        """Up to `limit` (table, column, value) the question names, best first, at most two a column."""
        words = fold(question).split()
        candidates: set[int] = set()
        for word in set(words) - STOPWORDS:
            for similar in self._similar_words(word):
                candidates.update(self._by_word.get(similar, ()))
        folded_question = " ".join(words)
        scored = []
        for i in candidates:
            table, column, value = self.entries[i]
            v = fold(value)
            n = len(v.split())
            spans = [(j, size) for size in sorted({max(1, n - 1), n, n + 1}) for j in range(len(words) - size + 1)]
            best = max(((difflib.SequenceMatcher(None, v, " ".join(words[j:j + size])).ratio(), j, size)
                        for j, size in spans), default=(0.0, 0, 0))
            if f" {v} " in f" {folded_question} ":
                start = next((j for j in range(len(words) - n + 1) if words[j:j + n] == v.split()), best[1])
                best = (1.0, start, n)
            if best[0] >= SIMILARITY:
                scored.append((-best[0], -len(v), table, column, value, best[1], best[2]))
        out, per_column, exact_words = [], {}, set()
        for score, _, table, column, value, start, size in sorted(scored):
            words_used = set(range(start, start + size))
            if -score < 1.0 and words_used <= exact_words:
                continue  # "Nord" for words an exact match ("Noord-Brabant") already explains
            if per_column.get((table, column), 0) < 2 and len(out) < limit:
                per_column[(table, column)] = per_column.get((table, column), 0) + 1
                out.append((table, column, value))
                if -score == 1.0:
                    exact_words |= words_used
        return out


def build_index(db_path: str | Path, max_per_column: int = MAX_PER_COLUMN, max_values: int = MAX_VALUES,
                max_seconds: float = MAX_SECONDS) -> ValueIndex:
    """Distinct short text values of every column, read-only, within the bounds."""
    conn = open_readonly(db_path)
    deadline = time.monotonic() + max_seconds
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    entries: list[tuple[str, str, str]] = []
    partial = False
    try:
        tables = sorted(user_tables(conn))
        for table in tables:
            columns = [r[1] for r in table_columns(conn, table)]
            for column in columns:
                col, tab = quote_identifier(column), quote_identifier(table)
                try:
                    rows = conn.execute(f"SELECT DISTINCT {col} FROM {tab} WHERE typeof({col}) = 'text' AND "
                                        f"length({col}) BETWEEN {MIN_CHARS} AND {MAX_CHARS} LIMIT {max_per_column}")
                    values = [r[0] for r in rows]
                except sqlite3.OperationalError:  # interrupted at the deadline, or an odd column
                    partial = partial or time.monotonic() > deadline
                    values = []
                partial = partial or len(values) >= max_per_column
                entries += [(table, column, v) for v in values if isinstance(v, str) and re.search(r"[^\W\d_]", v)]
                if len(entries) >= max_values or time.monotonic() > deadline:
                    return ValueIndex(entries[:max_values], True)
    finally:
        conn.close()
    return ValueIndex(entries, partial)


INDEX_FORMAT = 2  # raised when the index reads a database differently (2: generated columns), so old ones are rebuilt


def index_path(db_path: Path) -> Path:
    """The cache file of a database's index: its path hashed, then its size and modification time."""
    stat = db_path.stat()
    key = hashlib.sha256(str(db_path.resolve()).encode()).hexdigest()[:16]
    return cache_root() / "values" / f"{key}-{stat.st_size}-{stat.st_mtime_ns}-v{INDEX_FORMAT}.json"


_LOADED: dict[Path, ValueIndex] = {}


def value_index(db_path: str | Path) -> ValueIndex:
    """The database's index: from memory, else the cache, else built (and cached; stale ones removed)."""
    db_path = Path(db_path)
    path = index_path(db_path)
    if path in _LOADED:
        return _LOADED[path]
    index = None
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            index = ValueIndex([tuple(e) for e in data["entries"]], data.get("partial", False))
        except (json.JSONDecodeError, KeyError, TypeError):
            index = None
    if index is None:
        index = build_index(db_path)
        for stale in path.parent.glob(f"{path.name.split('-')[0]}-*.json"):
            stale.unlink(missing_ok=True)
        write_json(path, {"database": str(db_path.resolve()), "partial": index.partial,
                          "entries": [list(e) for e in index.entries]})
    _LOADED[path] = index
    return index


def values_block(db_path: str | Path | None, question: str, limit: int) -> str:
    """The prompt's values block for a question (empty when nothing matches or values are off)."""
    if not limit or db_path is None or not Path(db_path).is_file():
        return ""
    matches = value_index(db_path).match(question, limit)
    if not matches:
        return ""
    lines = [f"{quote_identifier(t)}.{quote_identifier(c)} = '{v.replace(chr(39), chr(39) * 2)}'" for t, c, v in matches]
    return VALUES_HEADER + "\n" + "\n".join(lines)
