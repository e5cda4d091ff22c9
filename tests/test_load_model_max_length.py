"""The longest input is fixed when a model loads (``load_model(max_length=...)``); nothing in the
package changes a backbone's ``max_length`` afterwards."""

import re
from pathlib import Path

import pytest

import softprompt
from softprompt.modeling import load_model


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_load_model_takes_the_longest_input(tiny_model_dirs, family):
    default = load_model(str(tiny_model_dirs[family]))
    assert load_model(str(tiny_model_dirs[family]), max_length=40).max_length == min(40, default.max_length) == 40
    assert load_model(str(tiny_model_dirs[family]), max_length=10**9).max_length == default.max_length  # the model's context caps it


def test_no_code_outside_backbones_sets_a_backbones_max_length():
    root = Path(softprompt.__file__).parent
    hits = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py") if "backbones" not in path.parts
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"\.max_length\s*=[^=]", line) and "self.max_length" not in line]
    assert hits == []
