import os
import platform
import subprocess
import sys

import pytest

from mlx_sql import blas

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="OpenBLAS preloading is for Linux")


@linux_only
def test_preload_env_adds_openblas_once(monkeypatch, tmp_path):
    fake = tmp_path / "libblas.so.3"
    fake.write_bytes(b"")
    monkeypatch.setenv("MLX_SQL_OPENBLAS", str(fake))
    env = blas.preload_env({"LD_PRELOAD": "/other.so"})
    assert env["LD_PRELOAD"] == f"{fake}:/other.so"
    assert blas.preload_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]


@linux_only
def test_no_reexec_when_disabled_or_already_done(monkeypatch):
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("must not re-exec"))
    monkeypatch.setenv(blas.REEXEC_MARKER, "1")
    blas.reexec_with_openblas([])
    monkeypatch.delenv(blas.REEXEC_MARKER)
    monkeypatch.setenv(blas.DISABLE_VAR, "1")
    blas.reexec_with_openblas([])


@linux_only
def test_cli_preloads_openblas_by_itself():
    if not blas.find_openblas():
        pytest.skip("OpenBLAS is not installed on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", blas.REEXEC_MARKER)}
    out = subprocess.run([sys.executable, "-m", "mlx_sql", "doctor", "--no-measure"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OpenBLAS (preloaded" in out.stdout


@linux_only
def test_openblas_makes_matmul_fast():
    if not blas.openblas_loaded():
        pytest.skip("tests run without OpenBLAS preloaded (make test preloads it)")
    from mlx_sql.doctor import matmul_gflops

    assert matmul_gflops() > 20  # the bundled reference BLAS manages ~5 GFLOP/s here
