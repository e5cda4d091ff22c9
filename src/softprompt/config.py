"""Configuration as data: one dataclass per command, with the paper's defaults and a help text.

The CLI's options are generated from these dataclasses (:mod:`softprompt.cli`) and YAML files are
checked against them, so there is no second list of options to drift.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .modeling import DEFAULT_MODEL
from .value_types import KINDS, describe, fits


def opt(default: Any, help: str, choices: tuple | None = None, positional: bool = False, **kw) -> Any:
    """A config field with its help text (and optional choices) kept beside its default."""
    meta = {"help": help, "choices": choices, "positional": positional}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def field_default(f: dataclasses.Field) -> Any:
    """The default value of a config field made by :func:`opt` (a fresh copy for lists and dicts)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


@dataclass
class DataConfig:
    """Where examples come from: a built-in task or your own files."""

    task: str = opt("rotten_tomatoes", "built-in task name (see `softprompt tasks`), or a name for your own files")
    data_dir: str | None = opt(None, "folder holding <task>/<split>.jsonl (default: $SOFTPROMPT_DATA_DIR, the bundled copy, then the HF hub)")
    train_file: str | None = opt(None, "your own training file (.jsonl, .csv or .tsv)")
    validation_file: str | None = opt(None, "your own dev file (.jsonl, .csv or .tsv)")
    test_file: str | None = opt(None, "your own test file (.jsonl, .csv or .tsv)")
    template: str | None = opt(None, "template with {field} slots (and {mask} for masked LMs); \\n is a line break, e.g. 'Review: {text}\\nSentiment:'")
    label_words: str | None = opt(None, "verbalizer, e.g. 'positive=great,good;negative=terrible', or 'choices:FIELD' for multiple choice (each row lists its candidates in FIELD); prefixed 'shared:' a word may stand for several labels, 'learned:' the word weights are trained, and 'answer-vectors:LABEL,LABEL' trains one vector per label")
    field_map: str | None = opt(None, "map our field names to your columns, e.g. 'text=sentence,label=sentiment'")
    max_length: int = opt(512, "longest input in tokens (prompt included); longer texts are truncated (longest field, from its end)")


