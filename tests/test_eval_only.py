"""An evaluation-only recipe: Mistral-7B-Instruct through Ollama. It evaluates through a server; train and plan
refuse it in one line, with the memory plan's figures once the model's GGUF blob is on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import loopback_server
from test_eval_generate import count_doctors

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "mistral-7b-ollama.toml"
MINISPIDER = ROOT / "benchmarks" / "minispider"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mlx_sql", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, cwd=ROOT)


def fake_ollama_store(models: Path) -> Path:
    """An Ollama models folder holding `mistral:7b-instruct-q4_0` as a GGUF with Mistral-7B's metadata (32 layers,
    hidden 4096, FFN 14336, 32 heads / 8 KV heads, vocab 32768) and token-sized tensors: the plan reads only
    metadata and tensor names."""
    import gguf

    digest = "sha256:" + "7b" * 32
    blob = models / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True)
    writer = gguf.GGUFWriter(str(blob), "llama")
    writer.add_block_count(32)
    writer.add_embedding_length(4096)
    writer.add_feed_forward_length(14336)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    writer.add_context_length(32768)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(1e6)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(32768)])
    for name in ("token_embd.weight", "output.weight"):
        writer.add_tensor(name, np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "mistral" / "7b-instruct-q4_0"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model",
                                                "digest": digest}]}))
    return models


def test_the_recipe_evaluates_mistral_through_an_ollama_server(tmp_path):
    server = loopback_server(count_doctors)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        result = cli("eval", "--recipe", RECIPE, "--max-examples", "3", "--out", tmp_path / "r",
                     "--set", f'data.path="{MINISPIDER}"', "--set", f'ollama.base_url="{url}"',
                     env={"OLLAMA_MODELS": str(tmp_path / "no-store")})  # eval needs the server, not the blob
        assert result.returncode == 0, result.stderr
        assert "| all | 3 | 33.3 | 33.3 |" in result.stdout
        assert len(server.requests) == 3
        assert {body["model"] for _, body in server.requests} == {"mistral:7b-instruct-q4_0"}
    finally:
        server.shutdown()


@pytest.mark.parametrize("command", ["train", "plan"])
def test_train_and_plan_refuse_it_in_one_line_with_the_plans_figures(tmp_path, command):
    store = fake_ollama_store(tmp_path / "models")
    result = cli(command, RECIPE, "--set", f'data.path="{MINISPIDER}"', "--set",
                 f'data.out_dir="{tmp_path / "data"}"', env={"OLLAMA_MODELS": str(store)})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {RECIPE}: 'mistral-7b-ollama' is for evaluation only")
    figures = line.split("LoRA needs ~", 1)[1]
    lora, qlora = float(figures.split(" GB")[0]), float(figures.split("QLoRA at batch 1 ~", 1)[1].split(" GB")[0])
    assert lora > 14  # 7.2B parameters in bfloat16 alone are 14.5 GB
    assert 3.5 < qlora < lora  # 4-bit weights are ~4 GB
    assert "--set model.eval_only=false --set model.quantize=4" in line
    assert not (tmp_path / "data").exists()  # refused before building data (which would load the tokenizer)


def test_without_the_blob_the_line_says_what_the_plan_needs(tmp_path):
    result = cli("train", RECIPE, env={"OLLAMA_MODELS": str(tmp_path / "empty")})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "is for evaluation only" in line and "its memory plan needs the model's config" in line
    assert "ollama pull mistral:7b-instruct-q4_0" in line


def test_the_library_trainer_refuses_it_too(tmp_path):
    from mlx_sql.errors import MlxSqlError
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.trainer import train

    recipe = load_recipe(RECIPE, [f'data.path="{MINISPIDER}"'])
    with pytest.raises(MlxSqlError, match="for evaluation only"):
        train(recipe)
