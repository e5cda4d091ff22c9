"""The Python API for using a trained prompt: :class:`PromptedModel`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .artifacts import load_artifact
from .errors import DataError
from .modeling import load_model
from .prompt import META_FILE, PROMPT_FILE, SoftPrompt
from .scoring import EvalResult, Prediction, evaluate, predict
from .tasks.data import apply_field_map
from .tasks.task import Task
from .tasks.verbalizer import load_verbalizer_tensors


@dataclass(frozen=True)
class ScoringSettings:
    """How a prompt scores its inputs: what it was trained and selected with, the defaults of
    ``eval``, ``predict``, :class:`PromptedModel` and ``serve`` unless told otherwise.

    ``scoring``: ``"rank"`` or ``"generate"``; ``length_normalize``: divide a multi-token label's
    log-likelihood by its token count; ``word_scoring``: ``"exact"`` (all of a word's tokens) or
    ``"first-token"``; ``max_length``: longest input in tokens, prompt included.
    (Label order and template travel with the saved task.)
    """

    scoring: str = "rank"
    length_normalize: bool = False
    max_length: int = 512
    word_scoring: str = "exact"

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> "ScoringSettings":
        """The settings a saved prompt was trained with (its metadata's ``training`` options);
        each one a file does not record (older files, imported prompts) keeps the default above.
        Raises :class:`~softprompt.errors.ArtifactError` naming a field of the wrong type or range
        (files are checked when loaded; this covers metadata built in code)."""
        from .artifacts import check_scoring_settings

        training = (metadata or {}).get("training") or {}
        check_scoring_settings(training)
        saved = {name: training[name] for name in cls.__dataclass_fields__ if training.get(name) is not None}
        return cls(**saved)

    def override(self, **given: Any) -> "ScoringSettings":
        """These settings with the ``given`` values that are not None (options the user passed)."""
        return ScoringSettings(**{**self.__dict__, **{k: v for k, v in given.items() if v is not None}})


class PromptedModel:
    """A frozen backbone, a prompt (or None) and the task it answers.

    >>> pm = PromptedModel.from_saved("runs/rt/best")
    >>> pm.classify(["a gorgeous, witty, seductive movie"])[0].label
    'positive'
    """

    def __init__(self, backbone, prompt: SoftPrompt | None, task: Task, method=None,
                 settings: ScoringSettings | None = None):
        """``prompt``: a soft prompt, or None with ``method``: another method's restored output
        (prefix tuning, in-context demonstrations, a fully tuned model), or None for zero-shot.
        ``settings``: how :meth:`classify` and :meth:`evaluate` score by default (default: those
        recorded in ``prompt``'s metadata, see :class:`ScoringSettings`)."""
        self.backbone = backbone
        self.soft_prompt = prompt
        self.task = task
        self.method = method
        self.settings = settings or ScoringSettings.from_metadata(None if prompt is None else prompt.metadata)
        if prompt is not None:
            prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim, backbone.max_length - backbone.n_special)
            prompt.to(backbone.device)

    @classmethod
    def from_saved(cls, path: str | Path, model: str | None = None, device: str | None = None,
                   max_length: int | None = None, backbone=None, scoring: str | None = None,
                   length_normalize: bool | None = None, word_scoring: str | None = None) -> "PromptedModel":
        """Load a saved prompt with its task and the model it was trained for (or ``model``).

        ``path`` may also hold another method's output (``softprompt.json`` names the method):
        it is rebuilt on the model and restored (:func:`~softprompt.methods.loading.load_saved_method`).
        ``max_length``, ``scoring``, ``length_normalize``, ``word_scoring``: None (the default) keeps what the prompt
        was trained with (:attr:`settings`). Raises :class:`PromptFileError`, :class:`DataError`
        (no task saved), :class:`ModelMismatchError`.
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
        settings = ScoringSettings.from_metadata(meta).override(
            scoring=scoring, length_normalize=length_normalize, max_length=max_length, word_scoring=word_scoring)
        backbone.max_length = min(backbone.max_length, settings.max_length)
        method = load_saved_method(path, backbone, task) if other_method else None
        if method is None:  # a prompt; trained word weights or answer vectors lie beside it
            task.verbalizer.build(backbone)
            if any(True for _ in task.verbalizer.parameters()):
                load_verbalizer_tensors(task.verbalizer, load_artifact(path).tensors)
        return cls(backbone, prompt, task, method=method, settings=settings)

    @property
    def prompt(self) -> torch.Tensor | None:
        """What goes before the text: the prompt ``[length, dim]`` (detached), a method's
        inference prompt (e.g. a prefix), or None."""
        if self.method is not None:
            return self.method.inference_prompt()
        return None if self.soft_prompt is None else self.soft_prompt.weight.detach()

    def as_examples(self, inputs: Sequence[str | Mapping[str, Any]],
                    field_map: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Turn texts (for one-field templates) or dicts into example rows; ``field_map``
        (``{ours: theirs}``) renames the keys of dict and JSON-object inputs to the template's fields."""
        fields = self.task.template.fields
        rows = []
        for i, item in enumerate(inputs):
            if isinstance(item, Mapping):
                rows.append(apply_field_map(dict(item), field_map, f"input {i}") if field_map else dict(item))
            elif isinstance(item, str):
                text = item
                if text.lstrip().startswith("{"):
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError:
                        obj = None
                    if isinstance(obj, dict):
                        rows.append(apply_field_map(obj, field_map, f"input {i}") if field_map else obj)
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

    def classify(self, inputs: Sequence[str | Mapping[str, Any]], batch_size: int = 32, scoring: str | None = None,
                 length_normalize: bool | None = None, field_map: Mapping[str, str] | None = None,
                 word_scoring: str | None = None) -> list[Prediction]:
        """Predict a label (and per-label probabilities) for each input; ``scoring`` and
        ``length_normalize`` default to :attr:`settings` (what the prompt was trained with);
        ``field_map`` as in :meth:`as_examples`."""
        if isinstance(inputs, (str, Mapping)):
            inputs = [inputs]
        rows = self.as_examples(inputs, field_map)
        how = self.settings.override(scoring=scoring, length_normalize=length_normalize, word_scoring=word_scoring)
        preds, _ = predict(self.backbone, self.task, rows, self.prompt, batch_size, how.scoring, how.length_normalize,
                           word_scoring=how.word_scoring)
        return preds

    def evaluate(self, examples: Sequence[Mapping[str, Any]], batch_size: int = 32, scoring: str | None = None,
                 length_normalize: bool | None = None, progress: bool = False,
                 word_scoring: str | None = None) -> EvalResult:
        """Metrics of the task on labelled ``examples``; ``scoring`` and ``length_normalize``
        default to :attr:`settings` (what the prompt was trained with)."""
        how = self.settings.override(scoring=scoring, length_normalize=length_normalize, word_scoring=word_scoring)
        return evaluate(self.backbone, self.task, examples, self.prompt, batch_size, how.scoring, how.length_normalize,
                        progress, word_scoring=how.word_scoring)
