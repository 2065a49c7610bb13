"""GRPO with an execution reward: answers sampled from the model being trained, rewarded by what they return.

For each question, `grpo_group` answers are sampled from the current policy (adapter on, dropout off) as rows
of one batch over a single computation of the prompt (`MLXBackend.generate_many`). Each runs in the sandbox:
reward 1 where it returns the example's own result (the evaluator's equality), `grpo_reward_runs` where it runs
and returns something else (plus, with `grpo_reward_partial`, partial credit for how much of the example's result
it holds), 0 where SQLite rejects it. Advantages are the rewards normalised within the group;
a group whose answers all earn the same reward carries no signal and is skipped (counted as all right / all
wrong / all alike). The loss is the clipped policy-gradient surrogate on the answer tokens, averaged over each
answer's tokens, with a KL penalty (the k3 estimator) to the reference model — the same weights with the adapter
switched off, so no second copy is held. The group is one schema-shared batch: the prompt's prefix runs once for
all its answers, in sampling and in the loss. With `grpo_prompt_grad = false` the loss does not run the prefix
at all: it reuses the keys/values the sampler computed this step (same weights, no dropout) as constants, so
no gradient reaches the adapter through the schema's positions — an approximation that leaves only the answers'
forward and backward. The reference pass's prefix is exact to keep: the base weights never change, so the last
`REFERENCE_PREFIXES` prefixes' keys/values under the reference are kept and reused by later questions on the same
schema (a step's questions share one; a user's own database has only one).

Each step samples once and updates once (on-policy): the probability ratio is 1 where the gradient is taken, so
the clip only matters as the surrogate's form. Sampling seeds come from (train.seed, step, micro-batch,
question, answer), so a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_sql.models.verify import stable_seed
from mlx_sql.train.losses import Batch, completion_log_probs
from mlx_sql.train.prefix_cache import prefix_keys_values

Reward = Callable[[dict[str, Any], str], float]  # (record with the gold `output`, sampled SQL) -> reward


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """The base model: every LoRA/DoRA layer's scale set to 0 for the block (the reference policy)."""
    layers = [m for _, m in model.named_modules() if hasattr(m, "lora_a") and hasattr(m, "scale")]
    scales = [m.scale for m in layers]
    for m in layers:
        m.scale = 0.0
    try:
        yield
    finally:
        for m, s in zip(layers, scales):
            m.scale = s


def group_advantages(rewards: Sequence[float]) -> np.ndarray | None:
    """(r - mean) / std within the group; None where every answer earned the same (no signal)."""
    r = np.asarray(rewards, dtype=np.float32)
    std = float(r.std())
    if std < 1e-6:
        return None
    return (r - r.mean()) / (std + 1e-4)


def grpo_loss(model: nn.Module, batch: Batch, advantages: mx.array, reference: mx.array | None, clip: float,
              kl_weight: float) -> tuple[mx.array, mx.array, mx.array]:
    """(sum over answers of each answer's mean token loss, number of answers, summed token KL): the trainer's
    (sum, count) form, and the KL for the metrics.

    `reference` is the log-probability of each answer token under the reference model (flat, as
    `completion_log_probs` orders them; None with `kl_weight` 0: no KL term); `advantages` one per answer.
    """
    log_probs, owner = completion_log_probs(model, batch)
    rows = batch.mask.shape[0]
    owner_ids = mx.array(owner)
    ratio = mx.exp(log_probs - mx.stop_gradient(log_probs))
    adv = advantages[owner_ids]
    surrogate = mx.minimum(ratio * adv, mx.clip(ratio, 1.0 - clip, 1.0 + clip) * adv)
    if kl_weight > 0:
        delta = reference - log_probs
        kl = mx.exp(delta) - delta - 1.0
        per_token, kl_sum = -(surrogate - kl_weight * kl), mx.stop_gradient(kl.sum())
    else:
        per_token, kl_sum = -surrogate, mx.array(0.0)
    counts = mx.maximum(batch.mask[:, 1:].sum(axis=1), 1)
    per_answer = mx.zeros((rows,), dtype=mx.float32).at[owner_ids].add(per_token) / counts
    return per_answer.sum(), mx.array(rows, dtype=mx.float32), kl_sum


REFERENCE_PREFIXES = 4  # schema prefixes whose reference keys/values are kept (the plan counts them)

PHASES = ("sampling", "reward", "loss")  # a question's time: drawing its answers, running them, the gradient


