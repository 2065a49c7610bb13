"""The `mlx-sql` command: parses arguments, calls library functions, prints results.

Every user error is one line on stderr and a non-zero exit; `--debug` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
import typer.core
from rich.table import Table
from rich.text import Text

from mlx_sql import __version__, blas
from mlx_sql.cli.ui import console, progress_bar
from mlx_sql.errors import MlxSqlError
from mlx_sql.stopping import exit_on_sigterm

# `mlx-sql --help` lists the commands in the order a person uses them
WORKFLOW = ("recipe", "synth", "data", "plan", "train", "eval", "fuse", "export", "ask", "serve", "mcp", "import-gguf",
            "demo", "doctor")


class WorkflowGroup(typer.core.TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: WORKFLOW.index(n) if n in WORKFLOW else len(WORKFLOW))


app = typer.Typer(help="Finetune small open models for text-to-SQL with MLX, evaluate them, ship them to Ollama, "
                       "and ask your own SQLite database questions.", cls=WorkflowGroup,
                  invoke_without_command=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Build and check training data (benchmark, your database's pairs, a JSONL file).",
                       no_args_is_help=True)
recipe_app = typer.Typer(help="Check and show recipes.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(recipe_app, name="recipe")
export_app = typer.Typer(help="Write GGUF files for llama.cpp and Ollama.", no_args_is_help=True)
app.add_typer(export_app, name="export")

INTERRUPTED_SAID = False  # a command that said what Ctrl-C kept; else main() says it


def refuse_overwrite(existing: Path, overwrite: bool, alternatives: str) -> None:
    """A finished run's folder is replaced only when asked: --overwrite."""
    if existing.exists() and not overwrite:
        raise MlxSqlError(f"already holds a run ({existing.name}); --overwrite to replace it (or {alternatives})",
                          existing.parent)


def in_range(value, flag: str, low: float, high: float | None = None):
    """A numeric option inside its range, else one line naming it (typer's own range errors are a box)."""
    if value is not None and (value < low or (high is not None and value > high)):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise MlxSqlError(f"{flag} must be {bound} (got {value:g})")
    return value


SetOption = typer.Option(None, "--set", help="Override a recipe value, e.g. --set train.lr=1e-4 (repeatable).")
# the model and database options `ask`, `serve` and `mcp` share
DbOption = typer.Option(..., "--db", help="Your SQLite database (opened read-only).")
AdapterOption = typer.Option(None, "--adapter", help="Trained adapter folder (base + adapter).")
RecipeOption = typer.Option(None, "--recipe", help="Recipe: its base model, prompt and backend.")
GgufOption = typer.Option(None, "--gguf", help="A GGUF file, run in llama.cpp.")
BackendOption = typer.Option(None, "--backend", help="mlx, llamacpp, ollama or openai (default: the recipe's "
                                                     "eval.backend).")
ModelOption = typer.Option(None, "--model", help="Ollama / server model name, or a GGUF file.")


