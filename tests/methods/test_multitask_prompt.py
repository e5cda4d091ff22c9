"""Multi-task prompt tuning: a prompt per task after a shared one; with one task, prompt tuning."""

from __future__ import annotations

import pytest
import torch

from conftest import make_backbone
from softprompt.errors import ConfigError
from softprompt.methods import MultiTaskPromptConfig, MultiTaskPromptTuning, PromptTuning, PromptTuningConfig
from softprompt.methods.loading import restore
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")


def _method(bb, **kw):
    return MultiTaskPromptTuning(MultiTaskPromptConfig(**{"prompt_length": 3, "init": "vocab", **kw}), bb, TASK, seed=1)


def test_each_task_gets_its_own_prompt_after_the_shared_one():
    bb = make_backbone("causal")
    m = _method(bb, task="rotten_tomatoes,boolq,rte", shared_length=2)
    conds = {name: m.task_conditioning(name).input_vectors for name in m.task_names}
    assert all(v.shape == (5, bb.dim) for v in conds.values()) and m.prompt_length == 5
    assert all(torch.equal(v[:2], m.shared.weight) for v in conds.values())
    assert not torch.equal(conds["boolq"][2:], conds["rte"][2:])
    m.use_task("rte")
    assert torch.equal(m.conditioning().input_vectors, conds["rte"])
    assert torch.equal(m.inference_conditioning().input_vectors, conds["rte"])
    m.use_task("boolq")  # the cached inference conditioning follows the active task
    assert torch.equal(m.inference_conditioning().input_vectors, conds["boolq"])
    with pytest.raises(ConfigError, match="not 'cb'"):
        m.use_task("cb")
    assert m.trained_per_task() == 3 * bb.dim and sum(p.numel() for p in m.trainable_parameters()) == 11 * bb.dim
    loss = m.task_conditioning("boolq").input_vectors.sum()
    loss.backward()
    assert m.prompts[1].weight.grad is not None and m.prompts[0].weight.grad is None and m.shared.weight.grad is not None


def test_with_one_task_it_is_prompt_tuning():
    bb = make_backbone("causal")
    one = _method(bb)
    assert one.task_names == ("rotten_tomatoes",)
    plain = PromptTuning(PromptTuningConfig(3, "vocab"), bb, TASK, seed=2)  # task 0's prompt is drawn from seed + 1
    assert torch.equal(one.conditioning().input_vectors, plain.conditioning().input_vectors)


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="shared_length"):
        MultiTaskPromptConfig(shared_length=-1)
    with pytest.raises(ConfigError, match="prompt_length"):
        MultiTaskPromptConfig(prompt_length=0)
    with pytest.raises(ConfigError, match="trained for tasks"):
        _method(make_backbone("causal"), task="boolq,rte")  # built with a task it does not list


def test_a_saved_run_restores_bit_for_bit_for_each_of_its_tasks(tmp_path):
    bb = make_backbone("causal")
    m = _method(bb, task="rotten_tomatoes,boolq", shared_length=2)
    meta = {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "task": TASK.to_dict(),
            "training": {"method": "multitask-prompt-tuning", "task": "rotten_tomatoes,boolq", "prompt_length": 3}}
    m.save(tmp_path / "m", meta)
    for name in ("boolq", "rotten_tomatoes"):
        back = restore(tmp_path / "m", bb, get_task(name))
        assert back.active_task == name and back.task_names == m.task_names
        assert torch.equal(back.inference_conditioning().input_vectors, m.task_conditioning(name).detach().input_vectors)
