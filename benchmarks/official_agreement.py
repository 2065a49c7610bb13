"""Agreement with Spider's official evaluators, question by question, on real prediction files.

The bar (issue #4): EM within 1 point of the official exact-set-match (taoyds/spider `evaluation.py`, match
mode; test-suite-sql-eval carries the same code) and EX within 0.5 point of the test-suite execution match with its
default options (DISTINCT removed, row order compared only when the gold has ORDER BY), overall and per hardness.

Their code is not ours to ship: point --official at a checkout of taoyds/test-suite-sql-eval (evaluation.py,
exec_eval.py, parse.py, process_sql.py). It runs in its own interpreter (--python, one with nltk and sqlparse;
mlx-sql does not depend on either), fed (gold, prediction, database) triples on stdin, exactly as its `evaluate()`
treats each one. nltk's `word_tokenize` is called with `preserve_line=True` because the punkt sentence model is a
download; SQL with its string literals already masked out holds no sentence boundaries, so the tokens are the same.
Our scorer (`mlx_sql.eval.scoring.score`) runs in this process on the same pairs.

Prediction sets: `--predictions NAME=FILE` (repeatable): our `predictions.jsonl` (fields index, sql), or the
official format (one SQL a line) with `NAME=FILE@IDS`, IDS a JSON list of the Spider-dev indices the lines answer
(published systems often report a subset). "gold" (each gold query as its own prediction) is always included.
Default: gold plus every `runs/spider-accuracy/*/eval-*/predictions.jsonl`. Questions whose database is absent are
skipped. Prints and writes to RESULTS.md both evaluators' EM/EX per hardness, the gaps, and the number of questions
on which they disagree; every disagreement goes to --out/disagreements.jsonl with both verdicts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LEVELS = ("easy", "medium", "hard", "extra", "all")
KNOWN = """Where the two may still differ, by design: with values disabled the official reads a column on the right
of a comparison as a value (`a != b` equals `a != 'x'`); ours compares the column. What the official parser cannot
read (a column alias in a SELECT list, a TRUE / FALSE literal) scores 0 in both, as every published EM counts it.
The current taoyds/spider `evaluation.py` also compares the first join's ON columns, which the test-suite copy used
here does not."""


SHOWS = ("How far our EM and EX scorers agree with Spider's official evaluator and the test-suite evaluator on"
         " the same predictions: the reason our EM and EX may be read as Spider's.")


def official_worker(official: str, tables: str) -> None:
    """Runs inside --python: one JSON verdict per input line, as the official `evaluate()` scores one pair."""
    import copy

    sys.path.insert(0, official)
    import nltk
    import process_sql

    process_sql.word_tokenize = lambda text: nltk.word_tokenize(text, preserve_line=True)
    from evaluation import (Evaluator, build_foreign_key_map_from_json, build_valid_col_units, rebuild_sql_col,
                            rebuild_sql_val)
    from exec_eval import eval_exec_match
    from process_sql import Schema, get_schema, get_sql

    empty = {"except": None, "from": {"conds": [], "table_units": []}, "groupBy": [], "having": [],
             "intersect": None, "limit": None, "orderBy": [], "select": [False, []], "union": None, "where": []}
    kmaps = build_foreign_key_map_from_json(tables)
    evaluator = Evaluator()
    schemas: dict[str, object] = {}
    for line in sys.stdin:
        item = json.loads(line)
        p_str, g_str, db = item["pred"].replace(" value ", " 1 "), item["gold"], item["db_path"]
        if db not in schemas:
            schemas[db] = Schema(get_schema(db))
        schema = schemas[db]
        g_sql = get_sql(schema, g_str)
        level = evaluator.eval_hardness(g_sql)
        try:
            p_sql = get_sql(schema, p_str)
        except Exception:
            p_sql = copy.deepcopy(empty)
        note = None
        try:
            execution = eval_exec_match(db=db, p_str=p_str, g_str=g_str, plug_value=False, keep_distinct=False,
                                        progress_bar_for_each_datapoint=False)
        except AssertionError:
            execution, note = None, "gold query fails"
        except Exception as exc:  # e.g. sqlparse on an empty prediction: the official script would stop here
            execution, note = 0, f"official evaluator raised {type(exc).__name__}"
        kmap = kmaps[item["db_id"]]
        g_sql = rebuild_sql_col(build_valid_col_units(g_sql["from"]["table_units"], schema), rebuild_sql_val(g_sql), kmap)
        p_sql = rebuild_sql_col(build_valid_col_units(p_sql["from"]["table_units"], schema), rebuild_sql_val(p_sql), kmap)
        exact = int(evaluator.eval_exact_match(p_sql, g_sql))
        print(json.dumps({"hardness": level, "exact": exact, "exec": execution, "note": note}), flush=True)


def load_set(spec: str, dev: "DevSet") -> tuple[str, list[tuple[int, str]]]:
    """NAME=FILE or NAME=FILE@IDS -> (name, [(dev index, prediction)]), read as `mlx-sql eval --predictions` reads."""
    from mlx_sql.eval.scoring import read_predictions

    name, _, rest = spec.partition("=")
    path, _, ids = rest.partition("@")
    questions = [dev.questions[i] for i in json.loads(Path(ids).read_text())] if ids else dev.questions
    sqls = read_predictions(Path(path), questions)
    return name, [(q.index, sql) for q, sql in zip(questions, sqls) if q.index in dev.question_by_index]


def run_official(args, triples: list[dict]) -> list[dict]:
    feed = "".join(json.dumps(t) + "\n" for t in triples)
    done = subprocess.run([args.python, __file__, "--worker", "--official", args.official, "--spider", args.spider],
                          input=feed, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"official evaluator failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines()]


def rates(rows: list[dict], key: str) -> dict[str, float]:
    """Percent of rows where `key` holds, per official hardness level and overall."""
    out = {}
    for level in LEVELS:
        items = [r for r in rows if level == "all" or r["hardness"] == level]
        out[level] = 100 * sum(bool(r[key]) for r in items) / len(items) if items else 0.0
    return out


def compare_set(name: str, pairs, bench, args) -> dict:
    from mlx_sql.eval.scoring import score

    questions = [bench.question_by_index[i] for i, _ in pairs]
    ours = score(questions, [sql for _, sql in pairs], bench.bench, "dev", timeout=args.timeout)
    triples = [{"db_id": q.db_id, "db_path": str(bench.bench.db_path(q.db_id, "dev")), "gold": q.query, "pred": sql}
               for q, (_, sql) in zip(questions, pairs)]
    official = run_official(args, triples)
    rows = []
    for q, s, o in zip(questions, ours, official):
        rows.append({"index": q.index, "db_id": q.db_id, "gold": q.query, "prediction": s.prediction,
                     "hardness": o["hardness"], "our_hardness": s.hardness, "official_em": o["exact"],
                     "our_em": int(s.exact_set_match), "official_ex": o["exec"], "our_ex": int(s.execution_match),
                     "official_note": o["note"], "our_error": s.error})
    return {"name": name, "rows": rows}


def report(result: dict) -> tuple[str, list[dict]]:
    """One table row (official / ours per level, counts and worst gaps) and the questions scored differently."""
    rows = result["rows"]
    scored_ex = [r for r in rows if r["official_ex"] is not None]
    em_o, em_u = rates(rows, "official_em"), rates(rows, "our_em")
    ex_o, ex_u = rates(scored_ex, "official_ex"), rates(scored_ex, "our_ex")
    em_diff = {r["index"] for r in rows if r["official_em"] != r["our_em"]}
    ex_diff = {r["index"] for r in scored_ex if r["official_ex"] != r["our_ex"]}
    level_diff = sum(r["hardness"] != r["our_hardness"] for r in rows)
    cells = " | ".join(f"{em_o[lv]:.1f} / {em_u[lv]:.1f} | {ex_o[lv]:.1f} / {ex_u[lv]:.1f}" for lv in LEVELS)
    worst_em = max(abs(em_o[lv] - em_u[lv]) for lv in LEVELS)
    worst_ex = max(abs(ex_o[lv] - ex_u[lv]) for lv in LEVELS)
    line = (f"| {result['name']} | {len(rows)} | {cells} | {len(em_diff)} | {len(ex_diff)} | "
            f"{worst_em:.1f} | {worst_ex:.1f} | {level_diff} |")
    differ = em_diff | ex_diff
    flagged = [{**r, "differs_in": [k for k, d in (("EM", r["index"] in em_diff), ("EX", r["index"] in ex_diff)) if d]}
               for r in rows if r["index"] in differ]
    return line, flagged


class DevSet:
    def __init__(self, spider: Path):
        from mlx_sql.data.benchmark import load_benchmark

        self.bench = load_benchmark(spider)
        self.questions = self.bench.questions("dev")  # position == index
        self.question_by_index = {q.index: q for q in self.questions if self.bench.has_database(q.db_id, "dev")}


def main() -> None:
    from results import ROOT, update_section

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spider", default=str(ROOT.parent / "shared" / "spider"))
    parser.add_argument("--official", help="checkout of taoyds/test-suite-sql-eval")
    parser.add_argument("--python", default=sys.executable, help="interpreter with nltk and sqlparse for --official")
    parser.add_argument("--predictions", action="append", default=[], help="NAME=FILE or NAME=FILE@IDS (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--out", default=str(ROOT / "runs" / "official-agreement"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    if args.worker:
        official_worker(args.official, str(Path(args.spider) / "tables.json"))
        return
    if not args.official or not (Path(args.official) / "evaluation.py").is_file():
        raise SystemExit("give --official DIR, a checkout of taoyds/test-suite-sql-eval (evaluation.py, exec_eval.py, "
                         "parse.py, process_sql.py)")
    dev = DevSet(Path(args.spider))
    specs = args.predictions or [f"{p.parent.parent.name}-{p.parent.name}={p}"
                                 for p in sorted((ROOT / "runs" / "spider-accuracy").glob("*/eval-*/predictions.jsonl"))]
    sets = [("gold", [(i, q.query) for i, q in sorted(dev.question_by_index.items())])]
    sets += [load_set(spec, dev) for spec in specs]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = ("| predictions | questions | " + " | ".join(f"{lv} EM | {lv} EX" for lv in LEVELS)
              + " | EM differ | EX differ | max EM gap | max EX gap | hardness differ |")
    lines = [header, "|---|---:|" + "---:|---:|" * len(LEVELS) + "---:|---:|---:|---:|---:|"]
    flagged_all = []
    for name, pairs in sets:
        result = compare_set(name, pairs, dev, args)
        line, flagged = report(result)
        print(line, flush=True)
        lines.append(line)
        flagged_all += [{"set": name, **f} for f in flagged]
    from mlx_sql.fileio import write_text

    write_text(out / "disagreements.jsonl", "".join(json.dumps(f) + "\n" for f in flagged_all))
    print(f"{len(flagged_all)} disagreements -> {out / 'disagreements.jsonl'}")
    if args.no_results:
        return
    listed = "\n".join(f"- {f['set']}, {f['hardness']}, {'/'.join(f['differs_in'])}: official "
                       f"{f['official_em'] if 'EM' in f['differs_in'] else f['official_ex']}, ours "
                       f"{f['our_em'] if 'EM' in f['differs_in'] else f['our_ex']}. Gold `{f['gold']}`; predicted "
                       f"`{f['prediction'][:200]}`" for f in flagged_all[:12])
    body = ("Each cell: official / ours, in %. EM = exact set match (official `evaluation.py` match mode vs "
            "`mlx_sql.eval.exact_set`); EX = execution match (test-suite `exec_eval` defaults vs "
            "`mlx_sql.eval.scoring`), on the Spider-dev questions whose database exists. \"differ\" = questions "
            "the two evaluators score differently; gaps in points, worst level.\n\n" + "\n".join(lines)
            + "\n\nQuestions scored differently" + (f" (first 12 of {len(flagged_all)})" if len(flagged_all) > 12 else "")
            + ":\n\n" + (listed or "none") + "\n\n" + KNOWN)
    update_section("official-agreement", "Agreement with the official Spider evaluators "
                   "(`benchmarks/official_agreement.py`)", body, shows=SHOWS)


if __name__ == "__main__":
    main()
