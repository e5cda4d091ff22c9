"""A method's config built from a command's options or from a saved output's metadata.

``softprompt train`` (a :class:`~softprompt.config.TrainConfig`) and restoring a saved output
(:func:`softprompt.methods.loading.restore`, from the ``training`` options its metadata records)
build the registered method's config the same way, here, beside the registry: the fields the
method's config shares with the command (``prompt_length``, ``init``, ...) come from the options,
the method's own from ``method_options`` (``--method-options``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ..errors import ConfigError, with_suggestions
from .base import get_method


def parse_method_options(options: str | dict[str, Any] | None) -> dict[str, Any]:
    """``'hidden=512,shots=4'`` (or a YAML mapping) -> ``{'hidden': 512, 'shots': 4}``; values are
    read as YAML scalars (numbers, booleans, strings)."""
    if not options:
        return {}
    if isinstance(options, dict):
        return {str(k).replace("-", "_"): v for k, v in options.items()}
    import yaml

    out = {}
    for part in str(options).split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"--method-options: {part.strip()!r} is not key=value (e.g. 'hidden=512,shots=4')")
        key, value = part.split("=", 1)
        out[key.strip().replace("-", "_")] = yaml.safe_load(value.strip()) if value.strip() else ""
    return out


def method_config(method: str, options: Mapping[str, Any]):
    """``(method config, method class)`` of the method registered as ``method``: the config's fields
    taken from ``options`` (a command's options by name), then from ``options["method_options"]``.

    Raises :class:`ConfigError` naming an unknown method, a setting the method lacks, or a value it refuses.
    """
    config_cls, method_cls = get_method(method)
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: v for k, v in options.items() if k in names}
    extra = parse_method_options(options.get("method_options"))
    unknown = sorted(set(extra) - names)
    if unknown:
        raise ConfigError(f"--method-options: method {method!r} has no setting(s) {with_suggestions(unknown, names)}; "
                          f"its settings: {sorted(names) or 'none'}")
    values.update(extra)
    try:
        return config_cls(**values), method_cls
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--method-options for {method!r}: {exc}") from exc


def method_config_from(cfg):
    """``(method config, method class)`` for ``cfg.method`` (``cfg`` a :class:`~softprompt.config.TrainConfig`):
    fields shared with the command come from ``cfg``, the method's own from ``--method-options``."""
    return method_config(cfg.method, dataclasses.asdict(cfg))
