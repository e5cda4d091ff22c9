"""Options of ``softprompt pretrain-prompt``: :class:`PretrainConfig`.

Options it shares with ``softprompt train`` take their help text (and, unless PPT says
otherwise, their default) from :class:`~softprompt.config.TrainConfig`, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import TrainConfig, at_least_one, opt
from ..errors import ConfigError
from .formats import FORMATS, LETTERS

_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_SAME = object()


def _as_train(name: str, default: Any = _SAME, help: str | None = None) -> Any:
    """A field like :class:`TrainConfig`'s ``name``: its help, choices and (unless given) default."""
    f = _TRAIN_FIELDS[name]
    return opt(f.default if default is _SAME else default, help or f.metadata["help"], f.metadata.get("choices"))


@dataclass
class PretrainConfig:
    """Options of ``softprompt pretrain-prompt`` (PPT: Gu, Han, Liu & Huang, 2021)."""

    corpus: str = opt("", "unlabeled text: documents separated by blank lines, or .jsonl with a \"text\" field per line")
    format: str = opt("unified", "PPT pre-training format (docs/ppt.md): unified multiple choice, sentence pair, "
                                 "next-sentence choice, or single sentence", FORMATS)
    options: int = opt(4, "candidates per next-sentence choice question (choice and unified formats)")
    examples: int = opt(10000, "pre-training examples to build from the corpus")
    dev_examples: int = opt(500, "dev examples (from held-out documents) that pick the best prompt")
    model: str = _as_train("model")
    prompt_length: int = _as_train("prompt_length")
    init: str = _as_train("init", "vocab", "initialiser of the prompt to pre-train: random-uniform, vocab, "
                                           "text:WORDS, file:PATH")
    optimizer: str = _as_train("optimizer")
    lr: float = _as_train("lr")
    batch_size: int = _as_train("batch_size")
    eval_batch_size: int = _as_train("eval_batch_size")
    max_steps: int = _as_train("max_steps")
    eval_every: int = _as_train("eval_every")
    patience: int = _as_train("patience", 0)
    length_normalize: bool = _as_train("length_normalize", True, "divide a candidate's log-likelihood by its token "
                                                                 "count (the choice format's candidates are whole sentences)")
    seed: int = _as_train("seed", help="random seed (the examples built, initialisation and data order)")
    max_length: int = _as_train("max_length")
    out: str = _as_train("out", "runs/ppt", "output directory: data/, ppt.json and, as `softprompt train` writes "
                                            "them, best/, last/, checkpoint/, metrics.jsonl, results.json")
    resume: bool = _as_train("resume")
    overwrite: bool = _as_train("overwrite")
    device: str | None = _as_train("device")
    dtype: str = _as_train("dtype")
    mixed_precision: str = _as_train("mixed_precision")
    progress: bool = _as_train("progress")

    def __post_init__(self) -> None:
        if not str(self.corpus).strip():
            raise ConfigError("give --corpus FILE: unlabeled text, documents separated by blank lines "
                              "(or .jsonl with a \"text\" field per line)")
        if self.format not in FORMATS:
            raise ConfigError(f"--format {self.format!r} is not a PPT format; choose one of {', '.join(FORMATS)}")
        if not 2 <= self.options <= len(LETTERS):
            raise ConfigError(f"--options must be between 2 and {len(LETTERS)}, got {self.options}")
        at_least_one(self, "examples", "dev_examples")
