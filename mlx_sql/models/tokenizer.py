"""The tokenizer a recipe's model uses, without loading its weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.sources import model_folder_config, resolve_model_path, seq2seq_folder
from mlx_sql.recipe import ModelConfig


def load_t5_tokenizer(folder: Path) -> Any:
    """Hugging Face's tokenizer for a T5 folder: its tokenizer.json, or one built from spiece.model alone
    (read without protobuf), laid out as HF's own T5 converter does."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(folder))
    if not (folder / "spiece.model").is_file():
        raise MlxSqlError("a T5 folder needs tokenizer.json or spiece.model", folder)
    from mlx_sql.models.spiece import read_sentencepiece, t5_tokenizer_from_sentencepiece

    spm = read_sentencepiece(folder / "spiece.model")
    import json

    vocab = json.loads((folder / "config.json").read_text()).get("vocab_size", len(spm.pieces))
    extra = max(0, min(100, vocab - len(spm.pieces)))  # HF's T5 adds up to 100 <extra_id_N> sentinels
    return PreTrainedTokenizerFast(tokenizer_object=t5_tokenizer_from_sentencepiece(spm, extra), eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")


def load_folder_tokenizer(folder: Path) -> Any:
    """The tokenizer of a model folder: mlx-lm's wrapper, or HF's own for T5 (which mlx-lm cannot load)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    folder = Path(folder)
    if seq2seq_folder(folder):
        return load_t5_tokenizer(folder)
    return mlx_load_tokenizer(folder)


def load_tokenizer(cfg: ModelConfig) -> Any:
    """The model's tokenizer (GGUF sources are imported, and cached, first; hub T5 models downloaded)."""
    location = resolve_model_path(cfg)
    try:
        if model_folder_config(location).get("model_type") in ("t5", "mt5"):
            from mlx_sql.models.sources import t5_local_folder

            return load_t5_tokenizer(t5_local_folder(location))
        return load_folder_tokenizer(Path(location))
    except MlxSqlError:
        raise
    except Exception as exc:  # hub errors, missing files, bad JSON: all mean "no tokenizer here"
        raise MlxSqlError(f"cannot load the tokenizer: {type(exc).__name__}: {exc}".splitlines()[0],
                          location) from None