@app.callback()
def _root(ctx: typer.Context, debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"mlx-sql {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help(), markup=False, highlight=False)
        raise typer.Exit(2)


@app.command()
def doctor(measure: bool = typer.Option(True, help="Measure matmul throughput (takes a second).")) -> None:
    """Show MLX, its device and BLAS, memory and library versions, with advice."""
    from mlx_sql.doctor import run_doctor

    report = run_doctor(measure=measure)
    table = Table(show_header=False, box=None)
    for key, value in report.rows:
        table.add_row(f"[bold]{key}", value)
    console.print(table)
    for line in report.advice:
        console.print(f"[yellow]advice:[/] {line}")


@recipe_app.command("check")
def recipe_check(recipe: Path = typer.Argument(..., help="Recipe TOML file."),
                 overrides: Optional[List[str]] = SetOption) -> None:
    """Validate a recipe and print it fully resolved (defaults filled in)."""
    from mlx_sql.recipe import dump_recipe, load_recipe

    console.print(dump_recipe(load_recipe(recipe, overrides or []), show_unset=True), markup=False, highlight=False)


@app.command()
def synth(recipe: Path = typer.Argument(..., help="Recipe TOML file: its [data] databases, its [synth] settings."),
          per_db: Optional[int] = typer.Option(None, "--per-db", help="Pairs to keep per database (synth.per_db)."),
          minutes: Optional[float] = typer.Option(None, "--minutes", help="Stop after this many minutes "
                                                  "(synth.minutes); what was kept is kept."),
          teacher: Optional[Path] = typer.Option(None, "--teacher", help="A recipe whose model writes the SQL and "
                                                 "the questions (synth.teacher; default: this recipe's model)."),
          backend: Optional[str] = typer.Option(None, "--backend", help="The teacher's backend: mlx, llamacpp, "
                                                "ollama or openai (synth.backend; default: eval.backend)."),
          resume: bool = typer.Option(False, "--resume", help="Continue the run in synth.out_dir where it stopped."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Start again over an earlier run's files."),
          overrides: Optional[List[str]] = SetOption) -> None:
    """Write verified question/SQL pairs for your databases, with no pairs as input."""
    from mlx_sql.recipe import load_recipe
    from mlx_sql.synth.run import run_synthesis

    in_range(per_db, "--per-db", 1)
    in_range(minutes, "--minutes", 0.1)
    sets = [*(overrides or []), *([f"synth.per_db={per_db}"] if per_db else []),
            *([f"synth.minutes={minutes}"] if minutes else []),
            *([f'synth.teacher="{teacher}"'] if teacher else []), *([f'synth.backend="{backend}"'] if backend else [])]
    cfg = load_recipe(recipe, sets, check_data=False)
    with progress_bar("pairs kept") as (progress, task):
        report = run_synthesis(cfg, resume, overwrite, on_start=lambda n: progress.update(task, total=n),
                               on_kept=lambda db, n: progress.advance(task, n))
    summary = report.to_json()
    took = f"{summary['minutes']:.1f} minutes" if summary["minutes"] >= 1 else f"{summary['minutes'] * 60:.0f} seconds"
    table = Table(title=f"{report.kept} pairs in {took} ({report.stopped})")
    for name in ("database", "tried", "kept", "easy", "medium", "hard", "extra", "most dropped as"):
        table.add_column(name, justify="left" if name in ("database", "most dropped as") else "right")
    for d in [*report.databases, None]:
        row = summary["all"] if d is None else d.to_json()
        dropped = sorted(((n, k) for k, n in row["outcomes"].items() if k != "kept"), reverse=True)[:2]
        table.add_row(row["db_id"], str(row["tried"]), str(row["kept"]),
                      *(str(row["hardness"].get(level, 0)) for level in ("easy", "medium", "hard", "extra")),
                      ", ".join(f"{k} {n}" for n, k in dropped))
    console.print(table)
    uses = (f"`mlx-sql train {recipe}` trains on them" if Path(cfg.data.pairs or "").resolve() ==
            Path(summary["pairs"]).resolve() else f'train on them with [data] pairs = "{summary["pairs"]}"')
    console.print(Text(f"wrote {summary['pairs']} (report: {report.out / 'report.json'}); {uses}"), highlight=False)


@data_app.command("build")
def data_build(recipe: Path = typer.Argument(..., help="Recipe TOML file."),
               strict: bool = typer.Option(False, "--strict", help="Own databases: stop if any gold query fails "
                                           "(else report it and leave the pair out)."),
               overrides: Optional[List[str]] = SetOption) -> None:
    """Write train.jsonl / valid.jsonl with schemas injected, and report token lengths."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.fileio import check_writable
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe

    cfg = load_recipe(recipe, overrides or [])
    check_writable(cfg.data_dir)
    try:
        tokenizer = load_tokenizer(cfg.model)
    except MlxSqlError as exc:
        console.print(f"[yellow]no tokenizer ({exc}); lengths are estimates[/]", highlight=False)
        tokenizer = None
    with progress_bar("building examples") as (progress, task):
        report = build_dataset(cfg, tokenizer, advance=lambda: progress.advance(task),
                               on_total=lambda n: progress.update(task, total=n), strict=strict)
    for line in report.failed_gold:
        console.print(Text("left out, the gold query failed: ", style="yellow") + Text(line), highlight=False)
    console.print(f"wrote [bold]{report.train}[/] train and [bold]{report.valid}[/] valid examples to {report.out_dir}")
    if report.own_targets == report.train:
        console.print(f"all {report.train} training targets are the model's own correct SQL (data.own_answers_only)",
                      highlight=False)
    elif report.own_targets:
        console.print(f"{report.own_targets} of the {report.train} training targets are the model's own SQL "
                      f"(data.own_answers), the rest the gold query", highlight=False)
    if report.skipped:
        dbs = ", ".join(f"{db} ({n})" for db, n in sorted(report.skipped_missing_db.items()))
        console.print(f"[yellow]skipped {report.skipped} questions whose database is missing:[/] {dbs}")
    if not report.lengths.prompt:
        return
    table = Table(title=f"lengths in {report.lengths.unit}")
    table.add_column("part")
    for key in report.lengths.prompt:
        table.add_column(key, justify="right")
    table.add_row("prompt", *map(str, report.lengths.prompt.values()))
    table.add_row("completion", *map(str, report.lengths.completion.values()))
    console.print(table)


@data_app.command("check")
def data_check(path: Path = typer.Argument(..., help="JSONL file of {instruction, input, output} records."),
               strict: bool = typer.Option(True, help="Stop at the first bad line (else skip and count it).")) -> None:
    """Validate a JSONL training file line by line, streaming (any size)."""
    from mlx_sql.data.examples import RECORD_KEYS
    from mlx_sql.data.jsonl import ReadStats, iter_jsonl

    stats = ReadStats()
    sum(1 for _ in iter_jsonl(path, RECORD_KEYS, strict=strict, stats=stats))  # stream it; stats count
    if stats.read == 0:
        raise MlxSqlError("no records" + (f" ({stats.skipped} bad lines)" if stats.skipped else ": the file is empty"),
                          path)
    console.print(f"{path}: {stats.read} valid records" + (f", {stats.skipped} bad lines skipped" if stats.skipped else ""))


@app.command()
def train(recipe: Path = typer.Argument(..., help="Recipe TOML file."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
          force: bool = typer.Option(False, "--force", help="Train even when the memory plan says it won't fit."),
          overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing adapter folder."),
          overrides: Optional[List[str]] = SetOption) -> None:
    """Finetune the recipe's model (LoRA/DoRA/QLoRA/full) on its train.jsonl; Ctrl-C saves a checkpoint."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.trainer import train as run_training

    from mlx_sql.train.plan import refuse_eval_only

    refuse_eval_only(load_recipe(recipe, overrides or [], check_data=False))  # an eval-only model: said first
    cfg = load_recipe(recipe, overrides or [])
    from mlx_sql.fileio import check_writable

    check_writable(cfg.adapter_dir)  # before loading anything: a read-only folder is found in a second
    if not (cfg.data_dir / "train.jsonl").is_file():
        check_writable(cfg.data_dir)
    if not resume:
        refuse_overwrite(cfg.adapter_dir / "adapter_config.json", overwrite,
                         "--resume to continue it, --set train.adapter_dir=DIR")
    if not (cfg.data_dir / "train.jsonl").is_file():
        console.print(f"no {cfg.data_dir / 'train.jsonl'} yet: building it first")
        build_dataset(cfg, load_tokenizer(cfg.model))
    if not force:
        from mlx_sql.train.plan import check_fits

        check_fits(cfg)
    import mlx.core as mx

    if mx.distributed.init().rank() != 0:  # launched by mlx.launch: rank 0 alone reports and writes
        run_training(cfg, resume=resume)
        return
    world = mx.distributed.init().size()
    if world > 1:
        console.print(f"data-parallel: {world} processes, each a share of every batch (mlx.distributed)")
    with progress_bar("training" if world == 1 else f"training on {world} processes") as (progress, task):
        def report(r) -> None:
            val = f" val {r.val_loss:.3f}" if r.val_loss is not None else ""
            grpo = (f"reward {r.objective['reward_mean']:.2f}  skipped {r.objective['skipped_groups']}/"
                    f"{r.objective['groups']}  kl {r.objective['kl']:.3f}  " if r.objective else "")
            progress.update(task, total=r.total_steps, completed=r.step,
                            description=f"training  loss {r.train_loss:.3f}{val}  {grpo}{r.tokens_per_s:,.0f} tok/s  "
                                        f"peak {r.peak_memory_gb:.2f} GB")
        try:
            result = run_training(cfg, resume=resume, on_report=report)
        except KeyboardInterrupt:
            global INTERRUPTED_SAID
            INTERRUPTED_SAID = True
            console.print(f"[yellow]interrupted: checkpoint saved; continue with --resume[/] ({cfg.adapter_dir})")
            raise typer.Exit(130)
    val = f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else ""
    ranks = f" on {result.world_size} processes" if result.world_size > 1 else ""
    console.print(f"trained {result.steps} steps{ranks} ({result.trainable_parameters:,} trainable parameters): "
                  f"train loss {result.final_train_loss:.4f}{val}; {result.truncated} examples had their schema cut")
    plots = "loss.png and reward.png" if cfg.train.objective == "grpo" else "loss.png"
    console.print(f"adapter, metrics.jsonl and {plots} in {result.out_dir}")


@app.command()
def plan(recipe: Path = typer.Argument(..., help="Recipe TOML file."),
         overrides: Optional[List[str]] = SetOption,
         machines: Optional[int] = typer.Option(None, "--machines", help="Also plan a data-parallel run on N "
                                                "machines (mlx.launch -n N): per-rank memory, batch, all-reduce."),
         machine_gb: Optional[List[float]] = typer.Option(None, "--machine-gb", help="Memory of each of those "
                                                          "machines in GB (repeatable; default: 8 and 16 GB Macs).")
         ) -> None:
    """Predict the run's peak memory before loading anything, with a verdict and what would make it fit."""
    from mlx_sql.recipe import load_recipe
    from mlx_sql.doctor import gigabytes
    from mlx_sql.train.plan import GB, make_plan, refuse_eval_only

    in_range(machines, "--machines", 1)
    for size in machine_gb or []:
        in_range(size, "--machine-gb", 0.001, 100_000)
    refuse_eval_only(load_recipe(recipe, overrides or [], check_data=False))  # an eval-only model: said first
    cfg = load_recipe(recipe, overrides or [])
    estimate, verdicts, advice = make_plan(cfg)
    table = Table(title=f"memory plan for {cfg.name}")
    table.add_column("part")
    table.add_column("GB", justify="right")
    for name in ("weights", "trainable", "optimizer", "activations", "logits"):
        table.add_row(name, f"{getattr(estimate, name) / GB:.3f}")
    table.add_row("[bold]peak (predicted)", f"[bold]{estimate.total / GB:.3f}")
    console.print(table)
    colors = {"fits": "green", "tight": "yellow", "won't fit": "red"}
    for v in verdicts:
        console.print(f"{v.machine} ({gigabytes(v.memory)}): needs ~{gigabytes(v.peak)}: "
                      f"[{colors[v.status]}]{v.status}[/]")
    for line in advice:
        console.print(f"would fit this machine with: {line}")
    if machines is not None:
        from mlx_sql.train.plan import cluster_plan

        for size in machine_gb or [8.0, 16.0]:
            print_cluster_plan(cluster_plan(cfg, machines, size * GB), cfg)


def print_cluster_plan(c, cfg) -> None:
    from mlx_sql.doctor import gigabytes
    from mlx_sql.train.plan import LINKS

    colors = {"fits": "green", "tight": "yellow", "won't fit": "red"}
    console.print(f"[bold]{c.machines} x {gigabytes(c.memory)} machines[/]: each rank needs ~{gigabytes(c.peak)} "
                  f"with micro-batch {c.micro_batch}: [{colors[c.status]}]{c.status}[/]")
    if c.status == "won't fit":  # every rank holds the whole model and one micro-batch, as one process does
        console.print("  more machines do not make a rank smaller: quantize the base (--set model.quantize=4) or "
                      "shorten train.max_seq_length, then plan again")
        return
    steps = f", {c.steps_per_epoch} optimizer steps an epoch" if c.steps_per_epoch is not None else ""
    if c.global_batch != c.recipe_batch:
        steps += f"; the recipe's is {c.recipe_batch}: scale train.lr with it"
    launch = "mlx.launch --hostfile hosts.json --backend ring" if c.machines > 1 else "mlx-sql"
    console.print(f"  {launch} {'$(which mlx-sql) ' if c.machines > 1 else ''}train {cfg.source} "
                  f"--set train.batch_size={c.micro_batch} --set train.grad_accumulation={c.grad_accumulation}"
                  f"  (global batch {c.global_batch}{steps})")
    if c.machines > 1:
        links = ", ".join(f"{name} >= {c.ring_bytes / rate:.3g} s" for name, rate in LINKS.items())
        console.print(f"  all-reduce per step: {megabytes(c.gradient_bytes)} of float32 gradients; each machine "
                      f"sends {megabytes(c.ring_bytes)} in a ring ({links} at the nominal rate)")


def megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@app.command("eval")
def eval_cmd(adapter: Optional[Path] = typer.Option(None, "--adapter", help="Trained adapter folder: evaluates "
                                                     "base+adapter with the recipe saved beside it."),
             recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe TOML: evaluates its base model "
                                                    "(the baseline), or its adapter with --adapter."),
             backend: Optional[str] = typer.Option(None, "--backend", help="mlx, ollama or llamacpp "
                                                    "(default: the recipe's eval.backend)."),
             model: Optional[str] = typer.Option(None, "--model", help="Ollama model name or GGUF file for "
                                                  "the ollama / llamacpp backends."),
             resume: bool = typer.Option(False, "--resume", help="Keep predictions.jsonl and answer only the rest."),
             max_examples: Optional[int] = typer.Option(None, "--max-examples", help="Only the first N questions."),
             sample: Optional[int] = typer.Option(None, "--sample", help="A seeded random N questions, spread "
                                                  "over the split's databases (seed: the recipe's data.seed, 0 "
                                                  "with --predictions)."),
             db: Optional[List[str]] = typer.Option(None, "--db", help="Only these databases (repeatable)."),
             predictions: Optional[Path] = typer.Option(None, "--predictions", help="Score this predictions file "
                                                          "(one SQL a line, or JSONL with index and sql)."),
             data: Optional[Path] = typer.Option(None, "--data", help="Benchmark folder for --predictions."),
             split: str = typer.Option("dev", "--split", help="Which split --predictions answers."),
             out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default results/<name>)."),
             name: Optional[str] = typer.Option(None, "--name", help="Run name in reports."),
             timeout: float = typer.Option(10.0, "--timeout", help="Seconds per query (--predictions)."),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report folder."),
             compare: Optional[List[Path]] = typer.Option(None, "--compare", help="Two report folders: baseline "
                                                          "then candidate (give --compare twice)."),
             overrides: Optional[List[str]] = SetOption) -> None:
    """Generate and score SQL (EM and EX by hardness), score a predictions file, or compare two runs."""
    from mlx_sql.eval.pipeline import evaluate_model, evaluate_predictions
    from mlx_sql.eval.report import compare_runs, markdown_table, retries_note, votes_note
    from mlx_sql.fileio import check_writable
    from mlx_sql.recipe import plain_name
    from mlx_sql.recipe import load_recipe

    in_range(max_examples, "--max-examples", 1)
    in_range(sample, "--sample", 1)
    in_range(timeout, "--timeout", 0.1, 3600)
    if compare:
        if len(compare) != 2:
            raise MlxSqlError("--compare needs two report folders: --compare BASELINE --compare CANDIDATE")
        result = compare_runs(compare[0], compare[1], out)
        console.print(result.table, markup=False)
        console.print(result.flips, markup=False)
        return
    with progress_bar("evaluating") as (progress, task):
        state = {"n": 0, "ex": 0}

        def advance(scored) -> None:
            state["n"] += 1
            state["ex"] += scored.execution_match
            progress.update(task, advance=1, description=f"evaluating  EX {100 * state['ex'] / state['n']:.1f}%")

        def total(n: int) -> None:
            progress.update(task, total=n)

        if predictions is not None:
            if data is None:
                raise MlxSqlError("eval --predictions needs --data DIR (the benchmark folder)")
            run_name = plain_name(name or predictions.stem, "--name")
            target = out or Path("results") / run_name
            refuse_overwrite(target / "summary.json", overwrite, "--out DIR")
            check_writable(target)
            report = evaluate_predictions(predictions, data, split, target, run_name, timeout, advance, total,
                                          db or (), max_examples, sample)
        else:
            recipe_path = recipe or (adapter / "recipe.toml" if adapter else None)
            if recipe_path is None:
                raise MlxSqlError("eval: give --adapter DIR, --recipe FILE, --predictions FILE or --compare A --compare B")
            cfg = load_recipe(recipe_path, overrides or [])
            run_name = plain_name(name or (adapter.name if adapter else f"{cfg.name}-base"), "--name")
            target = out or Path("results") / run_name
            if not resume:
                refuse_overwrite(target / "summary.json", overwrite, "--resume to finish it, --out DIR")
            check_writable(target)
            report = evaluate_model(cfg, target, run_name, adapter, backend or cfg.eval.backend, model, resume,
                                    max_examples, db or (), advance, total, sample=sample)
    console.print(markdown_table(report.summary), markup=False)
    meta = json.loads((report.out_dir / "summary.json").read_text())
    note = retries_note(meta) + votes_note(meta)
    if note:
        console.print(note.strip(), markup=False)
    unparsed = sum(not s.parsed for s in report.scored)
    if unparsed:
        console.print(f"[yellow]{unparsed} predictions did not parse (scored wrong)[/]")
    if report.skipped:
        console.print(f"[yellow]skipped {report.skipped} questions whose database is missing[/]")
    console.print(f"reports in {report.out_dir}")


