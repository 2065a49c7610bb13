"""`mlx-sql demo`: every stage on a tiny model, everything under one run folder."""

import json

from typer.testing import CliRunner

from mlx_sql.cli.app import app

from conftest import MINISPIDER

STAGES = ["import model", "build data", "evaluate base", "train", "evaluate adapter", "fuse", "export GGUF",
          "evaluate GGUF in llama.cpp", "write Modelfile"]


def test_demo_runs_the_whole_loop_into_one_folder(tiny_model, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(f'name = "tiny"\n[model]\npath = "{tiny_model("llama")}"\n'
                      f'[data]\npath = "{MINISPIDER}"\nmax_examples = 24\n'
                      '[train]\niters = 3\nbatch_size = 4\nlr = 1e-2\n'
                      '[eval]\nmax_examples = 6\nmax_tokens = 12\n'
                      '[export]\ngguf_dtype = "f16"\nollama_name = "tiny-sql"\n')
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["demo", "--recipe", str(recipe), "--out", str(run)])
    assert result.exit_code == 0, result.output

    for stage in STAGES:
        assert stage in result.output
    report = json.loads((run / "demo.json").read_text())
    assert list(report["seconds"]) == STAGES
    for key in ("baseline", "adapter", "gguf"):
        assert report[key]["all"]["count"] == 6
        assert 0 <= report[key]["all"]["execution_accuracy"] <= 100
    # f16 in llama.cpp decodes what MLX decodes (the tiny model's SQL is gibberish, but the same gibberish).
    assert report["same_sql_mlx_vs_gguf"] >= 5
    for path in ("data/train.jsonl", "adapter/adapters.safetensors", "adapter/loss.png", "eval-base/summary.json",
                 "eval-adapter/per_example.jsonl", "eval-gguf/summary.json", "comparison.md", "comparison.png",
                 "fused/model-f16.gguf", "fused/Modelfile", "demo.md"):
        assert (run / path).is_file(), path
    assert "ollama create tiny-sql -f" in (run / "demo.md").read_text()
    assert "| extra |" in (run / "demo.md").read_text()


def test_demo_bad_recipe_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\npath = "x"\n[data]\npath = "/nonexistent"\n')
    result = CliRunner().invoke(app, ["demo", "--recipe", str(bad), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert not (tmp_path / "run").exists()
