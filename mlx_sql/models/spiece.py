"""SentencePiece unigram models (T5's `spiece.model`) without protobuf: read the few fields we need,
and turn them into the `tokenizer.json` Hugging Face's T5 tokenizer would be.

The model file is a protobuf `ModelProto`; we read pieces (text, score, type), the trainer's
model type and the normalizer spec (precompiled character map, dummy prefix, whitespace
collapsing), which is all llama.cpp's "t5" tokenizer and HF's converter use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from mlx_sql.errors import MlxSqlError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM = 1


@dataclass
class SentencePieceModel:
    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    model_type: int = UNIGRAM
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True

    def id_of(self, kind: int) -> int | None:
        return next((i for i, t in enumerate(self.types) if t == kind), None)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of one protobuf message."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def parse_sentencepiece(data: bytes) -> SentencePieceModel:
    model = SentencePieceModel()
    for number, _, value in _fields(data):
        if number == 1:  # SentencePiece {piece = 1, score = 2, type = 3}
            piece, score, kind = "", 0.0, NORMAL
            for n, _, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = int(v)
            model.pieces.append(piece)
            model.scores.append(score)
            model.types.append(kind)
        elif number == 2:  # TrainerSpec {model_type = 3}
            for n, _, v in _fields(value):
                if n == 3:
                    model.model_type = int(v)
        elif number == 3:  # NormalizerSpec {precompiled_charsmap = 2, add_dummy_prefix = 3, remove_extra_whitespaces = 4}
            for n, _, v in _fields(value):
                if n == 2:
                    model.precompiled_charsmap = bytes(v)
                elif n == 3:
                    model.add_dummy_prefix = bool(v)
                elif n == 4:
                    model.remove_extra_whitespaces = bool(v)
    return model


def read_sentencepiece(path: Path) -> SentencePieceModel:
    try:
        model = parse_sentencepiece(Path(path).read_bytes())
    except (OSError, ValueError, UnicodeDecodeError, struct.error) as exc:
        raise MlxSqlError(f"not a SentencePiece model: {exc}", path) from None
    if not model.pieces:
        raise MlxSqlError("not a SentencePiece model: it has no pieces", path)
    return model


def t5_tokenizer_from_sentencepiece(model: SentencePieceModel, extra_ids: int = 0):
    """A `tokenizers.Tokenizer` that tokenizes as HF's T5 tokenizer does (its converter's layout):
    precompiled normalizer, whitespace split, "▁" prefix, `</s>` appended."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if model.model_type != UNIGRAM:
        raise MlxSqlError("only unigram SentencePiece models make a T5 tokenizer")
    unk = model.id_of(UNKNOWN)
    tok = Tokenizer(models.Unigram(list(zip(model.pieces, model.scores)), unk_id=unk, byte_fallback=False))
    steps = [normalizers.Precompiled(model.precompiled_charsmap)] if model.precompiled_charsmap else []
    if model.remove_extra_whitespaces:
        steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if model.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
    specials = [p for p, t in zip(model.pieces, model.types) if t in (CONTROL, UNKNOWN)]
    extra = [f"<extra_id_{i}>" for i in range(extra_ids - 1, -1, -1)]
    tok.add_special_tokens(specials + extra)
    eos = model.pieces.index("</s>") if "</s>" in model.pieces else None
    if eos is not None:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", eos)])
    return tok