@app.command()
def fuse(adapter: Path = typer.Option(..., "--adapter", help="Trained adapter folder (adapters/<run>)."),
         out: Optional[Path] = typer.Option(None, "--out", help="Output model folder (default <adapter>/fused)."),
         dequantize: bool = typer.Option(False, "--dequantize", help="Leave a quantized (QLoRA) base dequantized."),
         overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder (everything "
                                        "in it is deleted).")) -> None:
    """Merge a LoRA/DoRA adapter into its base model: a standalone mlx-lm model folder."""
    from mlx_sql.export.fuse import fuse_adapter
    from mlx_sql.fileio import output_folder

    out = output_folder(out or adapter / "fused", overwrite)
    with console.status(f"fusing {adapter}"):
        result = fuse_adapter(adapter, out, dequantize)
    kind = "quantized" if result.quantized else "full-precision"
    console.print(f"fused {result.fused_layers} adapted layers into a {kind} model at {result.out_dir}")


@export_app.command("gguf")
def export_gguf_cmd(model: Path = typer.Option(..., "--model", help="MLX model folder (e.g. a fused adapter), "
                                               "or with --lora-only the adapter folder."),
                    dtype: str = typer.Option("q8_0", "--dtype", help="f16, q8_0 or q4_0."),
                    out: Optional[Path] = typer.Option(None, "--out", help="GGUF file (default <model>/model-<dtype>.gguf, "
                                                       "or <adapter>/adapter.gguf)."),
                    lora_only: bool = typer.Option(False, "--lora-only", help="Write the LoRA adapter alone as a "
                                                   "llama.cpp adapter GGUF (Ollama: ADAPTER on a base GGUF)."),
                    verify: bool = typer.Option(True, help="Load it in llama.cpp and compare with MLX."),
                    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing GGUF file.")) -> None:
    """Write a GGUF (weights, tokenizer, chat template) and check it against MLX in llama.cpp."""
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.fileio import output_file

    if lora_only:
        from mlx_sql.export.lora_gguf import export_lora_gguf

        result = export_lora_gguf(model, output_file(out or model / "adapter.gguf", overwrite))
        console.print(f"wrote a {result.architecture} LoRA adapter GGUF ({result.n_tensors} tensors) to {result.path}; "
                      f"apply it to a GGUF of the base model (llama.cpp --lora, or ADAPTER in an Ollama Modelfile)")
        return
    target = output_file(out or model / f"model-{dtype}.gguf", overwrite)
    with console.status(f"writing {target}"):
        result = export_gguf(model, target, dtype)
    console.print(f"wrote {result.architecture} {result.dtype} GGUF ({result.n_tensors} tensors) to {result.path}")
    if verify:
        from mlx_lm import load

        from mlx_sql.models.verify import logits_agreement

        mlx_model, tokenizer = load(str(model))
        ids = tokenizer.encode("### Schema ###\nCREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, age "
                               "INTEGER);\n\n### Question ###\nHow many singers are older than 30?\nSELECT count(*) "
                               "FROM singer WHERE age > 30")
        agreement = logits_agreement(mlx_model, result.path, ids)
        console.print(f"llama.cpp vs MLX: top-1 agreement {agreement.top1:.1%}, mean |Δlogit| "
                      f"{agreement.mean_abs_logit_diff:.3f} over {agreement.positions} positions")


@export_app.command("ollama")
def export_ollama_cmd(gguf: Path = typer.Option(..., "--gguf", help="The GGUF file (written by export gguf)."),
                      name: Optional[str] = typer.Option(None, "--name", help="Ollama model name."),
                      tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Model folder with the "
                                                               "tokenizer (default: the GGUF's folder)."),
                      num_ctx: Optional[int] = typer.Option(None, "--num-ctx", help="Context window for Ollama "
                                                            "(default: the adapter recipe's [ollama] context_window)."),
                      create: bool = typer.Option(True, help="Run `ollama create` when ollama is on PATH."),
                      overwrite: bool = typer.Option(False, "--overwrite", help="Replace a Modelfile already beside "
                                                     "the GGUF.")) -> None:
    """Write a Modelfile next to the GGUF (template, stop tokens, temperature 0) and create the Ollama model."""
    from mlx_lm.utils import load_tokenizer

    from mlx_sql.export.ollama import write_modelfile
    from mlx_sql.fileio import output_file

    in_range(num_ctx, "--num-ctx", 256, 1_048_576)
    if not gguf.is_file():
        raise MlxSqlError("GGUF file not found", gguf)
    output_file(gguf.parent / "Modelfile", overwrite)
    from mlx_sql.export.ollama import modelfile_settings

    folder = tokenizer or gguf.parent
    settings = modelfile_settings(gguf)
    model_name = name or settings.name
    result = write_modelfile(gguf, load_tokenizer(folder), model_name, num_ctx or settings.context_window,
                             settings.instruction, create)
    console.print(f"wrote {result.path} ({result.family} template)")
    if result.created:
        console.print(f"created Ollama model {model_name}: try `ollama run {model_name}`")
    else:
        console.print(f"ollama is not on PATH; to create the model run: {result.command}")


