"""Training throughput: our trainer (schema-shared and unshared) vs `mlx_lm lora`, side by side.

Same model (--model: SmolLM2-135M-Instruct or Qwen2.5-Coder-0.5B-Instruct, imported from its PyPI GGUF, float32), same Spider training
examples (../shared/spider or --spider), same batch size, LoRA rank/scale/targets, max sequence
length, learning rate and number of steps. Each run is its own process, so peak memory is its own.
Prints examples/s, real (non-pad) tokens/s, peak memory, the ratios against mlx-lm, and the mean
training loss. Run through `make bench-train` (OpenBLAS preloaded) or the CLI environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from results import ROOT, update_section

MODELS = {"smollm2": ("SmolLM2-135M-Instruct", "recipes/smollm2-135m.toml"),
          "qwen0.5b": ("Qwen2.5-Coder-0.5B-Instruct", "recipes/qwen2.5-coder-0.5b.toml")}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


KILLED = (137, -9)  # SIGKILL: on Linux, the kernel's out-of-memory killer


def run(cmd: list[str], killed_ok: bool = False) -> str | None:
    """The command's output; None where `killed_ok` and the kernel killed it (out of memory)."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, cwd=ROOT)
    if killed_ok and out.returncode in KILLED:
        return None
    if out.returncode != 0:
        sys.exit(f"failed (exit code {out.returncode}): {' '.join(cmd)}\n{out.stderr[-2000:]}")
    return out.stdout + out.stderr


