"""Templates: how an example becomes the text a frozen model reads.

A template is a string with slots, e.g. ``"Review: {text}\\nSentiment:"``. It is parsed once by
this module's own scanner (never ``eval``, nor :class:`string.Formatter`, which cannot tell
``{mask}`` from ``{mask:}``) into :class:`Part` s. Three kinds of slot:

- ``{field}``: the example's value of ``field``; a field may appear several times (an entity
  name in two places). Literal text between slots is ``Part("text", ...)``; ``{{`` and ``}}``
  are literal braces.
- ``{mask}`` / ``{mask:name}``: an *answer slot*, where the model's answer is scored. A template
  may hold several, with distinct names (``{mask}`` is named ``"mask"``), e.g. ``{mask:head}``
  ... ``{mask:tail}``. A template without one is answered at its end.
- ``{soft}``, ``{soft*N}``, ``{soft:name}``, ``{soft:name*N}``: ``N`` (default 1) learnable
  *virtual tokens*, vectors placed at those positions inside the text. A name used twice means
  the same vectors (its counts must agree); each unnamed ``{soft}`` has vectors of its own,
  named ``soft1``, ``soft2``, ... in reading order.

Names of answer slots and virtual tokens are identifiers (letters, digits, ``_``; not starting
with a digit). Errors are :class:`TemplateError` s naming the bad slot.

:meth:`Template.segments` gives the structured rendering encoding uses: text, answer slots and
virtual tokens in reading order. :meth:`Template.render` gives a plain string.

Saved templates (:meth:`Template.to_dict`) written before virtual tokens existed read
``{soft}`` as a field named ``soft`` (syntax 1); a template holding a virtual-token slot saves
``"syntax": 2`` beside its text, so each reloads as it was meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from softprompt.errors import DataError, TemplateError
from softprompt.tasks.data import example_ref

PART_KINDS = ("text", "field", "mask", "soft")
SEGMENT_KINDS = ("text", "answer", "virtual")
SYNTAX = 2  # 1: only {mask} is special; 2: answer slots may be named, virtual tokens {soft...}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SOFT = re.compile(r"soft(?::(?P<name>[^*]*))?(?:\*(?P<count>.*))?\Z", re.S)
_ADVICE = "use --template to write a template over the examples' fields, or --field-map ours=theirs to rename a column"


@dataclass(frozen=True)
class Part:
    """One piece of a parsed template: ``kind`` is one of ``PART_KINDS``; ``value`` the text, the
    field's name or the slot's name; ``count`` the number of virtual tokens of a ``"soft"`` part."""

    kind: str
    value: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in PART_KINDS:
            raise TemplateError(f"unknown template part kind {self.kind!r}; known: {', '.join(PART_KINDS)}")


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered example: ``kind`` is one of ``SEGMENT_KINDS``.

    ``"text"``: ``value`` is text (literal text and field values joined); ``"answer"``: ``value``
    is the answer slot's name; ``"virtual"``: ``value`` is the name and ``count`` the number of
    virtual tokens (indices ``0 .. count - 1`` of the vectors of that name). ``fields``: in a
    ``"text"`` segment, ``(name, start, end)`` character offsets in ``value`` of each field value
    it holds (not compared: two segments of the same text are equal).
    """

    kind: str
    value: str
    count: int = 1
    fields: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)


