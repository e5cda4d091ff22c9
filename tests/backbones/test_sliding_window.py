"""Sliding-window attention (Gemma's) behind the causal backbone, on a tiny Gemma-3 whose window
(4 tokens) is shorter than the prompt and the texts: the fast paths still score every candidate
word exactly as the plain concatenation ``[BOS] prompt text word`` run alone, a prompt's keys/values
longer than the window score as the prompt, and generation in a batch equals one row at a time."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tokenizer
from softprompt.backbones import wrap
from softprompt.encoding import EncodedBatch

TEXTS = ["this movie was great fun and very witty", "bad", "the plot is so dull and the acting is awful , really boring ."]


def _gemma(window: int, **kwargs):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tok = make_tokenizer("causal-bos")
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                           sliding_window=window, layer_types=["sliding_attention", "full_attention"],
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return wrap(Gemma3ForCausalLM(cfg).eval(), tok, model_id="tiny-gemma-sliding", **kwargs)


def _batch(bb, words):
    ctx = [bb.tokenize(t + " . sentiment :") for t in TEXTS]
    ids = [bb.tokenize(" " + w) for w in words]
    n = len(TEXTS)
    return EncodedBatch(context=ctx, words=[ids] * n, word_label=[[0, 0, 1]] * n, word_weight=[[1.0] * 3] * n,
                        label_names=[["pos", "neg"]] * n, gold=[0, 1, 1], shared_words=True)


def _alone(bb, prompt, batch) -> torch.Tensor:
    """log p(word | [BOS] prompt text) of each (row, word), each pair run alone through the model."""
    out = torch.empty(len(batch), len(batch.words[0]))
    for b, ctx in enumerate(batch.context):
        for w, word in enumerate(batch.words[b]):
            x = torch.cat([bb.embed(torch.tensor(bb.lead_ids)), prompt, bb.embed(torch.tensor(ctx + word))])
            lp = torch.log_softmax(bb.model(inputs_embeds=x[None]).logits[0].float(), -1)
            start = len(bb.lead_ids) + prompt.shape[0] + len(ctx)
            out[b, w] = lp[torch.arange(start - 1, start - 1 + len(word)), torch.tensor(word)].sum()
    return out


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("prompt_length", [2, 9], ids=["prompt-inside-window", "prompt-beyond-window"])
def test_multi_token_words_past_the_window_score_as_each_pair_alone(prompt_length):
    bb = _gemma(4)
    batch = _batch(bb, ["very good", "great", "not good"])
    torch.manual_seed(1)
    prompt = torch.randn(prompt_length, bb.dim) * 0.5
    with torch.no_grad():
        want = _alone(bb, prompt, batch)
        assert _rel(bb.word_scores(prompt, batch), want) < 1e-4
        assert _rel(_gemma(4, shared_prefix=False).word_scores(prompt, batch), want) < 1e-4
        assert _rel(bb.word_scores(bb.prompt_kv(prompt), batch), want) < 1e-4  # keys/values kept past the window


def test_generation_in_a_batch_equals_one_row_at_a_time_past_the_window():
    bb = _gemma(4)
    batch = _batch(bb, ["very good", "great", "not good"])
    prompt = torch.randn(3, bb.dim) * 0.5
    together = bb.generate(prompt, batch, max_new_tokens=5)
    assert together == [bb.generate(prompt, batch.select([i]), max_new_tokens=5)[0] for i in range(len(TEXTS))]


def test_the_embedding_scale_is_read_in_the_space_the_layers_see():
    """Gemma multiplies embeddings by sqrt(dim): the lr default's embedding RMS is taken after that."""
    from softprompt.methods import embedding_rms

    bb = _gemma(4)
    raw = float(bb.model.get_input_embeddings().weight.float().pow(2).mean().sqrt())
    assert embedding_rms(bb) == pytest.approx(raw * bb.dim ** 0.5, rel=1e-4)