def mlx_lm_worker(argv: list[str]) -> None:
    """Run `mlx_lm lora` with a callback that prints each report as JSON (its own output is a rich UI)."""
    import mlx_lm.lora as lora
    from mlx_lm.tuner.callbacks import TrainingCallback

    class PrintReports(TrainingCallback):
        def on_train_loss_report(self, info: dict) -> None:
            print("REPORT " + json.dumps({k: float(v) for k, v in info.items()}), flush=True)

    original = lora.train_model  # `run` builds its own (empty) callback and passes it here
    lora.train_model = lambda args, model, train, valid, _callback=None: original(args, model, train, valid,
                                                                                  PrintReports())
    sys.argv = ["mlx_lm.lora", *argv]
    lora.main()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--mlx-lm-worker":
        return mlx_lm_worker(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--max-seq-length", type=int, default=1024)
    args = parser.parse_args()

    from mlx_sql.data.build import build_dataset
    from mlx_sql.data.examples import chat_messages
    from mlx_sql.models.sources import resolve_model_path
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.encode import Encoder

    tmp = Path(tempfile.mkdtemp(prefix="mlx-sql-bench-"))
    sets = [f'data.path="{args.spider}"', f'data.out_dir="{tmp / "data"}"', f"data.max_examples={args.examples}",
            f"train.batch_size={args.batch_size}", f"train.iters={args.steps}", "train.rank=8", "train.alpha=16",
            "train.lr=1e-4", "train.schedule=constant", "train.warmup_steps=0", "train.dropout=0.0",
            f"train.max_seq_length={args.max_seq_length}", "train.eval_every=100000", "train.save_every=100000",
            "train.grad_accumulation=1", "train.num_layers=-1", "model.dtype=float32"]
    title, recipe_file = MODELS[args.model]
    recipe = load_recipe(ROOT / recipe_file, sets)
    tokenizer = load_tokenizer(recipe.model)
    build_dataset(recipe, tokenizer)  # schema_shared layout: one schema per database, grouped
    model_dir = resolve_model_path(recipe.model)
    records = [json.loads(l) for l in (tmp / "data" / "train.jsonl").read_text().splitlines()]
    encoder = Encoder(tokenizer)
    mean_tokens = sum(encoder.encode(r).length for r in records) / len(records)

    results = {}
    for mode in ("schema_shared", "unshared"):
        out = tmp / mode
        run([sys.executable, "-m", "mlx_sql", "train", str(ROOT / recipe_file), "--force",
             *[x for s in sets + [f"train.batching={mode}", f'train.adapter_dir="{out}"'] for x in ("--set", s)]])
        rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()][1:]  # skip warm-up step
        results[mode] = {
            "examples_per_s": sum(r["examples_per_s"] for r in rows) / len(rows),
            "real_tokens_per_s": sum(r["tokens_per_s"] for r in rows) / len(rows),
            "peak_gb": max(r["peak_memory_gb"] for r in rows),
            "mean_loss": sum(r["train_loss"] for r in rows) / len(rows),
        }
        # tokens an unshared run would process for the same examples, per second: comparable to mlx-lm
        results[mode]["equivalent_tokens_per_s"] = results[mode]["examples_per_s"] * mean_tokens

    lora_data = tmp / "mlx_lm_data"
    lora_data.mkdir()
    for name in ("train", "valid"):
        rows = [json.loads(l) for l in (tmp / "data" / f"{name}.jsonl").read_text().splitlines()]
        (lora_data / f"{name}.jsonl").write_text("".join(json.dumps({"messages": chat_messages(r)}) + "\n"
                                                         for r in rows))
    config = tmp / "lora.yaml"
    keys = [f"self_attn.{t}" for t in TARGETS[:4]] + [f"mlp.{t}" for t in TARGETS[4:]]
    config.write_text("lora_parameters:\n  rank: 8\n  scale: 2.0\n  dropout: 0.0\n  keys: [" +
                      ", ".join(keys) + "]\n")
    log = run([sys.executable, __file__, "--mlx-lm-worker", "--model", model_dir, "--train", "--data", str(lora_data),
               "--iters", str(args.steps), "--batch-size", str(args.batch_size), "--num-layers", "-1",
               "--mask-prompt", "--max-seq-length", str(args.max_seq_length), "--learning-rate", "1e-4",
               "--steps-per-report", "1", "--steps-per-eval", "100000", "--val-batches", "1",
               "--adapter-path", str(tmp / "mlx_lm_adapters"), "-c", str(config)], killed_ok=True)
    if log is not None:
        reports = [json.loads(line[len("REPORT "):]) for line in log.splitlines() if line.startswith("REPORT ")]
        reports = [r for r in reports if r["iteration"] > 1]  # skip the warm-up step, as for ours
        its = sum(r["iterations_per_second"] for r in reports) / len(reports)
        losses = [r["train_loss"] for r in reports if r["train_loss"] == r["train_loss"]]
        results["mlx_lm_lora"] = {
            "examples_per_s": its * args.batch_size,
            "real_tokens_per_s": its * args.batch_size * mean_tokens,
            "equivalent_tokens_per_s": its * args.batch_size * mean_tokens,
            "peak_gb": max(r["peak_memory"] for r in reports),
            "mean_loss": sum(losses) / len(losses) if losses else float("nan"),
        }

    base = results.get("mlx_lm_lora")
    names = {"schema_shared": "mlx-sql, schema-shared", "unshared": "mlx-sql, unshared",
             "mlx_lm_lora": "`mlx_lm lora` (mask-prompt)"}
    lines = [f"{title} in float32, {args.examples} Spider training examples (mean {mean_tokens:.0f} "
             f"tokens with the chat template), batch {args.batch_size}, LoRA rank 8 (scale 2) on all seven projections "
             f"of all layers, lr 1e-4, max_seq_length {args.max_seq_length}, {args.steps} steps each with the first "
             "(warm-up) step excluded; each run in its own process. \"equiv tok/s\" is examples/s × the mean full "
             "example length: the tokens an unshared run would process for the same examples.", "",
             "| run | examples/s | real tok/s | equiv tok/s | peak GB | mean loss | examples/s vs mlx-lm | "
             "memory vs mlx-lm |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        ratios = (f"{r['examples_per_s'] / base['examples_per_s']:.2f}× | {r['peak_gb'] / base['peak_gb']:.2f}×"
                  if base else "– | –")
        lines.append(f"| {names[name]} | {r['examples_per_s']:.3f} | {r['real_tokens_per_s']:.0f} | "
                     f"{r['equivalent_tokens_per_s']:.0f} | {r['peak_gb']:.2f} | {r['mean_loss']:.3f} | {ratios} |")
    if base is None:
        lines.append(f"| {names['mlx_lm_lora']} | killed by the kernel (exit 137): out of memory on this "
                     f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB machine in its "
                     "first training step | | | | | | |")
    lines += ["", "Goal: ≥ 1.2× mlx-lm's tokens/s at ≤ 1.0× its memory. The runs sample different batches "
              "(length buckets differ), so peak memory and mean loss are indicative, not like-for-like."]
    print("\n".join(lines))
    key, heading = ("train-throughput", "") if args.model == "smollm2" else (f"train-throughput-{args.model}",
                                                                             f": {title}")
    update_section(key, f"Training throughput{heading} (`benchmarks/train_throughput.py --model {args.model}`)",
                   "\n".join(lines),
                   shows="How fast mlx-sql's trainer runs against `mlx_lm lora` on the same model, data and settings, "
                   "and the memory each needs: the case for schema-shared batches.")


if __name__ == "__main__":
    main()
