"""The whole loop on one recipe, offline: the proof that the stages fit together on real weights.

Baseline eval → train → adapter eval → comparison → fuse → GGUF → the GGUF's own eval in llama.cpp →
Modelfile, everything under one run folder. Each stage is the library call the matching CLI command makes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from mlx_sql.fileio import write_json, write_text
from mlx_sql.recipe import Recipe, load_recipe

STAGES = ("import model", "build data", "evaluate base", "train", "evaluate adapter", "fuse", "export GGUF",
          "evaluate GGUF in llama.cpp", "write Modelfile")


class StageUI(Protocol):
    """What the demo reports while it runs; the CLI draws it as progress bars."""

    def begin(self, stage: str, total: int | None = None) -> None: ...

    def update(self, completed: int | None = None, total: int | None = None, note: str = "") -> None: ...

    def end(self, summary: str) -> None: ...


class QuietUI:
    def begin(self, stage: str, total: int | None = None) -> None:
        pass

    def update(self, completed: int | None = None, total: int | None = None, note: str = "") -> None:
        pass

    def end(self, summary: str) -> None:
        pass


@dataclass
class DemoResult:
    run_dir: Path
    baseline: dict
    adapter: dict
    gguf_eval: dict
    comparison_table: str
    gained: int
    lost: int
    same_sql: int
    gguf: Path
    modelfile: Path
    ollama_command: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def execution_gain(self) -> float:
        return self.adapter["all"]["execution_accuracy"] - self.baseline["all"]["execution_accuracy"]


def demo_recipe(recipe_path: Path, run_dir: Path, overrides: Sequence[str] = ()) -> Recipe:
    """The recipe with every output redirected into the run folder."""
    redirect = [f'data.out_dir="{(run_dir / "data").as_posix()}"',
                f'train.adapter_dir="{(run_dir / "adapter").as_posix()}"']
    return load_recipe(recipe_path, [*redirect, *overrides])


def _eval_callbacks(ui: StageUI) -> tuple[Callable, Callable]:
    state = {"n": 0, "ex": 0}

    def advance(scored) -> None:
        state["n"] += 1
        state["ex"] += scored.execution_match
        ui.update(completed=state["n"], note=f"EX {100 * state['ex'] / state['n']:.1f}%")

    return advance, lambda n: ui.update(total=n)


def _same_sql(a: Path, b: Path) -> int:
    """How many questions got character-identical SQL from two evaluations."""
    from mlx_sql.eval.pipeline import load_done

    left, right = load_done(a / "predictions.jsonl"), load_done(b / "predictions.jsonl")
    return sum(1 for i, row in left.items() if i in right and right[i]["sql"] == row["sql"])


def _acc(summary: dict) -> str:
    return f"EX {summary['all']['execution_accuracy']:.1f}%, EM {summary['all']['exact_set_match']:.1f}%"


def run_demo(recipe: Recipe, run_dir: Path, ui: StageUI | None = None) -> DemoResult:
    """Run every stage in order; stops at the first error (a rerun starts over in the same folder)."""
    from mlx_lm.utils import load_tokenizer as load_folder_tokenizer

    from mlx_sql.data.build import build_dataset
    from mlx_sql.eval.pipeline import evaluate_model
    from mlx_sql.eval.report import compare_runs
    from mlx_sql.export.fuse import fuse_adapter
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.export.ollama import write_modelfile
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.train.trainer import train

    ui = ui or QuietUI()
    run_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def finish(stage: str, summary: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 1)
        clock = now
        ui.end(summary)

    ui.begin("import model")
    tokenizer = load_tokenizer(recipe.model)
    finish("import model", f"{recipe.model.gguf_package or recipe.model.gguf or recipe.model.path}")

    ui.begin("build data")
    built = build_dataset(recipe, tokenizer, advance=None, on_total=None)
    finish("build data", f"{built.train} train / {built.valid} valid examples in {built.out_dir}")

    ui.begin("evaluate base")
    advance, total = _eval_callbacks(ui)
    base = evaluate_model(recipe, run_dir / "eval-base", "base", None, "mlx", advance=advance, on_total=total)
    finish("evaluate base", _acc(base.summary))

    ui.begin("train")
    trained = train(recipe, on_report=lambda r: ui.update(completed=r.step, total=r.total_steps,
                                                           note=f"loss {r.train_loss:.3f}"))
    val = f", val loss {trained.final_val_loss:.3f}" if trained.final_val_loss is not None else ""
    finish("train", f"{trained.steps} steps, train loss {trained.final_train_loss:.3f}{val}")

    ui.begin("evaluate adapter")
    advance, total = _eval_callbacks(ui)
    tuned = evaluate_model(recipe, run_dir / "eval-adapter", "adapter", recipe.adapter_dir, "mlx",
                           advance=advance, on_total=total)
    comparison = compare_runs(run_dir / "eval-base", run_dir / "eval-adapter", run_dir)
    finish("evaluate adapter", _acc(tuned.summary))

    ui.begin("fuse")
    fused = fuse_adapter(recipe.adapter_dir, run_dir / "fused")
    finish("fuse", f"{fused.fused_layers} layers into {fused.out_dir}")

    dtype = recipe.export.gguf_dtype
    ui.begin("export GGUF")
    exported = export_gguf(fused.out_dir, fused.out_dir / f"model-{dtype}.gguf", dtype)
    finish("export GGUF", f"{exported.architecture} {dtype}: {exported.path}")

    ui.begin("evaluate GGUF in llama.cpp")
    advance, total = _eval_callbacks(ui)
    gguf_eval = evaluate_model(recipe, run_dir / "eval-gguf", f"gguf-{dtype}", None, "llamacpp",
                               str(exported.path), advance=advance, on_total=total)
    same = _same_sql(run_dir / "eval-adapter", run_dir / "eval-gguf")
    finish("evaluate GGUF in llama.cpp", f"{_acc(gguf_eval.summary)}; same SQL as MLX on {same} of "
                                         f"{gguf_eval.summary['all']['count']}")

    ui.begin("write Modelfile")
    name = recipe.export.ollama_name or recipe.name
    modelfile = write_modelfile(exported.path, load_folder_tokenizer(fused.out_dir), name,
                                recipe.ollama.context_window, recipe.data.instruction, create=False)
    finish("write Modelfile", str(modelfile.path))

    result = DemoResult(run_dir, base.summary, tuned.summary, gguf_eval.summary, comparison.table,
                        len(comparison.gained), len(comparison.lost), same, exported.path, modelfile.path,
                        modelfile.command, seconds)
    write_demo_report(result, recipe)
    return result


def write_demo_report(result: DemoResult, recipe: Recipe) -> None:
    """demo.md for people, demo.json for scripts (README and RESULTS.md quote it)."""
    total = sum(result.seconds.values())
    g = result.gguf_eval["all"]
    lines = [f"# mlx-sql demo: {recipe.name}", "",
             f"Base model vs base + LoRA adapter on the {recipe.eval.split} databases of {recipe.data.path} "
             "(databases the adapter never saw in training), greedy decoding:", "",
             result.comparison_table,
             f"{result.gained} questions flipped to correct, {result.lost} to wrong.", "",
             f"The fused model as a {recipe.export.gguf_dtype} GGUF in llama.cpp: EX {g['execution_accuracy']:.1f}%, "
             f"EM {g['exact_set_match']:.1f}%, the same SQL as MLX on {result.same_sql} of {g['count']} questions.", "",
             f"Ollama: `{result.ollama_command}`", "",
             "| stage | seconds |", "|---|---:|",
             *(f"| {stage} | {s:.0f} |" for stage, s in result.seconds.items()),
             f"| total | {total:.0f} |", ""]
    write_text(result.run_dir / "demo.md", "\n".join(lines))
    write_json(result.run_dir / "demo.json", {
        "recipe": recipe.name, "baseline": result.baseline, "adapter": result.adapter, "gguf": result.gguf_eval,
        "gguf_file": str(result.gguf), "same_sql_mlx_vs_gguf": result.same_sql, "gained": result.gained,
        "lost": result.lost, "seconds": result.seconds, "total_seconds": round(total, 1)})
