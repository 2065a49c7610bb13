"""Choosing a recipe without looking at Spider dev: execution accuracy on databases held out of Spider train.

`data.valid_by = "database"` carves whole Spider *train* databases out of training (seeded), so
their schemas are as unseen as dev's. Each variant (recipe overrides) is scored on the same
held-out questions: the base model through llama.cpp on the model's own GGUF (prompt choices:
schema format, sample rows), and, given --adapter NAME=DIR, trained adapters (training choices)
through MLX or as a fused q8_0 GGUF. Finished variants are reused from their report folders; a
variant that only adds `eval.retries` to one scored before it keeps that one's greedy answers that ran.
Writes the "Recipe choices on a validation split" section of RESULTS.md; rows (and budget lines) of
variants not run this time are kept from the section as it stands, so one new variant costs one run.

    python benchmarks/spider_validation.py --model qwen0.5b --variant ddl= --variant compact=data.schema_format=compact
    python benchmarks/spider_validation.py --model qwen0.5b --train-steps 60 --train recipe= --train layers24=train.num_layers=24

--train NAME=overrides trains an adapter on the rest of Spider train (the same held-out split; resumable,
finished runs reused) for --train-steps optimizer steps, then scores it like --adapter.
With `data.own_answers=own` among its overrides, the untrained model first answers the questions of the
first --train-steps batches (llama.cpp), and those it gets right keep its own SQL as the target:

    python benchmarks/spider_validation.py --model qwen0.5b --train own=data.own_answers=own

With `data.own_answers=sampled` the untrained model answers --own-questions training questions, and where
its greedy query misses the gold result draws up to 4 samples until one returns it (`eval.retry_until =
"correct"`); with `data.own_answers_only=true` only those correct answers are trained on (rejection-sampling
finetuning):

    python benchmarks/spider_validation.py --model qwen0.5b --train "rft=data.own_answers=sampled;data.own_answers_only=true"

`data.own_answers=sampled:LEVEL` keeps only the sampled answers to questions of Spider hardness LEVEL or
harder (by the gold query; `data.own_answers_hardness`): the same answers without the easy ones, whose
single-table queries pulled the finetuned model toward simpler SQL.

GRPO (`train.objective=grpo`) with `data.sometimes_right=candidates` trains only on the questions, among the first
--own-questions, for which some but not all of the untrained model's 8 candidates (greedy + 7 samples, in
llama.cpp) returned the gold result; `train.init_adapter=FOLDER` starts from a trained adapter (e.g. rft's), and
then that adapter's candidates (its fused q8_0 GGUF) choose the questions:

    python benchmarks/spider_validation.py --model qwen0.5b --train-steps 60 --own-questions 300 \
        --train "grpo=train.objective=grpo;data.sometimes_right=candidates;train.batch_size=2;train.lr=1e-5"
    python benchmarks/spider_validation.py --model qwen0.5b --train-steps 60 --own-questions 300 --train \
        "grpo-rft=train.objective=grpo;data.sometimes_right=candidates;train.batch_size=2;train.lr=1e-5;\
train.init_adapter=runs/spider-validation/qwen0.5b/train-rft640-110steps-medium-up-lr5e-5"

`--adapter-samples 16` also scores each adapter voting over 16 candidates (`NAME-vote16`, every candidate
recorded), so `vote_headroom.py` reports its pass@k and vote@k: whether training widened what the model can
find or only sharpened its first answer.

Each adapter is also paired with the first base variant of the run that decodes alike, question by question
(won, lost, exact sign test p): on 200 questions a few points can be chance. --retries N also scores each
adapter with `eval.retries=N` (redoing only its greedy queries SQLite rejected), as the recipes ship.
--on-dev scores the same variants and adapters once on all of Spider dev (its own section; folders `dev-…`),
to check what the split chose — never to choose:

    python benchmarks/spider_validation.py --model qwen0.5b --on-dev \
        --variant "ddl-rows3=data.schema_format=ddl;data.sample_rows=3" \
        --adapter rft-medium-up-lr5e-5=runs/spider-validation/qwen0.5b/train-rft-medium-up-lr5e-5
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from mlx_sql.stopping import exit_on_sigterm
from results import RESULTS, ROOT, section_pattern, trained_with, update_section

RECIPES = {"qwen0.5b": ("Qwen2.5-Coder-0.5B-Instruct", "recipes/qwen2.5-coder-0.5b.toml"),
           "qwen1.5b": ("Qwen2.5-Coder-1.5B-Instruct", "recipes/qwen2.5-coder-1.5b.toml"),
           "smollm2": ("SmolLM2-135M-Instruct", "recipes/smollm2-135m.toml")}
# The split every variant shares: ~5% of Spider train's questions, as whole databases.
from spider_accuracy import VALIDATION_SPLIT, seed_with_running_answers  # noqa: E402

SPLIT = [*VALIDATION_SPLIT, "eval.split=train"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def held_out(recipe) -> list[str]:
    """The validation databases of this split, from the same code `data build` uses."""
    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.data.build import split_questions, training_questions

    bench = load_benchmark(recipe.data.path, recipe.data.layout)
    questions = [q for q in training_questions(bench, recipe.data) if bench.has_database(q.db_id, "train")]
    _, valid = split_questions(questions, recipe.data)
    return sorted({q.db_id for q in valid})


def score_variant(recipe, out: Path, name: str, databases: list[str], limit: int, adapter: Path | None,
                  backend: str, gguf: str | None, keep=None) -> dict:
    from mlx_sql.eval.pipeline import evaluate_model

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())["summary"]
    start = time.perf_counter()
    report = evaluate_model(recipe, out, name, adapter, backend, gguf, resume=True, max_examples=limit or None,
                            db_filter=databases, keep=keep)
    log(f"{name}: EX {report.summary['all']['execution_accuracy']:.1f}% on {report.summary['all']['count']} "
        f"in {time.perf_counter() - start:.0f} s")
    return report.summary


def earlier_rows(text: str, key: str) -> tuple[list[str], dict[str, str]]:
    """Table rows, and budget and paired-comparison lines, of the section `key` as RESULTS.md has it."""
    match = section_pattern(key).search(text)
    rows, budgets = [], {}
    for line in (match.group(1).splitlines() if match else []):
        if re.match(r"\| (base|base \(q8_0 export\)|LoRA|LoRA in MLX), ", line):
            rows.append(line)
        elif re.match(r"LoRA, [^:]+: \d+ steps|Paired, [^:]+: \d+ questions flipped", line):
            budgets[line.split(":", 1)[0]] = line
    return rows, budgets


def base_export(recipe, out: Path) -> Path:
    """The untrained model through the path adapters take (GGUF import to MLX, then our q8_0 export): the
    control that separates what training changes from what the round trip changes."""
    from mlx_sql.export.gguf_writer import export_gguf
    from mlx_sql.models.sources import resolve_model_path

    gguf = out / "model-q8_0.gguf"
    if not gguf.is_file():
        export_gguf(resolve_model_path(recipe.model), gguf, "q8_0")
    return gguf


def data_folder(args, sets: str) -> Path:
    """Variants that change only training share one dataset; data.* overrides (schema text) get their own,
    own answers and sometimes-right reports by name only (their value is a path); TOML quotes are left out of the folder's name, which
    goes into a quoted TOML string itself."""
    data_sets = sorted(s.split("=", 1)[0] + "=" + Path(s.split("=", 1)[1].strip('"')).name
                       if s.startswith(("data.own_answers=", "data.sometimes_right=")) else s.replace('"', "")
                       for s in sets.split(";") if s.startswith("data."))
    return Path(args.out) / args.model / ("train-data" + "".join(f"-{s.split('.', 1)[1]}" for s in data_sets))


def fused_gguf(adapter: Path) -> Path:
    """The adapter fused into its model and written as a q8_0 GGUF (made once, kept in the adapter's folder)."""
    from mlx_sql.export.fuse import fuse_adapter
    from mlx_sql.export.gguf_writer import export_gguf

    gguf = adapter / "fused" / "model-q8_0.gguf"
    if not gguf.is_file():
        fuse_adapter(adapter, adapter / "fused")
        export_gguf(adapter / "fused", gguf, "q8_0")
    return gguf


def train_variant(recipe_file: str, common: list[str], name: str, sets: str, args) -> Path:
    """Train (or resume, or reuse) one recipe variant on Spider train minus the held-out databases."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.errors import MlxSqlError
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.checkpoint import CHECKPOINT_DIR
    from mlx_sql.train.trainer import train

    run = Path(args.out) / args.model / f"train-{name}"
    data = data_folder(args, sets)
    recipe = load_recipe(ROOT / recipe_file, [*common, f'data.out_dir="{data}"', f'train.adapter_dir="{run}"',
                                              f"data.max_examples={args.train_examples}",
                                              f"train.iters={args.train_steps}", "train.save_every=10",
                                              "train.eval_every=1000", *[s for s in sets.split(";") if s]])
    if not (data / "train.jsonl").is_file():
        build_dataset(recipe, load_tokenizer(recipe.model))
    position = run / CHECKPOINT_DIR / "position.json"
    finished = position.is_file() and json.loads(position.read_text())["step"] >= args.train_steps
    if not (run / "adapters.safetensors").is_file() or (position.is_file() and not finished):
        start = time.perf_counter()
        try:
            result = train(recipe, resume=position.is_file())
            log(f"{name}: {result.steps} steps in {time.perf_counter() - start:.0f} s, "
                f"train loss {result.final_train_loss:.3f}")
        except MlxSqlError as exc:
            if "already finished" not in str(exc):
                raise
    return run


def own_answers(recipe_file: str, common: list[str], sets: str, args, mode: str) -> Path:
    """The untrained model's answers to the questions the first `--train-steps` batches hold (mode `own`), or to
    the first --own-questions (`sampled`: each sampled up to 4 more times until one returns the gold result;
    `candidates`: the greedy answer and 7 samples, all recorded), scored (resumable): the `data.own_answers` of
    a self-distilled variant, or the `data.sometimes_right` of a GRPO one."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.data.jsonl import iter_jsonl
    from mlx_sql.models.sources import gguf_file
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe

    plain = [s for s in sets.split(";") if s and not s.startswith(("data.own_answers", "data.sometimes_right"))]
    data = data_folder(args, ";".join(plain))
    sampling = {"own": [], "sampled": ["eval.retries=4", 'eval.retry_until="correct"'],
                "candidates": ["eval.samples=8", "eval.vote_early_stop=false"]}[mode]
    recipe = load_recipe(ROOT / recipe_file, [*common, f'data.out_dir="{data}"', f"data.max_examples={args.train_examples}",
                                              *plain, *sampling])
    if not (data / "train.jsonl").is_file():
        build_dataset(recipe, load_tokenizer(recipe.model))
    count = args.train_steps * recipe.train.batch_size if mode == "own" else args.own_questions
    records = [r for _, r in iter_jsonl(data / "train.jsonl")][:count]
    wanted = {(r["db_id"], r["question"]) for r in records}
    kind = {"own": "own-answers", "sampled": "sampled-answers", "candidates": "candidates8"}[mode]
    # GRPO from a trained adapter learns from what *that* model gets right sometimes: its candidates, not the base's
    start = re.search(r'train\.init_adapter="?([^";]+)', sets) if mode == "candidates" else None
    gguf = fused_gguf(Path(start.group(1))) if start else gguf_file(recipe.model)
    kind += f"-{Path(start.group(1)).name}" if start else ""
    out = Path(args.out) / args.model / f"{kind}{data.name[len('train-data'):]}-{len(wanted)}"
    reuse_smaller(out, wanted)
    score_variant(recipe, out, f"{args.model}-own-answers", [], 0, None, "llamacpp", str(gguf),
                  keep=lambda q: (q.db_id, q.question) in wanted)
    return out


def reuse_smaller(out: Path, wanted: set[tuple[str, str]]) -> None:
    """Start answering `wanted` from the largest finished run of the same kind on fewer questions: the first
    N training questions are a prefix of the first M, and their answers (sampled ones included) are kept
    as they were, so raising --own-questions costs only the new questions."""
    from mlx_sql.eval.pipeline import load_done
    from mlx_sql.eval.report import load_report
    from mlx_sql.fileio import write_jsonl

    if (out / "predictions.jsonl").is_file():
        return
    stem = out.name.rsplit("-", 1)[0]
    smaller = sorted((int(m.group(1)), p) for p in out.parent.glob(f"{stem}-*")
                     if (m := re.fullmatch(rf"{re.escape(stem)}-(\d+)", p.name)) and int(m.group(1)) < len(wanted)
                     and (p / "summary.json").is_file())
    if smaller:
        _, rows = load_report(smaller[-1][1])
        done = load_done(smaller[-1][1] / "predictions.jsonl")
        reused = sorted(row["index"] for row in rows if (row["db_id"], row["question"]) in wanted
                        and row["index"] in done)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "predictions.jsonl", [done[index] for index in reused])
        log(f"{out.name}: {len(reused)} answers reused from {smaller[-1][1].name}")


