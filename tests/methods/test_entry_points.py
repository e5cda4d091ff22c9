"""A method of another package is found through its ``softprompt.methods`` entry point."""

from __future__ import annotations

import sys
from importlib import metadata

import pytest

from softprompt.errors import ConfigError
from softprompt.methods import METHODS, get_method
from softprompt.methods.base import ENTRY_POINT_GROUP


@pytest.fixture
def plugin(monkeypatch, tmp_path):
    """A module of another package that registers ``their-method`` when imported, and an entry point naming it."""
    (tmp_path / "their_pkg_scale.py").write_text(
        "from dataclasses import dataclass\n"
        "from softprompt.methods import Method, MethodConfig, register_method\n\n\n"
        "@dataclass\nclass TheirConfig(MethodConfig):\n    width: int = 3\n\n\n"
        "@register_method('their-method', TheirConfig)\nclass TheirMethod(Method):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name="their-method", value="their_pkg_scale", group=ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def entry_points(**kw):
        found = real(**kw)
        return [*found, point] if kw.get("group") == ENTRY_POINT_GROUP else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    yield
    METHODS.pop("their-method", None)
    sys.modules.pop("their_pkg_scale", None)


def test_an_unregistered_name_is_loaded_from_its_entry_point(plugin):
    assert "their-method" not in METHODS
    config_cls, method_cls = get_method("their-method")
    assert method_cls.name == "their-method" and config_cls().width == 3


def test_an_unknown_name_names_the_entry_point_group():
    with pytest.raises(ConfigError, match="unknown method 'nope'.*'softprompt.methods' entry point"):
        get_method("nope")
