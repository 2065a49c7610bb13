"""Data-parallel training here: 1 process x 2 threads against 2 processes x 1 thread, and what an all-reduce costs.

Part 1 (the anchor is the one-process run): the same recipe (--model, from train_throughput.MODELS), the same
Spider training examples and the same global batch (--batch-size rows x 2 micro-batches a step) trained for
--steps optimizer steps, once as one process whose BLAS uses both cores (grad_accumulation 2), once as
`mlx.launch -n 2 --backend ring` with one BLAS thread each (grad_accumulation 1, one micro-batch per rank).
Examples/s and peak memory per process come from each run's metrics.jsonl (the first, warm-up step excluded).

Part 2: the gradient every rank all-reduces once a step is the float32 adapter of the recipe (`mlx-sql plan`
counts it): for each shipped recipe whose model config is on this machine, its size in bytes, the seconds one
`mx.distributed.all_sum` of that many bytes takes between two local ring processes (median of --repeats), and
what a ring moves per machine. Loopback is an upper bound on a real link; the bytes are what a user divides by
their link's rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import ROOT, update_section
from train_throughput import MODELS

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub recipe's config is skipped here, not retried (read at import)

LAUNCH = Path(sys.executable).parent / "mlx.launch"
CLI = Path(sys.executable).parent / "mlx-sql"


SHOWS = ("What data-parallel training with `mlx.launch` (N processes, gradients all-reduced) costs and gains "
         "against one process on the same global batch, and that its steps compute what one process computes.")


def allreduce_worker(sizes: list[int], repeats: int) -> None:
    """Runs under mlx.launch: times all_sum of float32 buffers of each byte size; rank 0 prints JSON."""
    import mlx.core as mx

    group = mx.distributed.init()
    out = {}
    for size in sizes:
        buffer = mx.ones((max(1, size // 4),), dtype=mx.float32)
        mx.eval(mx.distributed.all_sum(buffer, group=group))  # warm-up: connections, allocation
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mx.eval(mx.distributed.all_sum(buffer, group=group))
            times.append(time.perf_counter() - start)
        out[size] = statistics.median(times)
    if group.rank() == 0:
        print("ALLREDUCE " + json.dumps(out), flush=True)


def launched(n: int, cmd: list[str], env: dict[str, str], timeout: float = 3600) -> str:
    """Run `cmd` as n ring processes; mlx.launch exits 0 even when a rank fails, so read its warnings too."""
    out = subprocess.run([str(LAUNCH), "-n", str(n), "--backend", "ring", *cmd], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=timeout)
    text = out.stdout + out.stderr
    if out.returncode != 0 or "exited with code" in text:
        sys.exit(f"failed: {' '.join(cmd)}\n{text[-2000:]}")
    return text


def threads(n: int) -> dict[str, str]:
    return {**os.environ, "OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n)}


def train_rows(metrics: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()][1:]  # skip the warm-up step
    return {"examples_per_s": sum(r["examples_per_s"] for r in rows) / len(rows),
            "peak_gb": max(r["peak_memory_gb"] for r in rows), "steps": len(rows)}


def throughput(args: argparse.Namespace, tmp: Path) -> list[str]:
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe

    title, recipe_file = MODELS[args.model]
    sets = [f'data.path="{args.spider}"', f'data.out_dir="{tmp / "data"}"', f"data.max_examples={args.examples}",
            f"train.batch_size={args.batch_size}", f"train.iters={args.steps}", "train.schedule=constant",
            "train.warmup_steps=0", "train.eval_every=100000", "train.save_every=100000", "model.dtype=float32"]
    recipe = load_recipe(ROOT / recipe_file, sets)
    build_dataset(recipe, load_tokenizer(recipe.model))

    def train_cmd(name: str, accumulation: int) -> list[str]:
        extra = sets + [f"train.grad_accumulation={accumulation}", f'train.adapter_dir="{tmp / name}"']
        return [str(CLI), "train", str(ROOT / recipe_file), "--force", *[x for s in extra for x in ("--set", s)]]

    one = subprocess.run(train_cmd("one", 2), capture_output=True, text=True, env=threads(2), cwd=ROOT)
    if one.returncode != 0:
        sys.exit(f"one-process run failed\n{(one.stdout + one.stderr)[-2000:]}")
    launched(2, train_cmd("two", 1), threads(1))
    anchor, two = train_rows(tmp / "one" / "metrics.jsonl"), train_rows(tmp / "two" / "metrics.jsonl")
    lines = [f"{title} in float32, recipe `{recipe_file}` (its LoRA targets, rank and layers), {args.examples} "
             f"Spider training examples, global batch {2 * args.batch_size} (micro-batches of {args.batch_size}), "
             f"{args.steps} steps with the first excluded.", "",
             "| run | examples/s | peak GB per process | examples/s vs 1 × 2 threads |", "|---|---:|---:|---:|"]
    for name, r in (("1 process × 2 BLAS threads (anchor)", anchor), ("2 ring processes × 1 BLAS thread", two)):
        lines.append(f"| {name} | {r['examples_per_s']:.3f} | {r['peak_gb']:.2f} | "
                     f"{r['examples_per_s'] / anchor['examples_per_s']:.2f}× |")
    return lines


def allreduce(args: argparse.Namespace) -> list[str]:
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.plan import Shape, model_config, trainable_parameters

    rows, skipped = [], []
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        recipe = load_recipe(path, [])
        if recipe.model.eval_only:  # not trained here (Mistral-7B through Ollama)
            continue
        try:
            shape = Shape.from_config(model_config(recipe))
        except Exception:  # a hub model with no config on this machine (no network here)
            skipped.append(path.name)
            continue
        rows.append((path.name, 4 * trainable_parameters(shape, recipe.train)))
    sizes = sorted({b for _, b in rows})
    text = launched(2, [sys.executable, __file__, "--allreduce-worker", json.dumps(sizes), str(args.repeats)],
                    dict(os.environ))
    seconds = {int(k): v for k, v in json.loads(text.split("ALLREDUCE ", 1)[1].splitlines()[0]).items()}
    lines = [f"One `all_sum` of each recipe's float32 gradient between 2 ring processes on loopback, median of "
             f"{args.repeats}. A ring of N machines sends 2(N−1)/N of the gradient per machine per step: divide "
             "that by a link's rate for its floor (1 Gb Ethernet 0.125 GB/s, 10 Gb 1.25 GB/s, Thunderbolt 4 ~5 GB/s "
             "nominal).", "", "| recipe | gradient MB | seconds (2 local processes) | GB/s effective | "
             "sent per machine, N=2 / N=4, MB |", "|---|---:|---:|---:|---:|"]
    for name, size in rows:
        s = seconds[size]
        lines.append(f"| `{name}` | {size / 1e6:.1f} | {s:.4f} | {size / s / 1e9:.2f} | "
                     f"{size / 1e6:.1f} / {1.5 * size / 1e6:.1f} |")
    if skipped:
        lines += ["", f"Not measured (hub models, no config.json offline): {', '.join(skipped)}; "
                  "`mlx-sql plan RECIPE --machines N` prints their bytes on a machine that can fetch the config."]
    return lines


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--allreduce-worker":
        return allreduce_worker(json.loads(sys.argv[2]), int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not LAUNCH.is_file():
        sys.exit(f"mlx.launch not found beside {sys.executable}")
    tmp = Path(tempfile.mkdtemp(prefix="mlx-sql-dist-"))
    lines = throughput(args, tmp) + [""] + allreduce(args)
    print("\n".join(lines))
    key = "distributed" if args.model == "smollm2" else f"distributed-{args.model}"
    update_section(key, f"Data-parallel training (`benchmarks/distributed_throughput.py --model {args.model}`)",
                   "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    main()
