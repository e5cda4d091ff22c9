"""A template's learnable virtual tokens ({soft...}) train with the method, are saved with it,
restored, served, and refused by a method that learns nothing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import make_backbone, write_toy_data
from softprompt.api import PromptedModel
from softprompt.errors import ConfigError
from softprompt.methods import InContext, InContextConfig, ManualPrompt, ManualPromptConfig, PromptTuning, PromptTuningConfig
from softprompt.serving.engine import MultiPromptModel
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer
from softprompt.training import train

TEMPLATE = "{soft:intro*2} Review: {text} {soft} Sentiment:"


def _task(name="toy"):
    return Task(name=name, template=Template(TEMPLATE),
                verbalizer=Verbalizer({"positive": "great", "negative": "terrible"}))


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_virtual_tokens_are_parameters_of_the_method_and_reach_the_scores(family):
    bb = make_backbone(family)
    task = _task()
    method = PromptTuning(PromptTuningConfig(prompt_length=3, init="random-uniform"), bb, task, seed=0)
    tables = dict(method.virtual_tokens.tables.items())
    assert {n: tuple(t.shape) for n, t in tables.items()} == {"intro": (2, bb.dim), "soft1": (1, bb.dim)}
    assert all(any(p is t for p in method.trainable_parameters()) for t in tables.values())
    from softprompt.encoding import encode

    batch = encode(bb, task, [{"text": "a fine film", "label": "positive"}], prompt_length=3)
    loss = method(bb, task, batch)
    loss.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in tables.values())
    from softprompt.scoring import label_scores

    before = method.inference_conditioning()
    with torch.no_grad():
        scores = label_scores(bb, task, batch, before)
        tables["intro"].add_(torch.randn(tables["intro"].shape, generator=torch.Generator().manual_seed(0)))  # not a constant: layer norms remove one
        after = method.inference_conditioning()
        assert after is not before  # a new object once a table changed: caches see it
        assert not torch.allclose(scores, label_scores(bb, task, batch, after))


@pytest.mark.parametrize("method_cls, config", [(ManualPrompt, ManualPromptConfig()),
                                                (InContext, InContextConfig(shots=0))])
def test_a_method_that_learns_nothing_refuses_a_template_with_virtual_tokens(method_cls, config):
    with pytest.raises(ConfigError, match=r"virtual tokens \{soft...\}.*--method prompt-tuning"):
        method_cls(config, make_backbone("causal"), _task())


def test_virtual_tokens_are_saved_restored_and_served(tmp_path, tiny_model_dirs):
    data = write_toy_data(tmp_path / "data") / "toy"
    out = tmp_path / "run"
    train(model=str(tiny_model_dirs["causal"]), task="toy", template=TEMPLATE, label_words="positive=great;negative=terrible",
          train_file=str(data / "train.jsonl"), validation_file=str(data / "validation.jsonl"),
          test_file=str(data / "test.jsonl"), prompt_length=2, max_steps=4, eval_every=2, out=str(out), progress=False)
    results = json.loads((out / "results.json").read_text())
    # the baseline is skipped (without its vectors the template cannot be read), the run still ends
    assert results["test"]["n"] > 0 and results["zero_shot_test"] is None
    pm = PromptedModel.from_saved(out / "best")
    assert set(pm.conditioning.virtual_tokens) == {"intro", "soft1"}
    alone = pm.classify(["a witty film", "a dull mess"])
    root = tmp_path / "prompts"
    shutil.copytree(out / "best", root / "soft")
    served = MultiPromptModel.from_dir(pm.backbone, root).classify(["a witty film", "a dull mess"], ["soft", "soft"])
    assert [s.label for s in served] == [a.label for a in alone]
    for s, a in zip(served, alone):
        assert s.scores == pytest.approx(a.scores, abs=1e-5)
