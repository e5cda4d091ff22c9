"""The fast paths equal plain concatenation: loss, scores and prompt gradient (relative 1e-4),
with padding, mixed lengths, single- and multi-token label words, for every family."""

from __future__ import annotations

import pytest
import torch

from conftest import make_backbone
from softprompt.encoding import EncodedBatch

TEXTS = ["this movie was great fun and very witty", "bad", "the plot is so dull and the acting is awful , really boring ."]


def _batch(bb, words_per_label: list[list[str]]) -> EncodedBatch:
    ctx = [bb.tokenize(t + " . sentiment :") for t in TEXTS]
    mask_pos = []
    if bb.family == "masked":
        ctx = [c + [bb.mask_token_id] for c in ctx]
        mask_pos = [len(c) - 1 for c in ctx]
    words, labels = [], []
    for li, ws in enumerate(words_per_label):
        for w in ws:
            words.append(bb.tokenize(" " + w))
            labels.append(li)
    n = len(TEXTS)
    return EncodedBatch(context=ctx, words=[words] * n, word_label=[labels] * n, word_weight=[[1.0] * len(words)] * n,
                        label_names=[["pos", "neg"]] * n, gold=[0, 1, 1], shared_words=True, mask_pos=mask_pos)


def _reference_scores(bb, prompt, batch: EncodedBatch) -> torch.Tensor:
    """Full-model logits on explicitly concatenated inputs, one (row, word) pair at a time."""
    out = torch.full((len(batch), len(batch.words[0])), float("-inf"))
    model = bb.model
    for b in range(len(batch)):
        for w, word in enumerate(batch.words[b]):
            ctx = batch.context[b]
            if bb.family == "causal":
                ids = torch.tensor(bb.lead_ids + ctx + word)
                x = torch.cat([bb.embed(ids[: len(bb.lead_ids)]), prompt, bb.embed(ids[len(bb.lead_ids):])])
                logits = model(inputs_embeds=x[None]).logits[0].float()
                start = len(bb.lead_ids) + prompt.shape[0] + len(ctx)
                lp = torch.log_softmax(logits[start - 1: start - 1 + len(word)], -1)
                out[b, w] = lp[torch.arange(len(word)), torch.tensor(word)].sum()
            elif bb.family == "seq2seq":
                x = torch.cat([prompt, bb.embed(torch.tensor(ctx + bb.trail_ids))])
                dec = torch.tensor([[model.config.decoder_start_token_id] + word[:-1]])
                lp = torch.log_softmax(model(inputs_embeds=x[None], decoder_input_ids=dec).logits[0].float(), -1)
                out[b, w] = lp[torch.arange(len(word)), torch.tensor(word)].sum()
            else:
                m = batch.mask_pos[b]
                ids = torch.tensor(bb.lead_ids + ctx[:m] + [bb.mask_token_id] * len(word) + ctx[m + 1:] + bb.trail_ids)
                lead = len(bb.lead_ids)
                x = torch.cat([bb.embed(ids[:lead]), prompt, bb.embed(ids[lead:])])
                lp = torch.log_softmax(model(inputs_embeds=x[None]).logits[0].float(), -1)
                pos = torch.arange(len(word)) + lead + prompt.shape[0] + m
                out[b, w] = lp[pos, torch.tensor(word)].sum()
    return out


def _loss(scores: torch.Tensor, batch: EncodedBatch) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(scores, torch.tensor(batch.gold))


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> bool:
    return float((a - b).detach().norm() / b.detach().norm().clamp(min=1e-12)) < rel


@pytest.mark.parametrize("family", ["causal", "causal-bos", "gemma", "seq2seq", "masked"])
@pytest.mark.parametrize("words", [[["positive"], ["negative"]], [["very good", "great"], ["not good"]]],
                         ids=["single-token", "multi-token"])