def paired(folders: dict[str, Path]) -> dict[str, str]:
    """Each adapter scored this time against the first base variant scored with it that decodes alike (the
    same -retryN or -voteK, or none), question by question: a few points on a few hundred questions can be chance,
    and the sign test says how likely."""
    from mlx_sql.eval.report import compare_runs

    def retries(label: str) -> str:  # the decoding: greedy, -retryN or -voteK
        return match.group(0) if (match := re.search(r"-(retry|vote)\d+$", label)) else ""

    lines = {}
    for label, folder in folders.items():
        base = next((b for b in folders if b.startswith("base") and retries(b) == retries(label)), None)
        if label.startswith("LoRA") and base:
            lines[f"Paired, {label} against {base}"] = (f"Paired, {label} against {base}: "
                                                        f"{compare_runs(folders[base], folder).flips}.")
    return lines


def paired_with_start(specs: list[str], folders: dict[str, Path], root: Path, prefix: str) -> dict[str, str]:
    """An adapter trained from another (`train.init_adapter`) against that start, decoded alike, where the start
    was scored by this script (train-NAME is scored as lora-NAME): what the further training changed."""
    from mlx_sql.eval.report import compare_runs

    lines = {}
    for name, _, folder in (spec.partition("=") for spec in specs):
        start = trained_with(Path(folder)).get("init_adapter")
        if not start or not Path(start).name.startswith("train-"):
            continue
        start_name = Path(start).name[len("train-"):]
        for label, mine in folders.items():
            if not label.startswith(("LoRA, " + name, "LoRA in MLX, " + name)):
                continue
            suffix = label[label.index(name) + len(name):]
            theirs = root / f"{prefix}{'lora-mlx' if 'MLX' in label else 'lora'}-{start_name}{suffix}"
            if (theirs / "summary.json").is_file():
                key = f"Paired, {label} against its start, LoRA, {start_name}{suffix}"
                lines[key] = f"{key}: {compare_runs(theirs, mine).flips}."
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--model", default="qwen0.5b", choices=sorted(RECIPES))
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=override[;override…] for the base model (prompt choices)")
    parser.add_argument("--adapter", action="append", default=[],
                        help="NAME=ADAPTER_DIR: a trained adapter, scored with its own saved recipe")
    parser.add_argument("--train", action="append", default=[],
                        help="NAME=override[;override…]: train this variant of the recipe, then score it")
    parser.add_argument("--retries", type=int, default=0,
                        help="also score each adapter with eval.retries=N (NAME-retryN; only the greedy queries "
                             "SQLite rejected are redone), paired with the base variant of the same -retryN")
    parser.add_argument("--adapter-samples", type=int, default=0, metavar="K",
                        help="also score each adapter voting over K candidates (NAME-voteK: eval.samples=K, no early "
                             "stop, eval.retries=--retries), every candidate recorded: vote_headroom.py reads its "
                             "pass@k and vote@k")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--own-questions", type=int, default=320,
                        help="training questions the untrained model answers for data.own_answers=sampled")
    parser.add_argument("--adapter-backend", choices=["mlx", "llamacpp"], default="llamacpp",
                        help="llamacpp: fuse, export q8_0, score the GGUF (fast on a CPU)")
    parser.add_argument("--base-export", action="store_true",
                        help="also score each --variant on the untrained model exported as q8_0 (the adapters' path)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--on-dev", action="store_true",
                        help="score the variants and adapters on every Spider dev question instead (the check, once, "
                             "of what the split chose); its own RESULTS.md section")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--out", default=str(ROOT / "runs" / "spider-validation"))
    args = parser.parse_args()
    exit_on_sigterm()

    from mlx_sql.models.sources import gguf_file
    from mlx_sql.recipe import load_recipe

    title, recipe_file = RECIPES[args.model]
    # greedy answers unless a variant sets eval.retries (its overrides come after these)
    common = [f'data.path="{args.spider}"', f"eval.max_tokens={args.max_tokens}", "eval.retries=0",
              "eval.samples=1", *SPLIT]
    # what scoring sees: the held-out databases' first --questions, or (--on-dev) all of Spider dev
    scoring = [*common, "eval.split=dev"] if args.on_dev else common
    limit, prefix = (0, "dev-") if args.on_dev else (args.questions, "")
    rows: dict[str, dict] = {}
    folders: dict[str, Path] = {}  # report folder of each row scored this time, for the paired comparisons
    databases: list[str] = []
    greedy: dict[tuple[str, ...], Path] = {}  # greedy variants' folders, by their overrides
    for spec in args.variant or ([] if args.train or args.adapter else ["recipe="]):
        name, _, sets = spec.partition("=")
        overrides = [s for s in sets.split(";") if s]
        recipe = load_recipe(ROOT / recipe_file, [*scoring, *overrides])
        databases = databases or ([] if args.on_dev else held_out(recipe))
        gguf = gguf_file(recipe.model)
        folder = Path(args.out) / args.model / f"{prefix}base-{name}"
        twin = tuple(sorted(s for s in overrides if not s.startswith("eval.retr")))
        if not recipe.eval.retries:
            greedy[twin] = folder
        elif twin in greedy:  # the same prompts scored greedily before: only their failed answers are redone
            seed_with_running_answers(greedy[twin], folder)
        folders[f"base, {name}"] = folder
        rows[f"base, {name}"] = score_variant(recipe, folder,
                                              f"{args.model}-{prefix}base-{name}", databases, limit, None,
                                              "llamacpp", str(gguf) if gguf else None)
        if args.base_export:
            folder = Path(args.out) / args.model / f"{prefix}base-export-{name}"
            folders[f"base (q8_0 export), {name}"] = folder
            rows[f"base (q8_0 export), {name}"] = score_variant(
                recipe, folder, f"{args.model}-{prefix}base-export-{name}", databases, limit, None, "llamacpp",
                str(base_export(recipe, Path(args.out) / args.model / "base-export")))
    # "own" / "sampled" in a --train variant's overrides: data.own_answers = the base model's answers
    specs = []
    for name, _, sets in (spec.partition("=") for spec in args.train):
        for kind in ("own", "sampled"):
            match = re.search(rf"data\.own_answers={kind}(?::(\w+))?(?=;|$)", sets)
            if match:
                folder = own_answers(recipe_file, common, sets, args, kind)
                hardness = f';data.own_answers_hardness="{match.group(1)}"' if match.group(1) else ""
                sets = sets.replace(match.group(0), f'data.own_answers="{folder}"{hardness}')
        if re.search(r"data\.sometimes_right=candidates(?=;|$)", sets):  # GRPO on what the model gets right sometimes
            folder = own_answers(recipe_file, common, sets, args, "candidates")
            sets = re.sub(r"data\.sometimes_right=candidates(?=;|$)", f'data.sometimes_right="{folder}"', sets)
        specs.append((name, sets))
    trained = [f"{name}={train_variant(recipe_file, common, name, sets, args)}" for name, sets in specs]
    for spec in [*args.adapter, *trained]:
        name, _, folder = spec.partition("=")
        adapter = Path(folder)
        gguf = fused_gguf(adapter) if args.adapter_backend == "llamacpp" else None
        # the same adapter scored in MLX (float32, adapter unfused) is its own row and folder, beside its q8_0 GGUF
        kind, folder_kind = ("LoRA in MLX", "lora-mlx") if args.adapter_backend == "mlx" else ("LoRA", "lora")
        # greedy, then (--retries) only its rejected queries redone, then (--adapter-samples) the vote of K
        decodings = [(f"-retry{retries}" if retries else "", [f"eval.retries={retries}"])
                     for retries in sorted({0, args.retries})]
        if args.adapter_samples > 1:
            decodings.append((f"-vote{args.adapter_samples}", [f"eval.retries={args.retries}",
                                                               f"eval.samples={args.adapter_samples}",
                                                               "eval.vote_early_stop=false"]))
        for suffix, decoding_sets in decodings:
            label = name + suffix
            folders[f"{kind}, {label}"] = Path(args.out) / args.model / f"{prefix}{folder_kind}-{label}"
            if suffix.startswith("-retry"):
                seed_with_running_answers(folders[f"{kind}, {name}"], folders[f"{kind}, {label}"])
            decoding = load_recipe(adapter / "recipe.toml", [*scoring, *decoding_sets])
            databases = databases or ([] if args.on_dev else held_out(decoding))
            rows[f"{kind}, {label}"] = score_variant(decoding, folders[f"{kind}, {label}"],
                                                     f"{args.model}-{prefix}{folder_kind}-{label}", databases, limit,
                                                     adapter if args.adapter_backend == "mlx" else None,
                                                     args.adapter_backend, str(gguf) if gguf else None)

    levels = ["easy", "medium", "hard", "extra", "all"]
    key = f"spider-{'dev-variants' if args.on_dev else 'validation'}-{args.model}"
    kept_rows, kept_budgets = earlier_rows(RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "", key)
    first = next(iter(rows.values()))
    scored = (f"all {first['all']['count']} Spider *dev* questions whose database exists: variants chosen on the "
              "validation split (\"Recipe choices on a validation split\"), checked here once and never chosen by"
              if args.on_dev else f"{first['all']['count']} questions of {len(databases)} Spider *train* databases "
              f"held out of training (`data.valid_by = \"database\"`, seed 0: {', '.join(databases)})")
    lines = [f"{title} on {scored}; base variants "
             "scored through llama.cpp on the model's own GGUF, adapters as fused q8_0 GGUFs in llama.cpp (`LoRA "
             "in MLX`: the MLX model, float32, with the adapter unfused, as `mlx-sql eval --adapter` runs it); greedy, max "
             f"{args.max_tokens} tokens. EM is Spider's exact set match. A `-retryN` variant sets `eval.retries=N`: where "
             "SQLite rejects the greedy query, up to N samples (temperature `eval.retry_temperature`, 0.8; top-k 40) "
             "and the first that runs is the answer — execution-guided decoding, no training; `base (q8_0 export)` is "
             "the untrained model through the adapters' path (MLX import, our q8_0 export).", "",
             "| variant | " + " | ".join(f"{lv} EX" for lv in levels) + " | all EM |",
             "|---|" + "---:|" * (len(levels) + 1)]
    table = {line.split("|")[1].strip(): line for line in kept_rows}
    for label, summary in rows.items():
        cells = " | ".join(f"{summary[lv]['execution_accuracy']:.1f}" for lv in levels)
        table[label] = f"| {label} | {cells} | {summary['all']['exact_set_match']:.1f} |"
    lines.extend(sorted(table.values(), key=lambda line: not line.startswith("| base")))
    lines.append("")
    lines.append("Questions per level: " + ", ".join(f"{lv} {first[lv]['count']}" for lv in levels) + ".")
    for spec in [*args.adapter, *trained]:  # the training budget of each adapter, from its checkpoint
        name, _, folder = spec.partition("=")
        if not (Path(folder) / "checkpoint" / "position.json").is_file():
            continue
        position = json.loads((Path(folder) / "checkpoint" / "position.json").read_text())
        kept_budgets[f"LoRA, {name}"] = (
            f"LoRA, {name}: {position['step']} steps, {position['examples_seen']} examples of Spider train "
            f"(minus the held-out databases), {position['seconds'] / 60:.0f} minutes; "
            f"{position['truncated']} examples had the tail of their schema cut to fit `train.max_seq_length`.")
    kept_budgets.update(paired(folders))
    kept_budgets.update(paired_with_start([*args.adapter, *trained], folders, Path(args.out) / args.model, prefix))
    lines.extend(kept_budgets.values())
    heading = "Validation-chosen variants on Spider dev" if args.on_dev else "Recipe choices on a validation split"
    command = "benchmarks/spider_validation.py" + (" --on-dev" if args.on_dev else "")
    shows = ("The variants the held-out databases chose, scored once on all of Spider dev: whether each choice "
             "holds on dev. Never used to choose." if args.on_dev else
             "Every prompt, decoding and training choice for this model, scored on the same questions of Spider-train "
             "databases held out of training: where choices are made, never on dev.")
    update_section(key, f"{heading}: {title} (`{command}`)", "\n".join(lines), shows=shows)


if __name__ == "__main__":
    main()
