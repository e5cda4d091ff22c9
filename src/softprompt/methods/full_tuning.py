"""Full model tuning: every weight of the model is trained (the paper's "model tuning" baseline).

The template and verbalizer are the same as for prompt tuning, with no prompt vectors. What is
saved (:func:`~softprompt.artifacts.save_artifact`) is the whole model's weights
(``model.safetensors``) plus the same JSON metadata as a prompt, so a run is as resumable as a
prompt-tuning run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from ..artifacts import MODEL_FILE
from ..errors import ArtifactError, ModelMismatchError, PromptFileError
from .base import Method, MethodConfig, register_method


@dataclass
class FullTuningConfig(MethodConfig):
    pass


@register_method("full-tuning", FullTuningConfig)
class FullTuning(Method):
    """Unfreezes and trains the backbone's model; its conditioning is empty. The backbone's
    inference caches are keyed on the trainable weights' versions, so updates need no clearing."""

    default_optimizer = "adam"
    default_lr = 1e-5  # every weight moves: a small step, as model tuning usually takes
    changes_backbone = True  # restoring it overwrites the model's weights

    def __init__(self, config: FullTuningConfig, backbone, task, seed: int = 0, train_rows=None):
        super().__init__(config, backbone, task, seed, train_rows)
        self.model = backbone.model  # a submodule: its weights are what is trained and synchronised
        for p in self.model.parameters():
            p.requires_grad_(True)

    def state_tensors(self):
        """Every weight of the model, by its own name and in its own dtype (a tied weight once), and
        the verbalizer's tensors."""
        return {**self.model.state_dict(), **super().state_tensors()}

    def restore_from(self, artifact):
        """Restore the weights saved in ``model.safetensors`` (checked by
        :func:`~softprompt.artifacts.load_artifact`); a tensor whose kind (floating or integer)
        differs from the model's, or a missing or foreign weight, is refused."""
        file, shown = artifact.tensor_file, Path(artifact.path) / MODEL_FILE
        if file is None or artifact.kind != self.name:
            raise PromptFileError(f"{artifact.path} holds a {artifact.kind} output, not a fully tuned model")
        own = self.model.state_dict()
        saved, verbalizer = {}, {}
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_slice(name)
                if name in own and (t.get_dtype().startswith("F") or t.get_dtype().startswith("BF")) != \
                        own[name].dtype.is_floating_point:
                    raise ArtifactError(f"{shown}: tensor {name!r} is {t.get_dtype()} but the model's "
                                        f"is {own[name].dtype}; re-save it or train again")
                (verbalizer if name.startswith("verbalizer.") else saved)[name] = fh.get_tensor(name)
        super().restore_from(dataclasses.replace(artifact, tensors=verbalizer))
        storage = {n: t.untyped_storage().data_ptr() for n, t in own.items()}
        kept = {storage[n] for n in saved if n in storage}
        missing = [n for n in own if n not in saved and storage[n] not in kept]  # a tied weight comes with its twin
        unexpected = sorted(set(saved) - set(own))
        if missing or unexpected:
            raise ModelMismatchError(f"{shown} does not fit this model (missing {missing[:5]}, unexpected "
                                     f"{unexpected[:5]}); use the model it was trained from "
                                     f"({artifact.metadata.get('model_id', 'unknown')!r})")
        try:
            self.model.load_state_dict(saved, strict=False)
        except RuntimeError as exc:  # another shape
            raise ModelMismatchError(f"{shown} does not fit this model ({exc}); use the model "
                                     f"it was trained from ({artifact.metadata.get('model_id', 'unknown')!r})") from exc
