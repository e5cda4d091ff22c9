"""Prefix tuning: starts exactly at its real-word prompt, learns, batches, saves, refuses other families."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TOY_NEG, TOY_POS, fit_batch, make_backbone, make_tokenizer
from softprompt.backbones import wrap
from softprompt.conditioning import LayerKV
from softprompt.encoding import encode
from softprompt.errors import ConfigError, ModelMismatchError, PromptFileError
from softprompt.methods import PrefixTuning, PrefixTuningConfig, PromptTuning, PromptTuningConfig
from softprompt.methods.prefix_tuning import PREFIX_FILE, flatten_kv, load_prefix, unflatten_kv
from softprompt.prompt import META_FILE
from softprompt.scoring import label_scores
from softprompt.tasks.registry import get_task

TASK = get_task("rotten_tomatoes")
ROWS = [{"text": t, "label": "positive"} for t in TOY_POS[:4]] + [{"text": t, "label": "negative"} for t in TOY_NEG[:4]]


def _prefix(bb, length=5, seed=3, **kw) -> PrefixTuning:
    return PrefixTuning(PrefixTuningConfig(prompt_length=length, init="vocab", hidden=16, **kw), bb, TASK, seed=seed)


def _close(a, b, tol=1e-5) -> bool:
    return float((a - b).detach().abs().max()) < tol


@pytest.mark.parametrize("family", ["causal", "causal-bos", "gemma"])
@pytest.mark.parametrize("loss", ["rank", "lm"])
def test_untrained_prefix_equals_its_initial_prompt(family, loss):
    """MLP last layer zero: the keys/values path scores exactly as prompt tuning with the same E."""
    bb = make_backbone(family)
    prefix = _prefix(bb)
    prompt = PromptTuning(PromptTuningConfig(5, "vocab"), bb, TASK, seed=3)
    assert torch.equal(prefix.embedding, prompt.soft_prompt.weight)
    batch = encode(bb, TASK, ROWS, prompt_length=prefix.prompt_length)
    assert _close(prefix(bb, TASK, batch, loss), prompt(bb, TASK, batch, loss))
    with torch.no_grad():
        a = label_scores(bb, TASK, batch, prefix.inference_conditioning())
        b = label_scores(bb, TASK, batch, prompt.inference_conditioning())
        assert _close(a, b)
        assert bb.generate(prefix.inference_conditioning(), batch, 3) == bb.generate(prompt.inference_conditioning(), batch, 3)


def test_flat_table_round_trips_and_shapes():
    bb = make_backbone("causal-bos")
    prefix = _prefix(bb, length=6).inference_conditioning().layer_kv
    assert isinstance(prefix, LayerKV) and prefix.length == 6 and prefix.shape[0] == 6 and len(prefix.layers) == 2
    assert all(k.shape == (1, 2, 6, 8) and v.shape == (1, 2, 6, 8) for k, v in prefix.layers)
    back = unflatten_kv(flatten_kv(prefix), [((2, 8), (2, 8))] * 2)
    assert all(torch.equal(a, b) for la, lb in zip(prefix.layers, back.layers) for a, b in zip(la, lb))


def test_gradients_reach_the_table_once_the_last_layer_moves_and_the_loss_falls():
    bb = make_backbone("causal")
    prefix = _prefix(bb)
    batch = encode(bb, TASK, ROWS, prompt_length=prefix.prompt_length)
    prefix(bb, TASK, batch).backward()
    assert prefix.mlp[2].weight.grad.abs().sum() > 0
    assert prefix.embedding.grad.abs().sum() == 0 and prefix.mlp[0].weight.grad.abs().sum() == 0  # zero last layer
    opt = torch.optim.Adam(prefix.trainable_parameters(), lr=1e-2)
    opt.step()
    opt.zero_grad()
    first = prefix(bb, TASK, batch)
    first.backward()
    assert prefix.embedding.grad.abs().sum() > 0 and prefix.mlp[0].weight.grad.abs().sum() > 0
    assert not any(name == "base" for name, _ in prefix.named_parameters())
    opt.step()
    opt.zero_grad()
    for _ in range(15):
        loss = prefix(bb, TASK, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.7 * first.item()
    assert all(p.grad is None for p in bb.model.parameters())


def test_without_reparameterization_the_keys_values_are_learnt_directly():
    bb = make_backbone("causal-bos")
    prefix = _prefix(bb, reparameterize=False)
    assert [n for n, _ in prefix.named_parameters()] == ["kv"]
    assert torch.equal(prefix.kv, prefix.base)
    batch = encode(bb, TASK, ROWS, prompt_length=prefix.prompt_length)
    first, last = fit_batch(prefix, bb, TASK, batch)
    assert last < 0.7 * first


def _trained(bb, steps=2, **kw) -> PrefixTuning:
    prefix = _prefix(bb, **kw)
    batch = encode(bb, TASK, ROWS, prompt_length=prefix.prompt_length)
    opt = torch.optim.Adam(prefix.trainable_parameters(), lr=1e-2)
    for _ in range(steps):
        prefix(bb, TASK, batch).backward()
        opt.step()
        opt.zero_grad()
    return prefix


MIXED_LENGTHS = {  # rows of different lengths; copa's candidates differ per row and span several tokens
    "rotten_tomatoes": ROWS[:1] + [{"text": "the plot is so dull and the acting is awful , really boring .",
                                    "label": "negative"}] + ROWS[5:6],
    "copa": [{"premise": "it was dull", "question": "effect", "choices": ["i love it", "i hate it very much", "bad"],
              "label": "bad"},
             {"premise": "great fun and a witty story", "question": "cause", "choices": ["fun", "dull"],
              "label": "fun"}],
}


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
@pytest.mark.parametrize("task_name", sorted(MIXED_LENGTHS))
def test_rows_of_a_padded_batch_score_as_if_alone(family, task_name):
    task, rows = get_task(task_name), MIXED_LENGTHS[task_name]
    bb = make_backbone(family)
    prefix = _trained(bb)
    batch = encode(bb, task, rows, prompt_length=prefix.prompt_length)
    for p in (prefix.conditioning(), prefix.inference_conditioning()):
        scores = label_scores(bb, task, batch, p)
        for r in range(len(rows)):
            alone = label_scores(bb, task, encode(bb, task, [rows[r]], prompt_length=prefix.prompt_length), p)
            assert _close(scores[r, : alone.shape[1]], alone[0]), r


def test_mixed_per_row_batch_may_hold_a_prefix():
    bb = make_backbone("causal-bos")
    prefix = _trained(bb).inference_conditioning().layer_kv
    soft = torch.randn(3, bb.dim) * 0.5
    batch = encode(bb, TASK, ROWS[:3], prompt_length=5)
    with torch.no_grad():
        mixed = bb.word_scores([prefix, None, soft], batch)
        for r, p in enumerate([prefix, None, soft]):
            alone = bb.word_scores(p, batch.select([r]))
            assert _close(mixed[r] - mixed[r].mean(), alone[0] - alone[0].mean()), r


def test_inference_cache_keeps_prefixes_and_tensors_apart():
    bb = make_backbone("causal-bos")
    prefix = _trained(bb).inference_conditioning().layer_kv
    soft = torch.randn(5, bb.dim) * 0.5
    batch = encode(bb, TASK, ROWS[:3], prompt_length=5)
    with torch.no_grad():
        a, b = bb.word_scores(prefix, batch), bb.word_scores(soft, batch)
        assert bb.cache_info()["entries"] == 2
        assert torch.equal(bb.word_scores(prefix, batch), a) and torch.equal(bb.word_scores(soft, batch), b)
        assert bb.cache_info()["hits"] == 2
        prefix.layers[0][0].add_(1.0)  # an in-place change must not be served from the cache
        changed = bb.word_scores(prefix, batch)
        assert bb.cache_info()["hits"] == 2
        fresh = make_backbone("causal-bos")
        fresh.model.load_state_dict(bb.model.state_dict())
        assert torch.equal(fresh.word_scores(prefix, batch), changed) and not torch.equal(changed, a)
    slow = make_backbone("causal-bos", shared_prefix=False)
    with torch.no_grad():
        assert _close(slow.word_scores(prefix, batch), changed)


def test_save_and_load_state_round_trip_bit_for_bit(tmp_path):
    bb = make_backbone("causal-bos")
    prefix = _trained(bb)
    out = prefix.save(tmp_path / "p", {"model_id": bb.model_id, "task_name": "toy"})
    meta = json.loads((out / META_FILE).read_text())
    assert (out / PREFIX_FILE).exists() and meta["method"] == "prefix-tuning" and meta["length"] == 5
    assert meta["layer_shapes"] == [[[2, 8], [2, 8]]] * 2
    other = _prefix(bb, seed=9)
    other.load_state(out)
    for (name, a), (_, b) in zip(prefix.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    saved, _, _ = load_prefix(out)
    for la, lb, lc in zip(prefix.inference_conditioning().layer_kv.layers, other.inference_conditioning().layer_kv.layers, saved.layers):
        for a, b, c in zip(la, lb, lc):
            assert torch.equal(a, b) and torch.equal(a, c)
    direct = _trained(bb, reparameterize=False)
    direct.save(tmp_path / "d", {})
    again = _prefix(bb, reparameterize=False, seed=4)
    again.load_state(tmp_path / "d")
    assert torch.equal(again.kv, direct.kv)


def test_load_state_refuses_another_shape_or_a_broken_file(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    bb = make_backbone("causal")
    _trained(bb).save(tmp_path / "p", {"model_id": "tiny-causal"})
    tok = make_tokenizer("causal")
    deeper = wrap(LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                               max_position_embeddings=256)), tok, model_id="deeper")
    with pytest.raises(ModelMismatchError, match=r"2 layers .*this model has 3 layers"):
        _prefix(deeper).load_state(tmp_path / "p")
    with pytest.raises(PromptFileError, match="--prompt-length 5"):
        _prefix(bb, length=7).load_state(tmp_path / "p")
    with pytest.raises(PromptFileError, match="reparameterize=True"):
        _prefix(bb, reparameterize=False).load_state(tmp_path / "p")
    with pytest.raises(PromptFileError, match="no saved prefix"):
        _prefix(bb).load_state(tmp_path / "nothing")
    (tmp_path / "p" / PREFIX_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(PromptFileError, match="corrupt"):
        _prefix(bb).load_state(tmp_path / "p")
    with pytest.raises(ConfigError, match="3 layers"):
        deeper.word_scores(_prefix(bb).inference_conditioning(), encode(bb, TASK, ROWS[:1], prompt_length=5))


@pytest.mark.parametrize("family, words", [("seq2seq", "encoder-decoder"), ("masked", "masked language")])
def test_other_families_are_refused(family, words):
    with pytest.raises(ConfigError, match=f"{words} model.*--method prompt-tuning"):
        _prefix(make_backbone(family))


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="hidden"):
        PrefixTuningConfig(hidden=0)
    with pytest.raises(ConfigError, match="prompt_length"):
        PrefixTuningConfig(prompt_length=0)


def test_train_end_to_end_writes_best_and_resumes(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    import softprompt.training as training
    from softprompt.config import TrainConfig

    cfg = TrainConfig(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]),
                      method="prefix-tuning", method_options="hidden=16", prompt_length=4, init="vocab",
                      optimizer="adam", lr=1e-2, batch_size=3, max_steps=9, eval_every=3, progress=False,
                      zero_shot_baseline=True, out=str(tmp_path / "straight"))
    result = training.train(cfg)
    straight = tmp_path / "straight"
    assert (straight / "best" / PREFIX_FILE).exists() and result.test is not None and result.zero_shot_test is not None
    assert json.loads((straight / "best" / META_FILE).read_text())["method"] == "prefix-tuning"

    from conftest import crash_at_call

    restore = crash_at_call(monkeypatch, PrefixTuning, 5)  # dies in step 5, after the step-3 checkpoint
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, out=str(tmp_path / "cut"))
    restore()
    training.train(cfg, out=str(tmp_path / "cut"), resume=True)
    _, _, a = load_prefix(straight / "last")
    _, _, b = load_prefix(tmp_path / "cut" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
