"""Full model tuning: every weight of the model is trained (the paper's "model tuning" baseline).

The template and verbalizer are the same as for prompt tuning, with no prompt vectors. What is
saved is the whole model's weights (``model.safetensors``) plus the same JSON metadata as a
prompt, so a run is as resumable as a prompt-tuning run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_model, save_model

from ..atomic import atomic_path, atomic_write_text
from ..prompt import META_FILE
from .base import Method, MethodConfig, register_method

MODEL_FILE = "model.safetensors"


@dataclass
class FullTuningConfig(MethodConfig):
    pass


@register_method("full-tuning", FullTuningConfig)
class FullTuning(Method):
    """Unfreezes and trains the backbone's model; ``prompt()`` is None."""

    default_optimizer = "adam"
    default_lr = 1e-5  # every weight moves: a small step, as model tuning usually takes

    def __init__(self, config: FullTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.model = backbone.model  # a submodule: its weights are what is trained and synchronised
        for p in self.model.parameters():
            p.requires_grad_(True)
        if hasattr(backbone, "clear_cache"):
            backbone.clear_cache()

    def save(self, path, metadata):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / META_FILE, json.dumps(metadata, indent=2, default=str) + "\n")
        with atomic_path(path / MODEL_FILE) as tmp:
            save_model(self.model, str(tmp))
        return path

    def load_state(self, path):
        load_model(self.model, str(Path(path) / MODEL_FILE))
