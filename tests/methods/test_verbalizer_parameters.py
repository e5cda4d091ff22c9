"""A method holds its task's verbalizer as a submodule: the verbalizer's parameters train with
the method's and are handed out (and restored) as ``verbalizer.<name>`` tensors."""

from __future__ import annotations

import pytest
import torch

from conftest import make_backbone
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods.base import get_method
from softprompt.tasks import AnswerVectorVerbalizer, LearnedWeightsVerbalizer, Task, Template

ROWS = [{"text": "great fun", "label": "pos"}, {"text": "so dull", "label": "neg"}]


def _method(verbalizer, family="causal"):
    bb = make_backbone(family)
    task = Task("t", Template("review : {text} sentiment :"), verbalizer)
    config_cls, cls = get_method("prompt-tuning")
    return bb, task, cls(config_cls(prompt_length=2, init="random-uniform"), bb, task)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_learned_word_weights_train_with_the_prompt(family):
    bb, task, method = _method(LearnedWeightsVerbalizer({"pos": ["great", "good fun"], "neg": ["bad", "dull"]}), family)
    assert method.verbalizer is task.verbalizer
    params = method.trainable_parameters()
    assert any(p is task.verbalizer.word_logits for p in params) and any(p is method.conditioning().input_vectors for p in params)
    loss = method(bb, task, encode(bb, task, ROWS))
    loss.backward()
    assert task.verbalizer.word_logits.grad.abs().sum() > 0
    assert set(method.verbalizer_tensors()) == {"verbalizer.word_logits"}


def test_verbalizer_tensors_restore_into_a_fresh_method():
    words = {"pos": ["great", "good"], "neg": ["bad", "dull"]}
    _, _, trained = _method(LearnedWeightsVerbalizer(words))
    with torch.no_grad():
        trained.verbalizer.word_logits.copy_(torch.tensor([1.0, -1.0, 0.5, 0.0]))
    saved = trained.verbalizer_tensors()
    _, task, fresh = _method(LearnedWeightsVerbalizer(words))
    fresh.load_verbalizer_tensors(saved)
    assert torch.equal(task.verbalizer.word_logits, saved["verbalizer.word_logits"])
    with pytest.raises(ConfigError, match="verbalizer.word_logits"):
        fresh.load_verbalizer_tensors({})


def test_answer_vectors_are_built_by_the_method_and_trained_with_it():
    bb, task, method = _method(AnswerVectorVerbalizer(["positive", "negative"]))
    vectors = task.verbalizer.answer_vectors
    assert vectors.shape == (2, bb.dim)
    assert any(p is vectors for p in method.trainable_parameters())
    assert method.verbalizer_tensors()["verbalizer.answer_vectors"].shape == (2, bb.dim)


@pytest.mark.parametrize("method, extra", [("prompt-tuning", {}), ("prefix-tuning", {"optimizer": "adam"})])
def test_trained_word_weights_are_saved_and_restored_with_the_run(method, extra, tiny_model_dirs, tmp_path):
    from conftest import write_toy_data
    from softprompt.api import PromptedModel
    from softprompt.artifacts import load_artifact
    from softprompt.training import train

    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    out = tmp_path / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=2,
          method=method, init="vocab", batch_size=4, max_steps=2, eval_every=2, out=str(out), progress=False,
          lr=0.5, label_words="learned:positive=great,good,fun;negative=bad,dull", zero_shot_baseline=False, **extra)
    saved = load_artifact(out / "best").tensors["verbalizer.word_logits"]
    assert saved.shape == (5,) and not torch.allclose(saved, saved[0])  # trained away from uniform
    pm = PromptedModel.from_saved(out / "best")
    assert isinstance(pm.task.verbalizer, LearnedWeightsVerbalizer)
    assert torch.equal(pm.task.verbalizer.word_logits.detach(), saved)
