"""T5 (encoder-decoder), ours in MLX: checked against llama.cpp's own T5 on GGUFs this project writes.

The reference is llama.cpp (ggml's independent C++ implementation of T5, already a dependency here):
the same token ids through both must give the same logits. Tiny random models in T5's two layouts
(v1.0: ReLU FFN, tied head; v1.1/FLAN: gated GELU, untied) with an offline SentencePiece tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.t5 import relative_position_buckets

LONG_SCHEMA = " ".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);" for i in range(20))
SQL = "SELECT count(*) FROM singer WHERE age > 20"


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from tiny_models import build_tiny_model

    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            cache[variant] = build_tiny_model(variant, tmp_path_factory.mktemp(variant))
        return cache[variant]

    return get


def write_recipe(tmp_path: Path, folder: str, train: str, data: Path | None = None):
    from mlx_sql.recipe import load_recipe

    from conftest import MINISPIDER

    path = tmp_path / "r.toml"
    path.write_text(f'name = "t"\n[model]\npath = "{folder}"\n[data]\npath = "{MINISPIDER}"\n'
                    f'out_dir = "{data or tmp_path / "data"}"\n[train]\nadapter_dir = "{tmp_path / "a"}"\n{train}')
    return load_recipe(path)


def load(folder: Path):
    from mlx_sql.models.loading import load_model
    from mlx_sql.recipe import ModelConfig

    return load_model(ModelConfig(path=str(folder)))


def test_relative_position_buckets_by_hand():
    # bidirectional, 32 buckets: 16 per direction, exact below 8, log-spaced up to 128, keys after the query +16
    b = relative_position_buckets(1, 200, True, 32, 128)[0]
    assert b[0] == 0 and b[1] == 17 and b[7] == 23
    assert b[20] == 16 + 8 + int(np.log(20 / 8) / np.log(16) * 8)  # 16 + 10
    assert b[199] == 31  # beyond max_distance: the last bucket
    # the decoder (unidirectional) sees only earlier keys: distance back, 32 buckets, exact below 16
    d = relative_position_buckets(1, 200, False, 32, 128, offset=199)[0]
    assert d[199] == 0 and d[198] == 1 and d[199 - 15] == 15 and d[0] == 31
    assert relative_position_buckets(3, 3, False, 32, 128)[0, 2] == 0  # future keys clip to 0 (masked anyway)


@pytest.mark.parametrize("variant", ["t5", "t5-v1_1"])
def test_logits_and_tokens_equal_llama_cpp(t5_folder, variant, tmp_path):
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.models.verify import LlamaCppSeq2Seq

    model, tokenizer, _ = load(t5_folder(variant))
    gguf = export_gguf(t5_folder(variant), tmp_path / "model-f16.gguf", "f16").path
    text = f"{LONG_SCHEMA}\n\nHow many singers\tare older than 20?"  # newline and tab: the normalizer's work
    source = tokenizer.encode(text)
    assert len(source) > 150  # far relative positions: the log-spaced buckets are exercised
    target = tokenizer.encode(SQL, add_special_tokens=False)
    ref = LlamaCppSeq2Seq(gguf)
    assert ref.llm.tokenize(text.encode(), add_bos=True, special=False) == source  # llama.cpp's "t5" tokenizer
    assert ref.start == 0 and ref.eos == tokenizer.eos_token_id
    theirs = ref.decoder_logits(source, target)
    ours = np.asarray(model(mx.array([source]), mx.array([[0, *target]]))[0])
    assert theirs.shape == ours.shape == (len(target) + 1, len(tokenizer))
    assert np.abs(theirs - ours).max() < 0.01, np.abs(theirs - ours).max()
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()


def test_padding_changes_nothing(t5_folder):
    """A batch row padded on the encoder side scores as it does alone (the masks work)."""
    from mlx_sql.train.batches import collate_seq2seq
    from mlx_sql.train.encode import Encoder
    from mlx_sql.train.losses import example_losses

    model, tokenizer, _ = load(t5_folder("t5-v1_1"))
    enc = Encoder.for_model(model, tokenizer)
    records = [{"instruction": "Write SQL.", "input": f"{schema}\n\n### Question ###\n{q}", "output": sql}
               for schema, q, sql in [("CREATE TABLE a (x);", "How many?", "SELECT count(*) FROM a"),
                                      (LONG_SCHEMA, "Oldest name?", "SELECT name FROM t1 ORDER BY age DESC LIMIT 1")]]
    encoded = [enc.encode(r) for r in records]
    both = collate_seq2seq(encoded, 1024, enc.decoder_start, tokenizer.eos_token_id)
    sums, counts = example_losses(model, both)
    for i, e in enumerate(encoded):
        alone = collate_seq2seq([e], 1024, enc.decoder_start, tokenizer.eos_token_id)
        s, n = example_losses(model, alone)
        assert n.item() == counts[i].item() == len(e.segment) - e.completion_start  # the SQL and </s> only
        assert abs(s.item() - sums[i].item()) < 1e-3 * max(1.0, s.item())


def test_schema_is_cut_not_the_question_or_the_answer(t5_folder):
    from mlx_sql.train.batches import collate_seq2seq
    from mlx_sql.train.encode import Encoder

    model, tokenizer, _ = load(t5_folder("t5"))
    enc = Encoder.for_model(model, tokenizer)
    e = enc.encode({"instruction": "Write SQL.", "input": f"{LONG_SCHEMA}\n\n### Question ###\nHow many?",
                    "output": SQL})
    batch = collate_seq2seq([e], 128, enc.decoder_start, tokenizer.eos_token_id)
    question = list(e.segment[: e.completion_start])
    source = np.asarray(batch.source[0]).tolist()
    assert len(source) == 128 and batch.truncated == 1
    assert source[-len(question) - 1:] == question + [tokenizer.eos_token_id]
    assert np.asarray(batch.tokens[0]).tolist() == [0, *e.segment[e.completion_start:]]


def test_adapters_reach_cross_attention_and_the_plan_counts_them(t5_folder, tmp_path):
    from mlx_sql.train.adapters import adapter_config, apply_adapters, trainable_count
    from mlx_sql.train.plan import Shape, trainable_parameters

    model, _, folder = load(t5_folder("t5-v1_1"))
    recipe = write_recipe(tmp_path, folder, 'batching = "unshared"\nnum_layers = 3\ntarget_modules = ["q_proj", '
                          '"k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]\n')
    config = adapter_config(model, recipe.train, folder)
    keys = config["lora_parameters"]["keys"]
    assert "layer.1.EncDecAttention.q" in keys and "layer.2.DenseReluDense.wi_0" in keys
    assert "layer.1.DenseReluDense.wo" in keys and "layer.0.SelfAttention.o" in keys
    apply_adapters(model, config)
    shape = Shape.from_config(json.loads((Path(folder) / "config.json").read_text()))
    # the last 3 blocks: one encoder block and both decoder blocks (with their cross-attention)
    assert trainable_parameters(shape, recipe.train) == trainable_count(model)


def test_shared_schema_batches_are_refused_for_t5(t5_folder, tmp_path):
    from mlx_sql.train.trainer import Trainer

    model, tokenizer, folder = load(t5_folder("t5"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"instruction": "i", "input": "x", "output": "y"}))
    with pytest.raises(MlxSqlError, match="unshared"):
        Trainer(model, tokenizer, write_recipe(tmp_path, folder, 'batching = "schema_shared"\n'), folder)


def test_overfits_a_handful_of_examples(t5_folder, tmp_path):
    """Trained on three questions until it knows them, greedy decoding (encoder once, cached decoder)
    writes each one's SQL exactly."""
    from mlx_sql.eval.backends import Seq2SeqMLXBackend
    from mlx_sql.train.trainer import Trainer

    model, tokenizer, folder = load(t5_folder("t5"))
    records = [{"instruction": "Write SQL.", "input": f"CREATE TABLE singer (id, name, age)\n\n### Question ###\n{q}",
                "output": sql, "db_id": "concert"}
               for q, sql in [("How many singers?", "SELECT count(*) FROM singer"),
                              ("Names of singers?", "SELECT name FROM singer"),
                              ("Oldest age?", "SELECT max(age) FROM singer")]]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = write_recipe(tmp_path, folder, 'batching = "unshared"\nmethod = "full"\nnum_layers = -1\nlr = 1e-3\n'
                          'warmup_steps = 0\nschedule = "constant"\niters = 100\nbatch_size = 3\n'
                          'save_every = 1000\neval_every = 1000\n', data)
    result = Trainer(model, tokenizer, recipe, folder).run()
    # a frozen random embedding under the tied head (scaled by d_model^-0.5) caps how confident it gets
    assert result.history[0].train_loss > 5 and result.final_train_loss < 0.5
    model.eval()
    backend = Seq2SeqMLXBackend(model, tokenizer, max_tokens=40)
    assert [backend.generate(r) for r in records] == [r["output"] for r in records]


