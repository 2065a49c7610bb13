"""Evaluation entry points the CLI calls: score a predictions file, write the reports."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mlx_sql.data.benchmark import Question, load_benchmark, recipe_benchmark
from mlx_sql.data.examples import make_record
from mlx_sql.data.pruning import PromptSchemas, token_counter
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.backends import Backend
from mlx_sql.recipe import BACKENDS, Recipe
from mlx_sql.eval.report import write_report
from mlx_sql.eval.scoring import Scored, read_predictions, score


@dataclass
class EvalReport:
    out_dir: Path
    summary: dict
    scored: list[Scored]
    skipped: int


def select_questions(bench: Any, split: str, db_filter: Sequence[str] = (), max_examples: int | None = None,
                     keep: Callable[[Question], bool] | None = None, sample: int | None = None,
                     seed: int = 0) -> tuple[list[Question], list[Question], int]:
    """(all questions of the split, those to score, how many lack their database), filters applied;
    `keep` picks questions one by one (e.g. those a training set holds). `sample` keeps a seeded random N in
    benchmark order: the first N of a benchmark file are a few databases' questions, a sample is all of them.

    An unknown database in `db_filter` or nothing left to score is an error, never a 0% report.
    """
    questions = bench.questions(split)
    known = sorted({q.db_id for q in questions})
    unknown = [d for d in db_filter if d not in known]
    if unknown:
        shown = ", ".join(known[:40]) + (f", … ({len(known)} in all)" if len(known) > 40 else "")
        raise MlxSqlError(f"no database '{unknown[0]}' in the {split} split (databases: {shown})", bench.root)
    usable = [q for q in questions if bench.has_database(q.db_id, split) and (not db_filter or q.db_id in db_filter)
              and (keep is None or keep(q))]
    skipped = len([q for q in questions if not bench.has_database(q.db_id, split)])
    if sample and sample < len(usable):
        chosen = sorted(random.Random(f"{seed}:sample").sample(range(len(usable)), sample))
        usable = [usable[i] for i in chosen]
    usable = usable[: max_examples or len(usable)]
    if not usable:
        raise MlxSqlError(f"no questions to evaluate in the {split} split (of {len(questions)}, {skipped} have no "
                          "database file)", bench.root)
    return questions, usable, skipped


def evaluate_predictions(predictions: Path, data: Path, split: str, out_dir: Path, name: str,
                         timeout: float = 10.0, advance: Callable[[Scored], None] | None = None,
                         on_total: Callable[[int], None] | None = None, db_filter: Sequence[str] = (),
                         max_examples: int | None = None, sample: int | None = None) -> EvalReport:
    """Score a predictions file; `sample` draws with seed 0, as a recipe's default data.seed does."""
    bench = load_benchmark(data)
    questions, usable, skipped = select_questions(bench, split, db_filter, max_examples, sample=sample)
    preds = read_predictions(predictions, questions)
    wanted = {q.index for q in usable}
    kept = [(q, p) for q, p in zip(questions, preds) if q.index in wanted]
    if on_total:
        on_total(len(kept))
    scored = score([q for q, _ in kept], [p for _, p in kept], bench, split, timeout, advance)
    summary = write_report(out_dir, name, scored, {"predictions": str(predictions), "data": str(data),
                                                   "split": split, "skipped_missing_database": skipped})
    return EvalReport(out_dir, summary, scored, skipped)


def eval_records(bench: Any, questions: Sequence[Question], recipe: Recipe, split: str,
                 count_tokens: Callable[[str], int]) -> list[dict]:
    """Prompts for evaluation, each database's whole schema rendered and measured once."""
    cfg = recipe.data
    schemas = PromptSchemas(cfg, count_tokens)
    out = []
    for q in questions:
        schema = bench.schema(q.db_id, split)
        out.append({**make_record(q, schemas.text(schema, q.question), cfg.instruction, schemas.values(schema, q.question)),
                    "index": q.index})
    return out


