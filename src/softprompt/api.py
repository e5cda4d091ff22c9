"""The Python API for using a trained prompt: :class:`PromptedModel`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .conditioning import Conditioning
from .errors import DataError
from .modeling import load_model
from .prompt import SoftPrompt
from .scoring import EvalResult, Prediction, evaluate, predict
from .tasks.data import apply_field_map
from .tasks.task import Task


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


def as_examples(task: Task, inputs: Sequence[str | Mapping[str, Any]],
                field_map: Mapping[str, str] | None = None, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Turn texts (for one-field templates) or dicts into ``task``'s example rows; ``field_map``
    (``{ours: theirs}``; default: the task's own, :attr:`Task.field_map`, the one a saved run was
    trained with; ``{}``: none) renames the keys of dict and JSON-object inputs to the template's
    fields. A label column it maps may be absent (inputs need none), and so may any column of the
    task's own map (an input may name the template's fields itself). Needs no model, so a command
    checks its inputs with it before loading one. Raises :class:`DataError` naming the input
    (``names[i]``, by default ``input i``, its 0-based position), the fields the task reads and
    those it has."""
    fields = task.template.fields
    optional = tuple(task.field_map) if field_map is None else ("label",)
    field_map = task.field_map if field_map is None else field_map
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} names for {len(inputs)} inputs")
    rows = []
    for i, item in enumerate(inputs):
        if isinstance(item, Mapping):
            rows.append(apply_field_map(dict(item), field_map, names[i], optional=optional))
        elif isinstance(item, str):
            text = item
            bad_json = ""
            if text.lstrip().startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as err:
                    obj, bad_json = None, f" (this one is not valid JSON: {err.msg} at column {err.colno})"
                if isinstance(obj, dict):
                    rows.append(apply_field_map(obj, field_map, names[i], optional=optional))
                    continue
            if len(fields) != 1:
                raise DataError(
                    f"{names[i]}: task {task.name!r} reads fields {list(fields)}; pass a JSON object with them"
                    f"{bad_json}, e.g. {json.dumps({f: '...' for f in fields})}"
                )
            rows.append({fields[0]: text})
        else:
            raise DataError(f"{names[i]}: expected a text or a mapping, got {type(item).__name__}")
    task.validate(rows, labelled=False, names=names)
    return rows


