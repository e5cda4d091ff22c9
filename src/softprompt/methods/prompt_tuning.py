"""Prompt tuning (Lester et al., 2021): a learned ``[length, dim]`` prompt before the text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..conditioning import Conditioning
from ..errors import ModelMismatchError, PromptFileError
from ..prompt import SoftPrompt
from .base import Method, MethodConfig, register_method


@dataclass
class PromptTuningConfig(MethodConfig):
    prompt_length: int = 100
    init: str = "class-labels"


def initial_prompt(length: int, init: str, backbone, task, seed: int) -> SoftPrompt:
    """A fresh ``[length, dim]`` prompt for ``task`` on ``backbone``, started as ``init`` says
    (:meth:`SoftPrompt.initialize`; ``class-labels`` from the task's label words when it has fixed ones)."""
    label_words = []
    if task.verbalizer.is_fixed:
        label_words = [[task.verbalizer.prefix + w for w in ws] for ws in task.verbalizer.candidates()]
    ctx = backbone.init_context(label_words=label_words, seed=seed, task=task if label_words else None)
    return SoftPrompt.initialize(length, backbone.dim, init, ctx)


@register_method("prompt-tuning", PromptTuningConfig)
class PromptTuning(Method):
    """Only the soft prompt is trained; the model stays frozen."""

    # The paper's Adafactor lr 0.3 (no parameter scaling) moves each entry by about 0.3 a step, set for
    # T5; on SmolLM2 (embedding RMS 0.136) it diverges. 0.075 of an embedding entry per step (0.01 on
    # SmolLM2), measured in docs/methods.md ("Choosing the default learning rate"); the paper's setting is --lr 0.3.
    lr_per_embedding_rms = 0.075

    def __init__(self, config: PromptTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.soft_prompt = initial_prompt(config.prompt_length, config.init, backbone, task, seed)

    needs = frozenset({"input_vectors"})

    def conditioning(self) -> Conditioning:
        """The soft prompt ``[length, dim]`` as input vectors."""
        return Conditioning(input_vectors=self.soft_prompt.weight)

    def state_tensors(self):
        """``prompt: [length, dim]`` (float32) and the verbalizer's tensors."""
        return {**super().state_tensors(), "prompt": self.soft_prompt.weight.float()}

    def state_metadata(self):
        return {"length": self.soft_prompt.length, "dim": self.soft_prompt.dim}

    @classmethod
    def config_from_saved(cls, config, metadata):
        """The saved length; ``random-uniform`` init (the saved prompt replaces it, and a ``file:``
        or ``pretrained:`` source need not exist any more)."""
        length = metadata.get("length")
        return dataclasses.replace(config, prompt_length=config.prompt_length if length is None else length,
                                   init="random-uniform")

    def restore_from(self, artifact):
        """Take the saved prompt (an older prompt file too); one of another length is refused."""
        super().restore_from(artifact)
        weight = artifact.tensors["prompt"]
        if weight.shape[1] != self.soft_prompt.dim:
            raise ModelMismatchError(f"the prompt in {artifact.path} has dimension {weight.shape[1]} but this model's "
                                     f"embeddings have {self.soft_prompt.dim}: use the model it was trained for "
                                     f"({artifact.metadata.get('model_id', 'unknown')!r})")
        if weight.shape != self.soft_prompt.weight.shape:
            raise PromptFileError(f"the prompt in {artifact.path} has shape {tuple(weight.shape)} but "
                                  f"{tuple(self.soft_prompt.weight.shape)} was asked for: pass --prompt-length "
                                  f"{weight.shape[0]} or use the model it was trained for")
        with torch.no_grad():
            self.soft_prompt.weight.copy_(weight)
        self.soft_prompt.metadata = dict(artifact.metadata)


@dataclass
class ManualPromptConfig(MethodConfig):
    pass


@register_method("manual", ManualPromptConfig)
class ManualPrompt(Method):
    """The template and verbalizer alone, no learned vectors (the zero-shot manual-prompt baseline)."""

    trains = False
    seeded = False  # nothing is drawn at random: one run stands for every seed

    def save(self, path, metadata):
        """Nothing was learnt: a manual run saves no output (``best/`` stays absent)."""
        raise NotImplementedError("the manual prompt has nothing to save")
