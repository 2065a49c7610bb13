"""A synthesis run: candidates drawn, run, filtered, questioned and checked, database by database.

Every candidate is appended to `candidates.jsonl` as soon as it is decided (its SQL, where it came from,
what the filters said, its question and the round trip's answer), so an interrupted run resumes from the
next candidate (`--resume`) and its kept pairs are exactly those of an uninterrupted run: candidate i of a
database is drawn from a seed of (data.seed, db_id, i) alone. `pairs.jsonl` — the own-database pairs format
`{question, sql, db_id}` plus where each came from — and `report.json` are rewritten from it, atomically,
after each database. Databases are opened read-only, through the sandbox.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any, Callable, Sequence

from mlx_sql.data.benchmark import Question
from mlx_sql.data.examples import make_record
from mlx_sql.data.pruning import PromptSchemas
from mlx_sql.data.schema import Schema, render_schema
from mlx_sql.errors import MlxSqlError
from mlx_sql.eval.compare import results_match
from mlx_sql.eval.hardness import hardness
from mlx_sql.eval.retry import Retried, retry_until
from mlx_sql.fileio import write_json, write_jsonl
from mlx_sql.models.verify import stable_seed
from mlx_sql.recipe import Recipe, SynthConfig
from mlx_sql.sandbox import ExecResult
from mlx_sql.synth.filters import Novelty, result_key, skeleton, verdict
from mlx_sql.synth.profile import DatabaseProfile, profile_database
from mlx_sql.synth.questions import clean_question, question_record, sql_record
from mlx_sql.synth.templates import LEVEL_WEIGHTS, template_sql

SETTINGS_KEYS = ("per_db", "attempts", "sources", "questions", "check", "target", "answer_retries", "teacher",
                 "backend", "temperature", "split", "databases")
TEACHER_ROWS = 3  # sample rows the teacher sees, whatever the student's prompt shows


@dataclass
class DatabaseReport:
    db_id: str
    tried: int = 0
    kept: int = 0
    outcomes: Counter = field(default_factory=Counter)  # "kept", or why a candidate was dropped
    by_source: dict[str, Counter] = field(default_factory=dict)  # source -> outcome counts
    hardness: Counter = field(default_factory=Counter)  # kept pairs by Spider hardness
    seconds: float = 0.0

    def count(self, source: str, outcome: str, level: str | None) -> None:
        self.tried += 1
        self.outcomes[outcome] += 1
        self.by_source.setdefault(source, Counter())[outcome] += 1
        if outcome == "kept":
            self.kept += 1
            self.hardness[level] += 1

    def to_json(self) -> dict[str, Any]:
        return {"db_id": self.db_id, "tried": self.tried, "kept": self.kept, "outcomes": dict(self.outcomes),
                "by_source": {k: dict(v) for k, v in self.by_source.items()}, "hardness": dict(self.hardness),
                "minutes": round(self.seconds / 60, 2)}


@dataclass
class SynthReport:
    out: Path
    databases: list[DatabaseReport]
    minutes: float
    stopped: str  # "done", "time limit" ("running" in the report written after each database)
    settings: dict[str, Any]

    @property
    def kept(self) -> int:
        return sum(d.kept for d in self.databases)

    def to_json(self) -> dict[str, Any]:
        total = DatabaseReport("all")
        for d in self.databases:
            total.tried += d.tried
            total.kept += d.kept
            total.outcomes.update(d.outcomes)
            total.hardness.update(d.hardness)
            for source, counts in d.by_source.items():
                total.by_source.setdefault(source, Counter()).update(counts)
        return {"pairs": str(self.out / "pairs.jsonl"), "kept": self.kept, "minutes": round(self.minutes, 2),
                "stopped": self.stopped, "settings": self.settings, "all": total.to_json(),
                "databases": [d.to_json() for d in self.databases]}


def read_state(path: Path) -> list[dict[str, Any]]:
    """Candidates already decided; a torn last line (the interrupt) is dropped, as is anything after it."""
    done = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                done.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return done


class Synthesizer:
    """Draws, runs, questions and checks candidates for one recipe's databases."""

    def __init__(self, recipe: Recipe, writer: Any, answerer: Any, run: Callable[[Path, str], ExecResult],
                 count_tokens: Callable[[str], int], out: Path):
        self.recipe, self.cfg = recipe, recipe.synth
        self.writer, self.answerer, self.run = writer, answerer, run
        self.schemas = PromptSchemas(recipe.data, count_tokens)  # what eval and ask show the answering model
        self.out = out
        self.state_path = out / "candidates.jsonl"

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self.cfg, k) for k in SETTINGS_KEYS} | {"seed": self.recipe.data.seed}

    def draw(self, profile: DatabaseProfile, teacher_schema: str, index: int) -> tuple[str, str, str, str]:
        """(source, what made it: template name or level, SQL, the template's question or '') of candidate
        `index`."""
        seed = stable_seed(self.recipe.data.seed, profile.db_id, index)
        rng = random.Random(seed)
        source = self.cfg.sources[index % len(self.cfg.sources)]
        if source == "templates":
            made = template_sql(profile, rng)
            return (source, *made) if made else (source, "none fits", "", "")
        level = rng.choices(list(LEVEL_WEIGHTS), list(LEVEL_WEIGHTS.values()))[0]
        raw = self.writer.generate(sql_record(teacher_schema, level), self.cfg.temperature, seed)
        return source, level, profile.to_sql(raw), ""

    def answer_record(self, schema: Schema, question: str) -> dict[str, Any]:
        text = self.schemas.text(schema, question)
        values = self.schemas.values(schema, question)
        return make_record(Question(schema.db_id, question, ""), text, self.recipe.data.instruction, values)

    def decide(self, profile: DatabaseProfile, teacher_schema: str, index: int, novelty: Novelty) -> dict[str, Any]:
        """One candidate, from draw to verdict, as the line `candidates.jsonl` keeps."""
        source, made_by, sql, worded = self.draw(profile, teacher_schema, index)
        line: dict[str, Any] = {"db_id": profile.db_id, "index": index, "source": source, "made_by": made_by,
                                "sql": sql}
        if not sql:
            return {**line, "outcome": "no query"}
        result = self.run(profile.path, sql)
        outcome = verdict(sql, result)
        if outcome == "ok":
            outcome = novelty.why_not_new(sql, result.rows) or "ok"
        if outcome != "ok":
            return {**line, "outcome": outcome, **({"error": result.error} if result.error else {})}
        line.update(rows=len(result.rows), result=result_key(result.rows), hardness=hardness(sql))
        if worded and self.cfg.questions == "template":
            question = worded
        else:
            question = clean_question(self.writer.generate(question_record(teacher_schema, sql)))
        line["question"] = question
        if not question:
            return {**line, "outcome": "no question"}
        if self.cfg.check == "roundtrip":
            answered, same = self.round_trip(profile, question, sql, result)
            line.update(answer=answered.sql, answers_drawn=len(answered.failed) + same)
            if not same:
                return {**line, "outcome": "round trip differs"}
        novelty.add(sql, result.rows)
        return {**line, "outcome": "kept"}

    def round_trip(self, profile: DatabaseProfile, question: str, sql: str, result: ExecResult
                   ) -> tuple[Retried, bool]:
        """The answering model's greedy answer to the question, then up to `answer_retries` samples, until one
        returns the query's rows (the evaluator's equality): (what was tried, whether one did)."""
        record = self.answer_record(profile.schema, question)
        ordered = "order by" in sql.lower()

        def same(got: ExecResult) -> bool:
            return got.ok and results_match(result.rows, got.rows, ordered)

        greedy = profile.to_sql(self.answerer.generate(record))
        tried = retry_until(self.answerer.generate, record, greedy, lambda answer: self.run(profile.path, answer),
                            self.cfg.answer_retries, self.recipe.eval.retry_temperature, accept=same,
                            to_sql=profile.to_sql)
        return tried, same(tried.result)

    def database(self, profile: DatabaseProfile, done: Sequence[dict[str, Any]], deadline: float | None,
                 progress: Callable[[int], None], decided: Callable[[dict[str, Any]], None]
                 ) -> tuple[DatabaseReport, bool]:
        """Candidates for one database until per_db are kept, attempts run out or the deadline passes;
        (report, whether the deadline stopped it)."""
        report, novelty = DatabaseReport(profile.db_id), Novelty()
        for line in done:  # what an earlier run decided stands as it was
            report.count(line["source"], line["outcome"], line.get("hardness"))
            if line["outcome"] == "kept":
                novelty.results.add(line["result"])
                novelty.skeletons.add(skeleton(line["sql"]))
        progress(report.kept)
        teacher_schema = render_schema(profile.schema, self.recipe.data.schema_format,
                                       max(TEACHER_ROWS, self.recipe.data.sample_rows))
        limit = self.cfg.per_db * self.cfg.attempts
        started = time.monotonic()
        index = len(done)
        while report.kept < self.cfg.per_db and index < limit:
            if deadline is not None and time.monotonic() > deadline:
                report.seconds += time.monotonic() - started
                return report, True
            line = self.decide(profile, teacher_schema, index, novelty)
            decided(line)
            report.count(line["source"], line["outcome"], line.get("hardness"))
            if line["outcome"] == "kept":
                progress(1)
            index += 1
        report.seconds += time.monotonic() - started
        return report, False


