"""Accuracy on the real Spider: base vs finetuned, per model, EM and EX by hardness.

For each model: build schema-injected training data from Spider train (a seeded subset of
--train-examples questions when the whole set does not fit the CPU hours at hand), train a LoRA
with the model's recipe for --epochs, fuse it, and score base and finetuned on every Spider dev
question whose database exists (972 of 1034 here). Both are scored as they ship: a q8_0 GGUF in
llama.cpp (`--backend mlx` scores the MLX model + adapter instead). Stages whose outputs exist are
skipped, so an interrupted run continues. Writes benchmarks/spider_accuracy.png (EX by hardness),
benchmarks/spider_loss.png and the "Accuracy on Spider" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from results import ROOT, update_section

MODELS = {"smollm2": ("SmolLM2-135M-Instruct", "recipes/smollm2-135m.toml"),
          "gemma3": ("Gemma 3 270M", "recipes/gemma3-270m.toml"),
          "qwen0.5b": ("Qwen2.5-Coder-0.5B-Instruct", "recipes/qwen2.5-coder-0.5b.toml"),
          "qwen1.5b": ("Qwen2.5-Coder-1.5B-Instruct", "recipes/qwen2.5-coder-1.5b.toml")}
# Whole Spider-train databases held out for validation loss, the same split benchmarks/spider_validation.py scores.
VALIDATION_SPLIT = ["data.valid_by=database", "data.valid_fraction=0.05", "data.seed=0"]
ANCHORS = """Published anchors (Spider dev, larger models and full training runs, quoted from their authors):
Qwen2.5-Coder-0.5B finetuned 39.2% EX; Qwen2.5-Coder-1.5B 55.8% → 62.9% EX after one LoRA epoch;
CodeS-1B 71.7% EM."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def evaluate(recipe, out: Path, name: str, backend: str, adapter: Path | None, gguf: Path | None) -> dict:
    from mlx_sql.eval.pipeline import evaluate_model

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())["summary"]
    start = time.perf_counter()
    report = evaluate_model(recipe, out, name, adapter if backend == "mlx" else None, backend,
                            str(gguf) if backend == "llamacpp" else None, resume=True)
    log(f"{name}: EX {report.summary['all']['execution_accuracy']:.1f}% in {time.perf_counter() - start:.0f} s")
    return report.summary


def seed_with_running_answers(done: Path, out: Path) -> None:
    """Start an evaluation with retries from the greedy answers of `done` that SQLite ran: greedy decoding
    is deterministic, so only the questions whose answer failed need generating again (and retrying)."""
    if (out / "predictions.jsonl").is_file() or not (done / "per_example.jsonl").is_file():
        return
    scored = [json.loads(line) for line in (done / "per_example.jsonl").read_text().splitlines()]
    ran = {row["index"] for row in scored if not row["error"]}
    kept = [line for line in (done / "predictions.jsonl").read_text().splitlines() if json.loads(line)["index"] in ran]
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.jsonl").write_text("".join(line + "\n" for line in kept))


