"""The training loop: accumulate, clip, step, evaluate, checkpoint, report."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlx_sql.errors import MlxSqlError
from mlx_sql.fileio import write_text
from mlx_sql.plots import loss_curve, reward_curve
from mlx_sql.recipe import Recipe, TrainConfig, dump_recipe, portable, resume_changes, tomllib
from mlx_sql.tracking import Tracker, log
from mlx_sql.train.adapters import adapter_config, apply_adapters, save_adapters, start_from_adapter, trainable_count
from mlx_sql.train.batches import BatchPlan, Records, check_lengths, make_batch
from mlx_sql.train.checkpoint import Position, load_checkpoint, save_checkpoint
from mlx_sql.train.encode import Encoder
from mlx_sql.train.grpo import GroupStats
from mlx_sql.train.losses import batch_loss


@dataclass
class StepReport:
    step: int
    total_steps: int
    epoch: int
    train_loss: float
    lr: float
    tokens_per_s: float
    examples_per_s: float
    peak_memory_gb: float
    val_loss: float | None = None
    truncated: int = 0
    world_size: int = 1  # processes training together (mlx.launch -n N): tokens/s and examples/s are all of theirs
    objective: dict[str, float] | None = None  # an objective's own metrics (GRPO: reward, skipped groups, KL)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_train_loss: float
    final_val_loss: float | None
    truncated: int
    trainable_parameters: int
    history: list[StepReport] = field(default_factory=list)
    tokens_seen: int = 0  # real tokens through the model (a shared schema counts once per batch)
    examples_seen: int = 0
    seconds: float = 0.0  # optimizer steps only, across resumes
    world_size: int = 1


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.iters:
        return cfg.iters
    return max(1, math.ceil((cfg.epochs or 1.0) * batches_per_epoch / cfg.grad_accumulation))


def make_schedule(cfg: TrainConfig, steps: int) -> Callable | float:
    main = optim.cosine_decay(cfg.lr, max(1, steps - cfg.warmup_steps)) if cfg.schedule == "cosine" else cfg.lr
    if not cfg.warmup_steps:
        return main
    warmup = optim.linear_schedule(cfg.lr / max(1, cfg.warmup_steps), cfg.lr, cfg.warmup_steps)
    main_fn = main if callable(main) else (lambda _step, lr=main: lr)
    return optim.join_schedules([warmup, main_fn], [cfg.warmup_steps])


def enable_grad_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in backward, for this model's blocks only.

    The block class gets a wrapper once; it checkpoints only instances flagged here, so other
    models in the process (an evaluation model, another test) keep the plain forward.
    """
    cls = type(model.layers[0])
    if not getattr(cls, "_mlx_sql_checkpointable", False):
        original = cls.__call__

        def call(self, *args, **kwargs):
            if not getattr(self, "_mlx_sql_checkpoint", False):
                return original(self, *args, **kwargs)

            def inner(params, *inner_args, **inner_kwargs):
                self.update(params)
                return original(self, *inner_args, **inner_kwargs)

            return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

        cls.__call__ = call
        cls._mlx_sql_checkpointable = True
    for layer in model.layers:
        layer._mlx_sql_checkpoint = True


def checkpointing_applies(cfg: TrainConfig) -> bool:
    """Gradient checkpointing is used only for unshared batches.

    A checkpointed block returns only its output, so the schema prefix's keys and values would
    reach the question segments as constants and the prefix would get no gradient from them.
    Schema-shared batches already need far less memory (the prefix is held once).
    """
    return cfg.grad_checkpoint and cfg.batching == "unshared"


