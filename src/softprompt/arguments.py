"""A command's config dataclass as command-line options, and back: the one mechanism that
generates every ``softprompt`` command's options (and ``python -m softprompt.serving.app``'s).

Each field of the dataclass (:mod:`softprompt.config`) is one option ``--field-name`` with the
field's type, default, help text and choices (:func:`~softprompt.config.opt`); a ``bool`` or
``bool | None`` field is a ``--flag`` / ``--no-flag`` pair; a field marked ``positional`` is an
argument without a flag (a list field takes any number); a list option takes one or more values.
Options not given stay out of the parsed namespace, so :func:`config_from_args` can lay the
command line over a YAML ``--config`` file and the dataclass's defaults.

Why not ``transformers.HfArgumentParser`` (already a dependency, and it generates options from
dataclasses too)? Checked against transformers 5.x, it cannot keep this CLI's documented options
and errors:

* it has no positional arguments: ``predict TEXT...``, ``inspect DIR``, ``export-peft DIR``,
  ``import-peft ADAPTER`` and ``experiment FILE`` would each need a hand-written argument beside
  the generated ones, which is what this module removes;
* a ``bool | None`` field becomes an option that needs a value and has no ``--no-`` form (``eval
  --length-normalize`` and ``--no-length-normalize`` both fail), and ``--no-X`` exists only for
  fields whose default is True;
* it puts every default into the parsed namespace, so a YAML ``--config`` cannot tell an option
  given on the command line from a default;
* it adds a second spelling of every option (``--data_dir`` beside ``--data-dir``), hands a field's
  metadata to ``add_argument`` unchecked, narrows the dataclass's ``Field.type`` in place, and reads
  a ``<script>.args`` file beside ``sys.argv[0]`` unless told not to.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Mapping

from .config import build, field_default, load_yaml
from .errors import ConfigError

YAML_OPTION = "config"
"""The option (``--config FILE.yaml``) through which a command reads its options from YAML."""


def _base_type(tp: Any) -> Any:
    """``X`` for ``X | None``; any other type unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _is_list(tp: Any) -> bool:
    return tp is list or typing.get_origin(tp) is list


def add_options(parser: argparse.ArgumentParser, cls, yaml: bool = True, helps: Mapping[str, str] | None = None) -> None:
    """Add one option (or positional argument) per field of the dataclass ``cls`` to ``parser``;
    with ``yaml``, also ``--config FILE.yaml``. Type, default, help, choices, metavar and whether
    it is required come from the field (:func:`softprompt.config.opt`); ``helps`` (field name ->
    text, a command's entry of :data:`softprompt.config.COMMAND_HELP`) words a shared field's help
    for this command instead. Raises :class:`~softprompt.errors.ConfigError` for a name in ``helps``
    that is not a field of ``cls``."""
    helps = dict(helps or {})
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(helps) - set(hints))
    if unknown:
        raise ConfigError(f"help given for {unknown}, which {cls.__name__} has no field for")
    if yaml:
        parser.add_argument("--" + YAML_OPTION, help="YAML file of options (command-line options override it)")
    for f in dataclasses.fields(cls):
        meta = f.metadata
        tp = _base_type(hints[f.name])
        help_text = helps.get(f.name, meta.get("help", ""))
        if meta.get("positional"):
            nargs = "*" if _is_list(tp) else None
            parser.add_argument(f.name, nargs=nargs, default=argparse.SUPPRESS, help=help_text,
                                metavar=meta.get("metavar"))
            continue
        if "(default:" not in help_text and not meta.get("required"):
            help_text += f" (default: {field_default(f)!r})"
        flag = "--" + f.name.replace("_", "-")
        common = dict(default=argparse.SUPPRESS, help=help_text, dest=f.name)
        if meta.get("required"):
            common["required"] = True
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif _is_list(tp):
            parser.add_argument(flag, nargs="+", metavar=meta.get("metavar"), **common)
        else:
            parser.add_argument(flag, type=tp if tp in (int, float) else str, choices=meta.get("choices"),
                                metavar=meta.get("metavar"), **common)


def config_from_args(cls, args: argparse.Namespace, yaml: bool = True):
    """``cls`` from its defaults, then (with ``yaml`` and ``--config``) the YAML file's values, then
    the options given on the command line. Raises :class:`~softprompt.errors.ConfigError` naming
    an unknown key or a value of the wrong type in the file, or a value the dataclass refuses."""
    source = getattr(args, YAML_OPTION, None) if yaml else None
    values: dict[str, Any] = load_yaml(source) if source else {}
    names = {f.name for f in dataclasses.fields(cls)}
    values.update({k: v for k, v in vars(args).items() if k in names})
    return build(cls, values, source)  # command-line values come typed by argparse: a wrong type is the file's