def run_model(key: str, args) -> dict:
    from mlx_sql.data.build import build_dataset
    from mlx_sql.export.fuse import fuse_adapter
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.models.sources import resolve_model_path
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.checkpoint import CHECKPOINT_DIR
    from mlx_sql.errors import MlxSqlError
    from mlx_sql.train.trainer import train

    title, recipe_file = MODELS[key]
    run = Path(args.out) / key
    sets = [f'data.path="{args.spider}"', f'data.out_dir="{run / "data"}"', f'train.adapter_dir="{run / "adapter"}"',
            f"data.max_examples={args.train_examples}", *VALIDATION_SPLIT, f"train.epochs={args.epochs}",
            "train.save_every=25", "train.eval_every=100", f"eval.max_tokens={args.max_tokens}",
            "eval.retries=0", "eval.samples=1", *args.set]  # greedy answers; --retries adds a row with them
    recipe = load_recipe(ROOT / recipe_file, sets)
    if args.base_only:  # the published GGUF itself, as `mlx-sql eval --backend llamacpp --model FILE` scores it
        from mlx_sql.models.sources import gguf_file

        source = gguf_file(recipe.model)
        if source is None:
            raise SystemExit(f"{key}: --base-only scores the model's own GGUF, and its recipe names none")
        base = evaluate(recipe, run / "eval-base-gguf", f"{key}-base", "llamacpp", None, source)
        d = recipe.data
        prompt = f"schema as {'CREATE TABLE' if d.schema_format == 'ddl' else d.schema_format}" + \
            (f" with {d.sample_rows} sample rows per table" if d.sample_rows else "")
        retried = None
        if args.retries:  # execution-guided decoding on the same greedy answers (reused: they are the same)
            sets_retry = [f"eval.retries={args.retries}", f"eval.retry_temperature={args.retry_temperature}"]
            folder = run / f"eval-base-gguf-retries{args.retries}"
            seed_with_running_answers(run / "eval-base-gguf", folder)
            retried = evaluate(load_recipe(ROOT / recipe_file, [*sets, *sets_retry]), folder,
                               f"{key}-base-retries{args.retries}", "llamacpp", None, source)
        return {"title": title, "base": base, "retried": retried, "retries": args.retries, "gguf": source.name, "prompt": prompt}
    if not (run / "data" / "train.jsonl").is_file():
        built = build_dataset(recipe, load_tokenizer(recipe.model))
        log(f"{key}: {built.train} train / {built.valid} valid examples")

    base_gguf = run / "base-q8_0.gguf"
    if args.backend == "llamacpp" and not base_gguf.is_file():
        export_gguf(resolve_model_path(recipe.model), base_gguf, "q8_0")
    base = evaluate(recipe, run / "eval-base", f"{key}-base", args.backend, None, base_gguf)

    adapter = recipe.adapter_dir
    stats_file = run / "train.json"
    if not stats_file.is_file():
        resume = (adapter / CHECKPOINT_DIR / "position.json").is_file()
        log(f"{key}: training{' (resuming)' if resume else ''}")
        try:
            result = train(recipe, resume=resume)
            stats = {"steps": result.steps, "seconds": result.seconds, "tokens_seen": result.tokens_seen,
                     "examples_seen": result.examples_seen, "train_loss": result.final_train_loss,
                     "val_loss": result.final_val_loss}
        except MlxSqlError as exc:  # stopped (Ctrl-C) and resumed with --set train.iters=<its step>: take it as is
            if "already finished" not in str(exc):
                raise
            position = json.loads((adapter / CHECKPOINT_DIR / "position.json").read_text())
            rows = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines() if line]
            val = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
            stats = {"steps": position["step"], "seconds": position["seconds"], "tokens_seen": position["tokens_seen"],
                     "examples_seen": position["examples_seen"], "train_loss": rows[-1]["train_loss"],
                     "val_loss": val[-1] if val else None}
        stats_file.write_text(json.dumps(stats))
    stats = json.loads(stats_file.read_text())
    tuned_gguf = adapter / "fused" / "model-q8_0.gguf"
    if args.backend == "llamacpp" and not tuned_gguf.is_file():
        fuse_adapter(adapter, adapter / "fused")
        export_gguf(adapter / "fused", tuned_gguf, "q8_0")
    tuned = evaluate(recipe, run / "eval-tuned", f"{key}-lora", args.backend, adapter, tuned_gguf)
    metrics = [json.loads(line) for line in (adapter / "metrics.jsonl").read_text().splitlines() if line]
    from mlx_sql.train.plan import make_plan

    planned = make_plan(recipe)[0].total / 1e9
    return {"title": title, "base": base, "tuned": tuned, "train": stats, "metrics": metrics, "planned_gb": planned,
            "train_questions": len((run / "data" / "train.jsonl").read_text().splitlines())}


def table(results: dict[str, dict]) -> str:
    levels = ["easy", "medium", "hard", "extra", "all"]
    lines = ["| model | | " + " | ".join(f"{lv} EM | {lv} EX" for lv in levels) + " |",
             "|---|---|" + "---:|---:|" * len(levels)]
    for r in results.values():
        for label, summary in (("base", r["base"]), (f"base, retries {r.get('retries')}", r.get("retried")),
                               ("LoRA", r.get("tuned"))):
            if summary is None:
                continue
            cells = " | ".join(f"{summary[lv]['exact_set_match']:.1f} | {summary[lv]['execution_accuracy']:.1f}"
                               for lv in levels)
            lines.append(f"| {r['title']} | {label} | {cells} |")
    counts = next(iter(results.values()))["base"]
    lines.append("")
    lines.append("Questions per level: " + ", ".join(f"{lv} {counts[lv]['count']}" for lv in levels) + ".")
    return "\n".join(lines)