class Trainer:
    def __init__(self, model: nn.Module, tokenizer: Any, recipe: Recipe, base: str,
                 on_report: Callable[[StepReport], None] | None = None):
        self.model, self.recipe, self.cfg = model, recipe, recipe.train
        self.out_dir = recipe.adapter_dir
        self.encoder = Encoder.for_model(model, tokenizer)
        self.shared = self.cfg.batching == "schema_shared"
        self.on_report = on_report
        data_dir = recipe.data_dir
        self.train_path, self.valid_path = data_dir / "train.jsonl", data_dir / "valid.jsonl"
        if not self.train_path.is_file():
            raise MlxSqlError("no training data: run `mlx-sql data build` with this recipe first", self.train_path)
        if getattr(model, "is_encoder_decoder", False) and (self.shared or self.cfg.grad_checkpoint):
            raise MlxSqlError("an encoder-decoder model (T5) reads schema and question together in its encoder: "
                              "set train.batching = \"unshared\" and train.grad_checkpoint = false",
                              recipe.source or recipe.name)
        self.config = adapter_config(model, self.cfg, base)
        # one process unless launched by `mlx.launch`: then data-parallel over mx.distributed
        self.group = mx.distributed.init()
        self.world, self.rank = self.group.size(), self.group.rank()
        self.is_main = self.rank == 0
        mx.random.seed(self.cfg.seed)
        apply_adapters(model, self.config)
        if self.cfg.init_adapter:
            start_from_adapter(model, Path(self.cfg.init_adapter))
        if checkpointing_applies(self.cfg):
            enable_grad_checkpointing(model)
        self.plan = BatchPlan(self.train_path, self.cfg.batch_size, self.shared, self.cfg.seed)
        batches = self.plan.batches_per_epoch()
        if batches == 0:
            raise MlxSqlError("no training examples: the file is empty (did `mlx-sql data build` find the "
                              "databases?)", self.train_path)
        # every rank walks the same batch plan and takes every world-th micro-batch: N processes with
        # grad_accumulation A make exactly the steps of one process with accumulation N x A
        self.steps = total_steps(self.cfg, math.ceil(batches / self.world))
        self.schedule = make_schedule(self.cfg, self.steps)
        self.optimizer = optim.AdamW(learning_rate=self.schedule,
                                     weight_decay=self.cfg.weight_decay)
        self._loss_and_grad = nn.value_and_grad(model, batch_loss)
        self.grpo = self._grpo(model, tokenizer) if self.cfg.objective == "grpo" else None

    def _grpo(self, model: nn.Module, tokenizer: Any) -> Any:
        """The GRPO objective, its reward reading the training databases through the sandbox."""
        from mlx_sql.data.benchmark import recipe_benchmark
        from mlx_sql.sandbox import Executor
        from mlx_sql.train.grpo import GRPO, execution_reward

        where = self.recipe.source or self.recipe.name
        if getattr(model, "is_encoder_decoder", False) or not self.shared:
            raise MlxSqlError("train.objective = \"grpo\" needs a decoder model and train.batching = "
                              "\"schema_shared\" (each question's answers share its prompt)", where)
        if self.cfg.method == "full" and self.cfg.grpo_kl > 0:
            raise MlxSqlError("GRPO's reference model is this model with its adapter off: use method = \"lora\" or "
                              "\"dora\", or train.grpo_kl = 0", where)
        bench, _ = recipe_benchmark(self.recipe)
        self.executor = Executor(workers=1, timeout=self.recipe.eval.timeout)
        reward = execution_reward(bench, self.recipe.data.train_split, self.executor, self.cfg.grpo_reward_runs,
                                  self.cfg.grpo_reward_partial)
        return GRPO(model, tokenizer, self.encoder, self.cfg, reward)

    def _batches(self, position: Position) -> Iterator[tuple[int, Records]]:
        stream = self.plan.forever()
        for _ in range(position.batches_done):  # replay the data order without tokenizing
            next(stream)
        return stream

    def validation_loss(self) -> float | None:
        if not self.valid_path.is_file() or self.valid_path.stat().st_size == 0:
            return None
        plan = BatchPlan(self.valid_path, self.cfg.batch_size, self.shared, self.cfg.seed)
        total, count = 0.0, 0.0
        for i, records in enumerate(plan.epoch(0)):
            if i >= self.cfg.eval_batches:
                break
            if i % self.world != self.rank:  # ranks share the validation batches out too
                continue
            batch = make_batch(self.encoder, records, self.shared, self.cfg.max_seq_length)
            if batch is None:
                continue
            loss, n = batch_loss(self.model, batch)
            mx.eval(loss, n)
            total, count = total + loss.item(), count + n.item()
        total, count = self._all_sum_floats(total, count)
        return total / count if count else None

    def _all_sum_floats(self, *values: float) -> list[float]:
        if self.world == 1:
            return list(values)
        summed = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=self.group)
        return summed.tolist()

    def _all_sum_grads(self, grads: Any) -> Any:
        """One all-reduce for every gradient (flattened): one round trip a step, whatever the adapter count."""
        if self.world == 1:
            return grads
        leaves = tree_flatten(grads)
        flat = mx.concatenate([g.reshape(-1).astype(mx.float32) for _, g in leaves])
        flat = mx.distributed.all_sum(flat, group=self.group)
        out, start = [], 0
        for name, g in leaves:
            out.append((name, flat[start:start + g.size].reshape(g.shape).astype(g.dtype)))
            start += g.size
        return tree_unflatten(out)

    def _metrics_lines(self, upto: int) -> list[str]:
        path = self.out_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= upto]

    def _finish_outputs(self) -> None:
        save_adapters(self.model, self.out_dir, self.config)
        rows = [json.loads(line) for line in self._metrics_lines(10**12)]
        if rows:
            val = [r for r in rows if r.get("val_loss") is not None]
            loss_curve(self.out_dir / "loss.png", [r["step"] for r in rows], [r["train_loss"] for r in rows],
                       [r["step"] for r in val], [r["val_loss"] for r in val], title=self.recipe.name)
            grpo = [r for r in rows if r.get("objective")]
            if grpo:
                reward_curve(self.out_dir / "reward.png", [r["step"] for r in grpo],
                             *([r["objective"][k] for r in grpo] for k in ("reward_mean", "all_right_share",
                                                                          "all_wrong_share")), title=self.recipe.name)

    def _save(self, position: Position) -> None:
        if self.is_main:  # rank 0 alone writes; every rank holds the same weights
            save_checkpoint(self.out_dir, self.model, self.optimizer, position)

    def _refuse_changed_run(self) -> None:
        """A resume continues the run that was started: the same steps, schedule, data and adapter shape."""
        saved = self.out_dir / "recipe.toml"
        if not saved.is_file():
            return
        try:
            before = tomllib.loads(saved.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            raise MlxSqlError("recipe.toml beside the checkpoint is damaged; train without --resume", saved) from None
        changes = resume_changes(before, self.recipe)
        if changes:
            raise MlxSqlError(f"--resume continues the run as it was started, and {'; '.join(changes)} would change "
                              "what its steps, learning-rate schedule or data position mean: resume without those "
                              "changes, or start a new run (--overwrite, or another train.adapter_dir)", self.out_dir)

    def run(self, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        position = Position(world_size=self.world)
        if resume:
            position = load_checkpoint(self.out_dir, self.model, self.optimizer)
            if position.world_size != self.world:
                raise MlxSqlError(f"this run was trained with {position.world_size} process(es); resume it with "
                                  f"the same number (here: {self.world})", self.out_dir)
            self._refuse_changed_run()
            if position.step >= self.steps:
                raise MlxSqlError(f"this run already finished its {self.steps} steps: nothing to resume "
                                  "(training further is a new run: --overwrite, or another train.adapter_dir)",
                                  self.out_dir)
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.out_dir / "recipe.toml", dump_recipe(portable(self.recipe)))
            write_text(self.out_dir / "metrics.jsonl", "".join(l + "\n" for l in self._metrics_lines(position.step)))
        stream = self._batches(position)
        history: list[StepReport] = []
        tracker = Tracker(self.recipe, "train", self.out_dir) if self.is_main else None
        if self.is_main:
            said = check_lengths(self.train_path, self.encoder, self.cfg.max_seq_length).warning()
            if said:
                log.warning("warning: %s", said)
        mx.reset_peak_memory()
        last_train, last_val = float("nan"), None
        try:
            while position.step < self.steps:
                if stop_after is not None and position.step >= stop_after:
                    break
                report = self._step(stream, position)
                if report is None:
                    break
                last_train = report.train_loss
                last_val = report.val_loss if report.val_loss is not None else last_val
                history.append(report)
                if self.is_main:
                    with open(self.out_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(asdict(report)) + "\n")
                if position.step % self.cfg.save_every == 0:
                    self._save(position)
                if tracker is not None:
                    tracker.step(asdict(report), report.step)
                    log.info("step %d/%d  loss %.4f  lr %.2e  %.0f tok/s%s", report.step, report.total_steps,
                             report.train_loss, report.lr, report.tokens_per_s,
                             "".join(f"  {k} {v:.3g}" for k, v in (report.objective or {}).items()))
                if self.on_report and self.is_main:
                    self.on_report(report)
            self._save(position)
            if self.is_main:
                self._finish_outputs()
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (the CLI turns it into SystemExit)
            self._save(position)
            if self.is_main:
                self._finish_outputs()
            raise
        finally:
            if self.grpo is not None:
                self.executor.close()
            if tracker is not None:
                tracker.images({"loss": self.out_dir / "loss.png", "reward": self.out_dir / "reward.png"})
                tracker.summary({"steps": position.step, "train_loss": last_train,
                                 "examples_seen": position.examples_seen})
                tracker.finish()
        return TrainResult(self.out_dir, position.step, last_train, last_val, position.truncated,
                           trainable_count(self.model), history, position.tokens_seen, position.examples_seen,
                           position.seconds, self.world)

    def _step(self, stream: Iterator[tuple[int, Records]], position: Position) -> StepReport | None:
        """One optimizer step. `position` changes only once the step is complete, so a checkpoint taken
        when Ctrl-C lands anywhere inside it resumes with this very step, on the same batches.

        Micro-batch m of the step goes to rank m % world; each draws its dropout from (seed, step, m), so
        the step is the same computation in one process or several.
        """
        start = time.perf_counter()
        grads, loss_sum, tokens, real, examples, epoch = None, 0.0, 0.0, 0, 0, 0
        consumed, truncated = 0, 0
        stats = GroupStats()
        for micro in range(self.cfg.grad_accumulation * self.world):
            try:
                epoch, records = next(stream)
            except StopIteration:
                return None
            consumed += 1
            if micro % self.world != self.rank:
                continue
            mx.random.seed((self.cfg.seed * 1_000_003 + position.step) * 4099 + micro)
            if self.grpo is not None:  # each question: a group of sampled answers, rewarded and scored
                for index, record in enumerate(records):
                    g, loss, n, group, batch = self.grpo.question(record, position.step, micro, index)
                    stats.add(group)
                    examples += 1
                    if g is None:
                        continue
                    grads = g if grads is None else tree_map(mx.add, grads, g)
                    loss_sum, tokens = loss_sum + loss, tokens + n
                    real, truncated = real + batch.real_tokens, truncated + batch.truncated
                continue
            batch = make_batch(self.encoder, records, self.shared, self.cfg.max_seq_length)
            if batch is None:
                continue
            (loss, n), g = self._loss_and_grad(self.model, batch)
            mx.eval(loss, n, g)
            if n.item() == 0:  # every answer was cut away: nothing to learn from this batch
                continue
            grads = g if grads is None else tree_map(mx.add, grads, g)
            loss_sum, tokens = loss_sum + loss.item(), tokens + n.item()
            real, examples = real + batch.real_tokens, examples + batch.examples
            truncated += batch.truncated
        if self.world > 1:
            if grads is None:  # this rank's batches held no answer tokens: it still joins the all-reduce
                grads = tree_map(mx.zeros_like, self.model.trainable_parameters())
            grads = self._all_sum_grads(grads)
            loss_sum, tokens, real, examples, truncated = self._all_sum_floats(loss_sum, tokens, real, examples,
                                                                               truncated)
            real, examples, truncated = int(real), int(examples), int(truncated)
            if tokens == 0:
                grads = None
        lr = float(self.schedule(mx.array(position.step))) if callable(self.schedule) else float(self.schedule)
        with deferred_interrupt():  # the update and the position move together, or not at all
            if grads is not None:
                grads = tree_map(lambda x: x / tokens, grads)
                if self.cfg.grad_clip > 0:
                    grads, _ = optim.clip_grad_norm(grads, self.cfg.grad_clip)
                self.optimizer.update(self.model, grads)
                mx.eval(self.model.trainable_parameters(), self.optimizer.state)
            seconds = time.perf_counter() - start
            position.step += 1
            position.batches_done += consumed
            position.truncated += truncated
            position.tokens_seen += real
            position.examples_seen += examples
            position.seconds += seconds
        val = None
        if position.step % self.cfg.eval_every == 0 or position.step == self.steps:
            val = self.validation_loss()
        return StepReport(position.step, self.steps, epoch, loss_sum / tokens if tokens else float("nan"), lr,
                          real / seconds, examples / seconds, self._peak_memory_gb(), val, position.truncated,
                          self.world, self._objective_metrics(stats) if self.grpo is not None else None)

    def _objective_metrics(self, stats: Any) -> dict[str, float]:
        """GRPO's step metrics, over all ranks' groups."""
        row = stats.to_json()
        if self.world > 1:
            n = max(1, len(stats.rewards))
            summed = self._all_sum_floats(row["reward_mean"] * n, n, stats.groups, stats.all_right, stats.all_wrong,
                                          row["skipped_groups"], stats.kl_sum, stats.kl_tokens, stats.reference_reused)
            total_n, groups = summed[1], max(1.0, summed[2])
            row = {"reward_mean": summed[0] / max(1.0, total_n), "groups": int(summed[2]),
                   "all_right_share": summed[3] / groups, "all_wrong_share": summed[4] / groups,
                   "skipped_groups": int(summed[5]), "kl": summed[6] / summed[7] if summed[7] else 0.0,
                   "answer_tokens": row["answer_tokens"], "reference_prefix_reused": int(summed[8]),
                   **{k: v for k, v in row.items() if k.endswith("_s")}}
        return row

    def _peak_memory_gb(self) -> float:
        """This process's peak, or the largest of all ranks' (rank 0 reports what the fullest machine needed)."""
        peak = mx.array(mx.get_peak_memory() / 1e9, dtype=mx.float32)
        if self.world > 1:
            peak = mx.distributed.all_max(peak, group=self.group)
        return peak.item()


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C (SIGINT) until the block is done, then raise it; elsewhere than the main thread, no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def train(recipe: Recipe, resume: bool = False, on_report: Callable[[StepReport], None] | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Load the recipe's model and train it; the library entry point the CLI calls."""
    from mlx_sql.models.loading import load_model
    from mlx_sql.train.plan import refuse_eval_only

    refuse_eval_only(recipe)
    model, tokenizer, base = load_model(recipe.model)
    return Trainer(model, tokenizer, recipe, base, on_report).run(resume=resume, stop_after=stop_after)