@dataclass
class GroupStats:
    """What a step's groups did, for metrics.jsonl."""

    groups: int = 0
    all_right: int = 0
    all_wrong: int = 0  # every answer earned 0 (none ran)
    all_alike: int = 0  # every answer the same partial reward
    rewards: list[float] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    kl_sum: float = 0.0
    kl_tokens: int = 0
    reference_reused: int = 0  # reference passes that reused a kept prefix
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))  # where the time went

    def add(self, other: "GroupStats") -> None:
        self.groups += other.groups
        self.all_right += other.all_right
        self.all_wrong += other.all_wrong
        self.all_alike += other.all_alike
        self.rewards += other.rewards
        self.answer_tokens += other.answer_tokens
        self.kl_sum += other.kl_sum
        self.kl_tokens += other.kl_tokens
        self.reference_reused += other.reference_reused
        for phase in PHASES:
            self.seconds[phase] += other.seconds[phase]

    def to_json(self) -> dict[str, float]:
        n = max(1, self.groups)
        return {"reward_mean": float(np.mean(self.rewards)) if self.rewards else 0.0,
                "groups": self.groups, "all_right_share": self.all_right / n, "all_wrong_share": self.all_wrong / n,
                "skipped_groups": self.all_right + self.all_wrong + self.all_alike,
                "kl": self.kl_sum / self.kl_tokens if self.kl_tokens else 0.0,
                "answer_tokens": float(np.mean(self.answer_tokens)) if self.answer_tokens else 0.0,
                "reference_prefix_reused": self.reference_reused,
                **{f"{phase}_s": round(self.seconds[phase], 3) for phase in PHASES}}