@app.command()
def demo(recipe: Path = typer.Option(Path("recipes/smollm2-135m.toml"), "--recipe", help="Recipe to run end to end."),
         out: Path = typer.Option(Path("runs/demo"), "--out", help="Run folder: every artefact goes here."),
         overrides: Optional[List[str]] = SetOption) -> None:
    """The whole loop offline: evaluate the base, train, evaluate the adapter, fuse, GGUF, llama.cpp, Modelfile."""
    from rich.progress import Progress

    from mlx_sql.cli.ui import COLUMNS, StageBars
    from mlx_sql.demo import demo_recipe, run_demo

    cfg = demo_recipe(recipe, out, overrides or [])
    with Progress(*COLUMNS, console=console, transient=False) as progress:
        result = run_demo(cfg, out, StageBars(progress))
    console.print(result.comparison_table, markup=False)
    g = result.gguf_eval["all"]
    console.print(f"{result.gained} questions flipped to correct, {result.lost} to wrong; execution accuracy "
                  f"{result.execution_gain:+.1f} points. {cfg.export.gguf_dtype} GGUF in llama.cpp: EX "
                  f"{g['execution_accuracy']:.1f}%, same SQL as MLX on {result.same_sql} of {g['count']}.")
    console.print(f"everything is in {out} (demo.md); Ollama: {result.ollama_command}", highlight=False)


