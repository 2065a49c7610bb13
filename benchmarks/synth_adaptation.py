"""Adapting a model to databases without their questions: `mlx-sql synth` on them, train, score their real questions.

Default (choosing): the Spider *train* databases held out of training, as `spider_validation.py` scores them
(seed 0); pairs are synthesized on those databases from their schemas and contents, an adapter is trained on
the pairs alone, and the held-out databases' real questions score it. `--on-dev` (checking, once per choice):
the same on Spider dev's databases — never a dev question or gold query — and all 972 questions: "adapted to
the test databases without their questions", a different setting from Spider's leaderboard.

Each stage resumes where it stopped (synthesis from candidates.jsonl, training from its checkpoint, scoring from
predictions.jsonl) and a finished one is reused. Rows: the untrained model with the same prompt, and the
adapter, greedy and with `eval.retries=N` (--retries; only the greedy queries SQLite rejected are redone);
each adapter row is paired, question by question, with the untrained model decoding alike and with every
--against adapter (exact sign test). Budget lines give synthesis and training minutes and what the filters
kept. Writes the section "Adapted by synthesized pairs" of RESULTS.md (its own for --on-dev).

    python benchmarks/synth_adaptation.py --model qwen0.5b --name self-40 --per-db 40 --minutes 60
    python benchmarks/synth_adaptation.py --model qwen0.5b --name t15-40 --teacher qwen1.5b --per-db 40 \\
        --train-set train.lr=5e-5 --against rft=runs/spider-validation/qwen0.5b/train-rft640-110steps-medium-up-lr5e-5
    python benchmarks/synth_adaptation.py --model qwen0.5b --name csu-own --databases csu_1 --per-db 80 \\
        --train-steps 30 --synth-set 'synth.target="answer"' --synth-set synth.answer_retries=4
    python benchmarks/synth_adaptation.py --model qwen0.5b --name own-40 --per-db 40 --train-steps 30 \\
        --synth-set 'synth.sources=["templates"]' --synth-set 'synth.questions="template"' \\
        --synth-set 'synth.target="answer"' --synth-set synth.answer_retries=4 --train-set train.lr=5e-5
    python benchmarks/synth_adaptation.py --model qwen0.5b --name rft-then-own-40 --synth-from own-40 \
        --train-steps 20 --train-set train.lr=2e-5 \
        --train-set train.init_adapter=\"runs/spider-validation/qwen0.5b/train-rft640-110steps-medium-up-lr5e-5\" \
        --against rft=runs/spider-validation/qwen0.5b/train-rft640-110steps-medium-up-lr5e-5
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

from mlx_sql.stopping import exit_on_sigterm
from results import RESULTS, ROOT, section_pattern, trained_with, update_section
from spider_accuracy import seed_with_running_answers
from spider_validation import RECIPES, SPLIT, fused_gguf, held_out, log, score_variant

LEVELS = ["easy", "medium", "hard", "extra", "all"]


def synthesize(recipe_file: str, sets: list[str], folder: Path) -> dict:
    """Run (or resume, or reuse) synthesis; its report.json."""
    from mlx_sql.recipe import load_recipe
    from mlx_sql.synth.run import run_synthesis

    report_path = folder / "report.json"
    if report_path.is_file() and json.loads(report_path.read_text())["stopped"] != "running":
        return json.loads(report_path.read_text())
    recipe = load_recipe(ROOT / recipe_file, [*sets, f'synth.out_dir="{folder}"'], check_data=False)
    start = time.perf_counter()
    done = run_synthesis(recipe, resume=(folder / "candidates.jsonl").is_file(),
                         on_kept=lambda db, n: None)
    log(f"synthesis: {done.kept} pairs in {time.perf_counter() - start:.0f} s ({done.stopped})")
    return json.loads(report_path.read_text())


def train_adapter(recipe_file: str, sets: list[str], root: Path, steps: int) -> Path:
    """Train (or resume, or reuse) the adapter on the synthesized pairs alone."""
    from mlx_sql.data.build import build_dataset
    from mlx_sql.models.tokenizer import load_tokenizer
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.checkpoint import CHECKPOINT_DIR
    from mlx_sql.train.trainer import train

    adapter = root / "adapter"
    recipe = load_recipe(ROOT / recipe_file, [*sets, f'data.out_dir="{root / "data"}"', f'train.adapter_dir="{adapter}"',
                                              f"train.iters={steps}", "train.save_every=10", "train.eval_every=1000"])
    if not (root / "data" / "train.jsonl").is_file():
        build_dataset(recipe, load_tokenizer(recipe.model))
    position = adapter / CHECKPOINT_DIR / "position.json"
    if position.is_file() and json.loads(position.read_text())["step"] >= steps:
        return adapter
    start = time.perf_counter()
    result = train(recipe, resume=position.is_file())
    log(f"training: {result.steps} steps in {time.perf_counter() - start:.0f} s, train loss {result.final_train_loss:.3f}")
    return adapter


def budget_line(label: str, synth: dict, adapter: Path) -> str:
    total = synth["all"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(total["outcomes"].items(), key=lambda kv: -kv[1]) if k != "kept")
    hardness = ", ".join(f"{lv} {total['hardness'].get(lv, 0)}" for lv in LEVELS[:-1])
    sources = ", ".join(f"{s} {c.get('kept', 0)} of {sum(c.values())}" for s, c in total["by_source"].items())
    settings = synth["settings"]
    train = trained_with(adapter)
    position = json.loads((adapter / "checkpoint" / "position.json").read_text())
    uses_model = (settings["sources"] != ["templates"] or settings["questions"] != "template"
                  or settings["check"] != "none")
    teacher = (Path(settings["teacher"]).stem if settings.get("teacher") else "the model itself") if uses_model else \
        "none: template SQL worded by its templates, no round trip"
    cut = position.get("truncated", 0)
    return (f"{label}: {synth['kept']} pairs on {len(synth['databases'])} databases (teacher: {teacher}, questions: "
            f"{settings['questions']}, check: {settings['check']}"
            + (f" with {settings.get('answer_retries', 0)} samples after greedy" if settings["check"] == "roundtrip" else "")
            + (", SQL: the round trip's matching answer" if settings.get("target") == "answer" else "") + ") in "
            f"{sum(d['minutes'] for d in synth['databases']):.0f} minutes of synthesis — "
            f"{hardness}; kept by source: {sources}; dropped: {dropped or 'none'}. Training: {position['step']} "
            f"steps, {position['examples_seen']} examples, {position['seconds'] / 60:.0f} minutes, lr {train['lr']:g}, "
            f"max_seq_length {train['max_seq_length']} ("
            + (f"{cut} of the examples had their schema's tail cut" if cut else "no schema cut") + ")"
            + (f", starting from {Path(train['init_adapter']).name}" if train.get("init_adapter") else "") + ".")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(RECIPES), default="qwen0.5b")
    parser.add_argument("--name", required=True, help="this run's name (its folder and row)")
    parser.add_argument("--teacher", choices=sorted(RECIPES), help="the model that writes (default: the model)")
    parser.add_argument("--per-db", type=int, default=40)
    parser.add_argument("--minutes", type=float, help="synthesis time limit, all databases together")
    parser.add_argument("--synth-set", action="append", default=[], help="a synth.* override (repeatable)")
    parser.add_argument("--synth-from", metavar="NAME", help="train on the pairs another run (NAME) synthesized, "
                        "instead of synthesizing (its settings; --synth-set and --per-db are then ignored)")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--train-set", action="append", default=[], help="a train.* / data.* override (repeatable)")
    parser.add_argument("--retries", type=int, default=4)
    parser.add_argument("--against", action="append", default=[], help="NAME=ADAPTER scored alike, to pair with")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--databases", help="only these of the databases, comma-separated: one user database's "
                        "case (synthesis, training and scoring on it alone; the untrained model scored on it too)")
    parser.add_argument("--on-dev", action="store_true")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "synth-adaptation"))
    args = parser.parse_args()
    exit_on_sigterm()

    from mlx_sql.data.benchmark import load_benchmark
    from mlx_sql.eval.report import compare_runs
    from mlx_sql.models.sources import gguf_file
    from mlx_sql.recipe import load_recipe

    title, recipe_file = RECIPES[args.model]
    common = [f'data.path="{args.spider}"', f"eval.max_tokens={args.max_tokens}", "eval.retries=0",
              "eval.samples=1", *SPLIT]
    scoring = [*common, "eval.split=dev"] if args.on_dev else common
    base = load_recipe(ROOT / recipe_file, scoring)
    if args.on_dev:
        bench = load_benchmark(args.spider)
        databases = sorted({q.db_id for q in bench.questions("dev") if bench.has_database(q.db_id, "dev")})
    else:
        databases = held_out(base)
    only = ""
    if args.databases:
        wanted = args.databases.split(",")
        unknown = sorted(set(wanted) - set(databases))
        if unknown:
            raise SystemExit(f"--databases: {unknown[0]} is not one of {', '.join(databases)}")
        databases, only = sorted(wanted), "-" + "+".join(sorted(wanted))
    limit, prefix = (0, "dev-") if args.on_dev else (args.questions, "")
    root = Path(args.out) / args.model / f"{prefix}{args.name}"
    teacher = [f'synth.teacher="{ROOT / RECIPES[args.teacher][1]}"'] if args.teacher else []
    synth_sets = [*scoring, f'synth.split="{"dev" if args.on_dev else "train"}"', f"synth.databases={json.dumps(databases)}",
                  f"synth.per_db={args.per_db}", 'synth.backend="llamacpp"', *teacher,
                  *([f"synth.minutes={args.minutes}"] if args.minutes else []), *args.synth_set]
    synth_folder = Path(args.out) / args.model / f"{prefix}{args.synth_from}" / "synth" if args.synth_from else \
        root / "synth"
    if args.synth_from and not (synth_folder / "report.json").is_file():
        raise SystemExit(f"--synth-from {args.synth_from}: no synthesis at {synth_folder}")
    synth = synthesize(recipe_file, synth_sets, synth_folder)
    adapter = train_adapter(recipe_file, [*common, f'data.pairs="{synth_folder / "pairs.jsonl"}"',
                                          "data.valid_fraction=0", *args.train_set], root, args.train_steps)

    # the untrained model's folders are spider_validation.py's, so either script reuses the other's scoring
    validation = ROOT / "runs" / "spider-validation" / args.model
    folders: dict[str, Path] = {}
    rows: dict[str, dict] = {}
    for retries in sorted({0, args.retries}):
        suffix = f"-retry{retries}" if retries else ""
        sets = [*scoring, f"eval.retries={retries}"]
        runs = {f"base, ddl-rows3{only}{suffix}": (validation / f"{prefix}base-ddl-rows3{only}{suffix}", None,
                                                   str(gguf_file(base.model))),
                f"synth, {args.name}{suffix}": (root / f"score{suffix}", adapter, None),
                **{f"LoRA, {n}{suffix}": (Path(a) / f"score-{prefix}{args.model}{suffix}", Path(a), None)
                   for n, _, a in (s.partition("=") for s in args.against)}}
        for label, (folder, trained, gguf) in runs.items():
            if retries:
                seed_with_running_answers(folders[label[: -len(suffix)]], folder)
            recipe = load_recipe(trained / "recipe.toml", sets) if trained else load_recipe(ROOT / recipe_file, sets)
            gguf = gguf or str(fused_gguf(trained))
            folders[label] = folder
            rows[label] = score_variant(recipe, folder, f"{args.model}-{folder.name}", databases, limit, None,
                                        "llamacpp", gguf)

    key = f"synth-adaptation{'-dev' if args.on_dev else ''}{only}-{args.model}"
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    match = section_pattern(key).search(text)
    earlier = match.group(1).splitlines() if match else []
    table = {line.split("|")[1].strip(): line for line in earlier if line.startswith("| ") and not line.startswith("| variant")}
    notes = {line.split(":", 1)[0]: line for line in earlier if re.match(r"(synth, [^:]+|Paired, [^:]+):", line)}
    for label, summary in rows.items():
        cells = " | ".join(f"{summary[lv]['execution_accuracy']:.1f}" for lv in LEVELS)
        table[label] = f"| {label} | {cells} | {summary['all']['exact_set_match']:.1f} |"
    notes[f"synth, {args.name}"] = budget_line(f"synth, {args.name}", synth, adapter) + \
        (f" The pairs are synth, {args.synth_from}'s (the same synthesis)." if args.synth_from else "")
    for label, folder in folders.items():
        if not label.startswith("synth"):
            continue
        suffix = re.search(r"-retry\d+$", label).group(0) if re.search(r"-retry\d+$", label) else ""
        for other in folders:
            if not other.startswith("synth") and (re.search(r"-retry\d+$", other) or [""])[0] == suffix:
                notes[f"Paired, {label} against {other}"] = (f"Paired, {label} against {other}: "
                                                              f"{compare_runs(folders[other], folder).flips}.")
    where = ("all 972 Spider *dev* questions whose database exists, pairs synthesized on the dev databases from "
             "their schemas and contents only — adapted to the test databases without their questions, a setting "
             "apart from Spider's leaderboard" if args.on_dev else
             f"{rows[next(iter(rows))]['all']['count']} questions of {len(databases)} Spider *train* databases held "
             f"out of training (seed 0: {', '.join(databases)}), pairs synthesized on those databases")
    lines = [f"{title} trained on pairs `mlx-sql synth` wrote, with no human pairs, scored on {where}. Fused q8_0 "
             f"GGUFs in llama.cpp, max {args.max_tokens} tokens; `-retryN` resamples up to N times where SQLite "
             "rejects the greedy query. EM is Spider's exact set match. Written by `benchmarks/synth_adaptation.py`.",
             "", "| variant | " + " | ".join(f"{lv} EX" for lv in LEVELS) + " | all EM |",
             "|---|" + "---:|" * (len(LEVELS) + 1),
             *sorted(table.values(), key=lambda line: (not line.startswith("| base"), line)), "",
             *notes.values()]
    heading = "Adapted by synthesized pairs" + (", on Spider dev" if args.on_dev else ", validation split") + \
        (f", only {', '.join(databases)}" if only else "")
    flags = (" --on-dev" if args.on_dev else "") + (f" --databases {args.databases}" if only else "")
    update_section(key, f"{heading}: {title} (`benchmarks/synth_adaptation.py{flags}`)",
                   "\n".join(lines),
                   shows="Whether pairs `mlx-sql synth` writes from the databases alone teach the model those "
                   "databases: an adapter trained on them only, scored on the databases' real questions against the "
                   "untrained model decoding alike.")


if __name__ == "__main__":
    main()