def test_spiece_model_alone_gives_the_same_tokenizer(t5_folder, tmp_path):
    """A T5 folder with only spiece.model (no tokenizer.json) tokenizes as HF's converted tokenizer does,
    without protobuf: we read the SentencePiece model ourselves."""
    from mlx_sql.models.tokenizer import load_t5_tokenizer

    folder = t5_folder("t5")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "spiece.model"):
        shutil.copy(folder / name, bare / name)
    text = f"{LONG_SCHEMA}\nHow  many singers? 20"
    assert load_t5_tokenizer(bare).encode(text) == load_t5_tokenizer(folder).encode(text)
    (bare / "spiece.model").write_bytes(b"\x0a\xff")
    with pytest.raises(MlxSqlError, match="not a SentencePiece model"):
        load_t5_tokenizer(bare)


def test_ollama_is_refused_a_t5_gguf(t5_folder, tmp_path):
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.export.ollama import write_modelfile

    gguf = export_gguf(t5_folder("t5"), tmp_path / "m.gguf", "q8_0").path
    with pytest.raises(MlxSqlError, match="Ollama cannot run encoder-decoder"):
        write_modelfile(gguf, None, "t5-sql", 2048, "Write SQL.", create=False)
    assert not (tmp_path / "Modelfile").exists()


