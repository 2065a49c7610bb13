"""Memory plan vs measured peak, on the batch the plan calls the worst: the data's longest.

For each recipe given (default: smollm2-135m on minispider, shared and unshared), predicts peak memory
with `mlx-sql plan`'s model, then runs one real training step (forward, backward, AdamW update) on the
longest batch in the recipe's train.jsonl and reads MLX's peak. Prints predicted / measured.

Mode `grpo` (train.objective = "grpo") measures the batch the plan calls a GRPO step's worst: the question with
the longest prompt and a group of `grpo_max_tokens`-long answers (token ids drawn at random: memory does not
depend on which tokens), the reference pass with the adapter off, then the loss's forward, backward and update.

    python benchmarks/memory_plan.py
    python benchmarks/memory_plan.py --recipe recipes/qwen2.5-coder-0.5b.toml --modes grpo \
        --set 'data.path="../shared/spider"' --set data.max_examples=400
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from results import ROOT, update_section


SHOWS = ("How close `mlx-sql plan`'s predicted peak is to MLX's measured peak on a real model: the number "
         "`train` uses to refuse a run that will not fit.")


def worst_batch(recipe, encoder):
    from mlx_sql.train.encode import prefix_key

    records = [json.loads(l) for l in (recipe.data_dir / "train.jsonl").read_text().splitlines()]
    b = recipe.train.batch_size
    if recipe.train.batching == "unshared":
        return sorted(records, key=lambda r: encoder.encode(r).length)[-b:]
    groups: dict = {}
    for r in records:
        groups.setdefault(prefix_key(r), []).append(r)
    group = max(groups.values(), key=lambda g: len(encoder.encode(g[0]).prefix))
    return sorted(group, key=lambda r: len(encoder.encode(r).segment))[-b:]


def longest_prompt(recipe, encoder) -> dict:
    """The record whose prompt (shared prefix + question) is the longest: a GRPO step's worst question."""
    from mlx_sql.eval.backends.base import prompt_ids

    records = [json.loads(l) for l in (recipe.data_dir / "train.jsonl").read_text().splitlines()]
    return max(records, key=lambda r: sum(map(len, prompt_ids(encoder, r))))


def grpo_step(model, tokenizer, encoder, recipe) -> None:
    """One GRPO update on the worst group: full-length answers, reference pass, loss, AdamW."""
    import numpy as np

    from mlx_sql.train.grpo import GRPO

    cfg = recipe.train
    grpo = GRPO(model, tokenizer, encoder, cfg, reward=lambda record, sql: 0.0)
    rng = np.random.default_rng(0)
    answers = [(rng.integers(100, 1000, cfg.grpo_max_tokens).tolist(), None)
               for _ in range(cfg.grpo_group)]
    batch = grpo.group_batch(longest_prompt(recipe, encoder), answers)
    advantages = mx.array(np.linspace(-1.0, 1.0, cfg.grpo_group, dtype=np.float32))
    optimizer = optim.AdamW(learning_rate=1e-5)
    mx.reset_peak_memory()
    grads, loss, _, _, _ = grpo.gradients(batch, advantages)  # the trainer's own reference pass and loss
    optimizer.update(model, grads)
    mx.eval(model.trainable_parameters(), optimizer.state, loss)


def measure(recipe_path: str, sets: list[str]) -> tuple[float, float]:
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.loading import load_model
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.adapters import adapter_config, apply_adapters
    from mlx_sql.train.batches import make_batch
    from mlx_sql.train.encode import Encoder
    from mlx_sql.train.losses import batch_loss
    from mlx_sql.train.plan import make_plan

    recipe = load_recipe(recipe_path, sets)
    model, tokenizer, base = load_model(recipe.model)
    build_dataset(recipe, tokenizer)
    predicted = make_plan(recipe)[0].total
    apply_adapters(model, adapter_config(model, recipe.train, base))
    from mlx_sql.train.trainer import checkpointing_applies, enable_grad_checkpointing

    if checkpointing_applies(recipe.train):
        enable_grad_checkpointing(model)
    encoder = Encoder(tokenizer)
    if recipe.train.objective == "grpo":
        grpo_step(model, tokenizer, encoder, recipe)
        return predicted, mx.get_peak_memory()
    batch = make_batch(encoder, worst_batch(recipe, encoder), recipe.train.batching == "schema_shared",
                       recipe.train.max_seq_length)
    optimizer = optim.AdamW(learning_rate=1e-4)
    mx.reset_peak_memory()
    (loss, n), grads = nn.value_and_grad(model, batch_loss)(model, batch)
    optimizer.update(model, grads)
    mx.eval(model.trainable_parameters(), optimizer.state, loss)
    return predicted, mx.get_peak_memory()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "smollm2-135m.toml"))
    parser.add_argument("--set", action="append", default=[], dest="sets")
    parser.add_argument("--modes", default="schema_shared,unshared")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one mode, in its own process (its own peak)
    args = parser.parse_args()
    if "grpo" in args.modes.split(",") and args.modes != "grpo":
        parser.error("--modes grpo runs alone (it writes its own section)")
    if args.worker:
        mode = ['train.objective="grpo"', "train.batching=schema_shared"] if args.worker == "grpo" else \
            [f"train.batching={args.worker}"]
        sets = args.sets + [*mode, 'data.out_dir="/tmp/mlx-sql-plan-bench"']
        predicted, measured = measure(args.recipe, sets)
        print(json.dumps({"predicted": predicted, "measured": measured}))
        return
    import subprocess

    rows = []
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--recipe", args.recipe, "--worker", mode,
               *(f"--set={s}" for s in args.sets)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        rows.append(f"| {mode.replace('_', '-')} | {r['predicted'] / 1e9:.2f} GB | {r['measured'] / 1e9:.2f} GB | "
                    f"{r['predicted'] / r['measured']:.2f} |")
    if "grpo" in args.modes.split(","):
        lines = [f"One real GRPO update on the group the plan calls the worst — the data's longest prompt, "
                 f"every answer at grpo_max_tokens (the reference pass with the adapter off, the loss's forward and "
                 f"backward, AdamW) — `{Path(args.recipe).name}` {' '.join(args.sets)} (float32, LoRA), in its own "
                 "process. The plan is the worst case a run can meet; a step whose answers stop earlier holds less.",
                 "", "| step | predicted | measured | ratio |", "|---|---:|---:|---:|", *rows]
        print("\n".join(lines))
        update_section("memory-plan-grpo", "Memory plan vs measured peak, a GRPO step (`benchmarks/memory_plan.py "
                       "--modes grpo`)", "\n".join(lines), shows=SHOWS)
        return
    lines = [f"One real training step (forward, backward, AdamW) on the batch the plan calls the worst (the data's "
             f"longest), `{Path(args.recipe).name}` {' '.join(args.sets)} (float32, LoRA), each mode in its own "
             "process:", "", "| batching | predicted | measured | ratio |", "|---|---:|---:|---:|", *rows]
    print("\n".join(lines))
    update_section("memory-plan", "Memory plan vs measured peak (`benchmarks/memory_plan.py`)", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    sys.exit(main())
