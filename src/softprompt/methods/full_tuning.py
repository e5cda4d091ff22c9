"""Full model tuning: every weight of the model is trained (the paper's "model tuning" baseline).

The template and verbalizer are the same as for prompt tuning, with no prompt vectors. What is
saved is the whole model's weights (``model.safetensors``) plus the same JSON metadata as a
prompt, so a run is as resumable as a prompt-tuning run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_model, save_model

from ..atomic import atomic_dir
from ..artifacts import ARTIFACT_FILES, load_artifact
from ..errors import ArtifactError, ModelMismatchError, PromptFileError
from ..prompt import META_FILE
from .base import Method, MethodConfig, register_method

MODEL_FILE = "model.safetensors"


@dataclass
class FullTuningConfig(MethodConfig):
    pass


@register_method("full-tuning", FullTuningConfig)
class FullTuning(Method):
    """Unfreezes and trains the backbone's model; its conditioning is empty. The backbone's
    inference caches are keyed on the trainable weights' versions, so updates need no clearing."""

    default_optimizer = "adam"
    default_lr = 1e-5  # every weight moves: a small step, as model tuning usually takes

    def __init__(self, config: FullTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.model = backbone.model  # a submodule: its weights are what is trained and synchronised
        for p in self.model.parameters():
            p.requires_grad_(True)

    def save(self, path, metadata):
        path = Path(path)
        with atomic_dir(path, owned=ARTIFACT_FILES) as tmp:
            (tmp / META_FILE).write_text(json.dumps(metadata, indent=2, default=str) + "\n",
                                         encoding="utf-8")
            save_model(self.model, str(tmp / MODEL_FILE))
        return path

    def load_state(self, path):
        """Restore the weights saved in ``path``, validated (:func:`~softprompt.artifacts.load_artifact`);
        a tensor whose kind (floating or integer) differs from the model's is refused."""
        art = load_artifact(path)
        if art.tensor_file is None:
            raise PromptFileError(f"{path} holds a {art.kind} output, not a fully tuned model")
        own = self.model.state_dict()
        with safe_open(str(art.tensor_file), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_slice(name)
                if name in own and (t.get_dtype().startswith("F") or t.get_dtype().startswith("BF")) != \
                        own[name].dtype.is_floating_point:
                    raise ArtifactError(f"{Path(path) / MODEL_FILE}: tensor {name!r} is {t.get_dtype()} but the model's "
                                        f"is {own[name].dtype}; re-save it or train again")
        try:
            load_model(self.model, str(art.tensor_file))
        except RuntimeError as exc:  # missing or unexpected weights, another shape
            raise ModelMismatchError(f"{Path(path) / MODEL_FILE} does not fit this model ({exc}); use the model "
                                     f"it was trained from ({art.metadata.get('model_id', 'unknown')!r})") from exc
