"""Relation classification rows: a sentence and two entities, marked in the sentence on request.

A relation row holds ``text`` (the sentence), ``e1`` and ``e2`` (the entities' strings), where the
data has them ``e1_span``/``e2_span`` (``[start, end)`` character offsets in ``text``) and
``e1_type``/``e2_type``, and ``label`` (a relation with its direction, e.g. ``Cause-Effect(e2,e1)``).
Templates name the entities as fields (``{e1}``, ``{e2}``). A task's ``entity_markers``
(``--entity-markers``) rewrites ``text`` before the template reads it:

* ``none``: unchanged;
* ``tags``: ``<e1>…</e1>`` and ``<e2>…</e2>`` around the entities (SemEval's own markup);
* ``typed``: ``<e1:TYPE>…</e1:TYPE>``, the type from ``e1_type``/``e2_type``; a row without them
  is refused (:class:`~softprompt.errors.DataError`).

Without spans an entity is found as the first occurrence of its string (``e2`` the first one not
overlapping ``e1``). Marking follows Zhou & Chen (2021), "An Improved Baseline for Sentence-level
Relation Extraction" (entity markers, typed markers).
"""

from __future__ import annotations

from typing import Any, Mapping

from softprompt.errors import ConfigError, DataError

ENTITY_MARKERS = ("none", "tags", "typed")


def check_markers(style: str) -> str:
    """``style`` if it is one of :data:`ENTITY_MARKERS`, else :class:`ConfigError`."""
    if style not in ENTITY_MARKERS:
        raise ConfigError(f"unknown entity markers {style!r}; choose one of {', '.join(ENTITY_MARKERS)} (--entity-markers)")
    return style


def _where(row: Mapping[str, Any]) -> str:
    return "" if row.get("idx") is None else f" (row idx={row['idx']})"


def entity_spans(row: Mapping[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((start, end), (start, end))`` of e1 and e2 in ``row["text"]``: the row's spans, or the
    first occurrences of the strings. Raises :class:`DataError` for an entity not in the text or
    a span that does not hold its string."""
    spans = []
    for name in ("text", "e1", "e2"):
        if name not in row:
            raise DataError(f"a relation row needs fields text, e1 and e2; this one{_where(row)} lacks {name!r} "
                            f"(it has {', '.join(map(repr, row)) or 'none'}; map your columns with --field-map "
                            "text=COLUMN,e1=COLUMN,e2=COLUMN)")
        if name == "text":
            text = str(row["text"])
            continue
        entity = str(row[name])
        span = row.get(f"{name}_span")
        if span is not None:
            start, end = int(span[0]), int(span[1])
            if text[start:end] != entity:
                raise DataError(f"{name}_span {list(span)}{_where(row)} holds {text[start:end]!r}, not {name} = {entity!r}: "
                                f"fix the span, or drop {name}_span to find the string")
        else:
            start = text.find(entity)
            if name == "e2" and spans and start >= 0 and start < spans[0][1] and start + len(entity) > spans[0][0]:
                start = text.find(entity, spans[0][1])
            if start < 0 or not entity:
                raise DataError(f"{name} = {entity!r} is not in the text{_where(row)}: give the entity as it is written")
            end = start + len(entity)
        spans.append((start, end))
    (a0, a1), (b0, b1) = spans
    if a0 < b1 and b0 < a1:
        raise DataError(f"e1 and e2 overlap in the text{_where(row)}: markers cannot be placed")
    return spans[0], spans[1]


def mark_entities(row: Mapping[str, Any], style: str) -> dict[str, Any]:
    """A copy of ``row`` whose ``text`` has the entities marked in ``style`` (:data:`ENTITY_MARKERS`).
    Raises :class:`DataError` for ``typed`` on a row without ``e1_type``/``e2_type``, and as
    :func:`entity_spans`."""
    check_markers(style)
    if style == "none":
        return dict(row)
    if style == "typed":
        missing = [f for f in ("e1_type", "e2_type") if not row.get(f)]
        if missing:
            raise DataError(f"entity markers 'typed' need each row's entity types, but this row{_where(row)} lacks "
                            f"{', '.join(missing)}: use --entity-markers tags, or add the types (--field-map e1_type=COLUMN)")
    spans = entity_spans(row)  # checks the row's fields first
    text = str(row["text"])
    marks = []
    for name, (start, end) in zip(("e1", "e2"), spans):
        tag = f"{name}:{row[name + '_type']}" if style == "typed" else name
        marks.append((start, end, f"<{tag}>", f"</{tag}>"))
    for start, end, opening, closing in sorted(marks, reverse=True):  # from the right: offsets stay valid
        text = text[:start] + opening + text[start:end] + closing + text[end:]
    return {**row, "text": text}
