"""`mlx-sql plan`: predict a run's peak memory from the model's config, before loading anything.

Counted: weights at their dtype or quantization, trainable parameters with their
gradients and AdamW's two moments (float32), the activations backward needs
(per layer and token, attention scores per head, less with gradient checkpointing) in the
layers that carry adapters, and the logits with their softmax and gradient at the
completion positions only. Constants are calibrated against
MLX's measured peak on the tiny test models (see tests/test_plan.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError
from mlx_sql.models.sources import default_dtype, gguf_file
from mlx_sql.recipe import Recipe

GB = 1e9
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
QUANT_GROUP = 64
MACS = {"8 GB Mac": 8 * GB, "16 GB Mac": 16 * GB}
# Metal lets a process wire ~70-75% of unified memory; above that a run swaps or fails.
USABLE_SHARE = 0.75
# Fitted to MLX's measured peak on the tiny models (tests/test_plan.py holds them to ±25%).
LINEAR_FACTOR = 1.0
ATTENTION_FACTOR = 1.0  # attention probabilities, kept once for backward
TRANSIENT_ATTENTION = 2.0  # unshared batches: extra copies of one layer's attention scores during its backward
LOGIT_FACTOR = 6.0  # logits, log-softmax, cross-entropy and their gradients in float32
TIGHT_SHARE = 0.6


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    gated: bool = True  # a gate projection beside up/down (all but Phi-2's two-layer MLP)
    encoder_layers: int = 0  # encoder-decoder (T5): the first blocks are the encoder's, the rest cross-attend

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> "Shape":
        if c.get("model_type") in ("t5", "mt5"):
            from mlx_sql.models.t5 import T5Args

            a = T5Args.from_config(c)
            return cls(a.d_model, a.d_ff, a.num_layers + a.num_decoder_layers, a.num_heads, a.num_heads, a.d_kv,
                       a.vocab_size, a.tie_word_embeddings, a.gated, a.num_layers)
        heads = c["num_attention_heads"]
        return cls(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], heads,
                   c.get("num_key_value_heads") or heads, c.get("head_dim") or c["hidden_size"] // heads,
                   c["vocab_size"], bool(c.get("tie_word_embeddings", c.get("model_type") != "phi")),
                   c.get("model_type") != "phi")

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection in one block (Phi-2's dense, fc1, fc2 as o, up, down)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        out = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
               "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
               "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        if not self.gated:
            del out["gate_proj"]
        return out

    def block_projections(self, block: int) -> list[tuple[str, tuple[int, int]]]:
        """(recipe target, (in, out)) of each projection in block `block`: a T5 decoder block's cross-attention
        has its own q/k/v/o, which the recipe's q_proj… targets adapt too."""
        own = list(self.projections().items())
        if self.encoder_layers and block >= self.encoder_layers:
            own += [(k, v) for k, v in own if k in ("q_proj", "k_proj", "v_proj", "o_proj")]
        return own

    def layer_params(self, block: int = 0) -> int:
        return sum(i * o for _, (i, o) in self.block_projections(block)) + 4 * self.hidden

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)


@dataclass
class Plan:
    weights: float
    trainable: float
    optimizer: float
    activations: float
    logits: float
    tokens_per_batch: int

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.optimizer + self.activations + self.logits


@dataclass
class Verdict:
    machine: str
    memory: float
    status: str  # fits | tight | won't fit
    peak: float = 0.0  # the predicted peak on that machine (a Mac trains in bfloat16 where the recipe says auto)


def model_config(recipe: Recipe) -> dict[str, Any]:
    """config.json of the recipe's model, read without loading weights."""
    gguf = gguf_file(recipe.model)
    if gguf is not None:
        from mlx_sql.models.gguf_import import build_config, open_gguf, read_metadata

        reader = open_gguf(gguf)
        return build_config(read_metadata(reader), {t.name for t in reader.tensors}, gguf)
    path = Path(recipe.model.path)
    if not path.exists():
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(recipe.model.path, "config.json")).parent
        except Exception as exc:
            raise MlxSqlError(f"cannot fetch config.json ({type(exc).__name__})", recipe.model.path) from None
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MlxSqlError(f"cannot read config.json: {exc}", path) from None