def test_fast_path_matches_plain_concatenation(family, words):
    bb = make_backbone(family)
    batch = _batch(bb, words)
    torch.manual_seed(1)
    prompt = torch.nn.Parameter(torch.randn(4, bb.dim) * 0.5)

    ref_prompt = torch.nn.Parameter(prompt.detach().clone())
    ref = _reference_scores(bb, ref_prompt, batch)
    got = bb.word_scores(prompt, batch)
    if batch.single_token and family != "seq2seq" and family != "masked":
        # the single-token fast path omits each row's log-normaliser: compare softmax-invariant forms
        ref_cmp, got_cmp = ref - ref.mean(1, keepdim=True), got - got.mean(1, keepdim=True)
    else:
        ref_cmp, got_cmp = ref, got
    assert _close(got_cmp, ref_cmp)
    _loss(got, batch).backward()
    _loss(ref, batch).backward()
    assert _close(_loss(got, batch).detach(), _loss(ref, batch).detach())
    assert _close(prompt.grad, ref_prompt.grad)


@pytest.mark.parametrize("family", ["causal", "causal-bos", "gemma"])
def test_shared_prefix_equals_concatenation_in_the_backbone(family):
    fast = make_backbone(family)
    slow = make_backbone(family, shared_prefix=False)
    batch = _batch(fast, [["very good", "great"], ["not good"]])
    prompt = torch.nn.Parameter(torch.randn(6, fast.dim) * 0.5)
    prompt2 = torch.nn.Parameter(prompt.detach().clone())
    a, b = fast.word_scores(prompt, batch), slow.word_scores(prompt2, batch)
    assert _close(a, b)
    a.logsumexp(1).sum().backward()
    b.logsumexp(1).sum().backward()
    assert _close(prompt.grad, prompt2.grad)
    nll_a, nll_b = fast.gold_nll(prompt, batch), slow.gold_nll(prompt2, batch)
    assert _close(nll_a.detach(), nll_b.detach())


def test_inference_cache_is_invalidated_when_the_prompt_changes(causal_backbone):
    bb = causal_backbone
    batch = _batch(bb, [["positive"], ["negative"]])
    prompt = torch.nn.Parameter(torch.randn(4, bb.dim))
    with torch.no_grad():
        first = bb.word_scores(prompt, batch)
        assert bb.cache_info()["entries"] == 1
        again = bb.word_scores(prompt, batch)
        prompt.add_(1.0)  # an in-place update, like an optimizer step
        changed = bb.word_scores(prompt, batch)
    assert torch.equal(first, again)
    assert not torch.allclose(first, changed)
    with torch.no_grad():
        uncached = make_backbone("causal", shared_prefix=False).word_scores(prompt, batch)
    assert _close(changed - changed.mean(1, keepdim=True), uncached - uncached.mean(1, keepdim=True))


@pytest.mark.parametrize("family", ["causal", "causal-bos", "seq2seq", "masked"])
@pytest.mark.parametrize("words", [[["positive"], ["negative"]], [["very good", "great"], ["not good"]]],
                         ids=["single-token", "multi-token"])
def test_mixed_prompt_batch_equals_one_prompt_at_a_time(family, words):
    """Rows with different prompts (and lengths, and no prompt) in one batch score as if run alone."""
    bb = make_backbone(family)
    batch = _batch(bb, words)
    torch.manual_seed(2)
    prompts = [torch.nn.Parameter(torch.randn(3, bb.dim) * 0.5), None, torch.nn.Parameter(torch.randn(7, bb.dim) * 0.5)]
    mixed = bb.word_scores(prompts, batch)
    for r, p in enumerate(prompts):
        alone = bb.word_scores(p, batch.select([r]))
        if batch.single_token and bb.family == "causal":
            alone, row = alone - alone.mean(1, keepdim=True), mixed[r:r + 1] - mixed[r:r + 1].mean(1, keepdim=True)
        else:
            row = mixed[r:r + 1]
        assert _close(row, alone), r
    mixed.logsumexp(1).sum().backward()
    assert prompts[0].grad is not None and prompts[2].grad is not None
    with torch.no_grad():
        if bb.family != "masked":
            texts = bb.generate(prompts, batch, 3)
            assert texts[1] == bb.generate(None, batch.select([1]), 3)[0]
            assert texts[2] == bb.generate(prompts[2], batch.select([2]), 3)[0]
