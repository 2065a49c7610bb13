"""What result voting costs: questions/s for greedy decoding, K separate sampled completions, and K answers
sampled over one shared prompt in one llama.cpp batch — in one run, on the same questions and model.

The anchor is greedy decoding (what `eval` does without voting). "K separate" is what voting costs done
naively with llama-cpp-python's own `generate`: one completion per seed; it already reuses the prompt's KV
cache from the previous call (its prefix matching), so only decoding is repeated. "K shared" is
`LlamaCppBackend.generate_many`: the prompt once, K rows decoded together. Goal (issue 30): K = 8 at no
more than 2.5x greedy's wall time.

    python benchmarks/vote_cost.py --questions 12 --k 8
"""

from __future__ import annotations

import argparse
import time

from results import ROOT, model_label, update_section


SHOWS = ("What result voting costs in wall time against greedy decoding, and what decoding the K candidates as"
         " one batch over a shared prompt saves against K separate completions.")


def separate(backend, record, seeds, temperature) -> list[str]:
    """Completions one after another through llama-cpp-python's own `generate` and sampler (the naive way;
    seed 0 is the greedy answer), all in its one context, which keeps the prompt between them."""
    from mlx_sql.eval.backends import prompt_ids, statement_done

    prefix, question = prompt_ids(backend.encoder, record)
    texts = []
    for seed in seeds:
        backend.llm.set_seed(seed)
        out: list[int] = []
        temp, top_k = (temperature, 40) if seed else (0.0, 1)
        for token in backend.llm.generate([*prefix, *question], temp=temp, top_k=top_k, top_p=1.0, reset=True):
            if token in backend.eos:
                break
            out.append(token)
            if len(out) >= backend.max_tokens or statement_done(backend.tokenizer, out):
                break
        texts.append(backend.tokenizer.decode(out))
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/qwen2.5-coder-0.5b.toml")
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args()

    from mlx_sql.data.benchmark import recipe_benchmark
    from mlx_sql.eval.pipeline import eval_records, make_backend, select_questions
    from mlx_sql.data.pruning import token_counter
    from mlx_sql.models.sources import gguf_file
    from mlx_sql.recipe import load_recipe

    recipe = load_recipe(ROOT / args.recipe, [f'data.path="{args.spider}"', "eval.max_tokens=160"])
    bench, _ = recipe_benchmark(recipe)
    _, questions, _ = select_questions(bench, "dev", sample=args.questions, seed=1)
    backend = make_backend(recipe, None, "llamacpp", str(gguf_file(recipe.model)))
    records = eval_records(bench, questions, recipe, "dev", token_counter(backend.tokenizer))
    temperature, seeds = recipe.eval.retry_temperature, list(range(1, args.k))
    backend.generate(records[0])  # warm up: first-call allocations out of the timings
    backend.generate_many(records[0], seeds, temperature)

    timings: dict[str, float] = {}
    start = time.perf_counter()
    for r in records:
        backend.generate(r)
    timings["greedy"] = time.perf_counter() - start
    start = time.perf_counter()
    for r in records:
        separate(backend, r, [0, *seeds], temperature)
    timings[f"K = {args.k}, separate completions"] = time.perf_counter() - start
    start = time.perf_counter()
    for r in records:
        backend.generate(r)
        backend.generate_many(r, seeds, temperature)
    timings[f"K = {args.k}, one shared-prompt batch"] = time.perf_counter() - start
    # early stop needs the candidates' results: this row also runs them in the sandbox (the others only decode)
    from mlx_sql.eval.extract import extract_sql
    from mlx_sql.eval.vote import vote_on_record
    from mlx_sql.sandbox import Executor

    drawn = 0
    with Executor(workers=1, timeout=recipe.eval.timeout) as executor:
        executor.run(bench.db_path(questions[0].db_id, "dev"), "SELECT 1")  # the worker started, out of the timing
        start = time.perf_counter()
        for q, r in zip(questions, records):
            path = bench.db_path(q.db_id, "dev")
            voted = vote_on_record(backend, r, extract_sql(backend.generate(r)), lambda sql: executor.run(path, sql),
                                   args.k, temperature, early_stop=True)
            drawn += len(voted.candidates)
        timings[f"K = {args.k}, shared batch, early stop (and the sandbox runs)"] = time.perf_counter() - start

    base = timings["greedy"]
    lines = [f"{len(records)} Spider dev questions (a seeded sample), {model_label(recipe.model)} "
             f"in llama.cpp (2 threads), max 160 tokens, temperature {temperature}, top-k 40; the greedy answer plus "
             f"K-1 samples per question. Measured in one run by `benchmarks/vote_cost.py`.", "",
             "| decoding | questions/s | wall time vs greedy |", "|---|---:|---:|"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {len(records) / seconds:.3f} | {seconds / base:.2f}x |")
        print(f"{name}: {len(records) / seconds:.3f} questions/s, {seconds / base:.2f}x greedy")
    shared = timings[f"K = {args.k}, one shared-prompt batch"]
    early = timings[f"K = {args.k}, shared batch, early stop (and the sandbox runs)"]
    verdict = "met" if shared / base <= 2.5 else "not met"
    lines += ["", f"Goal K = {args.k} at ≤ 2.5x greedy's wall time, all {args.k} candidates drawn: **{verdict}** "
              f"({shared / base:.2f}x); the shared batch takes {timings[f'K = {args.k}, separate completions'] / shared:.2f}x "
              f"less time than separate completions. With `eval.vote_early_stop` (the first sample alone, the rest "
              f"only where it disagrees with the greedy answer) {drawn / len(records):.1f} candidates a question were "
              f"drawn on average, {early / base:.2f}x greedy's wall time, the sandbox runs included: "
              f"**{'met' if early / base <= 2.5 else 'not met'}** that way."]
    if not args.no_write:
        update_section("vote-cost", "What result voting costs", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    main()
