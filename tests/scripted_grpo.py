"""GRPO with a reward a random tiny model can earn: its raw text (no SQL in it) rewarded 1 where its length is a
multiple of 3. Imported by the GRPO tests; run as a script, it trains a recipe that way — what `mlx.launch` starts
on every rank, since a patched process cannot be reached through the CLI.

    python scripted_grpo.py RECIPE [section.key=value ...]
"""

import sys


def patch(setattr_=setattr, modulus: int = 3) -> None:
    """Replace the execution reward (1 where the text's length is a multiple of `modulus`) and the SQL
    extraction, with pytest's monkeypatch.setattr or plain setattr."""
    import mlx_sql.train.grpo as grpo

    def scripted_reward(*args):
        return lambda record, sql: float(len(sql) % modulus == 0) if sql else 0.0

    init = grpo.GRPO.__init__

    def raw_text_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.extract = lambda text: text.strip()  # a random model writes no SQL: reward its raw text

    setattr_(grpo, "execution_reward", scripted_reward)
    setattr_(grpo.GRPO, "__init__", raw_text_init)


if __name__ == "__main__":
    from mlx_sql.recipe import load_recipe
    from mlx_sql.train.trainer import train

    patch()
    result = train(load_recipe(sys.argv[1], sys.argv[2:]))
    print(f"trained {result.steps} steps on {result.world_size} processes")
