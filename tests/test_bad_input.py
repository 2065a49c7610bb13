"""Bad input, run as a user runs it (`python -m mlx_sql …` in a scratch folder): one line on stderr naming what
is wrong, a non-zero exit, and every file that was there before unchanged (issue 35's cases)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MINISPIDER, ROOT


def mlx_sql(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlx_sql", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def one_line(result: subprocess.CompletedProcess, *fragments: str, code: int | None = None) -> None:
    """Failed, with exactly one line on stderr that holds every fragment (no traceback)."""
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tiny_model) -> Path:
    """A user's folder: their SQLite database, their pairs, a recipe, and an adapter trained on them."""
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.trainer import train

    folder = tmp_path_factory.mktemp("user")
    db = folder / "shop.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT);"
                       "INSERT INTO customers VALUES (1, 'Ada', 'Paris'), (2, 'Bo', 'Oslo'), (3, 'Cy', 'Paris');")
    conn.commit()
    conn.close()
    (folder / "pairs.csv").write_text("question,sql\nHow many customers?,SELECT count(*) FROM customers\n"
                                      "Who lives in Paris?,\"SELECT name FROM customers WHERE city = 'Paris'\"\n"
                                      "Name every city.,SELECT DISTINCT city FROM customers\n" * 3)
    (folder / "shop.toml").write_text(f'name = "shop"\n[model]\npath = "{tiny_model("llama")}"\n[data]\n'
                                      'sqlite = "shop.sqlite"\npairs = "pairs.csv"\ndev_fraction = 0.2\n'
                                      '[train]\niters = 2\nbatch_size = 2\n[eval]\nmax_tokens = 8\n')
    cwd = os.getcwd()
    os.chdir(folder)  # relative paths as the user wrote them
    try:
        from mlx_sql.data.build import build_dataset
        from mlx_sql.models.tokenizer import load_tokenizer

        recipe = load_recipe("shop.toml")
        build_dataset(recipe, load_tokenizer(recipe.model))
        train(recipe)
    finally:
        os.chdir(cwd)
    return folder


