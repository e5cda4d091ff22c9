"""Templates: how an example becomes the text a frozen model reads.

A template is a string with ``{field}`` slots, e.g. ``"Review: {text}\\nSentiment:"``. It is
parsed once with :meth:`string.Formatter.parse` (never ``eval``) into :class:`Part` s:

- ``Part("text", ...)``: literal text (``{{`` and ``}}`` are literal braces);
- ``Part("field", name)``: the example's value of ``name``;
- ``Part("mask", "mask")``: the special slot ``{mask}``, where a masked LM predicts the label.

Special slots are looked up by name in ``_SPECIAL_SLOTS``; a later kind (say ``"soft"``,
learnable virtual tokens placed inside the text) is one more entry there, in
``PART_KINDS`` and in :meth:`Template.render`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from softprompt.errors import DataError, TemplateError
from softprompt.tasks.data import example_ref

PART_KINDS = ("text", "field", "mask")
_SPECIAL_SLOTS = {"mask": "mask"}  # slot name -> part kind
_ADVICE = "use --template to write a template over the examples' fields, or --field-map ours=theirs to rename a column"


@dataclass(frozen=True)
class Part:
    """One piece of a parsed template: ``kind`` is one of ``PART_KINDS``."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in PART_KINDS:
            raise TemplateError(f"unknown template part kind {self.kind!r}; known: {', '.join(PART_KINDS)}")


class Template:
    """A parsed template string; see the module docstring for the syntax."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TemplateError(f"a template is a string with {{field}} slots, got {type(text).__name__}")
        self.text = text
        self.parts: tuple[Part, ...] = _parse(text)
        if not self.fields:
            raise TemplateError(
                f"template {text!r} has no {{field}} slot, so every example would read the same; "
                'add one, e.g. "Review: {text}\\nSentiment:"'
            )
        if sum(part.kind == "mask" for part in self.parts) > 1:
            raise TemplateError(f"template {text!r} has more than one {{mask}} slot; use one")

    @property
    def fields(self) -> tuple[str, ...]:
        """Field slots in order of first use, without duplicates and without ``mask``."""
        return tuple(dict.fromkeys(p.value for p in self.parts if p.kind == "field"))

    @property
    def has_mask(self) -> bool:
        return any(part.kind == "mask" for part in self.parts)

    def check_fields(self, available: Iterable[str], where: str = "") -> None:
        """Raise :class:`TemplateError` if a slot names a field not in ``available``."""
        available = list(available)
        missing = [name for name in self.fields if name not in available]
        if missing:
            prefix = f"{where}: " if where else ""
            slots = ", ".join("{" + name + "}" for name in missing)
            raise TemplateError(
                f"{prefix}template slot {slots} has no matching field; the examples have "
                f"{', '.join(map(repr, available)) or 'no fields'}; {_ADVICE}"
            )

    def render(
        self,
        example: Mapping[str, Any],
        mask_token: str | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> str:
        """Fill the slots from ``example``; ``overrides[name]`` replaces a field's value.

        Values are written with ``str()``; a list or tuple is written as its items joined by
        a space (e.g. the two candidate sentences of a ``choices`` field).
        """
        pieces = []
        for part in self.parts:
            if part.kind == "text":
                pieces.append(part.value)
            elif part.kind == "mask":
                if mask_token is None:
                    raise TemplateError(
                        f"template {self.text!r} has a {{mask}} slot but no mask token was given: "
                        "only masked LMs fill {mask}; remove it for other models"
                    )
                pieces.append(mask_token)
            elif overrides is not None and part.value in overrides:
                pieces.append(overrides[part.value])
            else:
                pieces.append(field_text(example, part.value))
        return "".join(pieces)

    def render_around_mask(
        self, example: Mapping[str, Any], overrides: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """The rendered text before and after the ``{mask}`` slot (``after`` is ``""`` without one)."""
        sentinel = "\x00"
        while sentinel in self.text or any(sentinel in str(v) for v in example.values()):
            sentinel += "\x00"
        text = self.render(example, mask_token=sentinel if self.has_mask else None, overrides=overrides)
        before, _, after = text.partition(sentinel) if self.has_mask else (text, "", "")
        return before, after

    def with_mask(self) -> Template:
        """This template with ``" {mask}"`` appended, unless it has a ``{mask}`` already."""
        return self if self.has_mask else Template(self.text + " {mask}")

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        if not isinstance(data, Mapping) or not isinstance(data.get("text"), str):
            raise TemplateError(f'a saved template is {{"text": "..."}}, got {data!r}')
        return cls(data["text"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _parse(text: str) -> tuple[Part, ...]:
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError as err:
        raise TemplateError(
            f"cannot parse template {text!r}: {err}; write a literal brace as {{{{ or }}}}"
        ) from err
    parts: list[Part] = []
    for literal, name, spec, conversion in pieces:
        if literal:
            if parts and parts[-1].kind == "text":
                parts[-1] = Part("text", parts[-1].value + literal)
            else:
                parts.append(Part("text", literal))
        if name is None:
            continue
        if conversion is not None or spec:
            slot = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise TemplateError(
                f"template slot {slot} has a conversion or format spec; only plain {{field}} "
                "slots are supported (write literal braces as {{ and }})"
            )
        if not name or name != name.strip() or any(c in name for c in ".[]"):
            raise TemplateError(
                f"template slot {{{name}}} is not a field name; write a plain name such as "
                "{text} (no spaces around it, no attribute or index access)"
            )
        parts.append(Part(_SPECIAL_SLOTS.get(name, "field"), name))
    return tuple(parts)


def field_text(example: Mapping[str, Any], name: str) -> str:
    """The text ``render`` writes for field ``name`` (use it to measure or truncate a field).

    ``str(value)``, or a list's items joined by a space. Raises :class:`TemplateError` if the
    field is missing and :class:`DataError` if its text is empty.
    """
    if name not in example:
        raise TemplateError(
            f"template slot {{{name}}} has no value{example_ref(example)}; the example has "
            f"{', '.join(map(repr, example)) or 'no fields'}; {_ADVICE}"
        )
    value = example[name]
    if isinstance(value, (list, tuple)):
        text = " ".join(str(item) for item in value)
    else:
        text = "" if value is None else str(value)
    if not text.strip():
        raise DataError(
            f"empty text in field {name!r}{example_ref(example)}; drop the example or fill "
            "the field"
        )
    return text
