"""What a GRPO step costs here against mlx-lm-lora's GRPO, in one run: the same model, LoRA layers, Spider train
questions (in the same order), group size, temperature, answer length, KL weight and clip.

The anchor is mlx-lm-lora (`train_grpo`, set up as its command line sets up GRPO: a second, frozen copy of the
model as the reference), run by `grpo_cost_mlx_lm_lora.py` in its own environment — `make bench-grpo` makes that
environment (`.venv-mlx-lm-lora`) and never adds the package to ours. Ours is `mlx-sql train` with
`train.objective = "grpo"`. The first step on each side (compilation, first allocations) is left out of the
timing; questions/s is over the remaining steps. Peak memory is each process's own MLX peak (weights included).
Issue 32's goal: ≥ 2x mlx-lm-lora's questions/s at ≤ its memory.

A group whose answers all earn the same reward carries no signal: ours skips its loss (counted), mlx-lm-lora
computes it anyway; both counts are printed, since that saving depends on how many groups are uniform.

    make bench-grpo                 # or: python benchmarks/grpo_cost.py --lora-python .venv-mlx-lm-lora/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import ROOT, model_label, update_section

SHOWS = ("What one GRPO step (a question, its group of sampled answers, rewards, the loss and the update) costs in"
         " time and memory with our trainer against mlx-lm-lora's GRPO on the same model, questions and settings.")


def our_run(recipe, steps: int) -> dict:
    """Train `steps` GRPO steps; the time at each step's report and the peak memory."""
    from mlx_sql.train.trainer import train

    ends: list[float] = []
    reports = []

    def on_report(report) -> None:
        ends.append(time.perf_counter())
        reports.append(report)

    start = time.perf_counter()
    train(recipe, on_report=on_report)
    objective = [r.objective or {} for r in reports]
    return {"step_ends": [t - start for t in ends], "peak_memory_gb": max(r.peak_memory_gb for r in reports),
            "answer_tokens": [o.get("answer_tokens", 0.0) for o in objective],
            "uniform_groups": int(sum(o.get("skipped_groups", 0) for o in objective)),
            "reward_mean": [o.get("reward_mean", 0.0) for o in objective],
            "reference_reused": int(sum(o.get("reference_prefix_reused", 0) for o in objective)),
            "kl": recipe.train.grpo_kl,
            "losses": int(sum(o.get("groups", 0) - o.get("skipped_groups", 0) for o in objective)),
            "phases": {p: sum(o.get(f"{p}_s", 0.0) for o in objective[1:]) for p in ("sampling", "reward", "loss")}}


def job_for_worker(recipe, steps: int) -> dict:
    """The questions in the order our trainer took them (its batch plan), with prompt token ids exactly as ours
    (schema prefix + question), the gold SQL and the database; the model, dtype and LoRA layers as ours."""
    from mlx_sql.data.benchmark import recipe_benchmark
    from mlx_sql.eval.backends.base import prompt_ids
    from mlx_sql.models.sources import default_dtype, resolve_model_path
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.train.batches import BatchPlan
    from mlx_sql.train.encode import Encoder

    cfg = recipe.train
    plan = BatchPlan(recipe.data_dir / "train.jsonl", 1, True, cfg.seed).forever()
    records = [next(plan)[1][0] for _ in range(steps)]
    encoder = Encoder(load_tokenizer(recipe.model), None)
    bench, _ = recipe_benchmark(recipe)
    adapter = json.loads((recipe.adapter_dir / "adapter_config.json").read_text())
    questions = []
    for r in records:
        prefix, question = prompt_ids(encoder, r)
        questions.append({"prompt_ids": [*prefix, *question], "gold": r["output"],
                          "db": str(bench.db_path(r["db_id"], recipe.data.train_split))})
    return {"model": resolve_model_path(recipe.model), "dtype": default_dtype(recipe.model),
            "num_layers": adapter["num_layers"], "lora_parameters": adapter["lora_parameters"],
            "group": cfg.grpo_group, "temperature": cfg.grpo_temperature, "max_tokens": cfg.grpo_max_tokens,
            "kl": cfg.grpo_kl, "clip": cfg.grpo_clip, "runs_credit": cfg.grpo_reward_runs, "lr": cfg.lr,
            "max_seq_length": cfg.max_seq_length, "questions": questions,
            "databases": len({r["db_id"] for r in records})}


