"""A method is a config plus a module, registered by name.

A :class:`Method` tells the trainer what to train (:meth:`Method.trainable_parameters`) and what
it adds to the frozen model (:meth:`Method.conditioning`, a
:class:`~softprompt.conditioning.Conditioning`); the backbone does the rest. A method names the
conditioning kinds it needs (:attr:`Method.needs`), checked against the backbone at
construction. Later methods (prefix tuning, full model tuning, PPT, KPT, PTR, KnowPrompt,
Hyperformer) register here the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from ..conditioning import Conditioning
from ..config import opt
from ..errors import ConfigError
from ..tasks.verbalizer import load_verbalizer_tensors, verbalizer_tensors
from ..virtual_tokens import VirtualTokens

METHODS: dict[str, tuple[type, type["Method"]]] = {}


def register_method(name: str, config_cls: type) -> Callable[[type["Method"]], type["Method"]]:
    """Register ``Method`` subclass under ``name`` with its config dataclass."""

    def deco(cls: type["Method"]) -> type["Method"]:
        cls.name = name
        METHODS[name] = (config_cls, cls)
        return cls

    return deco


ENTRY_POINT_GROUP = "softprompt.methods"
"""Entry points of this group name modules that register methods from other packages: a package
declaring ``[project.entry-points."softprompt.methods"] my-method = "my_pkg.my_method"`` makes
``--method my-method`` work in every command and the server, with no change to softprompt."""


def get_method(name: str) -> tuple[type, type["Method"]]:
    """``(config class, method class)`` registered as ``name``; a name not registered yet is looked
    up among the :data:`ENTRY_POINT_GROUP` entry points (their module is imported, which registers
    it). Raises :class:`ConfigError` for an unknown name."""
    if name not in METHODS:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                ep.load()
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)} (a method of another package "
                          f"is found through its {ENTRY_POINT_GROUP!r} entry point)")
    return METHODS[name]


def embedding_rms(backbone) -> float:
    """Root mean square of the entries of every token's input vector (``[vocab, dim]``) as the
    model's layers see it, through the embedding module (Gemma scales by sqrt(dim)): the scale
    of a real token's vector, about 0.136 for SmolLM2-135M."""
    weight = backbone.model.get_input_embeddings().weight
    total = 0.0
    with torch.no_grad():
        for start in range(0, weight.shape[0], 8192):
            ids = torch.arange(start, min(weight.shape[0], start + 8192))
            total += float(backbone.embed(ids).double().pow(2).sum())
    return (total / weight.numel()) ** 0.5


def lr_following_model(cls, rms: float) -> float:
    """The learning rate of a method whose default follows the model (``cls.lr_per_embedding_rms``
    set, e.g. prompt tuning): that factor times ``rms`` (:func:`embedding_rms`), to 2 significant
    digits, e.g. 0.075 x 0.136 = 0.01 on SmolLM2-135M."""
    return float(f"{cls.lr_per_embedding_rms * rms:.2g}")


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
        lr = lr_following_model(cls, embedding_rms(backbone))
    return dataclasses.replace(cfg, optimizer=cfg.optimizer or cls.default_optimizer, lr=lr)


@dataclass
class MethodConfig:
    """Base of method configs (fields with the paper's defaults)."""


def task_names(spec: str | None) -> tuple[str, ...]:
    """``"rte,mrpc,cb"`` -> ``("rte", "mrpc", "cb")`` (a multi-task run's ``--task``); raises
    :class:`ConfigError` for a name given twice."""
    pieces = [n.strip() for n in str(spec or "").split(",")]
    if len(pieces) > 1 and not all(pieces):
        raise ConfigError(f"--task {spec!r} has an empty name between its commas: give task names separated by "
                          "single commas, e.g. --task rte,mrpc")
    names = tuple(n for n in pieces if n)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--task names {', '.join(twice)} more than once: give each task once")
    return names