@dataclass
class TrainConfig(DataConfig):
    """Options of ``softprompt train`` (defaults follow Lester et al., 2021 where it gives one)."""

    model: str = opt(DEFAULT_MODEL, "embedded model name, local model directory or Hugging Face id")
    method: str = opt("prompt-tuning", "training method (see softprompt.methods.METHODS)")
    prompt_length: int = opt(100, "number of soft prompt vectors (the paper's default: 100)")
    method_options: str | None = opt(None, "settings of the method's own config as key=value pairs, e.g. 'hidden=512,shots=4' (see `softprompt methods`)")
    init: str = opt("class-labels", "initialiser: random-uniform, vocab, class-labels, text:WORDS, file:PATH, pretrained:PATH")
    optimizer: str | None = opt(None, "optimizer (default: the method's: Adafactor with no relative step or parameter scaling for prompt tuning, as the paper; Adam for full and prefix tuning)", ("adafactor", "adam"))
    lr: float | None = opt(None, "learning rate (default: the method's: for prompt tuning 0.075 x the RMS of the model's embedding entries, 0.01 on SmolLM2 (the paper's T5 setting is --lr 0.3); 1e-5 for full tuning; 1e-3 for prefix tuning)")
    weight_decay: float = opt(1e-5, "weight decay (the paper: 1e-5)")
    warmup_steps: int = opt(0, "linear learning-rate warmup steps, then constant")
    batch_size: int = opt(8, "training batch size (the paper: 32)")
    eval_batch_size: int = opt(32, "evaluation batch size")
    max_steps: int = opt(1000, "training steps (the paper: 30,000 on TPUs)")
    eval_every: int = opt(100, "evaluate on the dev split and checkpoint every N steps")
    patience: int = opt(5, "stop after this many evaluations without improvement (0: never)")
    train_limit: int | None = opt(None, "use only the first N training rows")
    shots: int | None = opt(None, "few-shot: train on K rows sampled (per --seed) from the train split; unless --dev-from-train is set, another K rows are the dev set for early stopping")
    dev_from_train: int | None = opt(None, "hold out N training rows (sampled per --seed) as the dev set; the validation split then serves as the final evaluation when the task has no --test-split")
    eval_limit: int | None = opt(None, "evaluate on the first N dev rows during training")
    test_limit: int | None = opt(None, "evaluate on the first N test rows at the end")
    loss: str = opt("rank", "rank: cross-entropy over the labels' scores; lm: the label's token likelihood", ("rank", "lm"))
    scoring: str = opt("rank", "how dev/test are scored: rank classification or greedy generation", ("rank", "generate"))
    length_normalize: bool = opt(False, "divide a multi-token label's log-likelihood by its token count")
    word_scoring: str = opt("exact", "score a multi-token label word by all its tokens (exact) or by its first token alone (first-token: one position per row)", ("exact", "first-token"))
    seed: int = opt(0, "random seed (initialisation and data order)")
    out: str = opt("runs/default", "output directory: best/, last/, checkpoint/, metrics.jsonl, results.json")
    resume: bool = opt(False, "continue an interrupted run in --out from its last checkpoint")
    overwrite: bool = opt(False, "start afresh even if --out already holds a run (its checkpoint is discarded)")
    test_split: str = opt("test", "split evaluated at the end with the best prompt ('' to skip)")
    zero_shot_baseline: bool = opt(True, "also evaluate the template and verbalizer with no prompt on the test split")
    device: str | None = opt(None, "torch device (default: cuda if available, else cpu)")
    dtype: str = opt("float32", "model weights dtype", ("float32", "bfloat16", "float16"))
    mixed_precision: str = opt("no", "run the model's matrix products in bf16/fp16 (torch autocast) while the weights, the prompt and the optimizer stay in float32: about 2x faster on CPUs with AVX512-BF16 and on GPUs; full tuning stays exact where --dtype bfloat16 would round small updates away", ("no", "bf16", "fp16"))
    device_map: str | None = opt(None, "shard a frozen model too big for one device: 'auto' or a JSON mapping of module names to devices ('disk' offloads)")
    offload_folder: str | None = opt(None, "folder for weights that --device-map puts on 'disk'")
    progress: bool = opt(True, "show a progress bar")

    def __post_init__(self):
        at_least_one(self, "prompt_length", "batch_size", "eval_batch_size", "max_steps", "eval_every", "shots",
                     "dev_from_train")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")


_SAVED = "(default: what the prompt was trained with, else {})"


@dataclass
class EvalConfig:
    """Options of ``softprompt eval``. Scoring options left unset (None) take what the prompt
    was trained with (:class:`softprompt.api.ScoringSettings`)."""

    prompt: str | None = opt(None, "saved prompt directory (omit for the zero-shot baseline with --task and --model)")
    task: str | None = opt(None, "task to evaluate on (default: the prompt's own task; another name = domain transfer)")
    split: str = opt("test", "split to evaluate")
    data_dir: str | None = opt(None, "folder holding <task>/<split>.jsonl")
    file: str | None = opt(None, "evaluate on this file instead of a split (.jsonl, .csv or .tsv)")
    field_map: str | None = opt(None, "map our field names to your columns, e.g. 'text=sentence,label=sentiment'")
    template: str | None = opt(None, "template with {field} slots instead of the task's, e.g. 'Review: {text}\\nSentiment:' (with --label-words and --file: your own data, zero-shot)")
    label_words: str | None = opt(None, "verbalizer instead of the task's, e.g. 'positive=great,good;negative=terrible', or 'choices:FIELD'")
    model: str | None = opt(None, "model (default: the one the prompt was trained for)")
    batch_size: int = opt(32, "evaluation batch size")
    scoring: str | None = opt(None, "rank classification or greedy generation " + _SAVED.format("rank"), ("rank", "generate"))
    length_normalize: bool | None = opt(None, "divide a multi-token label's log-likelihood by its token count " + _SAVED.format("no"))
    word_scoring: str | None = opt(None, "score a multi-token label word by all its tokens or its first token alone " + _SAVED.format("exact"), ("exact", "first-token"))
    limit: int | None = opt(None, "evaluate on the first N rows only")
    max_length: int | None = opt(None, "longest input in tokens (prompt included) " + _SAVED.format(512))
    device: str | None = opt(None, "torch device")
    mixed_precision: str = opt("no", "score in bf16/fp16 under torch autocast (weights stay as loaded)", ("no", "bf16", "fp16"))
    progress: bool = opt(True, "show a progress bar")

    def __post_init__(self):
        at_least_one(self, "batch_size", "limit", "max_length")