def load_done(path: Path) -> dict[int, dict]:
    """Predictions already written (for --resume); a torn last line from a crash is ignored."""
    done: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[int(record["index"])] = record
            except (json.JSONDecodeError, KeyError, ValueError):
                continue
    return done


def backend_model(recipe: Recipe, adapter: Path | None, backend: str, model_name: str | None) -> str | None:
    """What the backend will run, checked: llama.cpp scores the adapter's own fused GGUF, never the base
    GGUF under the adapter's name."""
    if backend not in BACKENDS:
        raise MlxSqlError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "llamacpp" and adapter is not None and model_name is None:
        fused = adapter / "fused" / f"model-{recipe.export.gguf_dtype}.gguf"
        if not fused.is_file():
            raise MlxSqlError(f"the llamacpp backend scores a GGUF and {fused} does not exist: run `make "
                              f"fuse-and-export ADAPTER={adapter}` first, or give --model FILE.gguf", adapter)
        return str(fused)
    return model_name


def make_backend(recipe: Recipe, adapter: Path | None, backend: str, model_name: str | None = None) -> Backend:
    from mlx_sql.eval.backends import LlamaCppBackend, MLXBackend, OllamaBackend

    e, o = recipe.eval, recipe.ollama
    if backend == "openai":
        import os

        from mlx_sql.eval.backends import OpenAIBackend

        c = recipe.openai
        return OpenAIBackend(model_name or c.model, c.base_url, c.timeout, e.max_tokens, os.environ.get(c.api_key_env))
    if backend == "ollama":
        return OllamaBackend(model_name or o.model or recipe.export.ollama_name or recipe.name, o.base_url, o.timeout,
                             o.context_window, e.max_tokens)
    if backend == "llamacpp":
        from mlx_sql.models.sources import gguf_file

        gguf = Path(model_name) if model_name else gguf_file(recipe.model)
        if gguf is None:
            raise MlxSqlError("the llamacpp backend needs a GGUF file (--model FILE.gguf)")
        from mlx_sql.models.tokenizer import load_tokenizer

        try:
            tokenizer = load_tokenizer(recipe.model)
        except MlxSqlError:  # a GGUF unrelated to the recipe's model: use the file's own chat template
            tokenizer = None
        from mlx_sql.models.gguf_import import gguf_architecture

        if gguf_architecture(gguf) == "t5":
            from mlx_sql.eval.backends import LlamaCppSeq2SeqBackend

            if tokenizer is None:
                raise MlxSqlError("a T5 GGUF is scored with its recipe's tokenizer, and it could not be loaded", gguf)
            return LlamaCppSeq2SeqBackend(str(gguf), tokenizer, e.max_tokens, o.context_window)
        return LlamaCppBackend(str(gguf), e.max_tokens, o.context_window, tokenizer)
    from mlx_sql.models.loading import load_model

    model, tokenizer, location = load_model(recipe.model)
    if adapter is not None:
        from mlx_sql.train.adapters import load_trained_adapter

        load_trained_adapter(model, adapter)
    model.eval()
    if getattr(model, "is_encoder_decoder", False):
        from mlx_sql.eval.backends import Seq2SeqMLXBackend

        return Seq2SeqMLXBackend(model, tokenizer, e.max_tokens)
    return MLXBackend(model, tokenizer, e.max_tokens, state_id=model_identity(location, recipe, adapter))


def model_identity(location: str, recipe: Recipe, adapter: Path | None) -> str:
    """What a saved prompt state belongs to: these weights (folder, precision, quantization) and this adapter file."""
    ident = f"{Path(location).resolve() if Path(location).exists() else location}:{recipe.model.dtype}:{recipe.model.quantize}"
    weights = adapter / "adapters.safetensors" if adapter is not None else None
    if weights is not None and weights.is_file():
        stat = weights.stat()
        ident += f":{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return ident


