"""Headroom of sampling: pass@k (some candidate among the first k returns the gold result) and vote@k (result
voting over the first k picks a right one), k = 1, 2, 4, 8, 16, from evaluation folders scored with
`eval.samples = K` — every candidate is recorded with its result group and correctness, so one run gives every
k up to K. The gap between pass@k and vote@k is what a better verifier (or training) could still win.

Each row is paired, question by question, with the decoding the recipes shipped before voting (greedy, and
where SQLite rejects it the first of up to 4 samples that runs — replayed from the same candidates, so both
see the same draws): questions won and lost, exact two-sided sign test.

    python benchmarks/vote_headroom.py --key validation-qwen0.5b \
        --run "Qwen2.5-Coder-0.5B=runs/spider-validation/qwen0.5b/base-ddl-rows3-vote16"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results import update_section

KS = (1, 2, 4, 8, 16)


def load(folder: Path) -> tuple[list[list[dict]], list[str]]:
    """Each question's candidates (in seed order, the vote's K only) and its hardness, in benchmark order."""
    from mlx_sql.eval.report import load_report

    summary, scored = load_report(folder)
    samples = summary.get("samples") or 1
    hardness = {row["index"]: row["hardness"] for row in scored}
    answers, levels = [], []
    for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["index"] in hardness and "candidates" in record:
            answers.append(record["candidates"][:samples])
            levels.append(hardness[record["index"]])
    if not answers:
        raise SystemExit(f"{folder}: no recorded candidates (was it scored with eval.samples > 1?)")
    return answers, levels


def runs(candidate: dict) -> bool:
    error = candidate.get("error")
    return error is None or error == "timeout" or error.startswith("more than ")


def retried(cands: list[dict], retries: int = 4) -> bool:
    """Execution-guided decoding as shipped: the greedy answer, else the first of `retries` samples that runs."""
    for c in cands[: retries + 1]:
        if runs(c):
            return bool(c.get("correct"))
    return bool(cands[0].get("correct"))


def agreement_rows(answers: list[list[dict]], early_stop: bool) -> list[str]:
    """How often the vote's answer is right, by how many candidates returned its rows: what `ask`'s "11 of 16
    candidates returned these rows" tells a user. Quarters of K; with early stop, questions the first two
    settled are a row of their own."""
    from mlx_sql.eval.vote import agree_early, recorded_winner

    samples = max(len(a) for a in answers)
    edges = [round(samples * q / 4) for q in range(5)]
    labels = [f"none of {samples} ran (retries follow)",
              *(f"{edges[q] + 1}–{edges[q + 1]} of {samples}" for q in range(4))]
    if early_stop:
        labels.append("settled by the first two")
    counts = {label: [0, 0] for label in labels}
    for cands in answers:
        if early_stop and agree_early(cands):
            label, right = labels[-1], bool(cands[0].get("correct"))
        else:
            best = recorded_winner(cands, len(cands))
            agreeing = 0 if best is None else sum(c["group"] == cands[best]["group"] for c in cands)
            right = bool(cands[0 if best is None else best].get("correct"))
            label = labels[0] if agreeing == 0 else labels[1 + next(q for q in range(4) if agreeing <= edges[q + 1])]
        counts[label][0] += right
        counts[label][1] += 1
    decoding = "with early stop, as the recipes ship it" if early_stop else f"all {samples} drawn"
    lines = ["", f"How often the vote's answer is right by how many candidates returned its rows ({decoding}; what "
             "`ask` shows under an answer):", "", "| candidates agreeing | questions | right |", "|---|---:|---:|"]
    lines += [f"| {label} | {n} | {100 * right / n:.1f}% |" for label, (right, n) in counts.items() if n]
    return lines


def early_stop_stats(answers: list[list[dict]], base: list[bool], k: int) -> tuple[int, int, int, int, float]:
    """At k: (questions some candidate got right, right with the early-stop vote, won and lost against greedy +
    retries, candidates drawn on average)."""
    from mlx_sql.eval.vote import agree_early
    from mlx_sql.eval.vote import vote_is_right as voted

    passed = sum(any(c.get("correct") for c in a[:k]) for a in answers)
    early = [voted(a, k, True, early_stop=True) for a in answers]
    won = sum(v and not b for v, b in zip(early, base))
    lost = sum(b and not v for v, b in zip(early, base))
    drawn = sum(2 if k > 2 and agree_early(a) else k for a in answers) / len(answers)
    return passed, sum(early), won, lost, drawn


def early_stop_rows(name: str, folder: str, answers: list[list[dict]], base: list[bool], ks: list[int],
                    stopped: int) -> list[str]:
    """A run drawn with `eval.vote_early_stop`: where the first sample agreed with the greedy answer no more were
    drawn, so the full vote cannot be replayed there and pass@k (k > 2) counts only what was drawn."""
    from mlx_sql.eval.report import sign_test

    n = len(answers)
    lines = [f"**{name}** — {n} questions (`{folder}`), drawn with early stop: {stopped} questions settled by their "
             f"first two candidates, the others {max(len(a) for a in answers)}; the shipped decoding before voting "
             f"(greedy + up to 4 retries, replayed from the same draws): {100 * sum(base) / n:.1f}% EX. Where two "
             "candidates settled a question the rest were never drawn: pass@k beyond k = 2 counts only what was "
             "drawn (a lower bound), and only the vote with early stop can be replayed.", "",
             "| k | pass@k (k > 2: at least) | vote@k, early stop | vs greedy+retries: won / lost, p "
             "| candidates drawn |", "|---:|---:|---:|---|---:|"]
    for k in ks:
        passed, early, won, lost, drawn = early_stop_stats(answers, base, k)
        lines.append(f"| {k} | {100 * passed / n:.1f} | {100 * early / n:.1f} | {won} / {lost}, "
                     f"p = {sign_test(won, lost):.3g} | {drawn:.1f} |")
        print(f"{name} k={k}: pass >= {100 * passed / n:.1f} vote (early stop) {100 * early / n:.1f} "
              f"vs retries {100 * sum(base) / n:.1f}: +{won} -{lost}")
    return [*lines, *agreement_rows(answers, early_stop=True), ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=FOLDER of a report with candidates")
    parser.add_argument("--key", required=True, help="RESULTS.md section key suffix, e.g. validation-qwen0.5b")
    parser.add_argument("--title", default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    from mlx_sql.eval.report import sign_test
    from mlx_sql.eval.vote import vote_is_right as voted

    lines = []
    for spec in args.run:
        name, _, folder = spec.partition("=")
        answers, _ = load(Path(folder))
        n, samples = len(answers), max(len(a) for a in answers)
        ks = [k for k in KS if k <= samples]
        base = [retried(a) for a in answers]
        stopped = sum(len(a) < samples for a in answers)
        if stopped:  # drawn with early stop: only what that decoding saw can be replayed
            lines += early_stop_rows(name, folder, answers, base, ks, stopped)
            continue
        lines += [f"**{name}** — {n} questions, {samples} candidates each (`{folder}`); the shipped decoding "
                  f"before voting (greedy + up to 4 retries, replayed from the same draws): "
                  f"{100 * sum(base) / n:.1f}% EX.", "",
                  "| k | pass@k | vote@k | vote@k, empty results vote too | vote@k vs greedy+retries: won / lost, p "
                  "| vote@k, early stop (won / lost, p) | candidates drawn, early stop |",
                  "|---:|---:|---:|---:|---|---:|---:|"]
        for k in ks:
            passed, early, e_won, e_lost, drawn = early_stop_stats(answers, base, k)
            vote = [voted(a, k, True) for a in answers]
            plain = sum(voted(a, k, False) for a in answers)
            won = sum(v and not b for v, b in zip(vote, base))
            lost = sum(b and not v for v, b in zip(vote, base))
            lines.append(f"| {k} | {100 * passed / n:.1f} | {100 * sum(vote) / n:.1f} | {100 * plain / n:.1f} | "
                         f"{won} / {lost}, p = {sign_test(won, lost):.3g} | {100 * early / n:.1f} ({e_won} / {e_lost}, "
                         f"p = {sign_test(e_won, e_lost):.3g}) | {drawn:.1f} |")
            print(f"{name} k={k}: pass {100 * passed / n:.1f} vote {100 * sum(vote) / n:.1f} "
                  f"(plain {100 * plain / n:.1f}) vs retries {100 * sum(base) / n:.1f}: +{won} -{lost}")
        lines += [*agreement_rows(answers, early_stop=False), *agreement_rows(answers, early_stop=True), ""]
    body = ("pass@k: some candidate among the greedy answer and the first k-1 samples returns the gold result; "
            "vote@k: result voting over those k picks one that does (`eval.samples = k`; empty results vote only "
            "where nothing returned rows, the shipped rule, and in the next column without that rule). Early stop "
            "(`eval.vote_early_stop`): where the first sample returns the greedy answer's rows (not empty), those two "
            "settle it and no more are drawn; its last column counts the candidates that draws on average, greedy "
            "included. Written by "
            "`benchmarks/vote_headroom.py` from the candidates an `eval.samples = 16` run records.\n\n" + "\n".join(lines))
    if not args.no_write:
        update_section(f"vote-headroom-{args.key}", args.title or f"Sampling headroom: pass@k and vote@k ({args.key})",
                       body, shows="How often a right answer is among the candidates the model samples (pass@k) and "
                       "how often result voting picks one (vote@k): the gap is what a better verifier or training "
                       "could still win.")


if __name__ == "__main__":
    main()