@pytest.fixture
def readonly(tmp_path) -> Path:
    """A read-only folder, as a read-only mount is (root ignores file modes, so root gets a real ro mount)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                 capture_output=True)
        if mounted.returncode != 0:
            pytest.skip("cannot mount a read-only folder here")
        yield folder
        subprocess.run(["umount", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_fuse_import_and_export_never_replace_what_is_there(scratch, tmp_path, tiny_model):
    adapter = scratch / "adapters" / "shop"
    existing = tmp_path / "existing_out"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's notes")
    sentinel = tmp_path / "sentinel.gguf"
    sentinel.write_bytes(b"the user's file")
    before = snapshot(tmp_path)
    one_line(mlx_sql("fuse", "--adapter", adapter, "--out", existing, cwd=tmp_path),
             str(existing), "not empty; --overwrite to replace it", code=2)
    one_line(mlx_sql("import-gguf", sentinel, "--out", existing, cwd=tmp_path), "not empty", code=2)
    one_line(mlx_sql("export", "gguf", "--lora-only", "--model", adapter, "--out", sentinel, cwd=tmp_path),
             str(sentinel), "already exists; --overwrite", code=2)
    one_line(mlx_sql("export", "gguf", "--lora-only", "--model", adapter, "--out", existing, cwd=tmp_path),
             "is a folder: give a file name", code=2)
    (existing / "Modelfile").write_text("FROM the user's own model\n")
    (existing / "theirs.gguf").write_bytes(b"GGUF")
    before = snapshot(tmp_path)
    one_line(mlx_sql("export", "ollama", "--gguf", existing / "theirs.gguf", cwd=tmp_path),
             str(existing / "Modelfile"), "already exists; --overwrite", code=2)
    assert snapshot(tmp_path) == before
    done = mlx_sql("export", "gguf", "--lora-only", "--model", adapter, "--out", sentinel, "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sentinel.read_bytes()[:4] == b"GGUF"


def test_unwritable_outputs_are_one_line_before_any_loading(scratch, readonly, tmp_path):
    adapter = scratch / "adapters" / "shop"
    recipe = scratch / "shop.toml"
    cases = [
        ("data", "build", recipe, "--set", f'data.out_dir="{readonly / "out"}"'),
        ("train", recipe, "--set", f'train.adapter_dir="{readonly / "adapter"}"', "--overwrite"),
        ("eval", "--adapter", adapter, "--out", readonly / "res"),
        ("fuse", "--adapter", adapter, "--out", readonly / "fused"),
        ("export", "gguf", "--lora-only", "--model", adapter, "--out", readonly / "a.gguf"),
        ("import-gguf", scratch / "shop.sqlite", "--out", readonly / "imp"),
    ]
    for args in cases:
        result = mlx_sql(*args, cwd=scratch)
        one_line(result, str(readonly), "cannot write here", code=2)
    assert not any(readonly.iterdir())


def test_a_csv_row_wider_than_its_header_names_its_line(scratch, tmp_path):
    (tmp_path / "pairs.csv").write_text("question,sql\nHow many customers?,SELECT count(*) FROM customers\n"
                                        "Names and cities?,SELECT name, city FROM customers\n")
    (tmp_path / "r.toml").write_text((scratch / "shop.toml").read_text().replace(
        '"shop.sqlite"', f'"{scratch / "shop.sqlite"}"'))
    one_line(mlx_sql("data", "build", "r.toml", cwd=tmp_path), "pairs.csv: line 3: 3 fields, the header has 2",
             code=2)
    assert not (tmp_path / "data").exists()


def test_numbers_out_of_range_are_refused(scratch):
    adapter = scratch / "adapters" / "shop"
    for args, why in [(("eval", "--adapter", adapter, "--max-examples", "-1"), "--max-examples must be at least 1"),
                      (("eval", "--adapter", adapter, "--max-examples", "0"), "--max-examples must be at least 1"),
                      (("ask", "--adapter", adapter, "--db", "shop.sqlite", "--rows", "-1", "How many?"),
                       "--rows must be at least 0 (got -1)"),
                      (("plan", "shop.toml", "--machines", "2", "--machine-gb", "-5"), "--machine-gb must be between"),
                      (("serve", "--adapter", adapter, "--db", "shop.sqlite", "--port", "70000"), "--port must be")]:
        one_line(mlx_sql(*args, cwd=scratch), why, code=2)
    one_line(mlx_sql("plan", "shop.toml", cwd=scratch, env={"MLX_SQL_MEMORY_GB": "abc"}),
             "MLX_SQL_MEMORY_GB='abc': expected a machine's memory in GB", code=2)
    assert not (scratch / "results").exists()


def test_run_names_that_would_leave_their_folder_are_refused(scratch, tmp_path):
    (tmp_path / "evil.toml").write_text((scratch / "shop.toml").read_text()
                                        .replace('name = "shop"', 'name = "../../etc/evil"')
                                        .replace('"shop.sqlite"', f'"{scratch / "shop.sqlite"}"')
                                        .replace('"pairs.csv"', f'"{scratch / "pairs.csv"}"'))
    one_line(mlx_sql("data", "build", "evil.toml", cwd=tmp_path), "name: '../../etc/evil' is not a plain name",
             code=2)
    one_line(mlx_sql("eval", "--adapter", scratch / "adapters" / "shop", "--name", "../x", cwd=tmp_path),
             "--name: '../x' is not a plain name", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.toml"]


def test_damaged_databases_and_adapters_are_one_line(scratch, tmp_path):
    big = tmp_path / "big.sqlite"
    conn = sqlite3.connect(big)
    conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"name {i} " * 20) for i in range(3000)])
    conn.commit()
    conn.close()
    truncated = tmp_path / "truncated.sqlite"
    truncated.write_bytes(big.read_bytes()[: big.stat().st_size // 3])
    big.unlink()
    noise = tmp_path / "noise.sqlite"
    noise.write_bytes(b"not a database at all" * 100)
    adapter = scratch / "adapters" / "shop"
    for db, why in ((truncated, "cannot read the database: database disk image is malformed"),
                    (noise, "not an SQLite database")):
        one_line(mlx_sql("ask", "--adapter", adapter, "--db", db, "How many customers?", cwd=scratch),
                 str(db), why, code=2)
    bad = tmp_path / "shopbad"
    bad.mkdir()
    for f in adapter.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "adapters.safetensors").write_bytes((adapter / "adapters.safetensors").read_bytes()[:5000])
    before = snapshot(tmp_path)
    one_line(mlx_sql("fuse", "--adapter", bad, cwd=scratch), "adapters.safetensors", "cannot be loaded", code=2)
    one_line(mlx_sql("ask", "--adapter", bad, "--db", "shop.sqlite", "How many?", cwd=scratch),
             "cannot be loaded", code=2)
    assert snapshot(tmp_path) == before


def test_an_adapter_and_a_recipe_work_from_any_folder(scratch, tmp_path):
    """The recipe saved beside an adapter holds absolute paths; ask reads no benchmark data."""
    saved = (scratch / "adapters" / "shop" / "recipe.toml").read_text()
    assert f'sqlite = "{scratch / "shop.sqlite"}"' in saved
    asked = mlx_sql("ask", "--adapter", scratch / "adapters" / "shop", "--db", scratch / "shop.sqlite", "--sql-only",
                    "How many customers?", cwd=tmp_path)
    assert asked.returncode in (0, 1) and "does not exist" not in asked.stderr, asked.stderr
    recipe = ROOT / "recipes" / "smollm2-135m.toml"  # data.path = "benchmarks/minispider": not here
    checked = mlx_sql("ask", "--recipe", recipe, "--db", scratch / "shop.sqlite", "--sql-only", "How many?",
                      cwd=tmp_path)
    assert checked.returncode in (0, 1) and "does not exist" not in checked.stderr, checked.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ctrl_c_during_eval_is_one_line_and_resume_finishes(scratch, tmp_path):
    import signal
    import time

    out = tmp_path / "res"
    recipe = tmp_path / "mini.toml"
    # one question a batch, long answers (a random model rarely stops): Ctrl-C lands mid-run
    recipe.write_text((scratch / "shop.toml").read_text().replace('sqlite = "shop.sqlite"\npairs = "pairs.csv"\n'
                                                                  'dev_fraction = 0.2\n', f'path = "{MINISPIDER}"\n')
                      .replace("max_tokens = 8", "batch_size = 1\nmax_tokens = 64"))
    proc = subprocess.Popen([sys.executable, "-m", "mlx_sql", "eval", "--recipe", str(recipe), "--out", str(out),
                             "--max-examples", "80"], cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            # Ctrl-C as a terminal delivers it: a suite started in the background (`cmd &`) runs
                            # with SIGINT ignored, which every child would inherit
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    predictions = out / "predictions.jsonl"
    while time.time() < deadline and not (predictions.is_file() and predictions.read_text().strip()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group, workers included
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and [line for line in stderr.splitlines() if line.strip()][-1].startswith(
        "interrupted")
    resumed = mlx_sql("eval", "--recipe", recipe, "--out", out, "--max-examples", "80", "--resume", cwd=scratch)
    assert resumed.returncode == 0, resumed.stderr
    assert len((out / "per_example.jsonl").read_text().splitlines()) == 80


def test_the_data_build_report_has_no_markup_and_ask_shows_what_the_model_wrote(scratch, tmp_path):
    (tmp_path / "pairs.csv").write_text("question,sql\nHow many customers?,SELECT count(*) FROM customers\n"
                                        "Broken?,SELECT nope FROM customers\n" + "Who?,SELECT name FROM customers\n" * 4)
    (tmp_path / "r.toml").write_text((scratch / "shop.toml").read_text().replace(
        '"shop.sqlite"', f'"{scratch / "shop.sqlite"}"'))
    built = mlx_sql("data", "build", "r.toml", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "left out, the gold query failed: " in built.stdout and "[yellow]" not in built.stdout
    asked = mlx_sql("ask", "--adapter", scratch / "adapters" / "shop", "--db", scratch / "shop.sqlite",
                    "How many customers?", cwd=tmp_path)
    if asked.returncode == 1 and "not a SQLite query" in asked.stderr:  # a random tiny model writes no SQL
        one_line(asked, "the model wrote: ")