def questions_per_s(run: dict) -> float:
    ends = run["step_ends"]
    return (len(ends) - 1) / (ends[-1] - ends[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/qwen2.5-coder-0.5b.toml")
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--lora-python", default=str(ROOT / ".venv-mlx-lm-lora" / "bin" / "python"),
                        help="a Python with mlx-lm-lora installed (make bench-grpo makes one)")
    parser.add_argument("--questions", type=int, default=6, help="steps on each side, one question a step; the "
                        "first is left out of the timing")
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--set", action="append", default=[], help="more recipe overrides, as in mlx-sql")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=SET;SET",
                        help="another run of ours with these overrides, a row of its own "
                        "(e.g. 'prompt held fixed=train.grpo_prompt_grad=false')")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = parser.parse_args()
    if args.questions < 2:
        parser.error("--questions must be at least 2 (the first step is left out of the timing)")
    if not Path(args.lora_python).is_file():
        sys.exit(f"error: no mlx-lm-lora environment at {args.lora_python}: run `make bench-grpo`")

    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe

    with tempfile.TemporaryDirectory(prefix="grpo-cost-") as tmp:
        root = Path(tmp)
        recipe_sets = [
            f'data.path="{args.spider}"', f'data.out_dir="{root / "data"}"',
            f"data.max_examples={args.questions * 4}", 'train.objective="grpo"', "train.batch_size=1",
            "train.grad_accumulation=1", f"train.iters={args.questions}", f"train.grpo_group={args.group}",
            f"train.grpo_max_tokens={args.max_tokens}", "train.lr=1e-5", "train.warmup_steps=0",
            "train.save_every=100000", "train.eval_every=100000", *args.set]
        recipe = load_recipe(ROOT / args.recipe, [*recipe_sets, f'train.adapter_dir="{root / "ours"}"'])
        build_dataset(recipe, load_tokenizer(recipe.model))
        print(f"ours: {args.questions} GRPO steps, group {args.group} ...", flush=True)
        ours = our_run(recipe, args.questions)
        more = {}
        for i, spec in enumerate(args.also):
            name, _, sets = spec.partition("=")
            print(f"ours, {name}: {args.questions} GRPO steps ...", flush=True)
            more[f"mlx-sql, {name}"] = our_run(load_recipe(recipe.source, [
                *recipe_sets, f'train.adapter_dir="{root / f"ours-{i}"}"', *filter(None, sets.split(";"))]),
                args.questions)
        job = job_for_worker(recipe, args.questions)
        (root / "job.json").write_text(json.dumps(job))
        print(f"mlx-lm-lora: the same {args.questions} questions ...", flush=True)
        subprocess.run([args.lora_python, str(ROOT / "benchmarks" / "grpo_cost_mlx_lm_lora.py"),
                        str(root / "job.json"), str(root / "theirs.json")], check=True)
        theirs = json.loads((root / "theirs.json").read_text())
        import importlib.metadata as md
        lora_version = subprocess.run([args.lora_python, "-c", "import importlib.metadata as m; "
                                       "print(m.version('mlx-lm-lora'))"], capture_output=True, text=True).stdout.strip()

    rows = {"mlx-lm-lora " + lora_version + " (anchor)": theirs, "mlx-sql": ours, **more}
    anchor_qps, anchor_mem = questions_per_s(theirs), theirs["peak_memory_gb"]
    model = model_label(recipe.model)
    lines = [f"{args.questions} Spider train questions (one a step; the first step of each side left out of the "
             f"timing), {model} ({job['dtype']}), LoRA rank {job['lora_parameters']['rank']} on "
             f"{job['num_layers']} layers, group {args.group}, temperature {job['temperature']} (ours over the top 40 tokens, "
             f"mlx-lm-lora's over all), at most {args.max_tokens} answer tokens, KL {job['kl']}, clip {job['clip']}; mlx {md.version('mlx')}, "
             f"mlx-lm {md.version('mlx-lm')}. Measured in one run by `benchmarks/grpo_cost.py`.", "",
             "| trainer | questions/s | vs anchor | peak memory (GB) | vs anchor | answer tokens (mean) "
             "| groups all alike |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, run in rows.items():
        qps, tokens = questions_per_s(run), [t for t in run["answer_tokens"] if t]
        lines.append(f"| {name} | {qps:.4f} | {qps / anchor_qps:.2f}x | {run['peak_memory_gb']:.2f} | "
                     f"{run['peak_memory_gb'] / anchor_mem:.2f}x | {sum(tokens) / max(1, len(tokens)):.0f} | "
                     f"{run['uniform_groups']} of {args.questions} |")
    speed, memory = questions_per_s(ours) / anchor_qps, ours["peak_memory_gb"] / anchor_mem
    verdict = "met" if speed >= 2 and memory <= 1 else "not met"
    lines += ["", f"Goal ≥ 2x mlx-lm-lora's questions/s at ≤ its memory: **{verdict}** ({speed:.2f}x the "
              f"questions/s at {memory:.2f}x the memory). Each side samples its own answers, so answer lengths and "
              f"the groups whose answers all earned the same reward (ours skips their loss, mlx-lm-lora computes "
              f"it) differ between the sides; both are in the table."]
    lines.append("Our reference pass (the model with its adapter off) keeps the keys/values of the last schema "
                 "prefixes it ran, the base weights being fixed: " + "; ".join(
                     f"{name}: reused in {run['reference_reused']} of {run['losses']} groups with a loss"
                     for name, run in [("mlx-sql", ours), *more.items()] if run["losses"] and run["kl"] > 0) +
                 f" (the {args.questions} questions come from {job['databases']} databases).")
    timed = ours["step_ends"][-1] - ours["step_ends"][0]
    lines.append("Where our steps' time went (after the first): " + ", ".join(
        f"{phase} {seconds / timed:.0%}" for phase, seconds in ours["phases"].items()) + ".")
    for name, run in more.items():
        lines.append(f"{name}: {questions_per_s(run) / questions_per_s(ours):.2f}x mlx-sql's questions/s; its time "
                     "went to " + ", ".join(f"{phase} {seconds / (run['step_ends'][-1] - run['step_ends'][0]):.0%}"
                                           for phase, seconds in run["phases"].items()) + ".")
    print("\n".join(lines))
    if not args.no_write:
        update_section("grpo-cost", "A GRPO step against mlx-lm-lora", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    main()
