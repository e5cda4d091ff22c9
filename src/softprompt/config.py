"""Configuration as data: one dataclass per command, with the paper's defaults and a help text.

Every ``softprompt`` command's options are the fields of one dataclass here: ``train``
(:class:`TrainConfig`), ``eval``, ``predict``, ``inspect``, ``serve``, ``pretrain-prompt``,
``experiment``, ``export-peft``, ``import-peft`` and ``tasks`` (:data:`COMMAND_CONFIGS`). Options
that several commands share are written once, in a small dataclass that those commands' configs
inherit: :class:`ModelOptions` (the frozen model and its device), :class:`TaskFormat` (a template,
label words and a field map in place of the task's), :class:`MetricOptions` (what ``train`` and
``eval`` report), :class:`DataConfig` (where examples come from), :class:`RunOptions` (what
``train`` and ``pretrain-prompt`` share: the model, the prompt, the optimiser, the loop, the
output folder) and :class:`ScoringOptions` (what ``eval`` and
``predict`` share: the saved prompt and how it scores). A command that needs another default for
a shared field redeclares that field alone; one that needs other words for its help gives them in
:data:`COMMAND_HELP`, so the field is still written once. Every command that loads a model or
loops over rows has ``--progress/--no-progress`` (:class:`ProgressOptions`).

The CLI's options are generated from these dataclasses (:mod:`softprompt.arguments`) and YAML
files are checked against them, so there is no second list of options to drift.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError, with_suggestions
from .modeling import DEFAULT_MODEL
from .value_types import KINDS, describe, fits


def opt(default: Any, help: str, choices: tuple | None = None, positional: bool = False, *,
        required: bool = False, metavar: str | None = None, group: str | None = None, resume: str | None = None,
        **kw) -> Any:
    """A config field with its help text (and optional choices) kept beside its default.

    ``positional``: a command-line argument without a ``--flag`` (a list field takes any number);
    ``required``: an option the command line must give (the dataclass still takes ``default``, for
    its own check); ``metavar``: the name shown for the value in ``--help``; ``group``: the options
    that are read together, e.g. :data:`KNOWLEDGEABLE` (listed by :func:`options_in`); ``resume``:
    what ``--resume`` does with the option (:data:`RESUME_KEPT`, :data:`RESUME_DEFAULT`, or None:
    as given; :func:`resumed_config`)."""
    meta = {"help": help, "choices": choices, "positional": positional, "required": required, "metavar": metavar,
            "group": group, "resume": resume}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


RESUME_KEPT = "kept"
"""An option that defines a run (its method, model, task, prompt length, initialiser, optimiser,
seed, ...): ``--resume`` keeps the run's value, takes it when the option is left out, and refuses
another (:func:`resumed_config`)."""
RESUME_DEFAULT = "default"
"""An option a resumed run may change but need not repeat: where its data is (``--data-dir``,
``--train-file``: the same data moved), how long it trains and how it evaluates (``--max-steps``,
``--eval-every``, ``--patience``, ...). ``--resume`` takes the run's value when the option is left
out, the one given otherwise. Options marked neither (``--device``, ``--progress``, ``--out``)
are as given."""

KNOWLEDGEABLE = "knowledgeable"
"""The group of options (:func:`opt`'s ``group``) that only ``--verbalizer knowledgeable`` reads:
KPT's refinement, calibration and expansion (docs/kpt.md)."""


def options_in(cls, group: str) -> tuple[str, ...]:
    """The names of the fields of the dataclass ``cls`` that :func:`opt` put in ``group``, in field order."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("group") == group)


def field_default(f: dataclasses.Field) -> Any:
    """The default value of a config field made by :func:`opt` (a fresh copy for lists and dicts)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


# --------------------------------------------------------------------------- shared groups
@dataclass
class ProgressOptions:
    """What every command that loads a model or loops over rows shares: whether it draws progress
    bars. ``--no-progress`` hides them all, the model's loading bars too
    (:func:`softprompt.modeling.progress_bars`)."""

    progress: bool = opt(True, "show progress bars (loading the model, and the work over rows)")


@dataclass
class ModelOptions(ProgressOptions):
    """The frozen model and where it runs (commands that read a saved prompt: the prompt's model)."""

    model: str | None = opt(None, "model: an embedded name, a local model directory or a Hugging Face id (default: the one the prompt was trained for)")
    device: str | None = opt(None, "torch device, e.g. cuda:1 or cpu (default: cuda if available, else cpu)")


@dataclass
class TaskFormat:
    """The task's format replaced: how a row becomes text and a label becomes words."""

    template: str | None = opt(None, "template with {field} slots instead of the task's, {mask} or {mask:name} answer slots and {soft*N} learnt virtual tokens (docs/templates.md); \\n is a line break, e.g. 'Review: {text}\\nSentiment:'", resume=RESUME_KEPT)
    label_words: str | None = opt(None, "verbalizer instead of the task's, e.g. 'positive=great,good;negative=terrible', or 'choices:FIELD' for multiple choice (each row lists its candidates in FIELD); prefixed 'shared:' a word may stand for several labels, 'learned:' the word weights are trained, 'answer-vectors:LABEL,LABEL' trains one vector per label, and 'rules:FILE' (or rules:semeval) scores PTR's rules, one word per answer slot (docs/relations.md)", resume=RESUME_KEPT)
    field_map: str | None = opt(None, "map our field names to your columns (or the keys of JSON inputs), e.g. 'text=sentence,label=sentiment'", resume=RESUME_KEPT)
    # KPT's knowledgeable verbalizer (Hu et al., 2022; docs/kpt.md): the options in group KNOWLEDGEABLE are read
    # only with --verbalizer knowledgeable (train also has --learn-word-weights)
    label_words_file: str | None = opt(None, "label words from a file instead of --label-words: .txt (KPT's format: line i = the i-th label's words, comma-separated, class name first), .csv (label,word,word,...) or .json ({label: [words]})", resume=RESUME_DEFAULT)
    verbalizer: str = opt("auto", "auto: the kind --label-words' prefix names (a --label-words-file makes plain multi-word labels); knowledgeable: KPT's verbalizer, its words (the file's, --label-words', or the model's embedding neighbours of each class name) refined and calibrated on unlabelled training inputs", ("auto", "knowledgeable"), resume=RESUME_KEPT)
    refine: str = opt("frequency,relevance", "knowledgeable: KPT's refinements to apply, a comma list of frequency, relevance (or none)", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    calibrate: bool = opt(True, "knowledgeable: divide each word's probability by its contextual prior (KPT's contextualized calibration)", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    frequency_cutoff: float = opt(0.5, "knowledgeable: fraction of all words dropped by frequency refinement, lowest contextual prior first (KPT: 0.5; 0 for IMDB)", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    relevance_threshold: float = opt(1.0, "knowledgeable: relevance refinement keeps words whose tf-idf-like relevance to their class name is at least this", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    support_size: int = opt(200, "knowledgeable: unlabelled training inputs (sampled per seed from the whole training split) that estimate the contextual prior", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    duplicates: str = opt("remove", "knowledgeable: a word under several labels is removed from all (kept under the label whose class name it is) or shared by each", ("remove", "share"), group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    support_file: str | None = opt(None, "knowledgeable: unlabelled inputs (.jsonl, .csv or .tsv with the template's fields; labels not needed) that estimate the contextual prior (default: the training split, labels ignored)", group=KNOWLEDGEABLE, resume=RESUME_DEFAULT)
    expand: int = opt(50, "knowledgeable without a list: neighbours of each class name in the model's input embeddings to take as label words (train writes them to --out/label_words.txt; `softprompt label-words` writes them where you say)", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    entity_markers: str | None = opt(None, "relation tasks: mark the entities e1, e2 in {text}: none, tags (<e1>...</e1>) or typed (<e1:TYPE>...; rows need e1_type, e2_type) (default: the task's)", choices=("none", "tags", "typed"), resume=RESUME_KEPT)


@dataclass
class MetricOptions:
    """What a labelled evaluation reports (``train`` and ``eval``; ``predict`` labels rows and
    computes no metric, so it has no such option)."""

    metrics: str | None = opt(None, "metrics instead of the task's, comma-separated, the first picks the best checkpoint, e.g. 'semeval_f1,micro_f1_no_other,accuracy' (see softprompt.tasks.METRICS)", resume=RESUME_KEPT)


@dataclass
class DataConfig(TaskFormat, MetricOptions):
    """Where examples come from: a built-in task or your own files."""

    task: str | None = opt(None, "built-in task name (see `softprompt tasks`), or a name for your own files (default: rotten_tomatoes; with your own --train-file, named after it: reviews for reviews_train.jsonl or reviews/train.jsonl); train: several comma-separated (rte,mrpc,cb) train together, each with its own template and verbalizer, one task per batch (docs/multitask.md)", resume=RESUME_KEPT)
    data_dir: str | None = opt(None, "folder holding <task>/<split>.jsonl (default: $SOFTPROMPT_DATA_DIR, the bundled copy, then the HF hub)", resume=RESUME_DEFAULT)
    train_file: str | None = opt(None, "your own training file (.jsonl, .csv or .tsv)", resume=RESUME_DEFAULT)
    validation_file: str | None = opt(None, "your own dev file (.jsonl, .csv or .tsv)", resume=RESUME_DEFAULT)
    test_file: str | None = opt(None, "your own test file (.jsonl, .csv or .tsv)", resume=RESUME_DEFAULT)


@dataclass
class RunOptions(ModelOptions):
    """What ``train`` and ``pretrain-prompt`` share: the model, the prompt, the optimiser, the loop
    and the output folder (defaults follow Lester et al., 2021 where it gives one)."""

    model: str = opt(DEFAULT_MODEL, "embedded model name, local model directory or Hugging Face id", resume=RESUME_KEPT)
    device: str | None = opt(None, "torch device (default: cuda if available, else cpu)")
    dtype: str = opt("float32", "model weights dtype", ("float32", "bfloat16", "float16"), resume=RESUME_KEPT)
    mixed_precision: str = opt("no", "run the model's matrix products in bf16/fp16 (torch autocast) while the weights, the prompt and the optimizer stay in float32: about 2x faster on CPUs with AVX512-BF16 and on GPUs; full tuning stays exact where --dtype bfloat16 would round small updates away", ("no", "bf16", "fp16"), resume=RESUME_DEFAULT)
    max_length: int = opt(512, "longest input in tokens (prompt included); longer texts are truncated (longest field, from its end)", resume=RESUME_KEPT)
    prompt_length: int = opt(100, "number of soft prompt vectors (the paper's default: 100)", resume=RESUME_KEPT)
    init: str = opt("class-labels", "initialiser: random-uniform, vocab, class-labels, text:WORDS, file:PATH, pretrained:PATH", resume=RESUME_KEPT)
    optimizer: str | None = opt(None, "optimizer (default: the method's: Adafactor with no relative step or parameter scaling for prompt tuning, as the paper; Adam for full and prefix tuning)", ("adafactor", "adam"), resume=RESUME_KEPT)
    lr: float | None = opt(None, "learning rate (default: the method's: for prompt tuning 0.075 x the RMS of the model's embedding entries, 0.01 on SmolLM2 (the paper's T5 setting is --lr 0.3); 1e-5 for full tuning; 1e-3 for prefix tuning and adapters; 3e-4 for Hyperformer and HyperPrompt)", resume=RESUME_KEPT)
    batch_size: int = opt(8, "training batch size (the paper: 32)", resume=RESUME_KEPT)
    eval_batch_size: int = opt(32, "evaluation batch size", resume=RESUME_DEFAULT)
    max_steps: int = opt(1000, "training steps (the paper: 30,000 on TPUs)", resume=RESUME_DEFAULT)
    eval_every: int = opt(100, "evaluate on the dev split and checkpoint every N steps", resume=RESUME_DEFAULT)
    patience: int = opt(5, "stop after this many evaluations without improvement (0: never)", resume=RESUME_DEFAULT)
    length_normalize: bool = opt(False, "divide a multi-token label's log-likelihood by its token count", resume=RESUME_KEPT)
    word_scoring: str = opt("exact", "score a multi-token label word by all its tokens (exact) or by its first token alone (first-token: one position per row)", ("exact", "first-token"), resume=RESUME_KEPT)
    seed: int = opt(0, "random seed (initialisation and data order)", resume=RESUME_KEPT)
    out: str = opt("runs/default", "output directory: best/, last/, checkpoint/, metrics.jsonl, results.json")
    resume: bool = opt(False, "continue an interrupted run in --out from its last checkpoint")
    overwrite: bool = opt(False, "start afresh even if --out already holds a run (its checkpoint is discarded)")

    def __post_init__(self):
        at_least_one(self, "prompt_length", "batch_size", "eval_batch_size", "max_steps", "eval_every")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")


_SAVED = "(default: what the prompt was trained with, else {})"


@dataclass
class ScoringOptions(TaskFormat, ModelOptions):
    """What ``eval`` and ``predict`` share: the saved prompt (or none: zero-shot) and how it scores.
    Scoring options left unset (None) take what the prompt was trained with
    (:class:`softprompt.api.ScoringSettings`)."""

    prompt: str | None = opt(None, "saved prompt directory (omit for zero-shot scoring with --task, or --template and --label-words, and --model)")
    task: str | None = opt(None, "built-in task whose template and verbalizer to use (default: the prompt's own; another task's name = domain transfer)")
    batch_size: int = opt(32, "batch size")
    scoring: str | None = opt(None, "rank classification or greedy generation " + _SAVED.format("rank"), ("rank", "generate"))
    length_normalize: bool | None = opt(None, "divide a multi-token label's log-likelihood by its token count " + _SAVED.format("no"))
    word_scoring: str | None = opt(None, "score a multi-token label word by all its tokens or its first token alone " + _SAVED.format("exact"), ("exact", "first-token"))
    max_length: int | None = opt(None, "longest input in tokens (prompt included) " + _SAVED.format(512))

    def __post_init__(self):
        at_least_one(self, "batch_size", "max_length")


# --------------------------------------------------------------------------- commands
@dataclass
class TrainConfig(RunOptions, DataConfig):
    """Options of ``softprompt train`` (defaults follow Lester et al., 2021 where it gives one)."""

    task_temperature: float = opt(10.0, "multi-task runs: a batch's task is drawn with probability proportional to its training rows to the power 1/T (1: by size; the Hyperformer paper's 10: nearly even)", resume=RESUME_KEPT)
    task_sampling: str = opt("random", "multi-task runs: draw each batch's task at random with those probabilities (the paper's), or systematically: the task furthest behind its share so far, so that a short run trains every task in proportion", ("random", "systematic"), resume=RESUME_KEPT)
    method: str = opt("prompt-tuning", "training method: prompt-tuning, prefix-tuning, full-tuning, manual, in-context, knowprompt, adapter, multitask-prompt-tuning, hyperformer, hyperprompt (docs/methods.md)", resume=RESUME_KEPT)
    method_options: str | None = opt(None, "settings of the method's own config as key=value pairs, e.g. 'hidden=512,shots=4' (each method's settings: docs/methods.md)", resume=RESUME_KEPT)
    weight_decay: float = opt(1e-5, "weight decay (the paper: 1e-5)", resume=RESUME_KEPT)
    warmup_steps: int = opt(0, "linear learning-rate warmup steps, then constant", resume=RESUME_KEPT)
    train_limit: int | None = opt(None, "use only the first N training rows", resume=RESUME_KEPT)
    shots: int | None = opt(None, "few-shot: train on K rows sampled (per --seed) from the train split; unless --dev-from-train is set, another K rows are the dev set for early stopping", resume=RESUME_KEPT)
    shots_per_class: bool = opt(False, "--shots K counts rows per class: K rows of each label train (and, unless --dev-from-train, K more of each are the dev set), sampled per --seed", resume=RESUME_KEPT)
    dev_from_train: int | None = opt(None, "hold out N training rows (sampled per --seed) as the dev set; the validation split then serves as the final evaluation when the task has no --test-split", resume=RESUME_KEPT)
    eval_limit: int | None = opt(None, "evaluate on the first N dev rows during training", resume=RESUME_DEFAULT)
    test_limit: int | None = opt(None, "evaluate on the first N test rows at the end", resume=RESUME_DEFAULT)
    loss: str = opt("rank", "rank: cross-entropy over the labels' scores; lm: the label's token likelihood", ("rank", "lm"), resume=RESUME_KEPT)
    learn_word_weights: bool = opt(False, "knowledgeable: train a softmax weight per word (started uniform) with the method", group=KNOWLEDGEABLE, resume=RESUME_KEPT)
    scoring: str = opt("rank", "how dev/test are scored: rank classification or greedy generation", ("rank", "generate"), resume=RESUME_KEPT)
    test_split: str = opt("test", "split evaluated at the end with the best prompt ('' to skip)", resume=RESUME_DEFAULT)
    zero_shot_baseline: bool = opt(True, "also evaluate the template and verbalizer with no prompt on the test split (skipped where the template's virtual tokens or the verbalizer's answer vectors are learnt)", resume=RESUME_DEFAULT)
    device_map: str | None = opt(None, "shard a frozen model too big for one device: 'auto' or a JSON mapping of module names to devices ('disk' offloads)")
    offload_folder: str | None = opt(None, "folder for weights that --device-map puts on 'disk'")

    def __post_init__(self):
        super().__post_init__()
        at_least_one(self, "shots", "dev_from_train")
        if self.task is None and not self.train_file:
            self.task = "rotten_tomatoes"  # your own training file left unnamed names the task (tasks.from_config)


@dataclass
class EvalConfig(ScoringOptions, MetricOptions):
    """Options of ``softprompt eval``. Scoring options left unset (None) take what the prompt
    was trained with (:class:`softprompt.api.ScoringSettings`)."""

    split: str = opt("test", "split to evaluate")
    data_dir: str | None = opt(None, "folder holding <task>/<split>.jsonl (default: the one the saved run was trained with, where it exists here; then $SOFTPROMPT_DATA_DIR, the bundled copy, the HF hub)")
    file: str | None = opt(None, "evaluate on this file instead of a split (.jsonl, .csv or .tsv); with --template and --label-words: your own data, zero-shot")
    limit: int | None = opt(None, "evaluate on the first N rows only")
    mixed_precision: str = opt("no", "score in bf16/fp16 under torch autocast (weights stay as loaded)", ("no", "bf16", "fp16"))

    def __post_init__(self):
        super().__post_init__()
        at_least_one(self, "limit")


@dataclass
class PredictConfig(ScoringOptions):
    """Options of ``softprompt predict``. Scoring options left unset (None) take what the prompt
    was trained with (:class:`softprompt.api.ScoringSettings`)."""

    texts: list = opt([], "texts to classify (a JSON object per input for multi-field templates; '-' reads lines from stdin)", positional=True)
    json: bool = opt(False, "print one JSON object per input")


@dataclass
class InspectConfig(ModelOptions):
    """Options of ``softprompt inspect`` (its upper bound on ``k``, the vocabulary size, is
    checked once the model is known: :func:`check_k`)."""

    prompt: str = opt("", "saved prompt or method output directory", positional=True)
    k: int = opt(5, "neighbours per position")
    json: bool = opt(False, "one JSON object per position")

    def __post_init__(self):
        at_least_one(self, "k")

    def check_k(self, vocab_size: int) -> None:
        """Raise :class:`ConfigError` when ``k`` exceeds the model's ``vocab_size`` tokens."""
        if self.k > vocab_size:
            raise ConfigError(f"--k must be at most the model's vocabulary size ({vocab_size}), got {self.k}")


@dataclass
class ServeConfig(ModelOptions):
    """Serve many saved outputs (prompts, prefixes, in-context demonstrations, any method's but full
    tuning) of one frozen model over HTTP, rows of different outputs mixed in one batch."""

    prompts: str = opt("", "directory of saved prompts, one subdirectory each (and an optional ensembles.json)")
    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8000, "port to listen on")
    admin_token_env: str = opt("SOFTPROMPT_ADMIN_TOKEN", "environment variable holding the admin bearer token (admin is off if unset)")
    max_batch_size: int = opt(32, "most inputs in one engine call")
    max_wait_ms: float = opt(5.0, "how long the batcher waits for more requests after the first")
    max_queue: int = opt(256, "most requests waiting; beyond it the server answers 503")
    max_inputs: int = opt(64, "most inputs in one request (413 beyond)")
    max_input_chars: int = opt(8000, "longest input in characters, checked before tokenising (413 beyond)")
    max_request_tokens: int = opt(2048, "most tokens one request may run: its inputs after truncation, template included, once per ensemble member (413 beyond)")
    max_batch_tokens: int = opt(4096, "most tokens in one engine call (a request over it runs alone)")
    max_body_bytes: int = opt(1_000_000, "largest request body in bytes (413 beyond)")
    max_new_tokens: int = opt(64, "largest max_new_tokens a generate request may ask for")
    max_length: int | None = opt(None, "longest input in tokens, prompt included, for every prompt; each prompt is also held to the max length it was trained with, as in predict (default: the model's context)")
    deadline_s: float = opt(30.0, "seconds from being queued within which a request is answered, else 504; queued work past it is dropped")
    read_timeout_s: float = opt(10.0, "seconds a client may take to send a request's headers, and its body (408 or the connection closed beyond)")
    shutdown_timeout_s: float = opt(10.0, "on SIGTERM or Ctrl-C, seconds to finish open requests before they are cancelled")
    allowed_models: str | None = opt(None, "comma-separated model ids or directories that a prompt's metadata may choose when --model is absent (the embedded models always may)")

    def __post_init__(self):
        """Refuse a value that cannot work (:class:`ConfigError`, naming the option), before any model loads."""
        check_types(type(self), vars(self))

        def bad(name: str, want: str, value: Any) -> ConfigError:
            return ConfigError(f"--{name.replace('_', '-')} must be {want}, got {value!r}")

        at_least_one(self, "max_batch_size", "max_queue", "max_inputs", "max_input_chars", "max_request_tokens",
                     "max_batch_tokens", "max_body_bytes", "max_new_tokens", "max_length")
        if not 0 <= self.port <= 65535:
            raise bad("port", "a whole number from 0 to 65535", self.port)
        for name in ("max_wait_ms", "deadline_s", "read_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            least, unit = (0, "milliseconds") if name == "max_wait_ms" else (1e-3, "seconds")
            if not least <= value < float("inf"):
                raise bad(name, f"a number of {unit} {'of at least 0' if least == 0 else 'above 0'}", value)


PRETRAIN_FORMATS = ("unified", "pair", "choice", "single")
"""PPT's pre-training formats by name (built by :mod:`softprompt.ppt.formats`; docs/ppt.md)."""
MAX_OPTIONS = 26
"""Most candidates a PPT choice question may have: one per letter A-Z."""


@dataclass
class PretrainConfig(RunOptions):
    """Options of ``softprompt pretrain-prompt`` (PPT: Gu, Han, Liu & Huang, 2021). The options it
    shares with ``softprompt train`` are :class:`RunOptions`; those PPT sets otherwise are redeclared."""

    corpus: str = opt("", "unlabeled text: documents separated by blank lines, or .jsonl with a \"text\" field per line")
    format: str = opt("unified", "PPT pre-training format (docs/ppt.md): unified multiple choice, sentence pair, "
                                 "next-sentence choice, or single sentence", PRETRAIN_FORMATS)
    options: int = opt(4, "candidates per next-sentence choice question (choice and unified formats)")
    examples: int = opt(10000, "pre-training examples to build from the corpus")
    dev_examples: int = opt(500, "dev examples (from held-out documents) that pick the best prompt")
    init: str = opt("vocab", "initialiser of the prompt to pre-train: random-uniform, vocab, text:WORDS, file:PATH",
                    resume=RESUME_KEPT)
    patience: int = opt(0, RunOptions.__dataclass_fields__["patience"].metadata["help"])
    length_normalize: bool = opt(True, "divide a candidate's log-likelihood by its token count (the choice format's candidates are whole sentences)",
                                 resume=RESUME_KEPT)
    seed: int = opt(0, "random seed (the examples built, initialisation and data order)", resume=RESUME_KEPT)
    out: str = opt("runs/ppt", "output directory: data/, ppt.json and, as `softprompt train` writes them, best/, "
                               "last/, checkpoint/, metrics.jsonl, results.json")

    def __post_init__(self) -> None:
        if not str(self.corpus).strip():
            raise ConfigError("give --corpus FILE: unlabeled text, documents separated by blank lines "
                              "(or .jsonl with a \"text\" field per line)")
        if self.format not in PRETRAIN_FORMATS:
            raise ConfigError(f"--format {self.format!r} is not a PPT format; choose one of {', '.join(PRETRAIN_FORMATS)}")
        if not 2 <= self.options <= MAX_OPTIONS:
            raise ConfigError(f"--options must be between 2 and {MAX_OPTIONS}, got {self.options}")
        at_least_one(self, "examples", "dev_examples")
        super().__post_init__()


@dataclass
class ExperimentConfig(ProgressOptions):
    """Options of ``softprompt experiment`` (docs/experiments.md)."""

    config: str = opt("", "experiment YAML (see experiments/quick.yaml)", positional=True)
    out: str | None = opt(None, "results folder (default: the file's out:)")
    only: list | None = opt(None, "run only these grids (no analyses)", metavar="GRID")
    tasks: list | None = opt(None, "run only the runs of these tasks, e.g. the cheap ones first (no analyses)", metavar="TASK")
    dry_run: bool = opt(False, "list runs and analyses, done or to do, and stop")
    report_only: bool = opt(False, "rewrite the report from stored results, run nothing")


@dataclass
class ExportPeftConfig(ProgressOptions):
    """Options of ``softprompt export-peft``: write a saved prompt as a PEFT prompt-tuning adapter."""

    prompt: str = opt("", "saved prompt directory", positional=True)
    out: str = opt("", "adapter directory to write", required=True)
    model: str | None = opt(None, "model the prompt is for (default: the one it was trained for)")
    overwrite: bool = opt(False, "replace the PEFT adapter already in --out")
    fold_bos: bool = opt(False, "for a tokenizer that adds a BOS: export [BOS; prompt], exact under PEFT for inputs "
                                "tokenized with add_special_tokens=False (otherwise such a prompt is refused)")


@dataclass
class ImportPeftConfig(ProgressOptions):
    """Options of ``softprompt import-peft``: read a PEFT prompt-tuning adapter as a softprompt prompt."""

    adapter: str = opt("", "PEFT adapter directory", positional=True)
    out: str = opt("", "prompt directory to write", required=True)
    model: str | None = opt(None, "model the adapter is for (default: its base_model_name_or_path)")
    task: str | None = opt(None, "built-in task to attach, so predict/eval can use the prompt directly")
    overwrite: bool = opt(False, "replace the saved output already in --out")
    allow_bos_mismatch: bool = opt(False, "import an adapter PEFT trained before the BOS although softprompt will place it after")


@dataclass
class LabelWordsConfig(ModelOptions):
    """Options of ``softprompt label-words``: expand each label's class name into label words from
    the model's input-embedding neighbours and write them in KPT's .txt format, to read and edit
    before a run with --verbalizer knowledgeable --label-words-file FILE (docs/kpt.md)."""

    model: str = opt(DEFAULT_MODEL, "model whose input embeddings give the neighbours")
    task: str = opt("rotten_tomatoes", "built-in task whose labels (and class names: each label's first word) to expand")
    label_words: str | None = opt(None, "class names instead of the task's words, e.g. 'world=politics;sports=sports' (the first word of each label is expanded)")
    out: str = opt("", "file to write (.txt: one comma-separated line per label, class name first)", required=True)
    per_label: int = opt(50, "neighbours per label, after the class name")

    def __post_init__(self):
        at_least_one(self, "per_label")


@dataclass
class TasksConfig:
    """``softprompt tasks`` takes no options."""


COMMAND_CONFIGS: dict[str, type] = {
    "train": TrainConfig, "eval": EvalConfig, "predict": PredictConfig, "inspect": InspectConfig,
    "serve": ServeConfig, "pretrain-prompt": PretrainConfig, "experiment": ExperimentConfig,
    "export-peft": ExportPeftConfig, "import-peft": ImportPeftConfig, "tasks": TasksConfig,
    "label-words": LabelWordsConfig,
}
"""Every command's options, by command name."""

_SCORED_HELP = {  # eval and predict score with a saved run or zero-shot: they train nothing and keep no checkpoint
    "expand": "knowledgeable without a list: neighbours of each class name in the model's input embeddings to take as "
              "label words (to read and edit such a list first, write it with `softprompt label-words`)",
    "label_words": "verbalizer instead of the saved run's (or the task's), e.g. 'positive=great,good;negative=terrible', "
                   "or 'choices:FIELD' for multiple choice (each row lists its candidates in FIELD); prefixed 'shared:' a "
                   "word may stand for several labels, and 'rules:FILE' (or rules:semeval) scores PTR's rules, one word "
                   "per answer slot (docs/relations.md); a saved run that learnt word weights or answer vectors "
                   "('learned:', 'answer-vectors:') scores with them without this option",
}
COMMAND_HELP: dict[str, dict[str, str]] = {
    "eval": {**_SCORED_HELP,
             "metrics": "metrics to report instead of the task's, comma-separated, e.g. "
                        "'semeval_f1,micro_f1_no_other,accuracy' (see softprompt.tasks.METRICS)"},
    "predict": _SCORED_HELP,
    "serve": {"model": "model to serve (default: the model the first prompt names, else the embedded default)",
              "device": "device for the model, e.g. cuda (default: CPU)"},
}
"""The help a command gives a shared option in place of its field's own, by command and field name:
the same field (type, default, checks, written once in its dataclass), worded true for that
command (``eval --metrics`` picks no checkpoint). :func:`softprompt.arguments.add_options` reads it."""


def _left_out(cls) -> dict[str, tuple[Any, ...]]:
    """Each field's value when its option is not given: its default, and what ``cls``'s own check
    puts in its place where it does (``TrainConfig``'s task, rotten_tomatoes)."""
    values = {f.name: (field_default(f),) for f in fields(cls)}
    try:
        blank = cls()
    except (ConfigError, TypeError):  # a config with a required option (pretrain-prompt's --corpus)
        return values
    return {name: vals + ((getattr(blank, name),) if getattr(blank, name) != vals[0] else ()) for name, vals in values.items()}


def _same(a: Any, b: Any) -> bool:
    """Equal values, or two spellings of one existing file or folder (``tiny`` and ``/work/tiny``)."""
    if a == b:
        return True
    return isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()


def resume_conflict(out: str | Path, changed: list[tuple[str, Any, Any]], fix: str) -> ConfigError:
    """The one error for ``--resume`` given options that cannot change: each ``(option, the run's
    value, the value given)`` of ``changed`` named, then ``fix`` (how to keep the run's values)."""
    items = [f"{option} (the run's: {was!r}, given: {now!r})" for option, was, now in changed]
    listed = items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return ConfigError(f"--resume continues the run in {out} as it was started, so {listed} cannot change: {fix}, or "
                       "start a new run with another --out (or --overwrite to replace this one)")


_GIVEN = "_softprompt_given"


def mark_given(cfg, names) -> Any:
    """``cfg`` (a config dataclass) marked with the fields its maker set (the options on the command
    line and in its YAML file, the keywords of the Python call), so :func:`resumed_config` can tell
    an option given at its default from one left out. The mark lives on this object only:
    ``dataclasses.replace`` makes an unmarked copy."""
    object.__setattr__(cfg, _GIVEN, frozenset(names))
    return cfg


def given_options(cfg) -> frozenset[str]:
    """The field names of ``cfg`` that its maker set: those :func:`mark_given` recorded, or, on an
    unmarked config (made directly, or copied by ``dataclasses.replace``), the only guess possible:
    the fields whose value is not what leaving the option out gives."""
    marked = getattr(cfg, _GIVEN, None)
    if marked is not None:
        return marked
    left_out = _left_out(type(cfg))
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    return frozenset(name for name, value in values.items()
                     if not any(value == v and type(value) is type(v) for v in left_out[name]))


def resumed_config(cfg, saved: dict[str, Any], source: str | Path | None = None):
    """``(cfg, taken)``: ``cfg`` (a ``TrainConfig``) as it continues the run whose options were
    ``saved`` (its checkpoint's ``training`` metadata, read from the file ``source``). An option
    marked :data:`RESUME_KEPT` or :data:`RESUME_DEFAULT` (:func:`opt`) and left out takes the run's
    value; ``taken`` maps each such field to it. Left out means not among :func:`given_options`:
    for a config that knows what was given, so ``--seed 0`` against a run of seed 1 is refused;
    for one that does not, at its default. Raises
    :class:`ConfigError` (:func:`resume_conflict`) naming every :data:`RESUME_KEPT` option given
    another value than the run's, both values, and the fix: leave it out, or start a new run; and
    (:func:`check_types`) a saved value of the wrong type, naming ``source``."""
    given = given_options(cfg)
    changed, taken = [], {}
    for f in fields(cfg):
        kind, value = f.metadata.get("resume"), getattr(cfg, f.name)
        if kind is None or f.name not in saved or _same(value, saved[f.name]):
            continue
        if f.name not in given:
            taken[f.name] = saved[f.name]
        elif kind == RESUME_KEPT:
            changed.append(("--" + f.name.replace("_", "-"), saved[f.name], value))
    if changed:
        them = "it" if len(changed) == 1 else "them"
        raise resume_conflict(cfg.out, changed, f"leave {them} out to keep the run's")
    check_types(type(cfg), taken, source or "the run's saved options")
    return dataclasses.replace(cfg, **taken), taken


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
    """Make ``cls`` from ``values`` (read from the YAML file ``source``, if given), marked with the
    names given (:func:`mark_given`), naming any unknown option and the valid ones, and any value
    of the wrong type (:func:`check_types`)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f" in {source}" if source else ""
        raise ConfigError(f"unknown option(s) {with_suggestions(unknown, known)}{where} for {cls.__name__}; "
                          f"valid: {sorted(known)}")
    check_types(cls, values, source)
    return mark_given(cls(**values), values)


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
