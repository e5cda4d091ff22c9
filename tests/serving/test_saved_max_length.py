"""serve scores each prompt as predict does: truncated to the prompt's own saved max length,
capped by the model's context (and so by serve's --max-length)."""

import pytest

from conftest import make_backbone
from softprompt.api import PromptedModel
from softprompt.serving import MultiPromptModel

from . import SENTIMENT, soft_prompt

LONG = "a gorgeous , witty , seductive movie that goes on and on " * 20


def _save(root, name, backbone, max_length):
    prompt = soft_prompt(backbone, SENTIMENT)
    prompt.metadata["training"] = {"max_length": max_length}
    return prompt.save(root / name)


def test_serve_and_predict_give_the_same_scores_for_a_prompt_saved_with_max_length_32(tmp_path):
    serving = make_backbone("causal")
    assert serving.max_length > 64  # the model's own context would hold far more than 32 tokens
    path = _save(tmp_path / "prompts", "short", serving, 32)
    engine = MultiPromptModel.from_dir(serving, tmp_path / "prompts")
    served = engine.classify([LONG], ["short"])[0]
    predicted = PromptedModel.from_saved(path, backbone=make_backbone("causal")).classify([LONG])[0]
    assert served.truncated
    assert served.scores == pytest.approx(predicted.scores, abs=1e-5)
    assert engine.check([LONG], "short") <= 32 - 4  # tokens run: the text's context within 32, less the prompt

    untruncated = PromptedModel.from_saved(path, backbone=make_backbone("causal"), max_length=10_000).classify([LONG])[0]
    assert served.scores != pytest.approx(untruncated.scores, abs=1e-5)  # the setting changes the answer


def test_serve_max_length_caps_a_longer_saved_max_length(tmp_path):
    serving = make_backbone("causal")
    serving.max_length = 32  # what serve --max-length 32 does to the shared backbone
    _save(tmp_path / "prompts", "long", serving, 64)
    _save(tmp_path / "prompts", "short", serving, 32)
    engine = MultiPromptModel.from_dir(serving, tmp_path / "prompts")
    capped, short = engine.classify([LONG, LONG], ["long", "short"])
    assert capped.scores == pytest.approx(short.scores, abs=1e-5)


def test_a_prompt_whose_saved_max_length_leaves_no_room_is_refused_at_load_not_per_request(tmp_path):
    serving = make_backbone("causal")
    _save(tmp_path / "prompts", "cramped", serving, 10)
    _save(tmp_path / "prompts", "fine", serving, 32)
    engine = MultiPromptModel.from_dir(serving, tmp_path / "prompts")
    assert "cramped" not in engine and "fine" in engine
    assert engine.refused["cramped"].startswith("prompt 'cramped' cannot be served with its saved max length (10 tokens): ")
