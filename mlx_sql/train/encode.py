"""Records → token ids, split where questions of one database stop sharing text.

An example is `prefix` (chat header, instruction, schema) + `segment` (question,
generation prompt, then the SQL and end of turn). Both training modes use exactly
these ids, so the schema-shared and unshared losses are the same computation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlx_sql.data.examples import render_prompt_completion, segment_start


@dataclass(frozen=True)
class Encoded:
    prefix: tuple[int, ...]
    segment: tuple[int, ...]
    completion_start: int  # index in `segment` of the first token that carries loss

    @property
    def length(self) -> int:
        return len(self.prefix) + len(self.segment)


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer.encode("a")[:1] == [bos]


def prefix_key(record: dict[str, Any]) -> tuple[str, str]:
    """Records with the same key have the same prefix text (same instruction and schema)."""
    text = record["input"]
    return record.get("db_id", ""), record["instruction"] + text[:segment_start(text)]


class Encoder:
    """Tokenizes records through the model's chat template; caches prefixes (they repeat).

    For an encoder-decoder model (`decoder_start` given) the same split serves: prefix + question
    are the encoder's input, the completion the decoder's target.
    """

    def __init__(self, tokenizer: Any, decoder_start: int | None = None):
        self.tokenizer = tokenizer
        self.decoder_start = decoder_start
        self.bos = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
        self._prefix_cache: dict[str, tuple[int, ...]] = {}

    @property
    def seq2seq(self) -> bool:
        return self.decoder_start is not None

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any) -> "Encoder":
        args = getattr(model, "args", None) if getattr(model, "is_encoder_decoder", False) else None
        return cls(tokenizer, args.decoder_start_token_id if args is not None else None)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def encode(self, record: dict[str, Any]) -> Encoded:
        prompt, completion = render_prompt_completion(self.tokenizer, record)
        cut = segment_start(prompt)
        prefix_text, question_text = prompt[:cut], prompt[cut:]
        if prefix_text not in self._prefix_cache:
            bos = self.bos if not prefix_text.startswith(self.tokenizer.bos_token or "\0") else []
            self._prefix_cache[prefix_text] = tuple(bos + self._ids(prefix_text))
        question = self._ids(question_text)
        return Encoded(self._prefix_cache[prefix_text], tuple(question + self._ids(completion)), len(question))