@dataclass
class PredictConfig:
    """Options of ``softprompt predict``. Scoring options left unset (None) take what the prompt
    was trained with (:class:`softprompt.api.ScoringSettings`)."""

    texts: list = opt([], "texts to classify (a JSON object per input for multi-field templates; '-' reads lines from stdin)", positional=True)
    prompt: str | None = opt(None, "saved prompt directory (omit to classify zero-shot with --task, or --template and --label-words)")
    task: str | None = opt(None, "built-in task whose template and verbalizer to use (default: the prompt's own)")
    template: str | None = opt(None, "template with {field} slots instead of the task's, e.g. 'Review: {text}\\nSentiment:'")
    label_words: str | None = opt(None, "verbalizer instead of the task's, e.g. 'positive=great,good;negative=terrible', or 'choices:FIELD'")
    field_map: str | None = opt(None, "map our field names to the keys of JSON inputs, e.g. 'text=sentence'")
    model: str | None = opt(None, "model (default: the one the prompt was trained for)")
    batch_size: int = opt(32, "batch size")
    scoring: str | None = opt(None, "rank classification or greedy generation " + _SAVED.format("rank"), ("rank", "generate"))
    length_normalize: bool | None = opt(None, "divide a multi-token label's log-likelihood by its token count " + _SAVED.format("no"))
    word_scoring: str | None = opt(None, "score a multi-token label word by all its tokens or its first token alone " + _SAVED.format("exact"), ("exact", "first-token"))
    max_length: int | None = opt(None, "longest input in tokens (prompt included) " + _SAVED.format(512))
    device: str | None = opt(None, "torch device")
    json: bool = opt(False, "print one JSON object per input")

    def __post_init__(self):
        at_least_one(self, "batch_size", "max_length")


@dataclass
class InspectConfig:
    """Options of ``softprompt inspect`` (its upper bound on ``k``, the vocabulary size, is
    checked once the model is known: :func:`check_k`)."""

    prompt: str = opt("", "saved prompt directory", positional=True)
    k: int = opt(5, "neighbours per position")
    model: str | None = opt(None, "model (default: the one the prompt was trained for)")
    json: bool = opt(False, "one JSON object per position")

    def __post_init__(self):
        at_least_one(self, "k")

    def check_k(self, vocab_size: int) -> None:
        """Raise :class:`ConfigError` when ``k`` exceeds the model's ``vocab_size`` tokens."""
        if self.k > vocab_size:
            raise ConfigError(f"--k must be at most the model's vocabulary size ({vocab_size}), got {self.k}")


def at_least_one(config, *names: str) -> None:
    """Raise :class:`ConfigError`, naming the option, when one of ``names`` (whole numbers, or None
    where the field allows it) is below 1."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names (dashes or underscores) to values."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build(cls, values: dict[str, Any], source: str | Path | None = None):
    """Make ``cls`` from ``values`` (read from the YAML file ``source``, if given), naming any
    unknown option and the valid ones, and any value of the wrong type (:func:`check_types`)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {source}" if source else ""
        raise ConfigError(f"unknown option(s) {unknown}{where} for {cls.__name__}; valid: {sorted(known)}")
    check_types(cls, values, source)
    return cls(**values)


_YAML_KINDS = {**KINDS, list: "a list", dict: "a mapping"}


def check_types(cls, values: dict[str, Any], source: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` for a value in ``values`` that does not fit its field of the
    dataclass ``cls`` (5 for a text, true for a number, a list for a text): nothing is converted.
    The message names the key and, when given, the YAML file ``source`` it came from."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(key)
        if tp is None or fits(value, tp):
            continue
        wants = [t for t in typing.get_args(tp) or (tp,) if t is not type(None)]
        want = " or ".join(describe(t, _YAML_KINDS) for t in wants)
        if type(None) in typing.get_args(tp):
            want += " (or null)"
        name = f"option {key!r} in {source}" if source else f"--{key.replace('_', '-')}"
        raise ConfigError(f"{name} must be {want}, got {type(value).__name__} {value!r}")


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)
