"""Will a shipped recipe's training fit an 8 GB or a 16 GB Mac? `mlx-sql plan`'s verdicts for each recipe, as the
README's table quotes them (the plan's predictions are checked against measured peaks in "Memory plan vs
measured peak" and in the Qwen accuracy section: within 8%).

    python benchmarks/recipe_memory.py
"""

from __future__ import annotations

from results import ROOT, no_options, update_section

RECIPES = ["qwen2.5-coder-0.5b.toml", "qwen2.5-coder-0.5b-rft.toml", "qwen2.5-coder-1.5b.toml", "smollm2-135m.toml",
           "gemma3-270m.toml"]


SHOWS = ("Whether each shipped recipe trains on an 8 GB and on a 16 GB Mac, by `mlx-sql plan`: the memory "
         "columns of README's table.")


def main() -> None:
    from mlx_sql.errors import MlxSqlError
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.plan import GB, make_plan

    lines = ["`mlx-sql plan` for each shipped recipe as it stands (its batch, sequence length and adapter; "
             "bfloat16 weights on a Mac's GPU), the worst batch of the mini benchmark's data. Written by "
             "`benchmarks/recipe_memory.py`.", "", "| recipe | predicted peak on a Mac | 8 GB Mac | 16 GB Mac |",
             "|---|---:|---|---|"]
    for name in RECIPES:
        try:
            _, verdicts, _ = make_plan(load_recipe(ROOT / "recipes" / name))
        except MlxSqlError as exc:  # e.g. the 1.5B's weights are an extra `make setup` does not install
            print(f"{name}: {exc}")
            lines.append(f"| {name} | not planned here ({str(exc)[:80]}) | | |")
            continue
        macs = {v.machine: v for v in verdicts if "Mac" in v.machine}
        peak = next(iter(macs.values())).peak / GB
        lines.append(f"| {name} | {peak:.1f} GB | {macs['8 GB Mac'].status} | {macs['16 GB Mac'].status} |")
        print(lines[-1])
    update_section("recipe-memory", "Shipped recipes on 8 and 16 GB Macs (`benchmarks/recipe_memory.py`)",
                   "\n".join(lines), shows=SHOWS)


if __name__ == "__main__":
    no_options(__doc__)
    main()
