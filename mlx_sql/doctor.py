"""`mlx-sql doctor`: what this machine gives MLX, and what would make it faster."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mlx_sql import blas


@dataclass
class Report:
    rows: list[tuple[str, str]]
    advice: list[str]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def memory_bytes() -> tuple[int, int | None]:
    """(total, available) physical memory; available is None where the OS does not say."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = None
    meminfo = Path("/proc/meminfo")  # Linux; macOS has no cheap equivalent
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    return total, available


def matmul_gflops(n: int = 1024, repeats: int = 3) -> float:
    """Measured float32 n×n matmul throughput of MLX's default device."""
    import mlx.core as mx

    a = mx.random.normal((n, n))
    b = mx.random.normal((n, n))
    mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * n**3 / seconds / 1e9


def gigabytes(n: float) -> str:
    """Memory as every command prints it: decimal GB, as MLX's peak-memory figures and "8 GB Mac" count."""
    return f"{n / 1e9:.1f} GB"


def run_doctor(measure: bool = True) -> Report:
    import mlx.core as mx

    total, available = memory_bytes()
    device = mx.default_device()
    rows = [
        ("platform", f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"),
        ("mlx", _version("mlx")),
        ("default device", "gpu" if device == mx.gpu else "cpu"),
        ("memory", f"{gigabytes(total)} total" + (f", {gigabytes(available)} available" if available else "")),
        ("mlx-lm", _version("mlx-lm")),
        ("sqlglot", _version("sqlglot")),
        ("gguf", _version("gguf")),
        ("llama-cpp-python", _version("llama-cpp-python")),
    ]
    advice: list[str] = []
    if platform.system() == "Linux":
        openblas = blas.openblas_loaded()
        preload = os.environ.get("LD_PRELOAD", "")
        rows.append(("BLAS", f"OpenBLAS (preloaded: {preload})" if openblas
                     else "reference BLAS bundled with mlx-cpu (slow)"))
        if not openblas:
            if blas.find_openblas():
                advice.append(f"OpenBLAS is installed but not loaded: run through `mlx-sql` (it preloads it) or "
                              f"set LD_PRELOAD={blas.find_openblas()}")
            else:
                advice.append(f"Install OpenBLAS for ~35x faster MLX on this CPU: {blas.INSTALL_HINT}")
    if measure:
        rows.append(("matmul (f32 1024³)", f"{matmul_gflops():.1f} GFLOP/s"))
    return Report(rows, advice)