@app.command()
def ask(question: Optional[str] = typer.Argument(None, help="The question; none starts an interactive loop."),
        db: Path = DbOption,
        adapter: Optional[Path] = AdapterOption,
        recipe: Optional[Path] = RecipeOption,
        gguf: Optional[Path] = GgufOption,
        backend: Optional[str] = BackendOption,
        model: Optional[str] = ModelOption,
        sql_only: bool = typer.Option(False, "--sql-only", help="Print the SQL; do not run it."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per answer (for scripts)."),
        rows: int = typer.Option(20, "--rows", help="Rows to show (the count is always shown)."),
        overrides: Optional[List[str]] = SetOption) -> None:
    """Ask your own database a question: SQL from the model, checked, run read-only, rows shown."""
    import json as json_module

    in_range(rows, "--rows", 0)
    with console.status("loading the model"):
        asker = _asker_options(db, adapter, recipe, gguf, backend, model, overrides)

    def answer(text: str) -> bool:
        with console.status("asking the model") as status:  # voting on a CPU takes seconds: say which stage
            result = asker.ask(text, execute=not sql_only, say=lambda stage: status.update(stage))
        if as_json:
            print(json_module.dumps(result.to_json(), default=str))
        elif sql_only:
            print(result.sql)
        else:
            console.print(result.sql, style="bold cyan", highlight=False, markup=False)
            if result.ok:
                table = Table(*result.columns, show_lines=False)
                for row in result.rows[:rows]:
                    table.add_row(*("NULL" if v is None else str(v) for v in row))
                console.print(table)
                more = f" (showing {min(rows, len(result.rows))})" if len(result.rows) > rows else ""
                console.print(f"the first {len(result.rows)} rows: the query returns more{more}" if result.truncated
                              else f"{len(result.rows)} row{'' if len(result.rows) == 1 else 's'}{more}")
            if result.agreement is not None:
                agreeing, tried = result.agreement
                console.print(f"{agreeing} of {tried} candidates returned these rows" if agreeing else
                              f"none of {tried} candidates returned a complete result", style="dim", highlight=False)
        if not result.ok and not as_json:
            wrote = ""
            if not result.sql.strip():  # say what the model wrote instead, on the same line
                text = " ".join(result.raw.split())
                wrote = f"; the model wrote: {text[:300] + ('…' if len(text) > 300 else '') if text else '(nothing)'}"
            print(f"error: {db}: {result.error}{wrote}", file=sys.stderr)
        return result.ok

    with asker:
        if question is not None:
            if not answer(question):
                raise typer.Exit(1)
            return
        console.print(f"asking {asker.db_id} ({len(asker.schema.tables)} tables); an empty line or Ctrl-D ends")
        while True:
            try:
                text = input("question> ")
            except EOFError:
                break
            if not text.strip():
                break
            try:
                answer(text)
            except MlxSqlError as exc:
                print(f"error: {exc}", file=sys.stderr)


def _asker_options(db: Path, adapter: Optional[Path], recipe: Optional[Path], gguf: Optional[Path],
                   backend: Optional[str], model: Optional[str], overrides: Optional[List[str]]):
    """The Asker `ask`, `serve` and `mcp` share: one database, the model the options name."""
    from mlx_sql.eval.ask import Asker, ask_recipe

    cfg, default_backend = ask_recipe(adapter, recipe, gguf, overrides or [])
    return Asker(cfg, db, backend or default_backend, adapter, model)


@app.command()
def serve(db: Path = DbOption,
          adapter: Optional[Path] = AdapterOption,
          recipe: Optional[Path] = RecipeOption,
          gguf: Optional[Path] = GgufOption,
          backend: Optional[str] = BackendOption,
          model: Optional[str] = ModelOption,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (default: this machine only)."),
          port: int = typer.Option(8000, "--port", help="Port (0: any free one)."),
          overrides: Optional[List[str]] = SetOption) -> None:
    """Ask your database in a local web page: SQL, rows, chart, CSV, history; a JSON API for scripts."""
    try:
        from mlx_sql.serve.app import serve as run_server
    except ImportError:
        raise MlxSqlError("serve needs the server extra: pip install 'mlx-sql[serve]' (make setup installs it)") from None
    from mlx_sql.serve.history import History

    in_range(port, "--port", 0, 65535)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this machine on port {port} can query the "
              "database through the model", file=sys.stderr)
    with console.status("loading the model"):
        asker = _asker_options(db, adapter, recipe, gguf, backend, model, overrides)
    with asker:
        run_server(asker, host, port, History(asker.db_path),
                   on_ready=lambda url: console.print(f"serving {asker.db_id} at {url} (Ctrl-C stops)",
                                                      highlight=False, markup=False))