class GRPO:
    """Samples, rewards and scores one micro-batch of questions; the trainer steps on the gradients."""

    def __init__(self, model: nn.Module, tokenizer: Any, encoder: Any, cfg: Any, reward: Reward):
        from mlx_sql.eval.backends.mlx import MLXBackend
        from mlx_sql.eval.extract import extract_sql

        self.model, self.encoder, self.cfg, self.reward = model, encoder, cfg, reward
        self.sampler = MLXBackend(model, tokenizer, cfg.grpo_max_tokens)
        self.extract = extract_sql
        self.loss_and_grad = nn.value_and_grad(model, grpo_loss)
        self.weights_of_step: int | None = None  # the step whose weights the sampler's prefix keys were made with
        self.reference_kv: OrderedDict[tuple[int, ...], list[tuple[mx.array, mx.array]]] = OrderedDict()

    def sample(self, record: dict[str, Any], seeds: list[int], step: int) -> list[tuple[list[int], int | None]]:
        if step != self.weights_of_step:  # the adapter moved since: the prefix keys are stale
            self.sampler.forget_prefix()
            self.weights_of_step = step
        self.model.eval()  # no dropout while drawing answers
        try:
            return self.sampler.sample_ids(record, seeds, self.cfg.grpo_temperature)
        finally:
            self.model.train()

    def group_batch(self, record: dict[str, Any], answers: list[tuple[list[int], int | None]]) -> Batch | None:
        """The group as one schema-shared batch of exactly the sampled tokens (and the end-of-turn token where
        an answer ended with it): the prompt's prefix once, each answer a segment after the question."""
        from mlx_sql.eval.backends.base import prompt_ids
        from mlx_sql.train.batches import collate
        from mlx_sql.train.encode import Encoded

        prefix, question = prompt_ids(self.encoder, record)
        encoded = [Encoded(prefix, tuple([*question, *ids, *([end] if end is not None else [])]), len(question))
                   for ids, end in answers]
        batch = collate(encoded, True, self.cfg.max_seq_length)
        if batch is not None and not self.cfg.grpo_prompt_grad:  # the keys/values sampling just used, held fixed
            batch.prefix_kv = self.sampler.prefix_kv(prefix)
        return batch

    def reference_prefix(self, prefix: mx.array) -> tuple[list[tuple[mx.array, mx.array]], bool]:
        """(each layer's keys/values of `prefix` under the reference model, whether they were kept from before).
        Call with the adapter off."""
        key = tuple(np.asarray(prefix).reshape(-1).tolist())
        kept = self.reference_kv.get(key)
        if kept is not None:
            self.reference_kv.move_to_end(key)
            return kept, True
        kv = prefix_keys_values(self.model, prefix)
        self.reference_kv[key] = kv
        while len(self.reference_kv) > REFERENCE_PREFIXES:
            self.reference_kv.popitem(last=False)
        return kv, False

    def reference_log_probs(self, batch: Batch) -> tuple[mx.array, bool]:
        """Each answer token's log-probability under the base model (the adapter off), its prefix reused where
        kept; and whether it was."""
        with adapters_off(self.model):  # the sampler's keys/values are the adapter's: the reference has its own
            kv, reused = self.reference_prefix(batch.prefix)
            reference = mx.stop_gradient(completion_log_probs(self.model, replace(batch, prefix_kv=kv))[0])
            mx.eval(reference)
        return reference, reused

    def gradients(self, batch: Batch, advantages: mx.array) -> tuple[Any, mx.array, mx.array, mx.array, bool]:
        """(grads, loss, answers, summed KL, reference prefix reused) of one group's batch: the reference pass
        with the adapter off (skipped with no KL term), then the clipped surrogate's forward and backward."""
        reference, reused = None, False
        if self.cfg.grpo_kl > 0:
            reference, reused = self.reference_log_probs(batch)
        (loss, n, kl), grads = self.loss_and_grad(self.model, batch, advantages, reference, self.cfg.grpo_clip,
                                                  self.cfg.grpo_kl)
        mx.eval(loss, n, kl, grads)
        return grads, loss, n, kl, reused

    def question(self, record: dict[str, Any], step: int, micro: int, index: int
                 ) -> tuple[Any, float, float, GroupStats, Batch | None]:
        """(grads or None, loss sum, answers, stats, batch) for one question's group."""
        stats = GroupStats(groups=1)
        started = time.perf_counter()
        seeds = [stable_seed("grpo", self.cfg.seed, step, micro, index, i) for i in range(self.cfg.grpo_group)]
        answers = self.sample(record, seeds, step)  # a step's questions share a schema: its prefix is computed once
        stats.answer_tokens = [len(ids) + (end is not None) for ids, end in answers]  # skipped groups too
        texts = [self.sampler.tokenizer.decode(ids) for ids, _ in answers]
        sampled = time.perf_counter()
        rewards = [self.reward(record, sql) if (sql := self.extract(text)) else 0.0 for text in texts]
        stats.rewards = rewards
        rewarded = time.perf_counter()
        stats.seconds.update(sampling=sampled - started, reward=rewarded - sampled)
        advantages = group_advantages(rewards)
        if advantages is None:
            if min(rewards) >= 1.0:
                stats.all_right = 1
            elif max(rewards) <= 0.0:
                stats.all_wrong = 1
            else:
                stats.all_alike = 1
            return None, 0.0, 0.0, stats, None
        batch = self.group_batch(record, answers)
        if batch is None:
            return None, 0.0, 0.0, stats, None
        grads, loss, n, kl, reused = self.gradients(batch, mx.array(advantages))
        stats.kl_sum, stats.kl_tokens = float(kl.item()), int(batch.mask[:, 1:].sum().item())
        stats.reference_reused = int(reused)
        stats.seconds["loss"] = time.perf_counter() - rewarded
        return grads, float(loss.item()), float(n.item()), stats, batch


def execution_reward(bench: Any, split: str, executor: Any, runs_credit: float, partial: float = 0.0) -> Reward:
    """1 where the answer returns the example's result, 0 where it fails, and where it runs and returns another
    result `runs_credit` plus `partial` of the rest by how much of the example's result it holds
    (`result_overlap`: cell precision, cell recall, row count) — the same for every wrong answer with
    `partial` 0. The example's own result is computed once per question and kept."""
    from mlx_sql.eval.compare import result_overlap, results_match
    from mlx_sql.eval.quoting import per_database

    gold: dict[tuple[str, str], Any] = {}
    quote = per_database(lambda db_id: bench.schema(db_id, split), read=False)  # as eval reads answers

    def reward(record: dict[str, Any], sql: str) -> float:
        path = bench.db_path(record["db_id"], split)
        sql = quote(record["db_id"])(sql)
        key = (record["db_id"], record["output"])
        if key not in gold:
            gold[key] = executor.run(path, record["output"])
        expected = gold[key]
        got = executor.run(path, sql)
        if not got.ok:
            return 0.0
        if expected.ok and results_match(expected.rows, got.rows, "order by" in record["output"].lower()):
            return 1.0
        if partial and expected.ok:
            return runs_credit + partial * (1.0 - runs_credit) * result_overlap(expected.rows, got.rows)
        return runs_credit

    return reward
