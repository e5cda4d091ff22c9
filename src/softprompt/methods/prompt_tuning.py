"""Prompt tuning (Lester et al., 2021): a learned ``[length, dim]`` prompt before the text."""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import load_artifact
from ..prompt import SoftPrompt
from .base import Method, MethodConfig, register_method


@dataclass
class PromptTuningConfig(MethodConfig):
    prompt_length: int = 100
    init: str = "class-labels"


@register_method("prompt-tuning", PromptTuningConfig)
class PromptTuning(Method):
    """Only the soft prompt is trained; the model stays frozen."""

    # The paper's Adafactor lr 0.3 (no parameter scaling) moves each entry by about 0.3 a step, set for
    # T5; on SmolLM2 (embedding RMS 0.136) it diverges. 0.075 of an embedding entry per step (0.01 on
    # SmolLM2), measured in docs/methods.md ("Choosing the default learning rate"); the paper's setting is --lr 0.3.
    lr_per_embedding_rms = 0.075

    def __init__(self, config: PromptTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        label_words = []
        if task.verbalizer.is_fixed:
            label_words = [[task.verbalizer.prefix + w for w in ws] for ws in task.verbalizer.candidates()]
        ctx = backbone.init_context(label_words=label_words, seed=seed, task=task if label_words else None)
        self.soft_prompt = SoftPrompt.initialize(config.prompt_length, backbone.dim, config.init, ctx)

    def prompt(self):
        return self.soft_prompt.weight

    def save(self, path, metadata):
        return self.soft_prompt.save(path, metadata, self.verbalizer_tensors())

    def load_state(self, path):
        loaded = SoftPrompt.load(path)
        if self.verbalizer_tensors():  # trained word weights or answer vectors, saved beside the prompt
            self.load_verbalizer_tensors(load_artifact(path).tensors)
        self.soft_prompt.weight.data.copy_(loaded.weight)
        self.soft_prompt.metadata = loaded.metadata


@dataclass
class ManualPromptConfig(MethodConfig):
    pass


@register_method("manual", ManualPromptConfig)
class ManualPrompt(Method):
    """The template and verbalizer alone, no learned vectors (the zero-shot manual-prompt baseline)."""

    trains = False
    seeded = False  # nothing is drawn at random: one run stands for every seed