@app.command("mcp")
def mcp_cmd(db: Path = DbOption,
            adapter: Optional[Path] = AdapterOption,
            recipe: Optional[Path] = RecipeOption,
            gguf: Optional[Path] = GgufOption,
            backend: Optional[str] = BackendOption,
            model: Optional[str] = ModelOption,
            overrides: Optional[List[str]] = SetOption) -> None:
    """The same ask / run SQL / schema actions as MCP tools over stdio, for a desktop assistant."""
    try:
        from mlx_sql.serve.mcp_tools import build_server
    except ImportError:
        raise MlxSqlError("mcp needs the server extra: pip install 'mlx-sql[serve]' (make setup installs it)") from None
    asker = _asker_options(db, adapter, recipe, gguf, backend, model, overrides)  # stdout is the protocol's: no status
    with asker:
        build_server(asker).run("stdio")


@app.command("import-gguf")
def import_gguf_cmd(gguf: Optional[Path] = typer.Argument(None, help="GGUF file to import."),
                    out: Path = typer.Option(..., "--out", help="Output model folder (mlx-lm format)."),
                    ollama: Optional[str] = typer.Option(None, "--ollama", help="Import an Ollama model NAME:TAG instead."),
                    dtype: str = typer.Option("float32", help="float32, float16 or bfloat16."),
                    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder "
                                                   "(everything in it is deleted).")) -> None:
    """Turn a GGUF file (or an Ollama model) into an MLX model folder that mlx_lm.load opens."""
    from mlx_sql.models.gguf_import import import_gguf
    from mlx_sql.models.sources import find_ollama_blob

    if (gguf is None) == (ollama is None):
        raise MlxSqlError("import-gguf: give a GGUF file or --ollama NAME:TAG (one of them)")
    from mlx_sql.fileio import output_folder

    output_folder(out, overwrite)
    source = find_ollama_blob(ollama) if ollama else gguf
    with console.status(f"importing {source}"):
        result = import_gguf(source, out, dtype)
    console.print(f"imported {result.architecture} ({result.n_tensors} tensors) to {result.out_dir} "
                  f"in {result.seconds:.1f} s")


def main() -> None:
    blas.reexec_with_openblas()
    exit_on_sigterm()
    debug = "--debug" in sys.argv
    try:
        app(prog_name="mlx-sql")
    except MlxSqlError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # a folder that cannot be written, a full disk: the file and the reason, one line
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    except SystemExit as exc:  # typer turns Ctrl-C into a silent exit 130
        if exc.code == 130 and not INTERRUPTED_SAID:
            print("interrupted: what was finished is kept (eval and train continue with --resume)", file=sys.stderr)
        raise
