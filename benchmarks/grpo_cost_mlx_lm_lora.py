"""The mlx-lm-lora side of `grpo_cost.py`: its own GRPO trainer (`train_grpo`) on the questions, model, LoRA
layers and settings `grpo_cost.py` wrote to a job file. Runs in mlx-lm-lora's environment (`make bench-grpo`
makes it), so it imports nothing from mlx_sql.

Set up as mlx-lm-lora's own command line sets up GRPO: a second copy of the model, frozen, as the reference
for the KL term. The reward is the same shape as ours (1 for the gold result, `runs_credit` for a query that
runs, 0 for one that fails), computed here with sqlite3 on a read-only connection: rows compared as a multiset,
in order where the gold query has ORDER BY. Questions come in the job's order (ours), one a step.

    python grpo_cost_mlx_lm_lora.py JOB.json OUT.json
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
from mlx_lm import load
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm_lora.trainer.grpo_trainer import GRPOTrainingArgs, train_grpo


def first_statement(text: str) -> str:
    """The SQL in a completion: inside a ``` fence when there is one, up to the first semicolon."""
    fence = re.search(r"```(?:sql)?\s*(.*?)(?:```|$)", text, re.S | re.I)
    sql = fence.group(1) if fence else text
    return sql.split(";")[0].strip()


def run(db: str, sql: str) -> list[tuple] | None:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql).fetchmany(10_000)
    except sqlite3.Error:
        return None
    except Exception:  # noqa: BLE001 - a broken query of any kind earns 0
        return None


def make_reward(runs_credit: float, log: list[list[float]]):
    gold: dict[tuple[str, str], list[tuple] | None] = {}

    def sql_execution_reward(prompts, completions, answer, types=None) -> list[float]:
        rewards = []
        for completion, gold_sql, db in zip(completions, answer, types):
            if (db, gold_sql) not in gold:
                gold[(db, gold_sql)] = run(db, gold_sql)
            expected, got = gold[(db, gold_sql)], run(db, first_statement(completion))
            if got is None:
                rewards.append(0.0)
            elif expected is not None and (got == expected if "order by" in gold_sql.lower()
                                           else Counter(got) == Counter(expected)):
                rewards.append(1.0)
            else:
                rewards.append(runs_credit)
        log.append(rewards)
        return rewards

    return sql_execution_reward


class Clock(TrainingCallback):
    """A timestamp as each step's report arrives (one report a step)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.tokens: list[float] = []

    def on_train_loss_report(self, info: dict) -> None:
        self.times.append(time.perf_counter())
        self.tokens.append(float(info.get("train_average_generated_tokens", 0.0)))


def in_order(dataset, batch_size, max_seq_length, train=False):
    """The job's questions one a step, in the job's order (mlx-lm-lora's own iterator shuffles)."""
    for prompt, answer_ids, prompt_text, answer, db in dataset:
        yield [prompt[:max_seq_length]], [answer_ids], [prompt_text], [answer], [db]


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    model, tokenizer = load(job["model"])
    model.set_dtype(getattr(mx, job["dtype"]))
    reference, _ = load(job["model"])
    reference.set_dtype(getattr(mx, job["dtype"]))
    reference.freeze()
    model.freeze()
    linear_to_lora_layers(model, job["num_layers"], job["lora_parameters"])
    mx.eval(model.parameters(), reference.parameters())
    dataset = [(q["prompt_ids"], [], "", q["gold"], q["db"]) for q in job["questions"]]
    args = GRPOTrainingArgs(
        batch_size=1, iters=len(dataset), steps_per_report=1, steps_per_eval=10**9, steps_per_save=10**9,
        max_seq_length=job["max_seq_length"], adapter_file=str(out.with_suffix(".safetensors")),
        group_size=job["group"], beta=job["kl"], epsilon=job["clip"], max_completion_length=job["max_tokens"],
        temperature=job["temperature"], top_p=1.0, top_k=0, min_p=0.0)
    rewards: list[list[float]] = []
    clock = Clock()
    mx.reset_peak_memory()  # as our trainer does: loading's transient peaks are not a step's
    start = time.perf_counter()
    train_grpo(model, reference, tokenizer, optim.AdamW(learning_rate=job["lr"]), dataset, None,
               [make_reward(job["runs_credit"], rewards)], args, iterate_batches=in_order,
               training_callback=clock, end_answer_token="")
    out.write_text(json.dumps({
        "step_ends": [t - start for t in clock.times],
        "answer_tokens": clock.tokens,
        "uniform_groups": sum(len(set(r)) == 1 for r in rewards),
        "rewards": rewards,
        "peak_memory_gb": mx.get_peak_memory() / 1e9,
    }))


if __name__ == "__main__":
    main()
