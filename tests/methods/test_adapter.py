"""Adapters: a fresh one leaves the model as it was, they learn, only they train, they save and
restore bit for bit, on every family that gives its blocks."""

from __future__ import annotations

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, fit_batch, make_backbone
from softprompt.encoding import encode
from softprompt.errors import ConfigError, ModelMismatchError
from softprompt.methods import Adapter, AdapterConfig
from softprompt.methods.adapter import bottleneck
from softprompt.methods.loading import restore
from softprompt.scoring import label_scores
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")
ROWS = [{"text": t, "label": "positive"} for t in TOY_POS[:4]] + [{"text": t, "label": "negative"} for t in TOY_NEG[:4]]
FAMILIES = ["causal", "causal-bos", "seq2seq", "masked"]


def _adapter(bb, seed=0, **kw) -> Adapter:
    return Adapter(AdapterConfig(bottleneck=4, **kw), bb, TASK, seed=seed)


def _meta(bb):
    return {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint, "task": TASK.to_dict(), "training": {}}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_fresh_adapter_leaves_scores_unchanged_and_a_nonzero_one_changes_them(family):
    bb = make_backbone(family)
    adapter = _adapter(bb)
    batch = encode(bb, TASK, ROWS)
    cond = adapter.inference_conditioning()
    assert len(cond.layer_hooks) == 2 * len(bb.blocks())
    with torch.no_grad():
        plain = label_scores(bb, TASK, batch, None)
        assert torch.equal(label_scores(bb, TASK, batch, cond), plain)
        for module in adapter.adapters.values():
            module.up.normal_(0, 1.0)
        moved = label_scores(bb, TASK, batch, adapter.inference_conditioning())
    assert float((moved - plain).abs().max()) > 1e-3


def test_bottleneck_is_the_houlsby_formula():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 8, generator=gen)
    down, up = torch.randn(4, 8, generator=gen), torch.randn(8, 4, generator=gen)
    db, ub = torch.randn(4, generator=gen), torch.randn(8, generator=gen)
    scale, shift = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
    z = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5) * scale + shift
    want = h + torch.relu(z @ down.T + db) @ up.T + ub
    assert torch.allclose(bottleneck(h, down, db, up, ub, "relu", (scale, shift)), want, atol=1e-5)
    assert torch.allclose(bottleneck(h, down, db, up, ub, "tanh"), h + torch.tanh(h @ down.T + db) @ up.T + ub, atol=1e-5)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_only_the_adapters_get_gradients_and_the_loss_falls(family):
    bb = make_backbone(family)
    adapter = _adapter(bb)
    batch = encode(bb, TASK, ROWS)
    first, _ = fit_batch(adapter, bb, TASK, batch)
    assert adapter(bb, TASK, batch).item() < first - 0.05
    assert all(p.grad is None and not p.requires_grad for p in bb.model.parameters())
    # the up-projection started at zero, and every adapter's weights moved
    assert all(float(m.up.detach().abs().sum()) > 0 for m in adapter.adapters.values())


def test_sites_and_the_layer_norm_follow_the_options():
    bb = make_backbone("causal")
    only_ff = _adapter(bb, sites="feed_forward", layer_norm=False)
    hooks = only_ff.conditioning().layer_hooks
    assert [(h.layer, h.site) for h in hooks] == [(0, "feed_forward"), (1, "feed_forward")]
    assert all(m.scale is None for m in only_ff.adapters.values())
    per_adapter = 4 * 32 + 4 + 32 * 4 + 32
    assert sum(p.numel() for p in only_ff.trainable_parameters()) == 2 * per_adapter
    assert sum(p.numel() for p in _adapter(bb).trainable_parameters()) == 4 * (per_adapter + 2 * 32)
    assert only_ff.trained_per_task() == 2 * per_adapter  # one adapter set serves every task: a task needs it all


@pytest.mark.parametrize("bad", [{"bottleneck": 0}, {"activation": "sigmoid"}, {"sites": "output"}, {"layer_norm": "yes"}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError, match="adapter"):
        AdapterConfig(**bad)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_a_saved_adapter_restores_bit_for_bit_and_scores_the_same(family, tmp_path):
    bb = make_backbone(family)
    adapter = _adapter(bb, seed=1, sites="both", activation="gelu")
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.1)
    adapter.save(tmp_path / "a", {**_meta(bb), "training": {"method": "adapter", "bottleneck": 4, "activation": "gelu"}})
    back = restore(tmp_path / "a", bb)
    assert isinstance(back, Adapter) and back.config.bottleneck == 4 and back.config.activation == "gelu"
    mine, theirs = adapter.state_dict(), back.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    batch = encode(bb, TASK, ROWS)
    with torch.no_grad():
        assert torch.equal(label_scores(bb, TASK, batch, back.inference_conditioning()),
                           label_scores(bb, TASK, batch, adapter.inference_conditioning()))


def test_an_adapter_is_refused_on_another_model(tmp_path):
    bb = make_backbone("causal")
    _adapter(bb).save(tmp_path / "a", {**_meta(bb), "training": {"method": "adapter", "bottleneck": 4}})
    other = make_backbone("masked")
    with pytest.raises(ModelMismatchError):
        restore(tmp_path / "a", other)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_train_then_eval_an_adapter_from_the_command_line(family, tiny_model_dirs, toy_data, tmp_path, capsys):
    import json

    from softprompt.cli import main

    out = tmp_path / "run"
    assert main(["train", "--method", "adapter", "--method-options", "bottleneck=4,activation=relu",
                 "--data-dir", str(toy_data), "--model", str(tiny_model_dirs[family]), "--max-steps", "2",
                 "--eval-every", "2", "--batch-size", "4", "--out", str(out), "--no-progress"]) == 0
    saved = json.loads((out / "best/softprompt.json").read_text())
    assert saved["method"] == "adapter" and saved["adapter"]["bottleneck"] == 4
    capsys.readouterr()
    assert main(["eval", "--prompt", str(out / "best"), "--data-dir", str(toy_data), "--split", "test",
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = json.loads((out / "results.json").read_text())["test"]
    assert res["n"] == 16 and res["accuracy"] == want["accuracy"]