def vote_answer(gen: Backend, record: dict, greedy_sql: str, q: Question, bench: Any, split: str, executor: Any,
                gold_cache: dict, recipe: Recipe, until_correct: bool, to_sql: Callable[[str], str]) -> dict:
    """A question's answer by result voting (or, with retry_until = "correct", the first of the same candidates
    that returns the gold result), with every candidate recorded: its result's group and whether it was right,
    so pass@k and vote@k for every k up to eval.samples come from this one run."""
    from mlx_sql.eval.normalize import remove_distinct
    from mlx_sql.eval.scoring import gold_match
    from mlx_sql.eval.vote import vote_on_record

    e = recipe.eval
    db_path = bench.db_path(q.db_id, split)
    right = gold_match(q, bench, split, executor, gold_cache)
    run = lambda sql: executor.run(db_path, sql)  # noqa: E731
    voted = vote_on_record(gen, record, greedy_sql, run, e.samples, e.retry_temperature,
                           0 if until_correct else e.retries, e.vote_prefer_nonempty,
                           e.vote_early_stop and not until_correct, to_sql=to_sql)
    candidates = voted.to_json()
    for c, cand in zip(candidates, voted.candidates):  # correct as scored: DISTINCT removed, as from the gold
        scored_sql = remove_distinct(cand.sql)
        c["correct"] = bool(cand.sql.strip()) and right(cand.result if scored_sql == cand.sql else run(scored_sql))
    sql = voted.sql
    if until_correct:
        sql = next((c["sql"] for c in candidates if c["correct"]), greedy_sql)
    return {"sql": sql, "candidates": candidates, "winner": voted.winner, "overturned": voted.overturned}


def vote_summary(recipe: Recipe, answers: Sequence[dict], scored: Sequence[Scored]) -> dict:
    """What voting did to the greedy answers: how often it chose another result, and whether that was right."""
    if recipe.eval.samples <= 1:
        return {}
    right = {s.index: s.execution_match for s in scored}
    turned = [a for a in answers if a.get("overturned")]
    greedy_ran = [a for a in turned if a["candidates"][0]["group"] is not None]
    return {"samples": recipe.eval.samples, "vote_prefer_nonempty": recipe.eval.vote_prefer_nonempty,
            "vote_early_stop": recipe.eval.vote_early_stop,
            "candidates_mean": round(sum(len(a["candidates"]) for a in answers) / max(1, len(answers)), 2),
            "overturned": len(turned),
            "overturned_greedy_that_ran": len(greedy_ran),
            "overturned_right": sum(1 for a in turned if right.get(a["index"])),
            "overturned_fixed": sum(1 for a in turned if right.get(a["index"]) and not a["candidates"][0]["correct"]),
            "overturned_broke": sum(1 for a in turned if not right.get(a["index"]) and a["candidates"][0]["correct"])}


