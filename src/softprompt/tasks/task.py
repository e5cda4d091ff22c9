"""A task: template + verbalizer + metrics, and where its data lives."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from softprompt.errors import ConfigError, DataError, TemplateError, UnknownLabelError
from softprompt.tasks.data import check_field_map, label_to_str
from softprompt.tasks.data import read_numbered_examples
from softprompt.tasks.metrics import check_metric_names
from softprompt.tasks.relations import check_markers, mark_entities
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer, verbalizer_from_dict


@dataclass
class Task:
    """A classification task for a frozen LM.

    ``splits`` maps a split name to a data file (used before any other source); it may be
    empty for built-in tasks, whose data is found by :func:`softprompt.tasks.load_split`.
    ``field_map`` (``{our field: your column}``, ``--field-map``) renames the columns of your own
    files and the keys of JSON inputs to the template's fields; it is saved with the task, so a
    run's eval, predict and serve read the files and inputs it was trained on without it again.
    """

    name: str
    template: Template
    verbalizer: Verbalizer
    metrics: tuple[str, ...] = ("accuracy",)
    positive_label: str | None = None
    description: str = ""
    splits: dict[str, str] = field(default_factory=dict)
    entity_markers: str = "none"  # relation tasks: how e1/e2 are marked in {text} (tasks/relations.py)
    field_map: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a task needs a non-empty name, got {self.name!r}")
        if isinstance(self.template, str):
            self.template = Template(self.template)
        if not isinstance(self.template, Template):
            raise ConfigError(f"task {self.name!r}: template must be a Template, got {self.template!r}")
        if not isinstance(self.verbalizer, Verbalizer):
            raise ConfigError(f"task {self.name!r}: verbalizer must be a Verbalizer, got {self.verbalizer!r}")
        if "label" in self.template.fields:
            raise TemplateError(f"task {self.name!r}: the template shows {{label}}, the gold answer; remove it")
        self.metrics = (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics)
        if not self.metrics:
            raise ConfigError(f"task {self.name!r} needs at least one metric")
        check_metric_names(self.metrics)
        if "f1" in self.metrics and self.positive_label is None:
            raise ConfigError(f"task {self.name!r} reports f1, so it needs positive_label")
        if (
            self.positive_label is not None
            and self.verbalizer.is_fixed
            and self.positive_label not in self.verbalizer.labels
        ):
            raise ConfigError(
                f"task {self.name!r}: positive_label {self.positive_label!r} is not one of the "
                f"labels {self.verbalizer.labels}"
            )
        self.splits = {str(k): str(v) for k, v in (self.splits or {}).items()}
        check_markers(self.entity_markers)
        self.field_map = check_field_map(self.field_map)

    def prepare(self, example: Mapping[str, Any]) -> Mapping[str, Any]:
        """The row the template reads: ``example`` with its entities marked in ``text`` when
        :attr:`entity_markers` says so (:func:`~softprompt.tasks.relations.mark_entities`), else as is."""
        return example if self.entity_markers == "none" else mark_entities(example, self.entity_markers)

    def placeholder(self) -> dict[str, Any]:
        """A one-word row that renders under this task (each template field "x"; the entities
        "x" and "y" of a text "x and y" when markers are placed; two choices for a choice
        verbalizer): what setup encodes to read label-word ids or check a saved run fits."""
        row: dict[str, Any] = {f: "x" for f in self.template.fields}
        if self.entity_markers != "none":
            row.update(text="x and y", e1="x", e2="y", e1_type="x", e2_type="y")
        choices = self.verbalizer.choices_field
        if choices:
            row[choices] = ["x", "y"]
        return row

    def primary_metric(self) -> str:
        """The metric that picks the best checkpoint: the first of ``metrics``."""
        return self.metrics[0]

    def validate(self, examples: Sequence[Mapping[str, Any]], where: str = "", labelled: bool = True,
                 names: Sequence[str] | None = None) -> None:
        """Check every example renders and (if ``labelled``) has a known gold label.

        Raises at the first bad example, naming ``where`` (e.g. the file) and its idx; ``names``
        (one per example, e.g. ``"input 2"`` or ``"data.jsonl:3"``) names each example in place
        of ``where``.
        """
        if names is not None and len(names) != len(examples):
            raise ValueError(f"{len(names)} names for {len(examples)} examples")
        mask = "<mask>" if self.template.has_mask else None
        for i, example in enumerate(examples):
            here = names[i] if names is not None else where
            context = f"{here}: task {self.name!r}" if here else f"task {self.name!r}"
            try:
                if not isinstance(example, Mapping):
                    raise DataError(f"an example must be a dict, got {type(example).__name__}")
                idx = example.get("idx")
                example = self.prepare(example)
                unnamed = "an example" if names is None else ""
                self.template.check_fields(example, where=unnamed if idx is None else f"example idx={idx}")
                self.template.render(example, mask_token=mask)
                if labelled:
                    self.verbalizer.gold_index(example)
                elif not self.verbalizer.is_fixed:
                    self.verbalizer.label_names(example)
            except UnknownLabelError as err:
                if labelled and self.verbalizer.is_fixed and "label" in example:  # the example: the data's labels
                    seen = {str(label_to_str(e["label"])) for e in examples if isinstance(e, Mapping) and "label" in e}
                    message = self.verbalizer.unknown_label_message(label_to_str(example["label"]), example, sorted(seen))
                    raise UnknownLabelError(f"{context}: {message}") from err
                raise UnknownLabelError(f"{context}: {err}") from err
            except DataError as err:  # TemplateError: keep the type
                raise type(err)(f"{context}: {err}") from err

    def read_file(self, path: str | os.PathLike, field_map: Mapping[str, str] | None = None, limit: int | None = None,
                  labelled: bool = True, shown_as: str | None = None) -> list[dict[str, Any]]:
        """The rows of one data file (:func:`~softprompt.tasks.data.read_examples`), its columns
        renamed by ``field_map`` (default: the task's own, :attr:`field_map`; ``{}``: none), each
        checked by :meth:`validate`: a bad row is named ``FILE:LINE`` (the line it starts on;
        ``shown_as`` names the file in messages instead of ``path``) and its idx. Raises
        :class:`DataError`."""
        field_map = self.field_map if field_map is None else field_map
        numbered = read_numbered_examples(path, field_map=field_map, limit=limit)
        rows = [row for _, row in numbered]
        self.validate(rows, labelled=labelled, names=[f"{shown_as or path}:{line}" for line, _ in numbered])
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the task's template, verbalizer and metrics (no paths)."""
        return {
            "name": self.name,
            "template": self.template.to_dict(),
            "verbalizer": self.verbalizer.to_dict(),
            "metrics": list(self.metrics),
            "positive_label": self.positive_label,
            "description": self.description,
            **({"entity_markers": self.entity_markers} if self.entity_markers != "none" else {}),
            **({"field_map": dict(self.field_map)} if self.field_map else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        missing = [key for key in ("name", "template", "verbalizer") if key not in data]
        if missing:
            raise ConfigError(f"a saved task needs {', '.join(missing)}; got keys {sorted(data)}")
        return cls(
            name=data["name"],
            template=Template.from_dict(data["template"]),
            verbalizer=verbalizer_from_dict(data["verbalizer"]),
            metrics=tuple(data.get("metrics", ("accuracy",))),
            positive_label=data.get("positive_label"),
            description=data.get("description", ""),
            splits=dict(data.get("splits", {})),
            entity_markers=data.get("entity_markers", "none"),
            field_map=data.get("field_map") or {},
        )
