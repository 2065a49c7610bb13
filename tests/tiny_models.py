"""Tiny randomly-initialised models for tests, built offline in a few seconds.

Each is an HF-style folder (config.json, model.safetensors, tokenizer files with a
chat template) that `mlx_lm.load` opens, so every stage is tested on the same
loading path real models take, without downloading anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx_lm.utils import _get_classes, save_config, save_model

CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}<start_of_turn>"
         "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
         "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
         "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
ZEPHYR = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
          "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
PHI3 = ("{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% else %}{{ eos_token }}{% endif %}")

# special tokens: (bos, eos, pad, extra specials, chat template)
FAMILIES = {
    "chatml": ("<|endoftext|>", "<|im_end|>", "<|endoftext|>", ["<|im_start|>"], CHATML),
    "gemma": ("<bos>", "<end_of_turn>", "<pad>", ["<start_of_turn>", "<eos>"], GEMMA),
    "phi3": ("<s>", "<|end|>", "<|endoftext|>", ["<|user|>", "<|assistant|>", "<|system|>"], PHI3),
    "zephyr": ("<s>", "</s>", "</s>", [], ZEPHYR),
    "codegen": ("<|endoftext|>", "<|endoftext|>", "<|endoftext|>", [], None),  # Phi-2: GPT-2 BPE, no chat template
}
# SentencePiece-style (byte-fallback BPE, "▁" for spaces) like the real Phi-3, TinyLlama and Llama 2
SENTENCEPIECE = {"phi3", "zephyr"}

COMMON = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
              num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=2048)
ARCHITECTURES = {
    "llama": ("chatml", dict(model_type="llama", rope_theta=10000.0, tie_word_embeddings=True)),
    "qwen2": ("chatml", dict(model_type="qwen2", rope_theta=10000.0, tie_word_embeddings=True)),
    "gemma": ("gemma", dict(model_type="gemma", head_dim=16, rope_theta=10000.0)),
    "gemma3_text": ("gemma", dict(model_type="gemma3_text", head_dim=16, query_pre_attn_scalar=16,
                                  sliding_window=16, sliding_window_pattern=2, rope_theta=10000.0,
                                  rope_local_base_freq=10000.0)),
    "phi3": ("phi3", dict(model_type="phi3", rope_theta=10000.0, tie_word_embeddings=False)),
    "tinyllama": ("zephyr", dict(model_type="llama", rope_theta=10000.0, tie_word_embeddings=False)),
    # Phi-2's layout: LayerNorm with biases, partial rotary (NeoX order), biased q/k/v/dense and fc1/fc2
    "phi": ("codegen", dict(model_type="phi", num_key_value_heads=4, partial_rotary_factor=0.5, layer_norm_eps=1e-5,
                            rope_theta=10000.0)),
}


def training_corpus() -> list[str]:
    """Text close to what the tests feed the models: minispider questions, SQL and schemas."""
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "minispider"
    texts = []
    for name in ("train_spider.json", "dev.json"):
        for item in json.loads((root / name).read_text()):
            texts += [item["question"], item["query"]]
    for script in sorted((root / "database").glob("*/*.sql")):
        texts.append(script.read_text()[:4000])
    texts.append("### Schema ### CREATE TABLE PRIMARY KEY FOREIGN KEY REFERENCES ### Question ### -> , ( ) ;")
    return texts


def build_sentencepiece_tokenizer(family: str, out: Path, vocab_size: int = 700):
    """A Llama-layout tokenizer: <unk> <s> </s>, the 256 <0xNN> byte tokens, then BPE pieces over "▁" words."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, pad, extra, template = FAMILIES[family]
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
    trainer_tok.train_from_iterator(training_corpus(), trainer)
    learned = json.loads(trainer_tok.to_str())["model"]
    head = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    vocab = {t: i for i, t in enumerate(head)}
    for token in sorted(learned["vocab"], key=learned["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = [t for t in dict.fromkeys([bos, eos, pad, *extra]) if t not in vocab]
    # Phi-3's chat tokens swallow the whitespace after them (rstrip), as in its real tokenizer.json
    rstrip = {t for t in specials if t != "<|endoftext|>"} if family == "phi3" else set()
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True, rstrip=t in rstrip)
                            for t in ["<unk>", "<s>", "</s>", *specials]])
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token="<unk>", additional_special_tokens=[t for t in specials if t != pad])
    fast.chat_template = template
    fast.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["add_bos_token"] = True
    config_path.write_text(json.dumps(config, indent=2))
    return fast


