"""A mixed batch (rows of several tasks, each with its own conditioning) scores each row as a
batch of that row's task alone does (issue 19 item 5), for adapter runs, Hyperformer,
multi-task prompt tuning and HyperPrompt on the tiny causal model; rows whose adapters differ
go through the model in one pass (per-row hooks), not one pass per task."""

from __future__ import annotations

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, make_backbone
from softprompt.conditioning import PerRow
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods import (Adapter, AdapterConfig, Hyperformer, HyperformerConfig, HyperPrompt,
                                HyperPromptConfig, MultiTaskPromptConfig, MultiTaskPromptTuning)
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")
ROWS = [{"text": t} for t in TOY_POS[:3] + TOY_NEG[:3]]
TASKS = "rotten_tomatoes,boolq,rte"


def _perturbed(method, seed: int):
    """``method`` with every learnt tensor moved at random, as training would (the zero-initialised
    up-projections too), so each task's conditioning differs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.3)
    return method


def _conditionings(kind: str, bb):
    """One conditioning per task (three) of a run of ``kind``: an adapter run per task (single-task
    adapters), or one multi-task run answering for each of its tasks."""
    if kind == "adapter":
        return [_perturbed(Adapter(AdapterConfig(bottleneck=4), bb, TASK, seed=s), s).inference_conditioning()
                for s in range(3)]
    method = {"hyperformer": lambda: Hyperformer(HyperformerConfig(bottleneck=4, task_embedding_dim=6, hidden=8,
                                                                  projected_dim=5, task=TASKS), bb, TASK),
              "hyperformer-per-layer": lambda: Hyperformer(HyperformerConfig(bottleneck=4, task_embedding_dim=6, hidden=8,
                                                                            projected_dim=5, per_layer=True, task=TASKS), bb, TASK),
              "multitask-prompt-tuning": lambda: MultiTaskPromptTuning(MultiTaskPromptConfig(prompt_length=3, init="vocab",
                                                                                             task=TASKS), bb, TASK),
              "hyperprompt": lambda: HyperPrompt(HyperPromptConfig(prompt_length=3, init="vocab", bottleneck=4,
                                                                   task_embedding_dim=6, hidden=8, projected_dim=5,
                                                                   task=TASKS), bb, TASK)}[kind]()
    _perturbed(method, 5)
    return [method.inference_conditioning(name) for name in TASKS.split(",")]


def _passes(bb):
    """A list that counts the calls of the first block's attention (model passes), and its hook's handle."""
    calls = []
    handle = bb.blocks()[0].attention.register_forward_hook(lambda m, a, o: calls.append((o[0] if isinstance(o, tuple) else o).shape[0]))
    return calls, handle


@pytest.mark.parametrize("kind", ["adapter", "hyperformer", "hyperformer-per-layer", "multitask-prompt-tuning",
                                  "hyperprompt"])
def test_a_mixed_batch_scores_each_row_as_a_batch_of_its_task_alone(kind):
    bb = make_backbone("causal")
    conds = _conditionings(kind, bb)
    batch = encode(bb, TASK, ROWS, with_labels=False)
    per_row = [conds[i % 3] for i in range(len(ROWS))]
    with torch.no_grad():
        alone = [bb.word_scores(c, batch) for c in conds]  # every row under each task's conditioning
        calls, handle = _passes(bb)
        mixed = bb.word_scores(PerRow(tuple(per_row)), batch)
        handle.remove()
        mixed_gold = bb.gold_nll(PerRow(tuple(per_row)), encode(bb, TASK, [{**r, "label": "positive"} for r in ROWS]))
        gold_alone = [bb.gold_nll(c, encode(bb, TASK, [{**r, "label": "positive"} for r in ROWS])) for c in conds]
    want = torch.stack([alone[i % 3][i] for i in range(len(ROWS))])
    assert not torch.allclose(alone[0], alone[1], atol=1e-4)  # the tasks' conditionings differ, so the check can fail
    assert torch.allclose(mixed, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(mixed_gold, torch.stack([gold_alone[i % 3][i] for i in range(len(ROWS))]), atol=1e-5, rtol=1e-5)
    if kind.startswith(("adapter", "hyperformer")):
        assert calls == [len(ROWS)]  # one pass over all rows, each with its own adapters


def test_rows_with_and_without_adapters_or_of_another_shape_are_scored_group_by_group_and_still_exactly():
    bb = make_backbone("causal")
    a = _conditionings("adapter", bb)[0]
    wide = _perturbed(Adapter(AdapterConfig(bottleneck=6), bb, TASK, seed=9), 9).inference_conditioning()
    batch = encode(bb, TASK, ROWS[:3], with_labels=False)
    with torch.no_grad():
        for other in (wide, _conditionings("multitask-prompt-tuning", bb)[0]):
            calls, handle = _passes(bb)
            mixed = bb.word_scores(PerRow((a, other, a)), batch)
            handle.remove()
            assert calls[0] == 2 and 3 not in calls  # a's two rows, then the other's row (and a prompt's prefix) apart
            want = torch.stack([bb.word_scores(a, batch)[0], bb.word_scores(other, batch)[1], bb.word_scores(a, batch)[2]])
            assert torch.allclose(mixed, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["adapter", "hyperformer"])
def test_a_model_with_a_lead_token_scores_mixed_adapters_exactly_in_one_pass(kind):
    """A BOS model computes the lead token's keys/values apart, once, shared by rows, where per-row
    hooks would not meet it: under per-row hooks the lead goes with each row's text instead."""
    bb = make_backbone("causal-bos")
    assert bb.lead_ids and bb.shared_prefix
    conds = _conditionings(kind, bb)
    batch = encode(bb, TASK, ROWS, with_labels=False)
    gold = encode(bb, TASK, [{**r, "label": "positive"} for r in ROWS])
    per_row = PerRow(tuple(conds[i % 3] for i in range(len(ROWS))))
    with torch.no_grad():
        calls, handle = _passes(bb)
        mixed = bb.word_scores(per_row, batch)
        handle.remove()
        mixed_gold = bb.gold_nll(per_row, gold)
        want = torch.stack([bb.word_scores(conds[i % 3], batch)[i] for i in range(len(ROWS))])
        want_gold = torch.stack([bb.gold_nll(conds[i % 3], gold)[i] for i in range(len(ROWS))])
    assert calls == [len(ROWS)]  # one pass over all rows, the lead token in it
    assert bb.shared_prefix  # put back after the call
    assert torch.allclose(mixed, want, atol=1e-5, rtol=1e-5)
    assert torch.allclose(mixed_gold, want_gold, atol=1e-5, rtol=1e-5)


def test_per_row_hooks_refuse_a_call_over_part_of_the_batch():
    from softprompt.conditioning import row_hooks

    bb = make_backbone("causal")
    conds = _conditionings("adapter", bb)
    merged = row_hooks(conds)
    assert [(h.layer, h.site) for h in merged] == [(h.layer, h.site) for h in conds[0].layer_hooks]
    with pytest.raises(ConfigError, match="per-row layer hooks for 3 rows ran on 2"):
        merged[0].fn(torch.zeros(2, 4, bb.dim))
