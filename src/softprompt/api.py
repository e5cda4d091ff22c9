"""The Python API for using a trained prompt: :class:`PromptedModel`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .errors import DataError
from .modeling import load_model
from .prompt import META_FILE, PROMPT_FILE, SoftPrompt
from .scoring import EvalResult, Prediction, evaluate, predict
from .tasks.task import Task


class PromptedModel:
    """A frozen backbone, a prompt (or None) and the task it answers.

    >>> pm = PromptedModel.from_saved("runs/rt/best")
    >>> pm.classify(["a gorgeous, witty, seductive movie"])[0].label
    'positive'
    """

    def __init__(self, backbone, prompt: SoftPrompt | None, task: Task, method=None):
        """``prompt``: a soft prompt, or None with ``method``: another method's restored output
        (prefix tuning, in-context demonstrations, a fully tuned model), or None for zero-shot."""
        self.backbone = backbone
        self.soft_prompt = prompt
        self.task = task
        self.method = method
        if prompt is not None:
            prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
            prompt.to(backbone.device)

    @classmethod
    def from_saved(cls, path: str | Path, model: str | None = None, device: str | None = None,
                   max_length: int | None = None, backbone=None) -> "PromptedModel":
        """Load a saved prompt with its task and the model it was trained for (or ``model``).

        ``path`` may also hold another method's output (``softprompt.json`` names the method):
        it is rebuilt on the model and restored (:func:`~softprompt.methods.loading.load_saved_method`).
        """
        other_method = not (Path(path) / PROMPT_FILE).exists() and (Path(path) / META_FILE).exists()
        if other_method:
            from .methods.loading import load_saved_method, read_saved_metadata

            prompt, meta = None, read_saved_metadata(path)
        else:
            prompt = SoftPrompt.load(path)
            meta = prompt.metadata
        if "task" not in meta:
            raise DataError(f"{path} has no task in its metadata (e.g. a PEFT adapter imported without --task): "
                            f"re-import it with `softprompt import-peft ADAPTER --out {path} --task NAME`")
        task = Task.from_dict(meta["task"])
        if backbone is None:
            backbone = load_model(model or meta.get("model_id"), device=device)
        if max_length:
            backbone.max_length = min(backbone.max_length, max_length)
        method = load_saved_method(path, backbone, task) if other_method else None
        return cls(backbone, prompt, task, method=method)

    @property
    def prompt(self) -> torch.Tensor | None:
        """What goes before the text: the prompt ``[length, dim]`` (detached), a method's
        inference prompt (e.g. a prefix), or None."""
        if self.method is not None:
            return self.method.inference_prompt()
        return None if self.soft_prompt is None else self.soft_prompt.weight.detach()

    def as_examples(self, inputs: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Turn texts (for one-field templates) or dicts into example rows."""
        fields = self.task.template.fields
        rows = []
        for i, item in enumerate(inputs):
            if isinstance(item, Mapping):
                rows.append(dict(item))
            elif isinstance(item, str):
                text = item
                if text.lstrip().startswith("{"):
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError:
                        obj = None
                    if isinstance(obj, dict):
                        rows.append(obj)
                        continue
                if len(fields) != 1:
                    raise DataError(
                        f"input {i}: task {self.task.name!r} reads fields {list(fields)}; pass a JSON object with them, "
                        f"e.g. {json.dumps({f: '...' for f in fields})}"
                    )
                rows.append({fields[0]: text})
            else:
                raise DataError(f"input {i}: expected a text or a mapping, got {type(item).__name__}")
        self.task.validate(rows, where="input", labelled=False)
        return rows

    def classify(self, inputs: Sequence[str | Mapping[str, Any]], batch_size: int = 32, scoring: str = "rank",
                 length_normalize: bool = False) -> list[Prediction]:
        """Predict a label (and per-label probabilities) for each input."""
        if isinstance(inputs, (str, Mapping)):
            inputs = [inputs]
        rows = self.as_examples(inputs)
        preds, _ = predict(self.backbone, self.task, rows, self.prompt, batch_size, scoring, length_normalize)
        return preds

    def evaluate(self, examples: Sequence[Mapping[str, Any]], batch_size: int = 32, scoring: str = "rank",
                 length_normalize: bool = False, progress: bool = False) -> EvalResult:
        """Metrics of the task on labelled ``examples``."""
        return evaluate(self.backbone, self.task, examples, self.prompt, batch_size, scoring, length_normalize, progress)