# Byte-level tokenizers split text before BPE: GPT-2's regex (runs of digits) unless the architecture's real
# tokenizer does otherwise — Qwen2's splits every digit off, and its GGUF must say so ("qwen2").
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
PRE_TOKENIZER = {"qwen2": "qwen2"}


def build_tokenizer(family: str, out: Path, vocab_size: int = 700, pre: str = "gpt-2"):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if family in SENTENCEPIECE:
        return build_sentencepiece_tokenizer(family, out, vocab_size)
    bos, eos, pad, extra, template = FAMILIES[family]
    specials = list(dict.fromkeys([bos, eos, pad, *extra]))
    tok = Tokenizer(models.BPE())
    if pre == "qwen2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[t for t in specials if t not in (bos, eos, pad)])
    fast.chat_template = template
    fast.save_pretrained(str(out))
    return fast


T5_COMMON = dict(model_type="t5", architectures=["T5ForConditionalGeneration"], is_encoder_decoder=True, d_model=64,
                 d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                 relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                 n_positions=512, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
T5_VARIANTS = {"t5": dict(feed_forward_proj="relu", tie_word_embeddings=True),  # T5 v1.0 (t5-small)
               "t5-v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}  # v1.1 / FLAN-T5


def build_t5_tokenizer(out: Path, vocab_size: int = 600):
    """T5's layout: a SentencePiece unigram model (<pad> </s> <unk> = 0 1 2, NMT-NFKC normalization) as
    spiece.model, and the tokenizer.json HF's converter makes of it."""
    import io

    import sentencepiece as spm
    from transformers import PreTrainedTokenizerFast

    from mlx_sql.models.spiece import parse_sentencepiece, t5_tokenizer_from_sentencepiece

    buffer = io.BytesIO()
    lines = [line for text in training_corpus() for line in text.splitlines() if line.strip()]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   normalization_rule_name="nmt_nfkc", minloglevel=2)
    (out / "spiece.model").write_bytes(buffer.getvalue())
    model = parse_sentencepiece(buffer.getvalue())
    fast = PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer_from_sentencepiece(model), eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(str(out))
    return fast


def build_tiny_t5(variant: str, out: Path, seed: int = 0, **overrides) -> Path:
    from mlx.utils import tree_flatten

    from mlx_sql.models.t5 import T5Args, T5Model

    tokenizer = build_t5_tokenizer(out)
    config = {**T5_COMMON, **T5_VARIANTS[variant], **overrides, "vocab_size": len(tokenizer)}
    mx.random.seed(seed)
    model = T5Model(T5Args.from_config(config))
    mx.eval(model.parameters())
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def build_tiny_model(arch: str, out: Path, seed: int = 0, vocab_padding: int = 0, **overrides) -> Path:
    """Write a tiny `arch` model with its tokenizer to `out` and return the folder. `vocab_padding` gives the
    embedding rows no token uses, as real Phi-2 (51,200 rows, 50,295 tokens) and Qwen have."""
    if arch in T5_VARIANTS:
        out.mkdir(parents=True, exist_ok=True)
        return build_tiny_t5(arch, out, seed, **overrides)
    family, specific = ARCHITECTURES[arch]
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family, out, pre=PRE_TOKENIZER.get(arch, "gpt-2"))
    config = {**COMMON, **specific, **overrides, "vocab_size": len(tokenizer) + vocab_padding}
    config["bos_token_id"] = tokenizer.bos_token_id
    config["eos_token_id"] = tokenizer.eos_token_id
    config["pad_token_id"] = tokenizer.pad_token_id
    model_cls, args_cls = _get_classes(config)
    mx.random.seed(seed)
    model = model_cls(args_cls.from_dict(config))
    mx.eval(model.parameters())
    save_model(out, model)
    save_config(config, out / "config.json")
    return out
