"""HyperPrompt: a fresh one is its global prompt, tasks get different prefixes, only the
hypernetwork, prompt and embeddings learn, saves restore bit for bit, decoders only."""

from __future__ import annotations

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, make_backbone
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods import HyperPrompt, HyperPromptConfig, PromptTuning, PromptTuningConfig
from softprompt.methods.loading import restore
from softprompt.scoring import label_scores
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")
ROWS = [{"text": t, "label": "positive"} for t in TOY_POS[:4]] + [{"text": t, "label": "negative"} for t in TOY_NEG[:4]]
SMALL = dict(prompt_length=3, init="vocab", bottleneck=4, task_embedding_dim=6, hidden=8, projected_dim=5,
             task="rotten_tomatoes,boolq")


def _hyper(bb, seed=2):
    return HyperPrompt(HyperPromptConfig(**SMALL), bb, TASK, seed=seed)


def _wake(method):
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        method.up.weight.copy_(torch.randn(method.up.weight.shape, generator=gen))
        method.projector[2].weight.copy_(torch.randn(method.projector[2].weight.shape, generator=gen))


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
def test_a_fresh_hyperprompt_scores_as_its_initial_prompt_for_every_task(family):
    bb = make_backbone(family)
    method = _hyper(bb)
    prompt = PromptTuning(PromptTuningConfig(3, "vocab"), bb, TASK, seed=2)
    batch = encode(bb, TASK, ROWS, prompt_length=3)
    with torch.no_grad():
        want = label_scores(bb, TASK, batch, prompt.inference_conditioning())
        for name in method.task_names:
            method.use_task(name)
            got = label_scores(bb, TASK, batch, method.inference_conditioning())
            assert float((got - want).abs().max()) < 1e-4


def test_tasks_get_different_prefixes_and_only_the_method_learns():
    bb = make_backbone("causal")
    method = _hyper(bb)
    _wake(method)
    a, b = (method.task_conditioning(n).layer_kv for n in method.task_names)
    assert a.length == 3 and len(a.layers) == 2
    assert not torch.allclose(a.layers[1][0], b.layers[1][0])
    method.use_task("boolq")
    method(bb, TASK, encode(bb, TASK, ROWS, prompt_length=3)).backward()
    assert all(p.grad is None for p in bb.model.parameters())
    for name, p in method.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert float(method.task_embeddings.grad[0].abs().sum()) == 0
    assert method.trained_per_task() == 6


def test_a_saved_hyperprompt_restores_bit_for_bit_and_other_families_are_refused(tmp_path):
    bb = make_backbone("causal")
    method = _hyper(bb)
    _wake(method)
    meta = {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "task": TASK.to_dict(),
            "training": {"method": "hyperprompt", "task": SMALL["task"]}}
    method.save(tmp_path / "h", meta)
    for name in method.task_names:
        back = restore(tmp_path / "h", bb, get_task(name))
        method.use_task(name)
        mine, theirs = back.inference_conditioning().layer_kv, method.inference_conditioning().layer_kv
        assert all(torch.equal(x, y) for lm, lt in zip(mine.layers, theirs.layers) for x, y in zip(lm, lt))
    for family in ("seq2seq", "masked"):
        with pytest.raises(ConfigError, match="layer_kv"):
            _hyper(make_backbone(family))


@pytest.mark.parametrize("bad", [{"bottleneck": 0}, {"prompt_length": 0}, {"hidden": -1}, {"task_embedding_dim": 0},
                                 {"projected_dim": 1.5}])
def test_bad_sizes_are_refused_naming_the_method_and_option(bad):
    (name, value), = bad.items()
    with pytest.raises(ConfigError, match=f"hyperprompt: {name} must be a whole number >= 1, got {value}"):
        HyperPromptConfig(task="rotten_tomatoes", **bad)