@dataclass
class PerTaskConfig(MethodConfig):
    """Base of the configs of methods that condition each task differently (:class:`PerTaskMethod`)."""

    task: str = opt("", "the tasks the method conditions, comma-separated: filled from --task (a multi-task run's list)")

    def __post_init__(self) -> None:
        task_names(self.task)


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
    changes_backbone: ClassVar[bool] = False  # restoring it changes the model's own weights (no shared server)
    needs: ClassVar[frozenset[str]] = frozenset()  # conditioning kinds the backbone must support

    def __init__(self, config: Any, backbone, task, seed: int = 0, train_rows=None):
        """``train_rows``: the training examples (a list of dicts), for methods that read them
        at construction (in-context demonstrations); others ignore it. Raises
        :class:`ConfigError` when ``backbone`` does not take a kind in :attr:`needs`."""
        super().__init__()
        backbone.check_supports(self.needs, f"method {self.name!r}")
        self.config = config
        self._inference: dict[str | None, tuple[tuple, Conditioning]] = {}  # per task: (tensors' versions, conditioning)
        # The task's verbalizer as a submodule: its parameters (word weights, answer vectors) train
        # with the method's (trainable_parameters) and move with it; the task keeps the same object.
        self.verbalizer = task.verbalizer
        self.verbalizer.build(backbone)
        # The template's own learnable vectors ({soft...} slots) train with the method's too.
        self.virtual_tokens = VirtualTokens(task.template.virtual_tokens, backbone, seed)
        if task.template.virtual_tokens and not self.trains:
            raise ConfigError(
                f"template {task.template.text!r} has learnable virtual tokens {{soft...}}, but method {self.name!r} "
                "learns nothing, so they would stay random: train them (e.g. --method prompt-tuning) or remove them "
                "from --template"
            )

    def conditioning(self) -> Conditioning:
        """What this method itself adds to the model, differentiable; empty by default. A method
        overrides this; callers use :meth:`training_conditioning` / :meth:`inference_conditioning`,
        which add the verbalizer's part."""
        return Conditioning()

    # ------------------------------------------------------------- several tasks
    active_task: str | None = None
    """The task :meth:`conditioning` answers for (:class:`PerTaskMethod`); None: the same for every task."""

    def use_task(self, name: str) -> None:
        """Condition the model for task ``name`` of a multi-task run from now on. Here nothing
        changes: one conditioning serves every task (a shared prompt, one shared adapter); a
        :class:`PerTaskMethod` switches to that task's part."""

    def training_conditioning(self) -> Conditioning:
        """:meth:`conditioning` joined with the verbalizer's (e.g. its answer vectors) and the
        template's virtual tokens, differentiable: what a training step scores with. Raises
        :class:`ConfigError` when two parts set the same kind."""
        return self.conditioning().joined(self.verbalizer.conditioning()).joined(self.virtual_tokens.conditioning())

    def inference_conditioning(self, task: str | None = None) -> Conditioning:
        """:meth:`training_conditioning` detached, for evaluation: the same object while no
        parameter or buffer of the method (its verbalizer's included) changes, so the backbone's
        caches hit. ``task``: the task of a multi-task run to answer for (None: the active one,
        :meth:`use_task`; a method conditioning every task the same ignores it). Each task's is
        kept apart, computed once (a Hyperformer's generated adapters, a HyperPrompt's prefix)
        until the method's tensors change; the active task stays as it was."""
        key = self.active_task if task is None or self.active_task is None else task
        stamp = tuple((id(t), t._version) for t in (*self.parameters(), *self.buffers()))
        hit = self._inference.get(key)
        if hit is None or hit[0] != stamp:
            active = self.active_task
            try:
                if key != active:
                    self.use_task(key)
                with torch.no_grad():
                    hit = self._inference[key] = (stamp, self.training_conditioning().detach())
            finally:
                if self.active_task != active:
                    self.use_task(active)
        return hit[1]

    def forward(self, backbone, task, batch, loss: str = "rank", length_normalize: bool = False,
                word_scoring: str = "exact") -> torch.Tensor:
        """The training loss of ``batch`` (a scalar). Going through ``forward`` lets a
        ``DistributedDataParallel`` wrapper (``accelerate``) synchronise the gradients."""
        from ..scoring import classification_loss

        return classification_loss(backbone, task, batch, self.training_conditioning(), loss, length_normalize,
                                   word_scoring)

    @property
    def prompt_length(self) -> int:
        """Positions the method's conditioning puts before the text (the verbalizer's and the
        template's parts put none). Read before every training batch: it takes the length from
        :meth:`conditioning` alone, without building the detached inference copy; a method whose
        conditioning costs a computation (prefix tuning's MLP) overrides it."""
        with torch.no_grad():
            return self.conditioning().length

    @classmethod
    def restoring_changes_backbone(cls, metadata: dict[str, Any]) -> bool:
        """Whether restoring the output saved with ``metadata`` writes into the model's own weights
        (so it cannot share a server with other outputs): :attr:`changes_backbone` here; a method
        for which it depends on an option reads it from ``metadata``."""
        return cls.changes_backbone

    def take_counts(self) -> dict[str, int]:
        """What the method counted in its training steps since the last call, by name, and start
        counting afresh: rows a part of its loss left out, say (KnowPrompt's
        ``rows_without_knowledge_term``). The trainer calls it at every evaluation, sums it over
        processes and records it (``metrics.jsonl``, ``results.json``'s ``method_counts``). Here
        nothing is counted: ``{}``."""
        return {}

    def counts_warning(self, counts: dict[str, int]) -> str | None:
        """A warning about ``counts`` (those of :meth:`take_counts`, summed over processes, none
        zero) saying what they mean and how to avoid them, which the trainer logs once per
        evaluation; None (the default) logs nothing."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def trained_per_task(self) -> int:
        """Numbers a task costs: here all the method trains (one conditioning serves every task,
        so a task alone needs all of it); a :class:`PerTaskMethod` counts its part per task."""
        return sum(p.numel() for p in self.trainable_parameters())

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

    # ------------------------------------------------------------- saved outputs
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors :meth:`save` writes, by name. Here: the verbalizer's, ``verbalizer.<param>``
        (:meth:`verbalizer_tensors`), and the template's virtual tokens, ``virtual.<name>``; a
        method adds its own."""
        return {**self.verbalizer_tensors(), **self.virtual_tokens.state_tensors()}

    @classmethod
    def config_from_saved(cls, config: Any, metadata: dict[str, Any]) -> Any:
        """The config a restore rebuilds this method with: ``config`` (built from the saved
        ``training`` options) with what the method recorded of its own in :meth:`state_metadata`
        laid over it. Here ``config`` as is; a method whose saved state replaces its
        initialisation, or that records options of its own, overrides this."""
        return config

    def state_metadata(self) -> dict[str, Any]:
        """The method's own metadata fields :meth:`save` writes beside the caller's (its shape,
        options a restore needs); none here."""
        return {}

    def save(self, path: str | Path, metadata: dict[str, Any]) -> Path:
        """Save what was learnt to directory ``path`` (atomically), with ``metadata``: through
        :func:`~softprompt.artifacts.save_artifact`, :meth:`state_tensors` and
        :meth:`state_metadata` (whose fields win over ``metadata``'s). Returns ``path``."""
        from ..artifacts import save_artifact

        save_artifact(path, self.name, self.state_tensors(), {**metadata, **self.state_metadata()})
        return Path(path)

    def load_state(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote (used by ``--resume``): read and validated by
        :func:`~softprompt.artifacts.load_artifact`, then :meth:`restore_from`."""
        from ..artifacts import load_artifact
        from ..errors import PromptFileError

        if not (Path(path).exists() or Path(path).is_symlink()):
            raise PromptFileError(f"no saved {self.name} output at {path}: train one with `softprompt train --method "
                                  f"{self.name} --out DIR`, then pass DIR/best")
        self.restore_from(load_artifact(path))

    def restore_from(self, artifact) -> None:
        """Take the state of a loaded :class:`~softprompt.artifacts.Artifact` of this method.
        Here: refuse another method's output (:class:`~softprompt.errors.PromptFileError`) and
        restore the verbalizer's tensors; a method restores its own after calling this."""
        from ..errors import PromptFileError

        if artifact.kind != self.name:
            raise PromptFileError(f"{artifact.path} holds a {artifact.kind} output, not a {self.name} one; pass "
                                  f"--method {artifact.kind} or another saved folder")
        self.load_verbalizer_tensors(artifact.tensors)
        self.virtual_tokens.restore(artifact.tensors)


class PerTaskMethod(Method):
    """A method that conditions each task of a multi-task run differently.

    It is built with every task's name, ``config.task`` (``"rte,mrpc,cb"``, a
    :class:`PerTaskConfig` field filled from ``--task``; empty: the one task it is built with),
    and answers for one of them at a time: :meth:`task_conditioning` gives task ``name``'s part,
    :meth:`use_task` picks the task :meth:`conditioning` (and so training, evaluation and a
    restored method) answers for. What the tasks share (a shared prompt, a hypernetwork) and what
    each has of its own (its prompt, its task embedding) is the method's choice; the trainer draws
    one task per batch and calls :meth:`use_task` before it (:mod:`softprompt.multitask`). A
    method that conditions every task the same (one shared adapter) is a plain :class:`Method`:
    its :meth:`use_task` changes nothing. The task ``task`` it is built with must be one of the
    names (:class:`ConfigError` otherwise) and is the active one at first.
    """

    def __init__(self, config: PerTaskConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.task_names = task_names(config.task) or (task.name,)
        self.use_task(task.name)

    def use_task(self, name: str) -> None:
        """Answer for task ``name`` from now on; :class:`ConfigError` for a task the method was not built with."""
        self.check_task(self.task_names, name)
        self.active_task = name

    @classmethod
    def check_task(cls, names: tuple[str, ...], name: str) -> None:
        """Raise :class:`ConfigError` when ``name`` is not one of ``names``, the tasks a method of this
        class was built with; needs no model, so a command refuses a saved run's unknown task first."""
        if name not in names:
            raise ConfigError(f"method {cls.name!r} was trained for tasks {list(names)}, not {name!r}: "
                              f"pass one of them as --task")

    def task_index(self, name: str) -> int:
        """Position of task ``name`` in :attr:`task_names`."""
        if name not in self.task_names:
            raise ConfigError(f"method {self.name!r} has no task {name!r}; its tasks: {list(self.task_names)}")
        return self.task_names.index(name)

    def task_conditioning(self, name: str) -> Conditioning:
        """What the method adds for task ``name``, differentiable."""
        raise NotImplementedError

    def conditioning(self) -> Conditioning:
        """:meth:`task_conditioning` of the active task."""
        return self.task_conditioning(self.active_task)