class PromptedModel:
    """A frozen backbone, a prompt (or None) and the task it answers.

    >>> pm = PromptedModel.from_saved("runs/rt/best")
    >>> pm.classify(["a gorgeous, witty, seductive movie"])[0].label
    'positive'
    """

    def __init__(self, backbone, prompt: SoftPrompt | None, task: Task, method=None,
                 settings: ScoringSettings | None = None):
        """``prompt``: a soft prompt, or None with ``method``: a restored method
        (:func:`~softprompt.methods.loading.restore`: a prompt, a prefix, in-context
        demonstrations, a fully tuned model, ...), or None for zero-shot. ``settings``: how
        :meth:`classify` and :meth:`evaluate` score by default (default: those recorded in
        ``prompt``'s or ``method``'s saved metadata, see :class:`ScoringSettings`)."""
        self.backbone = backbone
        self.soft_prompt = prompt
        self.task = task
        self.method = method
        saved = prompt.metadata if prompt is not None else getattr(method, "metadata", None)
        self.settings = settings or ScoringSettings.from_metadata(saved)
        if prompt is not None:
            prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim, backbone.max_length - backbone.n_special)
            prompt.to(backbone.device)
        self._prompt_conditioning = Conditioning(input_vectors=None if prompt is None else prompt.weight.detach())

    @classmethod
    def from_saved(cls, path: str | Path, model: str | None = None, device: str | None = None,
                   max_length: int | None = None, backbone=None, scoring: str | None = None,
                   length_normalize: bool | None = None, word_scoring: str | None = None,
                   task: Task | None = None) -> "PromptedModel":
        """Load what any method saved in ``path``, with its task and the model it was trained for
        (or ``model``), restored by :func:`~softprompt.methods.loading.restore` (a saved prompt
        as a prompt-tuning method: :attr:`method`; a trained verbalizer's parameters with it).
        ``task``: the task to score with an output saved without one (a PEFT adapter imported
        without ``--task``); one saved with the output is used otherwise.

        ``max_length``, ``scoring``, ``length_normalize``, ``word_scoring``: None (the default) keeps what the output
        was trained with (:attr:`settings`). Raises :class:`PromptFileError`, :class:`DataError`
        (no task saved), :class:`ModelMismatchError`.
        """
        from .artifacts import load_artifact
        from .methods.loading import has_saved_task, restore_artifact, saved_task

        artifact = load_artifact(path)
        meta = artifact.metadata
        if task is None or has_saved_task(artifact):
            task = saved_task(artifact)
        settings = ScoringSettings.from_metadata(meta).override(
            scoring=scoring, length_normalize=length_normalize, max_length=max_length, word_scoring=word_scoring)
        if backbone is None:
            backbone = load_model(model or meta.get("model_id"), device=device, max_length=settings.max_length)
        return cls(backbone, None, task, method=restore_artifact(artifact, backbone, task), settings=settings)

    @property
    def conditioning(self) -> Conditioning:
        """What goes into the model: the method's :meth:`~softprompt.methods.base.Method.inference_conditioning`
        for :attr:`task` (a multi-task run's method answers for each of its tasks), the soft prompt
        ``[length, dim]`` as input vectors (detached, one object so caches hit), or nothing (zero-shot)."""
        if self.method is not None:
            return self.method.inference_conditioning(self.task.name)
        return self._prompt_conditioning

    @property
    def prompt_length(self) -> int:
        """Positions :attr:`conditioning` takes before the text (0 for none)."""
        if self.method is not None:
            return self.method.prompt_length
        return 0 if self.soft_prompt is None else self.soft_prompt.length

    def as_examples(self, inputs: Sequence[str | Mapping[str, Any]],
                    field_map: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """:func:`as_examples` for this model's task."""
        return as_examples(self.task, inputs, field_map)

    def classify(self, inputs: Sequence[str | Mapping[str, Any]], batch_size: int = 32, scoring: str | None = None,
                 length_normalize: bool | None = None, field_map: Mapping[str, str] | None = None,
                 word_scoring: str | None = None, progress: bool = False) -> list[Prediction]:
        """Predict a label (and per-label probabilities) for each input; ``scoring`` and
        ``length_normalize`` default to :attr:`settings` (what the prompt was trained with);
        ``field_map`` as in :meth:`as_examples`; ``progress`` draws a bar over the batches."""
        if isinstance(inputs, (str, Mapping)):
            inputs = [inputs]
        rows = self.as_examples(inputs, field_map)
        how = self.settings.override(scoring=scoring, length_normalize=length_normalize, word_scoring=word_scoring)
        preds, _ = predict(self.backbone, self.task, rows, self.conditioning, batch_size, how.scoring, how.length_normalize,
                           progress=progress, max_length=self.settings.max_length, word_scoring=how.word_scoring)
        return preds

    def evaluate(self, examples: Sequence[Mapping[str, Any]], batch_size: int = 32, scoring: str | None = None,
                 length_normalize: bool | None = None, progress: bool = False,
                 word_scoring: str | None = None) -> EvalResult:
        """Metrics of the task on labelled ``examples``; ``scoring`` and ``length_normalize``
        default to :attr:`settings` (what the prompt was trained with)."""
        how = self.settings.override(scoring=scoring, length_normalize=length_normalize, word_scoring=word_scoring)
        return evaluate(self.backbone, self.task, examples, self.conditioning, batch_size, how.scoring, how.length_normalize,
                        progress, max_length=self.settings.max_length, word_scoring=how.word_scoring)
