"""Whether a value read from YAML or JSON has a declared type, and how to name that type.

One checker for every place that reads typed values written by hand or by another program:
config files (:func:`softprompt.config.check_types`), saved metadata
(:func:`softprompt.artifacts.validate_metadata`) and checkpoint state. Nothing is converted:
``true`` is not a whole number, ``"5"`` is not a number, ``5`` is not a string.
"""

from __future__ import annotations

import types
import typing
from typing import Any

KINDS: dict[type, str] = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
                          list: "a JSON list", dict: "a JSON object"}
"""How each JSON type is named in messages."""


def fits(value: Any, tp: Any) -> bool:
    """True when ``value`` is of type ``tp`` (a class, ``X | None``, ``list[...]``, ...): a bool
    fits only ``bool``, an int fits ``int`` and ``float``; types outside :data:`KINDS` (``Any``,
    classes) accept anything, for their owner to check."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(fits(value, t) for t in typing.get_args(tp))
    tp = typing.get_origin(tp) or tp
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in KINDS:
        return isinstance(value, tp)
    return True


def describe(tp: Any, kinds: dict[type, str] = KINDS) -> str:
    """``tp`` in words, e.g. ``int | None`` -> ``"a whole number or null"`` (``kinds`` names each type)."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    words = [kinds.get(typing.get_origin(t) or t, str(t)) for t in args if t is not type(None)]
    return " or ".join(words) + (" or null" if type(None) in args else "")