def sequence_lengths(recipe: Recipe, encoder: Any = None) -> tuple[int, int, int]:
    """(prefix, segment, completion) token lengths of the batch that sets the peak: the data's longest, capped.

    `completion` is the longest answer (SQL and end of turn): the only positions that get logits.
    """
    cap = recipe.train.max_seq_length
    train = recipe.data_dir / "train.jsonl"
    if not train.is_file():
        prefix, segment = (cap * 3 // 4, cap // 4) if recipe.train.batching == "schema_shared" else (0, cap)
        return prefix, segment, min(segment, 128)
    from mlx_sql.data.examples import QUESTION_HEADER
    from mlx_sql.data.jsonl import iter_jsonl

    longest_prefix, longest_segment, longest_completion = 0, 0, 0
    for _, r in iter_jsonl(train, strict=False):
        if encoder is not None:
            e = encoder.encode(r)
            p, s, c = len(e.prefix), len(e.segment), len(e.segment) - e.completion_start
        else:  # no tokenizer at hand: ~3 characters a token, plus the chat template's own tokens
            schema, _, question = r["input"].partition(QUESTION_HEADER)
            p, s = (len(r["instruction"]) + len(schema)) // 3 + 16, (len(question) + len(r["output"])) // 3 + 16
            c = len(r["output"]) // 3 + 4
        longest_prefix, longest_segment = max(longest_prefix, p), max(longest_segment, s)
        longest_completion = max(longest_completion, c)
    longest_prefix = min(longest_prefix, cap - min(longest_segment, cap))
    completion = min(longest_completion, cap)
    if recipe.train.batching == "unshared":
        return 0, min(cap, longest_prefix + longest_segment), completion
    return longest_prefix, min(longest_segment, cap), completion


def batch_shapes(recipe: Recipe, encoder: Any) -> set[tuple[int, int, int, int]]:
    """(rows, prefix, longest segment, completion tokens) of every batch of the first epoch, as the trainer
    cuts and truncates them: the peak is set by one real batch, not by the longest parts of different ones."""
    from mlx_sql.train.batches import BatchPlan

    t = recipe.train
    shared, cap = t.batching == "schema_shared", t.max_seq_length
    plan = BatchPlan(recipe.data_dir / "train.jsonl", t.batch_size, shared, t.seed, strict=False)
    out = set()
    for records in plan.epoch(0):
        encoded = [e for e in (encoder.encode(r) for r in records) if len(e.segment) < cap]
        if not encoded:
            continue
        completion = sum(len(e.segment) - e.completion_start for e in encoded)
        segment = max(len(e.segment) for e in encoded)
        if shared:
            out.add((len(encoded), min(len(encoded[0].prefix), cap - segment), segment, completion))
        else:
            longest = max(min(len(e.prefix), cap - len(e.segment)) + len(e.segment) for e in encoded)
            out.add((len(encoded), 0, longest, completion))
    return out


def adapted_layers(shape: Shape, t: Any) -> int:
    """Blocks that carry adapters (the last `num_layers`; -1 = all)."""
    return shape.layers if t.num_layers == -1 else min(t.num_layers, shape.layers)


def trainable_parameters(shape: Shape, t: Any) -> int:
    """Parameters the optimizer updates: also the float32 gradient each rank all-reduces every step."""
    blocks = range(shape.layers - adapted_layers(shape, t), shape.layers)
    if t.method == "full":
        return sum(shape.layer_params(b) for b in blocks)
    return sum(t.rank * (i + o) + (o if t.method == "dora" else 0)
               for b in blocks for k, (i, o) in shape.block_projections(b) if k in t.target_modules)


def estimate(shape: Shape, recipe: Recipe, prefix: int, segment: int, completion: int | None = None,
             rows: int | None = None, logit_tokens: int | None = None, kept_prefixes: int = 0) -> Plan:
    """Peak memory of one step of `rows` examples (default: the batch size). Backward runs only through the
    layers that carry adapters, so only their activations are kept; logits exist only at the completion
    positions (the loss): `logit_tokens` of them, or `completion` per row. `kept_prefixes`: prefixes whose
    keys/values (every layer's) are held across the step (GRPO's sampler and reference)."""
    t, m = recipe.train, recipe.model
    dtype_bytes = BYTES[default_dtype(m) if m.dtype == "auto" else m.dtype]
    weights = shape.embedding_params() * dtype_bytes
    for block in range(shape.layers):
        layer_w = shape.layer_params(block)
        if m.quantize:
            linear = sum(i * o for _, (i, o) in shape.block_projections(block))
            weights += linear * m.quantize / 8 + 2 * linear / QUANT_GROUP * dtype_bytes \
                + (layer_w - linear) * dtype_bytes
        else:
            weights += layer_w * dtype_bytes

    layers = adapted_layers(shape, t)
    trainable_params = trainable_parameters(shape, t)
    trainable = trainable_params * 4 * 2  # weights (float32) + gradients
    optimizer = trainable_params * 4 * 2  # AdamW first and second moments

    batch = rows or t.batch_size
    if logit_tokens is None:
        logit_tokens = batch * min(segment, completion if completion is not None else segment)
    saved_per_token = 10 * shape.hidden + 3 * shape.heads * shape.head_dim + 2 * shape.kv_heads * shape.head_dim \
        + 4 * shape.intermediate
    act = dtype_bytes  # activations live in the compute dtype (float32 on a CPU, bfloat16 on a Mac GPU)

    def layer_activations(rows: list[tuple[int, int, int]]) -> float:
        return sum(b * n * (LINEAR_FACTOR * saved_per_token + ATTENTION_FACTOR * shape.heads * keys) * act
                   for b, n, keys in rows)

    logits = logit_tokens * shape.vocab * 4 * LOGIT_FACTOR  # logits, log-softmax, their gradients
    if shape.encoder_layers:  # T5: the prompt runs through the encoder, the SQL through the decoder
        target = max(1, logit_tokens // batch) + 1  # decoder start token + the SQL
        source = max(1, segment - target + 1)
        decoder_layers = shape.layers - shape.encoder_layers
        encoder_adapted = max(0, layers - decoder_layers)  # backward reaches the encoder only if adapters do
        activations = (encoder_adapted * layer_activations([(batch, source, source)])
                       + min(layers, decoder_layers) * layer_activations([(batch, target, target + source)]))
        if encoder_adapted == 0 and layers:  # the encoder's output is still kept: cross-attention reads it
            activations += batch * source * shape.hidden * act
        # one encoder layer's scores, biased and softmaxed, exist together in its forward (and its backward):
        # measured, adapters in the encoder or not
        activations += TRANSIENT_ATTENTION * batch * shape.heads * source * source * act
        return Plan(weights, trainable, optimizer, activations, logits, batch * (source + target))
    rows = [(1, prefix, prefix), (batch, segment, prefix + segment)] if prefix else [(batch, segment, segment)]
    kept = kept_prefixes * 2 * shape.layers * prefix * shape.kv_heads * shape.head_dim * act
    per_layer_act = layer_activations(rows)
    if prefix:  # each segment row gets its own copy of the prefix keys and values, joined to its own
        per_layer_act += 2 * batch * (prefix + segment) * shape.kv_heads * shape.head_dim * act
    # Unshared batches (attention under MLX's "causal" mask) hold two more copies of one layer's attention
    # scores while backward runs through it; measured, not seen with the shared prefix's explicit masks.
    transient = 0.0 if prefix else TRANSIENT_ATTENTION * sum(b * n * shape.heads * keys * act for b, n, keys in rows)
    if t.grad_checkpoint and t.batching == "unshared":  # see trainer.checkpointing_applies
        # block inputs kept for every layer; in backward one block is recomputed while the
        # next one's gradients are live, so about two blocks' activations exist at once
        activations = layers * sum(b * n * shape.hidden * act for b, n, _ in rows) + 2 * per_layer_act + transient
    else:
        activations = layers * per_layer_act + transient
    activations += kept
    return Plan(weights, trainable, optimizer, activations, logits, sum(b * n for b, n, _ in rows))


def machine_memory() -> float:
    """This machine's memory, or MLX_SQL_MEMORY_GB to plan for another (e.g. 8 for an 8 GB Mac)."""
    import os

    from mlx_sql.doctor import memory_bytes

    override = os.environ.get("MLX_SQL_MEMORY_GB")
    if not override:
        return float(memory_bytes()[0])
    try:
        gb = float(override)
    except ValueError:
        gb = float("nan")
    if not 0 < gb <= 100_000:
        raise MlxSqlError(f"MLX_SQL_MEMORY_GB={override!r}: expected a machine's memory in GB, e.g. 8 or 16")
    return gb * GB


def check_fits(recipe: Recipe) -> Plan:
    """Raise a one-line error when the plan says the run won't fit this machine."""
    plan, verdict, advice = make_plan(recipe)
    if verdict[0].status == "won't fit":
        hint = f"; try {' or '.join(advice)}" if advice else ""
        raise MlxSqlError(f"memory plan: needs ~{plan.total / GB:.2f} GB, this machine has "
                          f"{verdict[0].memory / GB:.2f} GB (won't fit){hint}; --force to run anyway",
                          recipe.source)
    return plan


def verdicts(plan: Plan, this_machine: float, mac_plan: Plan | None = None) -> list[Verdict]:
    """This machine's verdict from `plan`; the Macs' from `mac_plan` (the dtype a Mac would train in)."""
    out = []
    for name, memory in [("this machine", this_machine), *MACS.items()]:
        peak = (plan if name == "this machine" or mac_plan is None else mac_plan).total
        share = peak / memory
        status = "fits" if share <= TIGHT_SHARE else "tight" if share <= USABLE_SHARE else "won't fit"
        out.append(Verdict(name, memory, status, peak))
    return out


@dataclass
class PeakContext:
    """What every estimate of one recipe starts from: the model's shape and the batch that sets the peak."""
    shape: Shape
    peak: dict[str, Any]  # estimate() keywords of the worst batch
    lengths: tuple[int, int, int]  # (prefix, segment, completion) of the longest parts, for "what if" estimates


def peak_context(recipe: Recipe) -> PeakContext:
    from mlx_sql.models.sources import local_model_folder

    shape = Shape.from_config(model_config(recipe))
    encoder = None
    folder = local_model_folder(recipe.model)
    if folder is not None:  # a tokenizer on disk is cheap to load
        from mlx_sql.models.tokenizer import load_folder_tokenizer
        from mlx_sql.train.encode import Encoder

        encoder = Encoder(load_folder_tokenizer(folder))
    prefix, segment, completion = sequence_lengths(recipe, encoder)
    peak = step_shape(recipe, prefix, segment, completion)
    if recipe.train.objective != "grpo" and encoder is not None and (recipe.data_dir / "train.jsonl").is_file():
        shapes = [dict(prefix=p, segment=s, rows=n, logit_tokens=c) for n, p, s, c in batch_shapes(recipe, encoder)]
        peak = max(shapes, key=lambda k: estimate(shape, recipe, **k).total, default=peak)
    return PeakContext(shape, peak, (prefix, segment, completion))


def step_shape(recipe: Recipe, prefix: int, segment: int, completion: int) -> dict[str, int]:
    """estimate() keywords of a step on examples of these lengths, for the recipe's objective: a GRPO step's rows
    are a question's group whatever the batch size (its questions run one after another)."""
    if recipe.train.objective == "grpo":
        return grpo_peak(recipe, prefix, segment, completion)
    return dict(prefix=prefix, segment=segment, completion=completion)


def grpo_peak(recipe: Recipe, prefix: int, segment: int, completion: int) -> dict[str, int]:
    """A GRPO step's largest batch: one question's group, every answer at grpo_max_tokens (and its end of turn),
    the longest question's prompt shared once. Its sampling holds less (no activations kept, freed before
    the loss); the reference pass with the adapter off keeps none either, only the keys/values of the prefixes
    it reuses (and the sampler its own), at most the longest prompt's length each."""
    from mlx_sql.train.grpo import REFERENCE_PREFIXES

    t = recipe.train
    answer = t.grpo_max_tokens + 1
    question = max(1, segment - completion)
    return dict(prefix=prefix, segment=min(question + answer, t.max_seq_length), rows=t.grpo_group,
                logit_tokens=t.grpo_group * answer, kept_prefixes=1 + (REFERENCE_PREFIXES if t.grpo_kl > 0 else 0))


def with_changes(recipe: Recipe, **sections: dict[str, Any]) -> Recipe:
    """The recipe with some of its [model]/[train] keys replaced (what `--set` would do)."""
    return dataclasses.replace(recipe, **{s: dataclasses.replace(getattr(recipe, s), **v)
                                          for s, v in sections.items()})


def mac_recipe(recipe: Recipe) -> Recipe:
    """The recipe as a Mac runs it: bfloat16 where it says auto (this CPU uses float32)."""
    if recipe.model.dtype != "auto":
        return recipe
    return with_changes(recipe, model=dict(dtype="bfloat16"))


def make_plan(recipe: Recipe) -> tuple[Plan, list[Verdict], list[str]]:
    """The estimate, its verdicts, and which single changes bring it under this machine's limit."""
    ctx = peak_context(recipe)
    shape, peak = ctx.shape, ctx.peak
    prefix, segment, completion = ctx.lengths
    plan = estimate(shape, recipe, **peak)
    memory = machine_memory()
    advice = []
    if plan.total > TIGHT_SHARE * memory:
        t = recipe.train
        if t.objective == "grpo":  # a step holds one question's group at a time: its size and length decide
            first = [(f"train.grpo_group={max(2, t.grpo_group // 2)}", dict(grpo_group=max(2, t.grpo_group // 2))),
                     (f"train.grpo_max_tokens={max(1, t.grpo_max_tokens // 2)}",
                      dict(grpo_max_tokens=max(1, t.grpo_max_tokens // 2)))]
        else:
            first = [("train.batch_size=1", dict(batch_size=1)), ("train.grad_checkpoint=true", dict(grad_checkpoint=True))]
        options = [(text, dict(train=change)) for text, change in first] + [
            (f"train.max_seq_length={t.max_seq_length // 2}", dict(train=dict(max_seq_length=t.max_seq_length // 2))),
            ("model.quantize=4", dict(model=dict(quantize=4))),
            ("train.rank=4", dict(train=dict(rank=4)))]
        for text, change in options:
            changed = with_changes(recipe, **change)
            p, s = (prefix, segment) if "max_seq_length" not in text else (min(prefix, t.max_seq_length // 4),
                                                                             min(segment, t.max_seq_length // 2))
            if estimate(shape, changed, **step_shape(changed, p, s, min(completion, s))).total <= TIGHT_SHARE * memory:
                advice.append(f"--set {text}")
    mac_plan = estimate(shape, mac_recipe(recipe), **peak) if recipe.model.dtype == "auto" else None
    return plan, verdicts(plan, memory, mac_plan), advice


# Nominal link rates, bytes/s: what a ring over each link could move at best (real links give less).
LINKS = {"1 Gb Ethernet": 0.125e9, "10 Gb Ethernet": 1.25e9, "Thunderbolt 4 (40 Gb/s)": 5e9}


@dataclass
class ClusterPlan:
    """What `mlx.launch -n machines` of one machine size can run of a recipe, data-parallel."""
    machines: int
    memory: float  # of each machine
    micro_batch: int  # rows per micro-batch on each rank: what keeps the recipe's global batch, if it fits
    grad_accumulation: int  # per rank, chosen to keep the recipe's global batch
    global_batch: int  # micro_batch x grad_accumulation x machines
    recipe_batch: int  # the recipe's own global batch (batch_size x grad_accumulation, one process)
    peak: float  # each rank's predicted peak: a rank holds one micro-batch at a time, like one process
    status: str  # fits | tight | won't fit (with micro-batch 1)
    gradient_bytes: int  # float32 gradients all-reduced once a step
    steps_per_epoch: int | None  # optimizer steps an epoch of train.jsonl takes (None without the data)

    @property
    def ring_bytes(self) -> float:
        """Bytes each machine sends (and receives) per step in a ring all-reduce: 2 (N-1)/N of the gradient."""
        return 2 * (self.machines - 1) / self.machines * self.gradient_bytes


def cluster_plan(recipe: Recipe, machines: int, memory: float, mac: bool = True) -> ClusterPlan:
    """Per-rank memory for N machines of `memory` bytes each, the largest micro-batch that fits each rank,
    the accumulation that keeps the recipe's global batch, and the gradient bytes a step all-reduces."""
    if machines < 1:
        raise MlxSqlError(f"--machines must be at least 1, not {machines}", recipe.source)
    t = recipe.train
    ctx = peak_context(recipe)
    target = mac_recipe(recipe) if mac else recipe
    prefix, segment, completion = ctx.lengths

    def rank_peak(rows: int) -> float:
        if rows == t.batch_size:
            return estimate(ctx.shape, target, **ctx.peak).total
        changed = with_changes(target, train=dict(batch_size=rows))
        return estimate(ctx.shape, changed, **step_shape(changed, prefix, segment, completion)).total

    wanted = t.batch_size * t.grad_accumulation  # the recipe's global batch: keep it where the ranks allow
    largest = next((rows for rows in range(t.batch_size, 0, -1) if rank_peak(rows) <= USABLE_SHARE * memory), 1)
    micro = min(largest, max(1, math.ceil(wanted / machines)))
    peak = rank_peak(micro)
    share = peak / memory
    status = "fits" if share <= TIGHT_SHARE else "tight" if share <= USABLE_SHARE else "won't fit"
    accumulation = max(1, math.ceil(wanted / (micro * machines)))
    steps = None
    train_file = recipe.data_dir / "train.jsonl"
    if train_file.is_file():
        from mlx_sql.train.batches import BatchPlan

        batches = BatchPlan(train_file, micro, t.batching == "schema_shared", t.seed, strict=False).batches_per_epoch()
        steps = max(1, math.ceil(math.ceil(batches / machines) / accumulation)) if batches else 0
    return ClusterPlan(machines, memory, micro, accumulation, micro * accumulation * machines, wanted, peak, status,
                       4 * trainable_parameters(ctx.shape, t), steps)


def refuse_eval_only(recipe: Recipe) -> None:
    """One line for `train` and `plan` on a recipe marked `model.eval_only`, with the plan's figures for an
    8 GB Mac when the model's config is at hand (an Ollama model's GGUF blob is read, not loaded)."""
    if not recipe.model.eval_only:
        return
    mac_gb = MACS["8 GB Mac"]
    try:
        ctx = peak_context(recipe)
    except MlxSqlError as exc:
        figures = f"its memory plan needs the model's config ({exc})"
    else:
        mac = mac_recipe(recipe)
        prefix, segment, completion = ctx.lengths
        lora = estimate(ctx.shape, mac, **ctx.peak).total
        qlora = estimate(ctx.shape, with_changes(mac, model=dict(quantize=4), train=dict(batch_size=1)), prefix,
                         segment, completion).total
        figures = (f"on an 8 GB Mac LoRA needs ~{lora / GB:.1f} GB and 4-bit QLoRA at batch 1 ~{qlora / GB:.1f} GB, "
                   f"of the ~{USABLE_SHARE * mac_gb / GB:.0f} GB a process gets")
    raise MlxSqlError(f"'{recipe.name}' is for evaluation only (model.eval_only = true): {figures}; evaluate it "
                      "with `mlx-sql eval --recipe`, finetune a model that fits (recipes/qwen2.5-coder-1.5b.toml as "
                      "QLoRA), or on a bigger Mac --set model.eval_only=false --set model.quantize=4", recipe.source)
