import json
import tracemalloc

import pytest

from mlx_sql.data.jsonl import ReadStats, iter_jsonl
from mlx_sql.errors import MlxSqlError

KEYS = ("instruction", "input", "output")
GOOD = json.dumps({"instruction": "i", "input": "schema", "output": "SELECT 1"})


def test_reads_records_with_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(f"{GOOD}\n\n{GOOD}\n")
    assert [n for n, _ in iter_jsonl(path, KEYS)] == [1, 3]
    assert [n for n, _ in iter_jsonl(path, KEYS, start_line=2)] == [3]


@pytest.mark.parametrize("line, problem", [
    ('{"instruction": "i", "input": ', "line 2: invalid JSON"),
    ("[1, 2]", "line 2: expected a JSON object, got list"),
    ('{"instruction": "i", "input": "s"}', "line 2: missing or non-string field 'output'"),
])
def test_malformed_line_is_one_line_error_or_skipped(tmp_path, line, problem):
    path = tmp_path / "d.jsonl"
    path.write_text(f"{GOOD}\n{line}\n{GOOD}\n")
    with pytest.raises(MlxSqlError) as info:
        list(iter_jsonl(path, KEYS))
    assert str(info.value).startswith(f"{path}: {problem}") and "\n" not in str(info.value)
    stats = ReadStats()
    assert [n for n, _ in iter_jsonl(path, KEYS, strict=False, stats=stats)] == [1, 3]
    assert (stats.read, stats.skipped) == (2, 1)


def test_missing_file(tmp_path):
    with pytest.raises(MlxSqlError, match="file not found"):
        list(iter_jsonl(tmp_path / "none.jsonl"))


def _peak_while_reading(path) -> int:
    tracemalloc.start()
    count = sum(1 for _ in iter_jsonl(path, KEYS))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count > 0
    return peak


def test_memory_is_flat_in_file_size(tmp_path):
    line = json.dumps({"instruction": "i", "input": "x" * 2000, "output": "SELECT 1"}) + "\n"
    small, big = tmp_path / "small.jsonl", tmp_path / "big.jsonl"
    small.write_text(line * 200)
    big.write_text(line * 10_000)  # 50x the lines, ~20 MB
    peak_small, peak_big = _peak_while_reading(small), _peak_while_reading(big)
    assert big.stat().st_size > 15e6
    assert peak_big < 2 * peak_small + 100_000, (peak_small, peak_big)
