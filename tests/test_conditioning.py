"""Typed conditioning (issue 15 items 1 and 5): coercion, supported kinds, virtual tokens, answer
vectors, layer hooks, cache keys and mixed batches, on the tiny model of every family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import TOY_POS, make_backbone
from softprompt.conditioning import KINDS, Conditioning, LayerHook, LayerKV, PerRow, PrefixKV, as_conditioning
from softprompt.encoding import EncodedBatch
from softprompt.errors import ConfigError

FAMILIES = ["causal", "causal-bos", "seq2seq", "masked"]
TEXTS = ["this movie was great fun . sentiment :", "the plot is fun and really boring , so dull"]
MULTI = [["very good", "great"], ["not good"]]
SINGLE = [["positive"], ["negative"]]


def _batch(bb, words=MULTI, virtual: bool = False) -> EncodedBatch:
    """Rows of :data:`TEXTS`; with ``virtual``, the word "fun" of each row is a placeholder whose
    vector comes from virtual token ``("v", 0)``. Masked LMs get a mask after the second word."""
    fun = bb.tokenize(" fun")[0]
    ctx, mask_pos, slots = [], [], []
    for text in TEXTS:
        ids = bb.tokenize(text)
        if bb.answer_in_slot:
            ids = ids[:2] + [bb.mask_token_id] + ids[2:]
            mask_pos.append(2)
        pos = ids.index(fun)
        if virtual:
            ids = ids[:pos] + [bb.pad_id] + ids[pos + 1:]
        ctx.append(ids)
        slots.append([(pos, "v", 0)] if virtual else [])
    flat, labels = [], []
    for li, ws in enumerate(words):
        for w in ws:
            flat.append(bb.tokenize(" " + w))
            labels.append(li)
    n = len(TEXTS)
    return EncodedBatch(context=ctx, words=[flat] * n, word_label=[labels] * n, word_weight=[[1.0] * len(flat)] * n,
                        label_names=[["pos", "neg"]] * n, gold=[0, 1], shared_words=True, mask_pos=mask_pos,
                        virtual=slots if virtual else [])


def _close(a, b, tol=1e-5) -> bool:
    return float((a - b).detach().abs().max()) < tol


# ------------------------------------------------------------------------------ the types
def test_as_conditioning_coerces_what_callers_pass_and_refuses_the_rest():
    v = torch.randn(3, 8)
    kv = LayerKV(((torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)),))
    assert as_conditioning(None).kinds == frozenset() and as_conditioning(None).length == 0
    assert as_conditioning(v).input_vectors is v and as_conditioning(v).length == 3
    assert as_conditioning(kv).layer_kv is kv and as_conditioning(kv).length == 4
    c = Conditioning(input_vectors=v)
    assert as_conditioning(c) is c
    rows = as_conditioning([v, None, kv])
    assert isinstance(rows, PerRow) and [r.kinds for r in rows.items] == [{"input_vectors"}, set(), {"layer_kv"}]
    assert rows.kinds == {"input_vectors", "layer_kv"}
    assert PrefixKV is LayerKV
    with pytest.raises(ConfigError, match="cannot condition a model on a str"):
        as_conditioning("prompt")
    with pytest.raises(ConfigError, match=r"input_vectors must be a \[n, dim\] tensor, got a tensor of shape \(8,\)"):
        Conditioning(input_vectors=torch.randn(8))
    with pytest.raises(ConfigError, match="site 'output' is not one of"):
        LayerHook(0, "output", lambda h: h)


def test_kinds_version_and_detach():
    w = torch.nn.Parameter(torch.randn(2, 8))
    hook_t = torch.zeros(8)
    c = Conditioning(input_vectors=w, virtual_tokens={"v": w}, answer_vectors=w,
                     layer_hooks=(LayerHook(1, "attention", lambda h: h + hook_t, (hook_t,)),))
    assert c.kinds == set(KINDS) - {"layer_kv"}
    before = c.version
    hook_t.add_(1.0)
    assert c.version != before
    d = c.detach()
    assert not d.input_vectors.requires_grad and d.layer_hooks == c.layer_hooks and d.length == 2


@pytest.mark.parametrize("family", ["seq2seq", "masked"])
def test_a_kind_the_family_lacks_is_refused_before_any_work(family):
    bb = make_backbone(family)
    kv = make_backbone("causal").prompt_kv(torch.randn(2, 32))
    with pytest.raises(ConfigError, match=r"needs layer_kv, which 'tiny-.*' does not take.*--method prompt-tuning"):
        bb.word_scores(kv, _batch(bb))
    assert "layer_kv" not in bb.supports and make_backbone("causal").supports == set(KINDS)


# ----------------------------------------------------------------------- virtual tokens
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("words", [SINGLE, MULTI], ids=["single-token", "multi-token"])
def test_virtual_tokens_sit_at_their_slots_and_learn(family, words):
    bb = make_backbone(family)
    plain, slotted = _batch(bb, words), _batch(bb, words, virtual=True)
    prompt = torch.randn(3, bb.dim) * 0.5
    with torch.no_grad():
        fun = bb.embed(torch.tensor(bb.tokenize(" fun")))
    table = torch.nn.Parameter(fun.clone())
    cond = Conditioning(input_vectors=prompt, virtual_tokens={"v": table})
    got = bb.word_scores(cond, slotted)
    assert _close(got, bb.word_scores(prompt, plain))  # the word's own embedding at its slot: the plain text
    bb.gold_nll(cond, slotted).sum().backward()
    assert table.grad is not None and float(table.grad.abs().sum()) > 0
    with torch.no_grad():
        other = bb.word_scores(Conditioning(input_vectors=prompt, virtual_tokens={"v": torch.randn_like(table)}), slotted)
    assert not _close(other, got)
    with pytest.raises(ConfigError, match=r"virtual tokens \{soft:v\} but no vectors were given.*--prompt DIR"):
        bb.word_scores(prompt, slotted)


# ----------------------------------------------------------------------- answer vectors
@pytest.mark.parametrize("family", FAMILIES)
def test_answer_vectors_score_as_the_vocabulary_rows_they_copy(family):
    """With answer vectors = the output-embedding rows of two words, the scores are the log-softmax
    over those two words of the model's own logits at the answer slot."""
    bb = make_backbone(family)
    batch = _batch(bb, SINGLE)
    ids = [w[0] for w in batch.words[0]]
    rows = bb.model.get_output_embeddings().weight[ids].detach()
    vectors = torch.nn.Parameter(rows.clone())
    got = bb.word_scores(Conditioning(answer_vectors=vectors), batch)
    assert got.shape == (len(batch), 2)
    want = torch.log_softmax(bb.word_scores(None, batch), -1)
    assert _close(got, want, 1e-4)
    nll = bb.gold_nll(Conditioning(answer_vectors=vectors), batch)
    assert _close(nll, -got.gather(1, torch.tensor(batch.gold)[:, None])[:, 0])
    nll.sum().backward()
    assert float(vectors.grad.abs().sum()) > 0


