"""Multi-token words on a causal model: the text runs once and the candidates continue from its
keys/values; scores equal one full sequence per (row, word) pair, with a prompt, prefix
keys/values, no prompt, a mixed batch, per-row candidates, packed and expanded continuations in
chunks, and eager attention."""

from __future__ import annotations

import pytest
import torch

from conftest import make_backbone
from softprompt.encoding import EncodedBatch

TEXTS = ["this movie was great fun and very witty", "bad", "the plot is so dull and the acting is awful , really boring ."]
WORDS = [["very good", "great", "not good at all"], ["bad", "so so"], ["not very funny", "fun", "a b", "the end"]]


def _batch(bb) -> EncodedBatch:
    """Each row its own candidates (as a choice task has), one to four tokens long."""
    ctx = [bb.tokenize(t + " . sentiment :") for t in TEXTS]
    words = [[bb.tokenize(" " + w) for w in ws] for ws in WORDS]
    labels = [list(range(len(ws))) for ws in WORDS]
    return EncodedBatch(context=ctx, words=words, word_label=labels, word_weight=[[1.0] * len(ws) for ws in WORDS],
                        label_names=[list(ws) for ws in WORDS], gold=[0, 0, 1], shared_words=False)


def _reference(bb, prompts, batch: EncodedBatch, length_normalize: bool = False) -> torch.Tensor:
    """One full forward per (row, word): ``[lead] prompt text word``, summed token log-probs."""
    width = max(len(ws) for ws in batch.words)
    out = torch.full((len(batch), width), float("-inf"))
    lead = bb.lead_ids
    for b, ws in enumerate(batch.words):
        prompt = prompts[b] if prompts[b] is not None else torch.zeros(0, bb.dim)
        for w, word in enumerate(ws):
            ctx = batch.context[b]
            x = torch.cat([bb.embed(torch.tensor(lead, dtype=torch.long)), prompt, bb.embed(torch.tensor(ctx + word))])
            logits = bb.model(inputs_embeds=x[None]).logits[0].float()
            start = len(lead) + prompt.shape[0] + len(ctx)
            lp = torch.log_softmax(logits[start - 1: start - 1 + len(word)], -1)
            total = lp[torch.arange(len(word)), torch.tensor(word)].sum()
            out[b, w] = total / len(word) if length_normalize else total
    return out


@pytest.mark.parametrize("family", ["causal", "causal-bos", "gemma"])
@pytest.mark.parametrize("length_normalize", [False, True])
def test_continuations_equal_one_sequence_per_pair(family, length_normalize):
    bb = make_backbone(family)
    batch = _batch(bb)
    torch.manual_seed(0)
    prompt = torch.randn(5, bb.dim) * 0.5
    with torch.no_grad():
        for p in (None, prompt):
            got = bb.word_scores(p, batch, length_normalize)
            ref = _reference(bb, [p] * len(batch), batch, length_normalize)
            assert torch.equal(got.isinf(), ref.isinf())
            assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("budget, pairs", [(1, 1), (10**9, 10**9), (10**9, 1)], ids=["a-length-a-chunk", "one-chunk", "a-length-a-chunk-rows-together"])
@pytest.mark.parametrize("family", ["causal-bos", "gemma"], ids=["packed", "expanded-sliding-window"])
def test_mixed_batch_and_chunking_equal_the_reference(family, budget, pairs):
    """Rows with a prompt, no prompt and prefix keys/values in one batch; continuations packed per
    row (Llama) or expanded per candidate (Gemma's sliding window), a chunk per row or per word
    length, or all rows together, give the same scores."""
    bb = make_backbone(family)
    bb.continuation_positions, bb.continuation_pairs, bb.continuation_mask_entries = budget, pairs, budget
    batch = _batch(bb)
    torch.manual_seed(1)
    p1, p3 = torch.randn(3, bb.dim) * 0.5, torch.randn(6, bb.dim) * 0.5
    with torch.no_grad():
        got = bb.word_scores([p1, None, bb.prompt_kv(p3)], batch)
        ref = _reference(bb, [p1, None, p3], batch)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


def _assert_prompt_grad_as_reference(bb, batch, prompt):
    """The gradient ``prompt`` (a Parameter) gets through ``word_scores`` equals the one through
    the reference, each row scored alone."""
    ref_prompt = torch.nn.Parameter(prompt.detach().clone())
    got = bb.word_scores(prompt, batch)
    got.masked_fill(got.isinf(), 0).sum().backward()
    ref = _reference(bb, [ref_prompt] * 3, batch)
    ref.masked_fill(ref.isinf(), 0).sum().backward()
    assert torch.allclose(prompt.grad, ref_prompt.grad, atol=1e-4, rtol=1e-4)


def test_prompt_gradient_flows_through_the_continuations():
    bb = make_backbone("causal")
    batch = _batch(bb)
    torch.manual_seed(2)
    prompt = torch.nn.Parameter(torch.randn(4, bb.dim) * 0.5)
    _assert_prompt_grad_as_reference(bb, batch, prompt)


def test_packed_continuations_under_eager_attention():
    """Eager attention adds the mask to the scores: the block-diagonal mask is additive there."""
    bb = make_backbone("causal-bos")
    bb.model.set_attn_implementation("eager")
    batch = _batch(bb)
    torch.manual_seed(3)
    p = torch.randn(3, bb.dim) * 0.5
    with torch.no_grad():
        got = bb.word_scores([p, None, bb.prompt_kv(p)], batch)
    assert torch.allclose(got, _reference(bb, [p, None, p], batch), atol=1e-5, rtol=1e-5)


def _tokens_read(bb):
    """A list that a hook on the decoder stack fills with each forward's ``(rows, positions)``."""
    calls = []
    bb.model.base_model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(tuple(kwargs["inputs_embeds"].shape[:2])), with_kwargs=True)
    return calls


@pytest.mark.parametrize("family", ["causal-bos", "gemma"], ids=["packed", "expanded-sliding-window"])
def test_rows_cut_from_one_text_read_it_once(family):
    """Rows whose texts begin a longer row's text (a row cut at each answer slot) score as if each
    were alone, and the model reads only the longest text: the others continue from its keys/values."""
    bb = make_backbone(family)
    full = bb.tokenize(TEXTS[0] + " . sentiment :")
    cuts = [full[:4], full, full[:9]]
    words = [[bb.tokenize(" " + w) for w in ws] for ws in (WORDS[0], WORDS[1], WORDS[2])]
    batch = EncodedBatch(context=cuts, words=words, word_label=[list(range(len(ws))) for ws in words],
                         word_weight=[[1.0] * len(ws) for ws in words], label_names=[["x"] * len(ws) for ws in words],
                         gold=None, shared_words=False)
    torch.manual_seed(4)
    prompt = torch.randn(3, bb.dim) * 0.5
    calls = _tokens_read(bb)
    with torch.no_grad():
        got = bb.word_scores(prompt, batch)
    calls = list(calls)  # before the reference runs the model too
    assert torch.allclose(got, _reference(bb, [prompt] * 3, batch), atol=1e-5, rtol=1e-5)
    texts = [c for c in calls if c[1] >= len(full)]
    assert texts[0] == (1, len(full))  # the longest text, once; the cut rows read none of their own
    if family == "causal-bos":  # one packed sequence holds every row's candidates (each read minus its last token)
        assert calls[-1] == (1, sum(len(w) - 1 for ws in words for w in ws))
    # the prompt's gradient through the shared keys/values is the one of each row alone
    prompt = torch.nn.Parameter(prompt)
    _assert_prompt_grad_as_reference(bb, batch, prompt)