class Template:
    """A parsed template string; see the module docstring for the syntax.

    ``syntax=1`` reads a template as before virtual tokens existed (``{soft}`` is a field).
    """

    def __init__(self, text: str, syntax: int = SYNTAX) -> None:
        if not isinstance(text, str):
            raise TemplateError(f"a template is a string with {{field}} slots, got {type(text).__name__}")
        if syntax not in (1, 2):
            raise TemplateError(f"template syntax {syntax!r} is unknown; saved templates have syntax 1 or 2")
        self.text = text
        self.syntax = syntax
        self.parts: tuple[Part, ...] = _parse(text, syntax)
        if not self.fields:
            raise TemplateError(
                f"template {text!r} has no {{field}} slot, so every example would read the same; "
                'add one, e.g. "Review: {text}\\nSentiment:"'
            )

    @property
    def fields(self) -> tuple[str, ...]:
        """Field slots in order of first use, without duplicates and without special slots."""
        return tuple(dict.fromkeys(p.value for p in self.parts if p.kind == "field"))

    @property
    def has_mask(self) -> bool:
        """Whether the template has an answer slot (``{mask}`` or ``{mask:name}``)."""
        return any(part.kind == "mask" for part in self.parts)

    @property
    def answer_slots(self) -> tuple[str, ...]:
        """Names of the answer slots in reading order: ``("mask",)`` for ``{mask}``; ``()`` without."""
        return tuple(p.value for p in self.parts if p.kind == "mask")

    @property
    def virtual_tokens(self) -> dict[str, int]:
        """Each virtual-token name and its count, in order of first use (``{}`` without any)."""
        return {p.value: p.count for p in self.parts if p.kind == "soft"}

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

    def segments(self, example: Mapping[str, Any], overrides: Mapping[str, str] | None = None) -> tuple[Segment, ...]:
        """The structured rendering: text (literal text and field values joined, each field's place
        in it kept in :attr:`Segment.fields`), answer slots and virtual tokens in reading order;
        ``overrides[name]`` replaces a field's value.

        Adjacent text is one segment; no segment is empty text. Raises as :func:`field_text`.
        """
        out: list[Segment] = []
        for part in self.parts:
            if part.kind in ("text", "field"):
                if part.kind == "text":
                    text = part.value
                elif overrides is not None and part.value in overrides:
                    text = overrides[part.value]
                else:
                    text = field_text(example, part.value)
                spans = ((part.value, 0, len(text)),) if part.kind == "field" else ()
                if out and out[-1].kind == "text":
                    shift = len(out[-1].value)
                    out[-1] = Segment("text", out[-1].value + text,
                                      fields=out[-1].fields + tuple((n, a + shift, b + shift) for n, a, b in spans))
                elif text:
                    out.append(Segment("text", text, fields=spans))
            else:
                out.append(Segment("answer" if part.kind == "mask" else "virtual", part.value, part.count))
        return tuple(out)

    def render(
        self,
        example: Mapping[str, Any],
        mask_token: str | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> str:
        """Fill the slots from ``example``; ``overrides[name]`` replaces a field's value.

        Values are written with ``str()``; a list or tuple is written as its items joined by
        a space (e.g. the two candidate sentences of a ``choices`` field). Each answer slot is
        written as ``mask_token`` (required when the template has one); virtual tokens are
        vectors, not text, and are left out (:meth:`segments` keeps their places).
        """
        pieces = []
        for seg in self.segments(example, overrides):
            if seg.kind == "text":
                pieces.append(seg.value)
            elif seg.kind == "answer":
                if mask_token is None:
                    raise TemplateError(
                        f"template {self.text!r} has a {_slot_text('mask', seg.value)} slot but no mask token was "
                        "given: only masked LMs fill {mask}; remove it for other models"
                    )
                pieces.append(mask_token)
        return "".join(pieces)

    def render_around_mask(
        self, example: Mapping[str, Any], overrides: Mapping[str, str] | None = None
    ) -> tuple[str, str]:
        """The rendered text before and after the one answer slot (``after`` is ``""`` without one).

        Raises :class:`TemplateError` for a template with several answer slots or virtual tokens
        (use :meth:`segments`).
        """
        if len(self.answer_slots) > 1 or self.virtual_tokens:
            raise TemplateError(
                f"template {self.text!r} has several answer slots or virtual tokens: it has no single text "
                "before and after its answer; encode it (softprompt.encoding.encode) to get their positions"
            )
        segs = self.segments(example, overrides)
        texts = [[], []]
        side = 0
        for seg in segs:
            if seg.kind == "answer":
                side = 1
            else:
                texts[side].append(seg.value)
        return "".join(texts[0]), "".join(texts[1])

    def with_mask(self) -> Template:
        """This template with ``" {mask}"`` appended, unless it has an answer slot already."""
        return self if self.has_mask else Template(self.text + " {mask}", self.syntax)

    def to_dict(self) -> dict[str, Any]:
        """``{"text": ...}``, plus ``"syntax": 2`` when it holds a virtual-token slot (which syntax 1
        would read as a field)."""
        if self.syntax == 1 or not any(p.kind == "soft" for p in self.parts):
            return {"text": self.text}
        return {"text": self.text, "syntax": self.syntax}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        """The template :meth:`to_dict` wrote; without ``"syntax"``, read as syntax 1 (saved before
        virtual tokens existed)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("text"), str):
            raise TemplateError(f'a saved template is {{"text": "..."}}, got {data!r}')
        return cls(data["text"], data.get("syntax", 1))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.parts == self.parts

    def __hash__(self) -> int:
        return hash(self.parts)

    def __repr__(self) -> str:
        return f"Template({self.text!r})" if self.syntax == SYNTAX else f"Template({self.text!r}, syntax={self.syntax})"


def _slot_text(kind: str, name: str, count: int = 1) -> str:
    """How a slot is written: ``{mask}``, ``{mask:head}``, ``{soft:x*2}``."""
    if kind == "mask":
        return "{mask}" if name == "mask" else "{mask:" + name + "}"
    return "{soft:" + name + (f"*{count}" if count != 1 else "") + "}"


def _scan(text: str) -> list[tuple[str, str]]:
    """``("text", literal)`` and ``("slot", inside the braces)`` pieces of ``text``, in order."""
    pieces: list[tuple[str, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in "{}" and text[i: i + 2] == c * 2:
            literal.append(c)
            i += 2
            continue
        if c == "}":
            raise TemplateError(
                f"cannot parse template {text!r}: single '}}' at character {i}; write a literal brace as {{{{ or }}}}"
            )
        if c == "{":
            close = text.find("}", i + 1)
            inner = text[i + 1: close]
            if close < 0 or "{" in inner:
                raise TemplateError(
                    f"cannot parse template {text!r}: '{{' at character {i} is not closed; write a literal brace "
                    "as {{ or }}"
                )
            if literal:
                pieces.append(("text", "".join(literal)))
                literal = []
            pieces.append(("slot", inner))
            i = close + 1
            continue
        literal.append(c)
        i += 1
    if literal:
        pieces.append(("text", "".join(literal)))
    return pieces


def _parse(text: str, syntax: int = SYNTAX) -> tuple[Part, ...]:
    parts: list[Part] = []
    answers: set[str] = set()
    soft: dict[str, tuple[int, str]] = {}  # name -> (count, slot as written)
    unnamed = 0
    for kind, inner in _scan(text):
        if kind == "text":
            parts.append(Part("text", inner))
            continue
        slot = "{" + inner + "}"
        if inner == "mask" or inner.startswith("mask:"):
            name = "mask" if inner == "mask" else inner[len("mask:"):]
            if not _NAME.match(name):
                raise TemplateError(
                    f"template slot {slot} names its answer slot {name!r}, not an identifier; write {{mask}} or "
                    "{mask:name} with a name of letters, digits and _, e.g. {mask:head}"
                )
            if name in answers:
                raise TemplateError(
                    f"template {text!r} has more than one answer slot named {name!r} ({slot} twice); give each "
                    "answer slot its own name, e.g. {mask:head} ... {mask:tail}"
                )
            answers.add(name)
            parts.append(Part("mask", name))
            continue
        match = _SOFT.match(inner) if syntax >= 2 else None
        if match:
            name, count = match.group("name"), match.group("count")
            if name is None:
                unnamed += 1
                name = f"soft{unnamed}"
            elif re.fullmatch(r"soft[0-9]+", name):
                raise TemplateError(
                    f"template slot {slot} takes a name unnamed {{soft}} slots get (soft1, soft2, ...); rename it"
                )
            elif not _NAME.match(name):
                raise TemplateError(
                    f"template slot {slot} names its virtual tokens {name!r}, not an identifier; write {{soft:name}} "
                    "with a name of letters, digits and _, e.g. {soft:subj}"
                )
            if count is not None and not (count.isdigit() and count.isascii() and int(count) > 0):
                raise TemplateError(
                    f"template slot {slot} asks for {count!r} virtual tokens; write a whole number of at least 1, "
                    "e.g. {soft*4}"
                )
            n = 1 if count is None else int(count)
            if name in soft and soft[name][0] != n:
                raise TemplateError(
                    f"template slots {soft[name][1]} and {slot} share the virtual tokens {name!r} but count "
                    f"{soft[name][0]} and {n}: give both the same count, or another name to one"
                )
            soft.setdefault(name, (n, slot))
            parts.append(Part("soft", name, n))
            continue
        if "!" in inner or ":" in inner:
            raise TemplateError(
                f"template slot {slot} has a conversion or format spec; only plain {{field}} slots, "
                "{mask:name} and {soft:name*N} are supported (write literal braces as {{ and }})"
            )
        if not inner or inner != inner.strip() or any(c in inner for c in ".[]"):
            raise TemplateError(
                f"template slot {slot} is not a field name; write a plain name such as "
                "{text} (no spaces around it, no attribute or index access)"
            )
        parts.append(Part("field", inner))
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