# -------------------------------------------------------------------------- layer hooks
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("site", ["attention", "feed_forward"])
def test_a_hook_changes_scores_only_during_the_call(family, site):
    bb = make_backbone(family)
    batch = _batch(bb, MULTI)
    blocks = bb.blocks()
    assert len(blocks) == (4 if family == "seq2seq" else 2)
    with torch.no_grad():
        before = bb.word_scores(None, batch)
        # not a constant shift alone: a masked model's hooked projections feed a layer norm, which removes one
        hooked = bb.word_scores(Conditioning(layer_hooks=(LayerHook(0, site, lambda h: 3.0 * h + 1.0),)), batch)
        after = bb.word_scores(None, batch)

        def boom(h):
            raise RuntimeError("hook failed")

        with pytest.raises(RuntimeError, match="hook failed"):
            bb.word_scores(Conditioning(layer_hooks=(LayerHook(0, site, boom),)), batch)
        again = bb.word_scores(None, batch)
    assert not _close(hooked, before, 1e-3)
    assert torch.equal(after, before) and torch.equal(again, before)
    with pytest.raises(ConfigError, match="names layer 9"):
        bb.word_scores(Conditioning(layer_hooks=(LayerHook(9, site, lambda h: h),)), batch)


# -------------------------------------------------------------------------------- caches
def _reference(bb, cond, batch):
    """The same scores from a backbone with the same weights and no prefix cache."""
    slow = make_backbone("causal-bos", shared_prefix=False)
    slow.model.load_state_dict(bb.model.state_dict())
    with torch.no_grad():
        return slow.word_scores(cond, batch)


def test_cached_scores_are_recomputed_after_an_in_place_change_to_anything_they_depend_on():
    bb = make_backbone("causal-bos")
    batch = _batch(bb, MULTI)
    vectors = torch.randn(3, bb.dim) * 0.5
    prefix = make_backbone("causal-bos").prompt_kv(torch.randn(2, bb.dim) * 0.5)
    shift = torch.zeros(bb.dim)
    hook = LayerHook(0, "attention", lambda h: h + shift, (shift,))
    conds = [Conditioning(input_vectors=vectors, layer_hooks=(hook,)), Conditioning(layer_kv=prefix)]
    with torch.no_grad():
        first = [bb.word_scores(c, batch) for c in conds]
        assert [torch.equal(bb.word_scores(c, batch), f) for c, f in zip(conds, first)] == [True, True]
        hits = bb.cache_info()["hits"]
        assert hits == 2
        changes = [lambda: vectors.add_(0.5), lambda: prefix.layers[1][1].add_(0.5), lambda: shift.add_(0.5)]
        for change, cond in zip(changes, [conds[0], conds[1], conds[0]]):
            old = bb.word_scores(cond, batch)
            change()
            new = bb.word_scores(cond, batch)
            assert not _close(new, old, 1e-4) and _close(new, _reference(bb, cond, batch), 1e-4)
        # a trainable weight of the model (full tuning), updated in place
        weight = bb.model.model.layers[0].self_attn.v_proj.weight
        weight.requires_grad_(True)
        old = [bb.word_scores(c, batch) for c in conds]
        weight.add_(0.5)
        new = [bb.word_scores(c, batch) for c in conds]
        for c, o, n in zip(conds, old, new):
            assert not _close(n, o, 1e-4) and _close(n, _reference(bb, c, batch), 1e-4)
    # the unchanged lookups in the loop; none after the model gained a trainable weight
    assert bb.cache_info()["hits"] == hits + 3


