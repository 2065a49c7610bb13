"""Result voting: several candidate queries, the answer most of them agree on by what they return.

Execution-guided decoding (`retry.py`) only acts where SQLite rejects the greedy query; a query that runs
and returns the wrong rows is kept. Voting samples `eval.samples - 1` more candidates beside the greedy
one (seeds 1, 2, …), runs each in the sandbox, drops those that fail, and groups the rest by their result
with the evaluator's own equality (`compare.results_match`, rows as multisets, columns in any order).

Rules, in order (tested):
1. A candidate that failed (SQLite error, timeout, row cap, no SQL) has no vote.
2. The largest group wins.
3. With `prefer_nonempty`, a group whose result is empty only wins where no candidate returned rows: a
   filter on a misspelt value returns nothing, and small models agree on nothing easily.
4. Ties go to the group holding the earliest candidate — the greedy answer first, then seed order — so
   K = 1 is plain greedy decoding and a rerun picks the same answer.
5. The group's answer is its earliest candidate's SQL.
Where every candidate fails, the retries of `retry.py` go on from the next seed.

Grouping is by the first candidate each result matches, so the groups among the first k candidates are the
same whatever follows: one run with K candidates also gives the vote of every smaller k (pass@k, vote@k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mlx_sql.eval.compare import results_match
from mlx_sql.eval.retry import Say, quiet
from mlx_sql.sandbox import ExecResult
from mlx_sql.eval.extract import extract_sql

Run = Callable[[str], ExecResult]
EMPTY_MAJORITY = math.inf  # an empty result never outvotes rows (rule 3)


@dataclass
class Candidate:
    sql: str
    seed: int  # 0: the greedy answer
    result: ExecResult
    group: int | None = None  # index of the earliest candidate with an equal result; None: failed

    @property
    def votes(self) -> bool:
        return self.group is not None

    def to_json(self) -> dict[str, Any]:
        return {"sql": self.sql, "seed": self.seed, "error": self.result.error, "group": self.group,
                "rows": len(self.result.rows) if self.result.ok else None}


@dataclass
class Voted:
    sql: str
    result: ExecResult
    winner: int | None  # the winning candidate's index; None: nothing ran (the greedy answer stands)
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def overturned(self) -> bool:
        """The vote's answer returns something other than the greedy answer would."""
        return self.winner is not None and self.candidates[0].group != self.winner

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.candidates]


def group_candidates(candidates: Sequence[Candidate]) -> None:
    """Set each candidate's group: the index of the earliest candidate whose result equals its own."""
    for i, c in enumerate(candidates):
        c.group = None
        if not c.result.ok or c.result.rows is None:
            continue
        for j in range(i):
            other = candidates[j]
            if other.group == j and results_match(other.result.rows, c.result.rows, False):
                c.group = j
                break
        else:
            c.group = i


def winner(groups: Sequence[int | None], empty: Sequence[bool], prefer_nonempty: bool = True,
           empty_majority: float = EMPTY_MAJORITY) -> int | None:
    """The winning group (its earliest candidate's index) among candidates with these groups, or None. With
    `prefer_nonempty`, the largest empty group wins over the largest group with rows only with at least
    `empty_majority` times its votes."""
    sizes: dict[int, int] = {}
    for g in groups:
        if g is not None:
            sizes[g] = sizes.get(g, 0) + 1
    if not sizes:
        return None
    rank = lambda g: (-sizes[g], g)  # noqa: E731 - more votes, then the earliest candidate
    best = min(sizes, key=rank)
    with_rows = [g for g in sizes if not empty[g]]
    if not prefer_nonempty or not with_rows or not empty[best]:
        return best
    best_rows = min(with_rows, key=rank)
    return best if sizes[best] >= empty_majority * sizes[best_rows] else best_rows


def vote(candidates: list[Candidate], prefer_nonempty: bool = True) -> Voted:
    group_candidates(candidates)
    empty = [c.result.rows is not None and len(c.result.rows) == 0 for c in candidates]
    best = winner([c.group for c in candidates], empty, prefer_nonempty)
    if best is None:
        return Voted(candidates[0].sql, candidates[0].result, None, candidates)
    return Voted(candidates[best].sql, candidates[best].result, best, candidates)


def run_candidate(sql: str, run: Run) -> ExecResult:
    return run(sql) if sql.strip() else ExecResult(None, "no SQL in the answer")


def sample_texts(backend: Any, record: dict[str, Any], seeds: Sequence[int], temperature: float) -> list[str]:
    """One sampled answer per seed: in one shared-prompt batch where the backend has one, else one by one."""
    if not seeds:
        return []
    many = getattr(backend, "generate_many", None)
    if many is not None:
        return many(record, list(seeds), temperature)
    return [backend.generate(record, temperature=temperature, seed=s) for s in seeds]