def test_recipe_stages_train_resume_eval_fuse_export_plan(tiny_recipe, tmp_path):
    """The decoder models' stages, on T5: a stopped run resumes to the very adapter of a straight one;
    eval (MLX, encoder once per question) and the fused f16 GGUF in llama.cpp write the same SQL."""
    from mlx_sql.eval.pipeline import evaluate_model
    from mlx_sql.export.fuse import fuse_adapter
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.train.plan import make_plan
    from mlx_sql.train.trainer import train

    sets = ["train.batching=unshared", "train.iters=6", "train.save_every=2", "train.num_layers=-1", "train.lr=5e-3",
            "eval.max_examples=4", "eval.max_tokens=24", "export.gguf_dtype=f16"]
    straight = tiny_recipe("t5", *sets, examples=16, name="straight")
    stopped = tiny_recipe("t5", *sets, examples=16, name="stopped")
    full = train(straight)
    assert full.steps == 6 and full.final_train_loss < full.history[0].train_loss
    assert train(stopped, stop_after=4).steps == 4
    assert train(stopped, resume=True).steps == 6
    a, b = (mx.load(str(r.adapter_dir / "adapters.safetensors")) for r in (straight, stopped))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-6) for k in a)

    mlx_report = evaluate_model(straight, tmp_path / "eval-mlx", "mlx", straight.adapter_dir, "mlx")
    fused = fuse_adapter(straight.adapter_dir, straight.adapter_dir / "fused")
    assert (fused.out_dir / "spiece.model").is_file()
    export_gguf(fused.out_dir, fused.out_dir / "model-f16.gguf", "f16")
    cpp_report = evaluate_model(straight, tmp_path / "eval-cpp", "cpp", straight.adapter_dir, "llamacpp")
    assert mlx_report.summary["all"]["count"] == cpp_report.summary["all"]["count"] == 4
    ours = [json.loads(line)["raw"] for line in (tmp_path / "eval-mlx" / "predictions.jsonl").read_text().splitlines()]
    theirs = [json.loads(line)["raw"] for line in (tmp_path / "eval-cpp" / "predictions.jsonl").read_text().splitlines()]
    assert sum(x == y for x, y in zip(ours, theirs)) >= 3, (ours, theirs)

    plan, verdicts, _ = make_plan(straight)
    assert 0 < plan.total < 1e9 and plan.logits > 0 and verdicts[1].status == "fits"


def test_sampling_for_retries_is_reproducible_in_mlx_and_llama_cpp(t5_folder, tmp_path):
    """`eval.retries` samples: both T5 decoders are greedy at temperature 0 and draw the same text again for
    the same seed."""
    from mlx_sql.eval.backends import LlamaCppSeq2SeqBackend, Seq2SeqMLXBackend
    from mlx_sql.export.gguf_writer import export_gguf

    folder = t5_folder("t5")
    model, tokenizer, _ = load(folder)
    record = {"instruction": "Write SQL.", "input": f"{LONG_SCHEMA}\n\n### Question ###\nHow many singers?"}
    gguf = export_gguf(folder, tmp_path / "model-f16.gguf", "f16").path
    for backend in (Seq2SeqMLXBackend(model, tokenizer, max_tokens=12),
                    LlamaCppSeq2SeqBackend(str(gguf), tokenizer, max_tokens=12)):
        greedy = backend.generate(record)
        assert backend.generate(record, temperature=0.0, seed=9) == greedy
        draws = [backend.generate(record, temperature=1.5, seed=s) for s in (1, 2, 3)]
        assert [backend.generate(record, temperature=1.5, seed=s) for s in (1, 2, 3)] == draws
        assert len(set(draws + [greedy])) > 1
