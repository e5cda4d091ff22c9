"""Hyperformer: a fresh one changes nothing, tasks get different adapters, only the hypernetwork
and embeddings learn, saves restore bit for bit, and a new task trains its embedding alone."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, make_backbone
from softprompt.artifacts import load_artifact
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.methods import Hyperformer, HyperformerConfig
from softprompt.methods.loading import restore
from softprompt.scoring import label_scores
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")
ROWS = [{"text": t, "label": "positive"} for t in TOY_POS[:4]] + [{"text": t, "label": "negative"} for t in TOY_NEG[:4]]
TASKS = "rotten_tomatoes,boolq,rte"
SMALL = dict(bottleneck=4, task_embedding_dim=6, hidden=8, projected_dim=5)


def _hyper(bb, seed=0, **kw) -> Hyperformer:
    return Hyperformer(HyperformerConfig(**{**SMALL, "task": TASKS, **kw}), bb, TASK, seed=seed)


def _wake(method):
    """Give the up-projections' generators weights (they start at zero) and the projector a scale
    that makes the generated adapters matter, as training would."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in (method.projector[0], method.projector[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.5)
        for g in method.generators:
            g.up.weight.copy_(torch.randn(g.up.weight.shape, generator=gen) * 0.5)


@pytest.mark.parametrize("family", ["causal", "causal-bos", "seq2seq", "masked"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_a_fresh_hyperformer_leaves_scores_unchanged_and_a_trained_one_changes_them(family, per_layer):
    bb = make_backbone(family)
    method = _hyper(bb, per_layer=per_layer)
    assert len(method.generators) == (2 * len(bb.blocks()) if per_layer else 1)
    batch = encode(bb, TASK, ROWS)
    with torch.no_grad():
        plain = label_scores(bb, TASK, batch, None)
        assert torch.equal(label_scores(bb, TASK, batch, method.inference_conditioning()), plain)
        _wake(method)
        moved = label_scores(bb, TASK, batch, method.inference_conditioning())
    assert float((moved - plain).abs().max()) > 1e-3


def test_different_tasks_layers_and_sites_get_different_adapters():
    bb = make_backbone("causal")
    method = _hyper(bb)
    _wake(method)
    conds = {name: method.task_conditioning(name) for name in method.task_names}
    ups = {name: [h.tensors[2] for h in c.layer_hooks] for name, c in conds.items()}
    assert [(h.layer, h.site) for h in conds["rte"].layer_hooks] == [(0, "attention"), (0, "feed_forward"),
                                                                     (1, "attention"), (1, "feed_forward")]
    assert not torch.allclose(ups["rte"][0], ups["boolq"][0])  # tasks
    assert not torch.allclose(ups["rte"][0], ups["rte"][2])  # layers
    assert not torch.allclose(ups["rte"][0], ups["rte"][1])  # sites
    batch = encode(bb, TASK, ROWS)
    with torch.no_grad():
        a, b = (label_scores(bb, TASK, batch, conds[n]) for n in ("rte", "boolq"))
    assert float((a - b).abs().max()) > 1e-4


def test_gradients_reach_only_the_hypernetwork_and_embeddings():
    bb = make_backbone("causal")
    method = _hyper(bb)
    _wake(method)
    method.use_task("boolq")
    method(bb, TASK, encode(bb, TASK, ROWS)).backward()
    assert all(p.grad is None for p in bb.model.parameters())
    for name, p in method.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    grads = method.task_embeddings.grad
    assert float(grads[1].abs().sum()) > 0 and float(grads[0].abs().sum()) == 0 == float(grads[2].abs().sum())
    assert method.trained_per_task() == 6
    shared = [method.projector, method.generators, method.layer_embeddings, method.site_embeddings]
    n_shared = sum(p.numel() for part in shared for p in ([part] if isinstance(part, torch.nn.Parameter) else part.parameters()))
    assert n_shared + 3 * 6 == sum(p.numel() for p in method.trainable_parameters())


def test_bad_options_are_refused():
    for bad in ({"bottleneck": 0}, {"activation": "elu"}, {"sites": "all"}, {"per_layer": "no"}, {"hidden": -1}):
        with pytest.raises(ConfigError, match="hyperformer"):
            HyperformerConfig(**bad)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_a_saved_hyperformer_restores_bit_for_bit_for_each_task(family, tmp_path):
    bb = make_backbone(family)
    method = _hyper(bb, seed=3, activation="gelu")
    _wake(method)
    meta = {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "task": TASK.to_dict(),
            "training": {"method": "hyperformer", "task": TASKS}}
    method.save(tmp_path / "h", meta)
    batch = encode(bb, TASK, ROWS)
    for name in method.task_names:
        back = restore(tmp_path / "h", bb, get_task(name))
        assert back.active_task == name and back.config.activation == "gelu" and back.config.bottleneck == 4
        mine, theirs = method.state_dict(), back.state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine) and mine.keys() == theirs.keys()
        method.use_task(name)
        with torch.no_grad():
            assert torch.equal(label_scores(bb, TASK, batch, back.inference_conditioning()),
                               label_scores(bb, TASK, batch, method.inference_conditioning()))


def test_a_new_task_trains_its_embedding_alone_and_the_old_tasks_answer_as_before(tiny_model_dirs, tmp_path, capsys):
    from conftest import write_boolq

    from conftest import write_toy_data
    from softprompt.cli import main
    from softprompt.training import train

    data = write_boolq(write_toy_data(tmp_path / "data", "rotten_tomatoes"))
    common = dict(data_dir=str(data), model=str(tiny_model_dirs["causal"]), method="hyperformer", batch_size=4,
                  max_steps=4, eval_every=2, progress=False, optimizer="adam", lr=1e-2, zero_shot_baseline=False,
                  dev_from_train=4)
    options = ",".join(f"{k}={v}" for k, v in SMALL.items())
    train(task="rotten_tomatoes", out=str(tmp_path / "first"), method_options=options, **common)
    base = load_artifact(tmp_path / "first/best")
    train(task="boolq", out=str(tmp_path / "added"), method_options=f"{options},base={tmp_path / 'first/best'}", **common)
    added = load_artifact(tmp_path / "added/best")
    assert added.metadata["hyperformer"]["tasks"] == ["rotten_tomatoes", "boolq"]
    for name, t in base.tensors.items():
        if name.startswith("hyper.") and name != "hyper.task_embeddings":
            assert torch.equal(added.tensors[name], t), name
    assert torch.equal(added.tensors["hyper.task_embeddings"][0], base.tensors["hyper.task_embeddings"][0])
    assert added.tensors["hyper.task_embeddings"].shape == (2, 6)
    # the old task, evaluated from the new run, scores exactly as from its own run
    results = []
    for run in ("first", "added"):
        capsys.readouterr()
        assert main(["eval", "--prompt", str(tmp_path / run / "best"), "--task", "rotten_tomatoes", "--data-dir",
                     str(data), "--split", "test", "--no-progress"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0]["accuracy"] == results[1]["accuracy"] and results[0]["n"] == 16


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_the_models_layer_norms_train_when_asked_and_a_restore_writes_them_into_the_model(family, tmp_path):
    bb = make_backbone(family)
    norms = bb.layer_norms()
    assert norms and all(not p.requires_grad for m in norms for p in m.parameters())
    method = _hyper(bb, train_layer_norms=True)
    _wake(method)
    method(bb, TASK, encode(bb, TASK, ROWS)).backward()
    in_norms = {id(p) for m in norms for p in m.parameters()}
    for p in bb.model.parameters():
        assert (p.grad is not None) == (id(p) in in_norms)
    with torch.no_grad():
        for m in norms:
            m.weight.add_(0.25)
    meta = {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "task": TASK.to_dict(),
            "training": {"method": "hyperformer", "task": TASKS, "train_layer_norms": True}}
    method.save(tmp_path / "h", meta)
    saved = load_artifact(tmp_path / "h")
    assert Hyperformer.restoring_changes_backbone(saved.metadata)  # a server shares no model with it
    other = make_backbone(family)  # the same initial weights
    back = restore(tmp_path / "h", other)
    for a, b in zip(norms, other.layer_norms()):
        assert torch.equal(a.weight, b.weight)
    batch = encode(bb, TASK, ROWS)
    with torch.no_grad():
        assert torch.equal(label_scores(other, TASK, batch, back.inference_conditioning()),
                           label_scores(bb, TASK, batch, method.inference_conditioning()))