def test_a_methods_inference_conditioning_is_one_object_until_its_parameters_change():
    from softprompt.methods import PromptTuning, PromptTuningConfig
    from softprompt.tasks.registry import get_task

    bb = make_backbone("causal")
    method = PromptTuning(PromptTuningConfig(4, "vocab"), bb, get_task("rotten_tomatoes"))
    a = method.inference_conditioning()
    assert method.inference_conditioning() is a and method.prompt_length == 4 and not a.input_vectors.requires_grad
    with torch.no_grad():
        method.soft_prompt.weight.add_(1.0)
    assert method.inference_conditioning() is not a


# -------------------------------------------------------------------------- mixed batches
@pytest.mark.parametrize("family", ["causal", "causal-bos"])
def test_mixed_rows_of_vectors_keys_and_nothing_score_as_if_alone(family):
    bb = make_backbone(family)
    texts = TEXTS + [TOY_POS[2]]
    batch = _batch(bb, MULTI)
    extra = bb.tokenize(texts[2])
    batch = EncodedBatch(context=batch.context + [extra], words=batch.words + batch.words[:1],
                         word_label=batch.word_label + batch.word_label[:1],
                         word_weight=batch.word_weight + batch.word_weight[:1],
                         label_names=batch.label_names + batch.label_names[:1], gold=[0, 1, 0], shared_words=True)
    torch.manual_seed(3)
    vectors = torch.nn.Parameter(torch.randn(4, bb.dim) * 0.5)
    prefix = bb.prompt_kv(torch.randn(2, bb.dim) * 0.5)
    rows = PerRow((Conditioning(input_vectors=vectors), Conditioning(layer_kv=prefix), Conditioning()))
    mixed = bb.word_scores(rows, batch)
    for r, c in enumerate(rows.items):
        assert _close(mixed[r], bb.word_scores(c, batch.select([r]))[0]), r
    mixed.logsumexp(1).sum().backward()
    assert vectors.grad is not None
    with torch.no_grad():
        texts_out = bb.generate(rows, batch, 3)
        assert texts_out == [bb.generate(c, batch.select([r]), 3)[0] for r, c in enumerate(rows.items)]


def test_rows_with_hooks_or_answer_vectors_are_run_per_conditioning():
    bb = make_backbone("causal")
    batch = _batch(bb, SINGLE)
    ids = [w[0] for w in batch.words[0]]
    answers = Conditioning(answer_vectors=bb.model.get_output_embeddings().weight[ids].detach())
    hooked = Conditioning(layer_hooks=(LayerHook(1, "feed_forward", lambda h: h * 2.0),))
    with torch.no_grad():
        mixed = bb.word_scores(PerRow((answers, hooked)), batch)
        assert _close(mixed[0], bb.word_scores(answers, batch.select([0]))[0])
        assert _close(mixed[1], bb.word_scores(hooked, batch.select([1]))[0])
    with pytest.raises(ConfigError, match="3 per-row conditionings for a batch of 2 rows"):
        bb.word_scores([None, None, None], batch)


# ---------------------------------------------------------------------------- no family branches
def test_no_code_outside_backbones_branches_on_the_family():
    src = Path(__file__).resolve().parents[1] / "src" / "softprompt"
    hits = []
    for path in src.rglob("*.py"):
        if "backbones" in path.relative_to(src).parts:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\.family\s*[!=]=|[\"']\w*[\"']\s*[!=]=\s*\S*\.family\b", line):
                hits.append(f"{path.relative_to(src)}:{n}: {line.strip()}")
    assert hits == []


def test_cached_keys_and_values_are_not_reused_under_another_autocast_precision():
    bb = make_backbone("causal-bos")
    batch = _batch(bb, MULTI)
    vectors = torch.randn(3, bb.dim) * 0.5
    with torch.no_grad():
        plain = bb.word_scores(vectors, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = bb.word_scores(vectors, batch)
        again = bb.word_scores(vectors, batch)
    assert not torch.equal(half, plain) and torch.equal(again, plain)
    assert bb.cache_info()["misses"] == 3 and bb.cache_info()["hits"] == 0  # one entry per object: each call recomputed
