"""Multi-task prompt tuning: one soft prompt per task, trained jointly, optionally after a prompt
every task shares (the baselines of Karimi Mahabadi et al., ACL 2021, and of HyperPrompt, He et
al., ICML 2022; docs/multitask.md).

Task ``t``'s input vectors are ``[shared; prompt_t]``: ``shared [shared_length, dim]`` (absent
when ``shared_length`` is 0) then ``prompt_t [prompt_length, dim]``, placed as prompt tuning's
are. With one task it is prompt tuning. One prompt shared by all tasks and nothing per task is
``--method prompt-tuning`` itself in a multi-task run (a method that conditions every task the same).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from ..conditioning import Conditioning
from ..config import opt
from ..errors import ConfigError, ModelMismatchError
from .adapter import check_positive, load_module_tensors
from .base import PerTaskConfig, PerTaskMethod, register_method
from .prompt_tuning import PromptTuning, initial_prompt


@dataclass
class MultiTaskPromptConfig(PerTaskConfig):
    prompt_length: int = opt(100, "positions of each task's own prompt (--prompt-length)")
    shared_length: int = opt(0, "positions of a prompt every task shares, before the task's own (0: none)")
    init: str = opt("class-labels", "initialiser of every prompt, as for prompt tuning (--init; class-labels: the first task's label words)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("multitask-prompt-tuning", prompt_length=self.prompt_length)
        if isinstance(self.shared_length, bool) or not isinstance(self.shared_length, int) or self.shared_length < 0:
            raise ConfigError(f"multitask-prompt-tuning: shared_length must be a whole number >= 0, got {self.shared_length!r}")


@register_method("multitask-prompt-tuning", MultiTaskPromptConfig)
class MultiTaskPromptTuning(PerTaskMethod):
    """A prompt per task (and one shared by all), trained together; the model stays frozen."""

    needs = frozenset({"input_vectors"})
    lr_per_embedding_rms = PromptTuning.lr_per_embedding_rms

    def __init__(self, config: MultiTaskPromptConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        # each task's prompt drawn from its own seed, so tasks start apart where the initialiser samples
        self.prompts = nn.ModuleList(initial_prompt(config.prompt_length, config.init, backbone, task, seed + 1 + i)
                                     for i in range(len(self.task_names)))
        self.shared = initial_prompt(config.shared_length, config.init, backbone, task, seed) \
            if config.shared_length else None

    def task_conditioning(self, name: str) -> Conditioning:
        """``[shared_length + prompt_length, dim]`` input vectors: the shared prompt, then task ``name``'s."""
        own = self.prompts[self.task_index(name)].weight
        return Conditioning(input_vectors=own if self.shared is None else torch.cat([self.shared.weight, own]))

    @property
    def prompt_length(self) -> int:
        return self.config.shared_length + self.config.prompt_length

    def trained_per_task(self) -> int:
        """A task's own prompt, ``prompt_length * dim`` (the shared prompt is every task's)."""
        return self.prompts[0].weight.numel()

    def state_tensors(self):
        """``prompts.{i}.weight [prompt_length, dim]`` (task ``i`` of the run's list) and
        ``shared.weight [shared_length, dim]``, float32."""
        return {**super().state_tensors(), **{k: t.detach().float() for k, t in self._learnt().state_dict().items()}}

    def state_metadata(self):
        """The lengths and tasks, and each tensor's title for ``softprompt inspect`` (``tensor_titles``)."""
        titles = {f"prompts.{i}.weight": f"{name}'s prompt" for i, name in enumerate(self.task_names)}
        if self.shared is not None:
            titles["shared.weight"] = "the prompt shared by every task"
        return {"length": self.prompt_length, "dim": self.prompts[0].dim, "tensor_titles": titles,
                "task_prompts": {"prompt_length": self.config.prompt_length, "shared_length": self.config.shared_length,
                                 "names": list(self.task_names)}}

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved lengths; ``random-uniform`` init (the saved prompts replace it)."""
        saved = metadata.get("task_prompts") or {}
        return dataclasses.replace(config, prompt_length=saved.get("prompt_length", config.prompt_length),
                                   shared_length=saved.get("shared_length", config.shared_length), init="random-uniform")

    def restore_from(self, artifact):
        """Take the saved prompts; a run of other tasks or another width is refused."""
        super().restore_from(artifact)
        names = (artifact.metadata.get("task_prompts") or {}).get("names")
        if names is not None and tuple(names) != self.task_names:
            raise ModelMismatchError(f"{artifact.path} holds prompts for tasks {names}, not {list(self.task_names)}")
        load_module_tensors(self._learnt(), artifact, "")

    def _learnt(self) -> nn.Module:
        """The prompts as one module (``prompts.*``, ``shared.*``), for saving and restoring."""
        return nn.ModuleDict({"prompts": self.prompts, **({"shared": self.shared} if self.shared is not None else {})})
