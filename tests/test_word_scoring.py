"""``--word-scoring first-token``: each candidate word scored by its first token alone, on every
family; the setting is saved with the run's scoring settings and read back as their default."""

from __future__ import annotations

import pytest
import torch

from conftest import make_backbone, write_toy_data
from softprompt.api import PromptedModel, ScoringSettings
from softprompt.encoding import encode
from softprompt.errors import ArtifactError, ConfigError
from softprompt.scoring import WORD_SCORINGS, label_scores
from softprompt.tasks import Task, Template, Verbalizer
from softprompt.training import train

ROWS = [{"text": "great fun"}, {"text": "so dull and boring"}]


def _task(words):
    return Task("t", Template("review : {text} sentiment :"), Verbalizer(words))


@pytest.mark.parametrize("family", ["causal", "causal-bos", "seq2seq", "masked"])
def test_first_token_scores_each_word_as_its_first_token(family):
    bb = make_backbone(family)
    long = _task({"pos": ["very good", "great"], "neg": ["not good at all"]})
    first = _task({"pos": ["very", "great"], "neg": ["not"]})
    with torch.no_grad():
        got = label_scores(bb, long, encode(bb, long, ROWS, with_labels=False), None, word_scoring="first-token")
        want = label_scores(bb, first, encode(bb, first, ROWS, with_labels=False), None)
        exact = label_scores(bb, long, encode(bb, long, ROWS, with_labels=False), None)
    assert torch.allclose(got.softmax(-1), want.softmax(-1), atol=1e-6)
    assert not torch.allclose(got.softmax(-1), exact.softmax(-1), atol=1e-3)


def test_unknown_word_scoring_is_refused():
    bb = make_backbone("causal")
    task = _task({"pos": "great", "neg": "bad"})
    with pytest.raises(ConfigError, match="--word-scoring"):
        label_scores(bb, task, encode(bb, task, ROWS, with_labels=False), None, word_scoring="last-token")
    assert WORD_SCORINGS == ("exact", "first-token")


def test_the_setting_is_saved_with_the_run_and_is_the_default_after(tiny_model_dirs, tmp_path):
    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    out = tmp_path / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=2,
          init="vocab", batch_size=4, max_steps=1, eval_every=1, out=str(out), progress=False,
          word_scoring="first-token", label_words="positive=very good;negative=not good", zero_shot_baseline=False)
    pm = PromptedModel.from_saved(out / "best")
    assert pm.settings.word_scoring == "first-token"
    assert PromptedModel.from_saved(out / "best", word_scoring="exact").settings.word_scoring == "exact"
    assert ScoringSettings.from_metadata({"training": {}}).word_scoring == "exact"  # older outputs
    with pytest.raises(ArtifactError, match="training.word_scoring"):
        ScoringSettings.from_metadata({"training": {"word_scoring": "all"}})
