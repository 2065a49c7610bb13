"""Make MLX fast on Linux CPUs.

The `mlx-cpu` wheel bundles the reference (Netlib) BLAS, about 35x slower than
OpenBLAS for the matmuls that training and generation are made of. Preloading
Debian's OpenBLAS (`libopenblas0-pthread`) replaces those symbols at load time.
LD_PRELOAD only works at process start, so the CLI re-executes itself once with
it set. macOS uses Metal and needs none of this.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
REEXEC_MARKER = "MLX_SQL_BLAS_REEXEC"
DISABLE_VAR = "MLX_SQL_NO_BLAS_PRELOAD"
INSTALL_HINT = "sudo apt-get install -y libopenblas0-pthread"


def find_openblas() -> str | None:
    """Path of an OpenBLAS that can be preloaded, or None."""
    override = os.environ.get("MLX_SQL_OPENBLAS")
    if override:
        return override if Path(override).exists() else None
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def loaded_blas_libraries() -> list[str]:
    """Shared libraries of this process whose name says BLAS (Linux only)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return []
    seen: list[str] = []
    for line in maps.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and "blas" in Path(parts[-1]).name.lower() and parts[-1] not in seen:
            seen.append(parts[-1])
    return seen


def openblas_loaded() -> bool:
    """True when a BLAS was preloaded, so its symbols win over the one bundled with mlx-cpu.

    Merely having an OpenBLAS mapped is not enough (numpy ships its own), it must come first.
    """
    preloaded = [p for p in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if "blas" in p.lower()]
    if not preloaded:
        return False
    mapped = loaded_blas_libraries()
    return any(Path(p).resolve() in {Path(m).resolve() for m in mapped} or p in mapped for p in preloaded)


def needs_preload() -> bool:
    return platform.system() == "Linux" and not openblas_loaded()


def preload_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of `env` with OpenBLAS added to LD_PRELOAD when it is available."""
    env = dict(os.environ if env is None else env)
    lib = find_openblas()
    if platform.system() == "Linux" and lib and lib not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(p for p in (lib, env.get("LD_PRELOAD", "")) if p)
    return env


def reexec_with_openblas(argv: list[str] | None = None) -> None:
    """Replace this process with itself under LD_PRELOAD=OpenBLAS, once.

    Returns (without doing anything) on macOS, when OpenBLAS is already loaded or
    absent, when disabled through MLX_SQL_NO_BLAS_PRELOAD, or after one re-exec.
    """
    if os.environ.get(REEXEC_MARKER) or os.environ.get(DISABLE_VAR) or not needs_preload():
        return
    if not find_openblas():
        return
    env = preload_env()
    env[REEXEC_MARKER] = "1"
    args = [sys.executable, "-m", "mlx_sql", *(sys.argv[1:] if argv is None else argv)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)