def agree_early(candidates: Sequence[Candidate] | Sequence[dict[str, Any]]) -> bool:
    """The greedy answer and the first sample returned the same rows, and some (`eval.vote_early_stop`: two
    agreeing answers settle it; the rest of the samples are not drawn)."""
    if len(candidates) < 2:
        return False
    first, second = candidates[0], candidates[1]
    if isinstance(first, Candidate):
        return first.group == 0 and second.group == 0 and bool(first.result.rows)
    return first["group"] == 0 and second["group"] == 0 and bool(first["rows"])


def vote_on_record(backend: Any, record: dict[str, Any], greedy_sql: str, run: Run, samples: int,
                   temperature: float, retries: int = 0, prefer_nonempty: bool = True,
                   early_stop: bool = False, say: Say = quiet, to_sql: Callable[[str], str] = extract_sql) -> Voted:
    """The greedy answer and `samples - 1` sampled ones, voted by result; where none runs, up to `retries`
    further samples (seeds after the vote's) until one does, as execution-guided decoding would. With
    `early_stop`, the first sample is drawn alone, and where it returns the greedy answer's rows the vote
    ends there (the same seeds otherwise: the answer is the full vote's wherever it goes on)."""
    candidates = [Candidate(greedy_sql, 0, run_candidate(greedy_sql, run))]
    first_batch = range(1, 2 if early_stop and samples > 2 else samples)
    for seeds in (first_batch, range(first_batch.stop, samples)):
        if seeds and seeds is first_batch:
            say("sampling a second answer to check the first" if early_stop and samples > 2
                else f"sampling {len(seeds)} more answer{'s' if len(seeds) > 1 else ''} to vote")
        elif seeds:  # early stop's second batch: only where the first two did not agree
            say(f"the first two disagree: sampling {len(seeds)} more to vote")
        texts = sample_texts(backend, record, seeds, temperature)
        candidates += [Candidate(sql, seed, run_candidate(sql, run)) for seed, sql in zip(seeds, map(to_sql, texts))]
        if early_stop:
            group_candidates(candidates[:2])  # the earliest candidates' groups never depend on later ones
            if agree_early(candidates):
                break
    voted = vote(candidates, prefer_nonempty)  # groups every candidate once
    if voted.winner is None:
        ran = next((c for c in candidates if c.result.runs), None)
        if ran is not None:  # it ran into the time or row limit: kept, not retried, as retries do
            return Voted(ran.sql, ran.result, None, candidates)
    seed = samples
    while voted.winner is None and seed < samples + retries:
        say(f"none of them ran: sampling another answer ({seed - samples + 1} of {retries})")
        sql = to_sql(sample_texts(backend, record, [seed], temperature)[0])
        result = run_candidate(sql, run)
        candidates.append(Candidate(sql, seed, result))
        if result.runs:
            group_candidates(candidates)
            if result.ok:
                return Voted(sql, result, len(candidates) - 1, candidates)
            return Voted(sql, result, None, candidates)  # ran into the time or row limit: kept, as retries do
        seed += 1
    return voted


def headroom(answers: Sequence[Sequence[dict[str, Any]]], ks: Sequence[int], prefer_nonempty: bool = True
             ) -> dict[int, dict[str, float]]:
    """pass@k (some candidate among the first k is right) and vote@k (the vote of the first k is right), in %,
    from recorded candidates (`to_json` rows with `correct`): the gap is what a better verifier could win.
    Where none of the first k ran, vote@k counts the greedy answer, as voting without retries would."""
    out: dict[int, dict[str, float]] = {}
    for k in ks:
        passed = sum(any(c.get("correct") for c in cands[:k]) for cands in answers)
        voted = sum(vote_is_right(cands, k, prefer_nonempty) for cands in answers)
        n = max(len(answers), 1)
        out[k] = {"pass": 100 * passed / n, "vote": 100 * voted / n}
    return out


def recorded_winner(candidates: Sequence[dict[str, Any]], k: int, prefer_nonempty: bool = True,
                    early_stop: bool = False) -> int | None:
    """The index of the candidate voting over the first k recorded ones picks (with `early_stop`, the first two
    where they agree); None where none of them ran."""
    first = list(candidates[:2 if early_stop and k > 2 and agree_early(candidates) else k])
    return winner([c["group"] for c in first], [c["rows"] == 0 for c in first], prefer_nonempty)


def vote_is_right(candidates: Sequence[dict[str, Any]], k: int, prefer_nonempty: bool = True,
                  early_stop: bool = False) -> bool:
    """Whether voting over the first k recorded candidates picks a right one (the greedy answer where none ran;
    with `early_stop`, where the first sample agreed with it)."""
    best = recorded_winner(candidates, k, prefer_nonempty, early_stop)
    return bool(candidates[0 if best is None else best].get("correct"))
