"""`make demo` as a benchmark: run it (or read a finished run with --from) and record its table and
timings in RESULTS.md — the numbers README quotes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from results import ROOT, update_section


SHOWS = ("That the whole loop — train, evaluate, fuse, export, Ollama — runs end to end on the smallest model "
         "in minutes. Its accuracy is a smoke test of the machinery, not a result.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="existing", help="a finished demo run folder (skips running it)")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "smollm2-135m.toml"))
    args = parser.parse_args()
    run = Path(args.existing) if args.existing else ROOT / "runs" / "demo"
    if not args.existing:
        subprocess.run([sys.executable, "-m", "mlx_sql", "demo", "--recipe", args.recipe, "--out", str(run)],
                       cwd=ROOT, check=True)
    report = json.loads((run / "demo.json").read_text())
    md = (run / "demo.md").read_text()
    table = md[md.index("| hardness"):md.index("\n\n", md.index("| hardness"))]
    b, a, g = report["baseline"]["all"], report["adapter"]["all"], report["gguf"]["all"]
    seconds = report["seconds"]
    lines = [f"`make demo` ({report['recipe']} recipe: SmolLM2-135M-Instruct from its PyPI GGUF, LoRA on the mini "
             "benchmark's training databases, evaluated on its two dev databases, which training never sees):", "",
             table, "",
             f"{report['gained']} questions flipped to correct, {report['lost']} to wrong: execution accuracy "
             f"{b['execution_accuracy']:.1f}% → {a['execution_accuracy']:.1f}%. The fused model as a q8_0 GGUF in "
             f"llama.cpp: EX {g['execution_accuracy']:.1f}%, the same SQL as MLX on {report['same_sql_mlx_vs_gguf']} "
             f"of {g['count']} questions.", "",
             "| stage | seconds |", "|---|---:|", *(f"| {k} | {v:.0f} |" for k, v in seconds.items()),
             f"| **total** | **{report['total_seconds']:.0f}** ({report['total_seconds'] / 60:.1f} min) |"]
    print("\n".join(lines))
    update_section("demo", "The whole loop: `make demo`", "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    main()
