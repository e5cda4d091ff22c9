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


def test_a_saved_prompt_loads_its_model_at_its_max_length_and_leaves_a_given_backbone_alone(tiny_model_dirs, toy_data, tmp_path):
    from softprompt.api import PromptedModel
    from softprompt.training import train

    model = str(tiny_model_dirs["causal"])
    train(data_dir=str(toy_data), model=model, prompt_length=2, max_steps=1, eval_every=1, batch_size=4, max_length=24,
          out=str(tmp_path / "run"), progress=False, test_split="")
    saved = tmp_path / "run" / "best"
    assert PromptedModel.from_saved(saved).backbone.max_length == 24
    given = load_model(model)
    before = given.max_length
    long_text = "great fun " * 40
    pm = PromptedModel.from_saved(saved, backbone=given)
    scores = pm.classify([long_text])[0].scores
    assert given.max_length == before > 24  # the caller's backbone is not changed ...
    assert scores == pytest.approx(PromptedModel.from_saved(saved).classify([long_text])[0].scores, abs=1e-5)  # ... yet scores at 24
    uncapped = PromptedModel.from_saved(saved, max_length=before).classify([long_text])[0].scores
    assert scores != pytest.approx(uncapped, abs=1e-5)  # the cap is what made them equal