def evaluate_model(recipe: Recipe, out_dir: Path, name: str, adapter: Path | None = None, backend: str = "mlx",
                   model_name: str | None = None, resume: bool = False, max_examples: int | None = None,
                   db_filter: Sequence[str] = (), advance: Callable[[Scored], None] | None = None,
                   on_total: Callable[[int], None] | None = None,
                   keep: Callable[[Question], bool] | None = None, sample: int | None = None) -> EvalReport:
    """Generate SQL for the recipe's eval split, appending to predictions.jsonl as it goes, then score it."""
    from mlx_sql.eval.quoting import per_database
    from mlx_sql.sandbox import Executor
    from mlx_sql.eval.normalize import remove_distinct
    from mlx_sql.eval.retry import retry_until, runs
    from mlx_sql.eval.scoring import gold_match, score_one

    model_name = backend_model(recipe, adapter, backend, model_name)
    bench, _ = recipe_benchmark(recipe)
    split = recipe.eval.split
    until_correct = recipe.eval.retries > 0 and recipe.eval.retry_until == "correct"
    if until_correct and split != recipe.data.train_split:
        raise MlxSqlError(f"eval.retry_until = \"correct\" reads the gold results, so it only makes training data: "
                          f"set eval.split = \"{recipe.data.train_split}\" (it is '{split}')")
    sample = sample or recipe.eval.sample
    _, usable, skipped = select_questions(bench, split, db_filter, max_examples or recipe.eval.max_examples, keep,
                                          sample, recipe.data.seed)
    if on_total:
        on_total(len(usable))
    gen = make_backend(recipe, adapter if backend == "mlx" else None, backend, model_name)
    tokenizer = getattr(gen, "tokenizer", None)
    count = token_counter(tokenizer)
    records = eval_records(bench, usable, recipe, split, count)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred_path = out_dir / "predictions.jsonl"
    done = load_done(pred_path) if resume else {}
    if not resume and pred_path.exists():
        pred_path.unlink()
    scored: list[Scored] = []
    gold_cache: dict = {}
    reader = per_database(lambda db_id: bench.schema(db_id, split))  # model text → query (its names quoted)
    batch_size = recipe.eval.batch_size if hasattr(gen, "generate_batch") else 1
    with Executor(timeout=recipe.eval.timeout) as executor, open(pred_path, "a", encoding="utf-8") as sink:
        for start in range(0, len(usable), batch_size):
            chunk = list(zip(usable[start:start + batch_size], records[start:start + batch_size]))
            todo = [(q, r) for q, r in chunk if q.index not in done]
            if todo:
                raws = gen.generate_batch([r for _, r in todo], batch_size) if batch_size > 1 \
                    else [gen.generate(r) for _, r in todo]
                for (q, record), raw in zip(todo, raws):
                    to_sql = reader(q.db_id)
                    done[q.index] = {"index": q.index, "db_id": q.db_id, "sql": to_sql(raw), "raw": raw}
                    if recipe.eval.samples > 1:
                        done[q.index].update(vote_answer(gen, record, done[q.index]["sql"], q, bench, split,
                                                         executor, gold_cache, recipe, until_correct, to_sql))
                    elif recipe.eval.retries:
                        db_path = bench.db_path(q.db_id, split)
                        accept = gold_match(q, bench, split, executor, gold_cache) if until_correct else runs
                        as_scored = remove_distinct if until_correct else str  # gold_match compares as scoring does
                        retried = retry_until(gen.generate, record, done[q.index]["sql"],
                                              lambda sql: executor.run(db_path, as_scored(sql)),
                                              recipe.eval.retries, recipe.eval.retry_temperature, accept,
                                              to_sql=to_sql)
                        done[q.index].update(sql=retried.sql, failed=retried.failed)
                    sink.write(json.dumps(done[q.index]) + "\n")
                sink.flush()
            for q, _ in chunk:
                result = score_one(q, done[q.index]["sql"], bench, split, executor, gold_cache)
                scored.append(result)
                if advance:
                    advance(result)
    summary = write_report(out_dir, name, scored, {"recipe": recipe.name, "adapter": str(adapter) if adapter else None,
                                                   "backend": backend, "model": model_name, "split": split,
                                                   "sample": sample,
                                                   "retries": recipe.eval.retries,
                                                   "retry_until": recipe.eval.retry_until,
                                                   "retried": sum(1 for q in usable if done[q.index].get("failed")),
                                                   **vote_summary(recipe, [done[q.index] for q in usable],
                                                                  scored),
                                                   "skipped_missing_database": skipped})
    track_evaluation(recipe, out_dir, name, summary)
    return EvalReport(out_dir, summary, scored, skipped)


def track_evaluation(recipe: Recipe, out_dir: Path, name: str, summary: dict) -> None:
    """The summary by hardness as one log line and, where the recipe names trackers, their run's summary."""
    from mlx_sql.tracking import Tracker, log

    tracker = Tracker(recipe, "eval", out_dir)
    overall = summary.get("all", {})
    log.info("%s: %d questions, EX %.1f%%, EM %.1f%%", name, overall.get("count", 0),
             overall.get("execution_accuracy", 0.0), overall.get("exact_set_match", 0.0))
    tracker.summary({"eval": summary})
    tracker.images({"accuracy": out_dir / "accuracy.png"})
    tracker.finish()