def kept_pairs(lines: Sequence[dict[str, Any]], target: str = "sql") -> list[dict[str, Any]]:
    """The pairs file's records: each kept candidate as `{question, sql, db_id}` and where it came from; with
    `target = "answer"`, `sql` is the round trip's answer and the synthesized query stays beside it."""
    return [{"question": c["question"], "sql": c["answer"] if target == "answer" else c["sql"], "db_id": c["db_id"],
             "hardness": c["hardness"], "source": c["source"], "made_by": c["made_by"], "rows": c["rows"],
             "result": c["result"], **({"synthesized_sql": c["sql"]} if target == "answer" else {})}
            for c in lines if c["outcome"] == "kept"]


def synthesize(recipe: Recipe, profiles: Sequence[DatabaseProfile], synthesizer: Synthesizer, resume: bool,
               on_kept: Callable[[str, int], None] = lambda db, n: None) -> SynthReport:
    """Run every database in turn; write pairs.jsonl and report.json. Nothing kept is an error."""
    out = synthesizer.out
    out.mkdir(parents=True, exist_ok=True)
    settings = synthesizer.settings()
    settings_path = out / "settings.json"
    lines = read_state(synthesizer.state_path) if resume else []
    if resume and settings_path.is_file():
        before = json.loads(settings_path.read_text(encoding="utf-8"))
        # a setting newer than the run holds its default there
        defaults = {f.name: f.default for f in dataclass_fields(SynthConfig)}
        before = {k: before.get(k, defaults.get(k)) for k in settings}
        changed = [f"synth.{k}: {before[k]!r} -> {settings[k]!r}" for k in settings if before[k] != settings[k]]
        if changed:
            raise MlxSqlError(f"--resume with other settings than the run started with ({'; '.join(changed)}); "
                              "start a new run with --overwrite or another synth.out_dir", out)
    write_json(settings_path, settings)
    write_jsonl(synthesizer.state_path, lines)  # without a torn last line
    by_db: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_db.setdefault(line["db_id"], []).append(line)
    started = time.monotonic()
    deadline = started + recipe.synth.minutes * 60 if recipe.synth.minutes else None
    reports, stopped = [], "done"
    with open(synthesizer.state_path, "a", encoding="utf-8") as state:
        def decided(line: dict[str, Any]) -> None:  # on disk at once (resume), and in memory for the outputs
            state.write(json.dumps(line, ensure_ascii=False) + "\n")
            state.flush()
            lines.append(line)

        for profile in profiles:
            report, timed_out = synthesizer.database(profile, by_db.get(profile.db_id, []), deadline,
                                                     lambda n, db=profile.db_id: on_kept(db, n), decided)
            reports.append(report)
            _write_outputs(out, lines, reports, started, "running", settings)
            if timed_out:
                stopped = "time limit"
                break
    final = SynthReport(out, reports, (time.monotonic() - started) / 60, stopped, settings)
    _write_outputs(out, lines, reports, started, stopped, settings)
    if not final.kept:
        outcomes = Counter()
        for r in reports:
            outcomes.update(r.outcomes)
        common = ", ".join(f"{k} {v}" for k, v in outcomes.most_common(3)) or "no candidates"
        raise MlxSqlError(f"no pair survived the filters ({common}); see {out / 'candidates.jsonl'}", out)
    return final


def _write_outputs(out: Path, lines: list[dict[str, Any]], reports: list[DatabaseReport], started: float,
                   stopped: str, settings: dict[str, Any]) -> None:
    write_jsonl(out / "pairs.jsonl", kept_pairs(lines, settings["target"]))
    report = SynthReport(out, reports, (time.monotonic() - started) / 60, stopped, settings)
    write_json(out / "report.json", report.to_json())


def load_profiles(recipe: Recipe, schemas: dict[str, Schema], paths: dict[str, Path]) -> list[DatabaseProfile]:
    """Each database's profile; a database with no table holding rows is a one-line error."""
    profiles = []
    for db_id, schema in schemas.items():
        profile = profile_database(db_id, paths[db_id], schema, recipe.data.seed)
        if not any(t.rows for t in profile.tables):
            raise MlxSqlError("the database has no tables with rows to ask about" if profile.tables else
                              "the database has no tables", paths[db_id])
        profiles.append(profile)
    return profiles