def plots(results: dict[str, dict], out: Path, stem: str = "spider") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlx_sql.plots import accuracy_bars

    summaries = {}
    for r in results.values():
        summaries[f"{r['title']} base"] = r["base"]
        summaries[f"{r['title']} LoRA"] = r["tuned"]
    accuracy_bars(out / f"{stem}_accuracy.png", summaries, title="Spider dev: execution accuracy by hardness")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for r in results.values():
        ax.plot([m["step"] for m in r["metrics"]], [m["train_loss"] for m in r["metrics"]], label=r["title"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (SQL tokens)")
    ax.set_title("LoRA on Spider train")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}_loss.png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--models", default="smollm2,gemma3", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--train-examples", type=int, default=1200, help="seeded subset of Spider train")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--backend", choices=["llamacpp", "mlx"], default="llamacpp")
    parser.add_argument("--out", default=str(ROOT / "runs" / "spider-accuracy"))
    parser.add_argument("--set", action="append", default=[], help="extra recipe override for every model")
    parser.add_argument("--base-only", action="store_true", help="score each model's own GGUF untrained; no training")
    parser.add_argument("--retries", type=int, default=0,
                        help="with --base-only: also score with eval.retries=N (sample until SQLite runs the query)")
    parser.add_argument("--retry-temperature", type=float, default=0.8)
    args = parser.parse_args()
    if not (Path(args.spider) / "tables.json").is_file():
        raise SystemExit(f"no Spider at {args.spider} (give --spider DIR)")

    models = args.models.split(",")
    results = {key: run_model(key, args) for key in models}
    if args.base_only:
        key = "spider-base-" + "-".join(models)
        lines = ["Untrained, each model's own GGUF as published (" + ", ".join(f"`{r['gguf']}`" for r in
                 results.values()) + ") in llama.cpp, the recipe's prompt (" + "; ".join(sorted({r["prompt"] for r in
                 results.values()})) + "), greedy, "
                 f"max {args.max_tokens} tokens, on the Spider dev questions whose database exists."
                 + (f" \"retries {args.retries}\": where SQLite rejected the greedy query, up to {args.retries} samples "
                    f"(temperature {args.retry_temperature}, top-k 40) and the first that runs is the answer "
                    "(`eval.retries`, execution-guided decoding; no training)." if args.retries else ""), "",
                 table(results), "", ANCHORS]
        update_section(key, "Accuracy on Spider, base models only (`benchmarks/spider_accuracy.py --base-only "
                       f"--models {args.models}`)", "\n".join(lines),
                       shows="What the untrained model scores on Spider dev as published, with the recipe's prompt, "
                       "greedy: the anchor every trained or differently decoded variant is measured against.")
        return
    # the default pair keeps its historical section; any other set of models gets a section (and plots) of its own
    key = "spider-accuracy" if models == ["smollm2", "gemma3"] else "spider-accuracy-" + "-".join(models)
    stem = key.replace("-", "_").replace(".", "")
    plots(results, ROOT / "benchmarks", stem)
    lines = [f"Spider train → LoRA (each model's recipe, `{'`, `'.join(MODELS[m][1] for m in models)}`: LoRA on all "
             "seven projections, schema-shared batches of 4), a seeded subset of Spider train (validation: whole "
             "Spider-train databases held out, `data.valid_by = \"database\"`), trained for the steps below "
             "(batches hold one database's questions, so some hold fewer than 4); scored on "
             f"the Spider dev questions whose database exists, "
             + ("both as q8_0 GGUFs in llama.cpp (what Ollama runs)" if args.backend == "llamacpp"
                else "with MLX (base, and base + adapter)") + f", greedy, max {args.max_tokens} tokens.", "",
             table(results), "", "| model | train questions | training | steps | examples seen | real tokens | train loss | val loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results.values():
        t = r["train"]
        val = f"{t['val_loss']:.3f}" if t["val_loss"] is not None else "–"
        planned = r["metrics"][0]["total_steps"] if r["metrics"] else t["steps"]
        steps = f"{t['steps']} of {planned} (stopped early)" if planned != t["steps"] else f"{t['steps']}"
        lines.append(f"| {r['title']} | {r['train_questions']} | {t['seconds'] / 60:.0f} min | {steps} | {t['examples_seen']} | "
                     f"{t['tokens_seen']:,} | {t['train_loss']:.3f} | {val} |")
    lines += ["", "Memory: the plan (`mlx-sql plan`, the worst batch of the epoch) against the run's measured peak.", "",
              "| model | predicted peak GB | measured peak GB | ratio |", "|---|---:|---:|---:|"]
    for r in results.values():
        measured = max(m["peak_memory_gb"] for m in r["metrics"])
        lines.append(f"| {r['title']} | {r['planned_gb']:.2f} | {measured:.2f} | {r['planned_gb'] / measured:.2f} |")
    lines += ["", ANCHORS, "", f"![EX by hardness]({stem}_accuracy.png) ![loss]({stem}_loss.png)"]
    heading = "" if key == "spider-accuracy" else ": " + ", ".join(MODELS[m][0] for m in models)
    update_section(key, f"Accuracy on Spider{heading} (`benchmarks/spider_accuracy.py --models {args.models}`)",
                   "\n".join(lines),
                   shows="What LoRA on Spider train's gold SQL, at each recipe's settings, does on Spider dev against the "
                   "untrained model. A record of the first runs: recipe choices are made on the validation split "
                   "sections, and EM here may predate the official-parser rules (see the note under the agreement "
                   "section).")


if __name__ == "__main__":
    main()
