"""A method is a config plus a module, registered by name.

A :class:`Method` tells the trainer what to train (:meth:`Method.trainable_parameters`) and what
to put before the text (:meth:`Method.prompt`, ``[length, dim]`` or None); the backbone does the
rest. Later methods (prefix tuning, full model tuning, PPT, KPT, PTR, KnowPrompt, Hyperformer)
register here the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..errors import ConfigError
from ..tasks.verbalizer import load_verbalizer_tensors, verbalizer_tensors

METHODS: dict[str, tuple[type, type["Method"]]] = {}


def register_method(name: str, config_cls: type) -> Callable[[type["Method"]], type["Method"]]:
    """Register ``Method`` subclass under ``name`` with its config dataclass."""

    def deco(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        METHODS[name] = (config_cls, cls)
        return cls

    return deco


def get_method(name: str) -> tuple[type, type["Method"]]:
    """``(config class, method class)`` registered as ``name``."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def embedding_rms(backbone) -> float:
    """Root mean square of the entries of ``backbone``'s input-embedding matrix (``[vocab, dim]``):
    the scale of a real token's vector, about 0.136 for SmolLM2-135M."""
    w = backbone.model.get_input_embeddings().weight.detach()
    return float(w.float().pow(2).mean().sqrt())


def with_method_defaults(cfg, backbone=None):
    """``cfg`` (a :class:`~softprompt.config.TrainConfig`) with an unset optimizer and learning
    rate taken from its method: :attr:`Method.default_optimizer`, and as learning rate
    :attr:`Method.lr_per_embedding_rms` times :func:`embedding_rms` of ``backbone`` where the
    method sets it (prompt tuning), else :attr:`Method.default_lr`. Without ``backbone`` such a
    model-following learning rate stays None, to be resolved once the model is loaded. An ``lr``
    given in ``cfg`` always wins."""
    import dataclasses

    _, cls = get_method(cfg.method)
    lr = cfg.lr
    if lr is None and cls.lr_per_embedding_rms is None:
        lr = cls.default_lr
    elif lr is None and backbone is not None:
        lr = float(f"{cls.lr_per_embedding_rms * embedding_rms(backbone):.2g}")
    return dataclasses.replace(cfg, optimizer=cfg.optimizer or cls.default_optimizer, lr=lr)


@dataclass
class MethodConfig:
    """Base of method configs (fields with the paper's defaults)."""


class Method(nn.Module):
    """What is trained and how it reaches the backbone."""

    name: ClassVar[str] = ""
    trains: ClassVar[bool] = True
    default_optimizer: ClassVar[str] = "adafactor"  # used when --optimizer is not given
    default_lr: ClassVar[float] = 0.3  # used when --lr is not given and lr_per_embedding_rms is None
    # When set, --lr defaults to this times the RMS of the model's embedding entries (with_method_defaults):
    # Adafactor without parameter scaling, like Adam, moves each entry by about lr per step.
    lr_per_embedding_rms: ClassVar[float | None] = None
    seeded: ClassVar[bool] = True  # whether the result depends on the seed (an experiment runs one seed if not)

    def __init__(self, config: Any, backbone, task, seed: int = 0, train_rows=None):
        """``train_rows``: the training examples (a list of dicts), for methods that read them
        at construction (in-context demonstrations); others ignore it."""
        super().__init__()
        self.config = config
        # The task's verbalizer as a submodule: its parameters (word weights, answer vectors) train
        # with the method's (trainable_parameters) and move with it; the task keeps the same object.
        self.verbalizer = task.verbalizer
        self.verbalizer.build(backbone)

    def prompt(self) -> torch.Tensor | None:
        """The vectors put before the text: ``[length, dim]``, or None."""
        return None

    def inference_prompt(self) -> torch.Tensor | None:
        """:meth:`prompt` detached from the graph, for evaluation."""
        p = self.prompt()
        return None if p is None else p.detach()

    def forward(self, backbone, task, batch, loss: str = "rank", length_normalize: bool = False,
                word_scoring: str = "exact") -> torch.Tensor:
        """The training loss of ``batch`` (a scalar). Going through ``forward`` lets a
        ``DistributedDataParallel`` wrapper (``accelerate``) synchronise the gradients."""
        from ..scoring import classification_loss

        return classification_loss(backbone, task, batch, self.prompt(), loss, length_normalize, word_scoring)

    @property
    def prompt_length(self) -> int:
        p = self.prompt()
        return 0 if p is None else p.shape[0]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def verbalizer_tensors(self) -> dict[str, torch.Tensor]:
        """The verbalizer's parameters to save with the method: ``{"verbalizer.<name>": tensor}``
        (float32, CPU); empty for a verbalizer with fixed words and weights."""
        return verbalizer_tensors(self.verbalizer)

    def load_verbalizer_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`verbalizer_tensors` gave (:func:`~softprompt.tasks.verbalizer.load_verbalizer_tensors`)."""
        load_verbalizer_tensors(self.verbalizer, tensors)

    @classmethod
    def empty(cls, config: Any, backbone, task) -> "Method":
        """A method to :meth:`load_state` into: built from ``config`` without training rows."""
        return cls(config, backbone, task)

    def save(self, path: str | Path, metadata: dict[str, Any]) -> Path:
        """Save what was learnt to directory ``path`` (atomically), with ``metadata``."""
        raise NotImplementedError(f"method {self.name!r} has nothing to save")

    def load_state(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote (used by ``--resume``)."""
        raise NotImplementedError(f"method {self.name!r} has nothing to load")
