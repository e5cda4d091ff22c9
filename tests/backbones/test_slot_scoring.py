"""Scoring a word at an answer slot inside the text, on the tiny model of each family (issue 15, items 2-4).

Each value is checked against a hand-built reference: the token ids written out by hand and the
``transformers`` model called directly on them.
"""

import pytest
import torch

from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer

from conftest import make_backbone

WORDS = {"positive": ["great", "very good"], "negative": ["bad"]}  # "very good" is two tokens
ROW = {"text": "the plot was dull", "label": "negative"}


def task(template: str) -> Task:
    return Task(name="t", template=Template(template), verbalizer=Verbalizer(WORDS))


def ids(bb, text: str) -> list[int]:
    return bb.tokenize(text)


def causal_reference(bb, before: list[int], scored: list[int], prompt=None) -> float:
    """log p(scored | lead + prompt + before), by plain concatenation through the model's own forward."""
    lead = bb.lead_ids
    emb = bb.model.get_input_embeddings()(torch.tensor([lead + before + scored]))
    if prompt is not None:
        emb = torch.cat([emb[:, : len(lead)], prompt[None], emb[:, len(lead):]], 1)
    lp = torch.log_softmax(bb.model(inputs_embeds=emb).logits[0].float(), -1)
    start = emb.shape[1] - len(scored)
    return float(sum(lp[start - 1 + j, t] for j, t in enumerate(scored)))


@pytest.mark.parametrize("family", ["causal", "causal-bos"])
def test_causal_word_inside_the_text_is_teacher_forced_over_what_follows(family):
    bb = make_backbone(family)
    batch = encode(bb, task("{text} , it was {mask} , so do not watch it ."), [ROW])
    before, after = ids(bb, "the plot was dull , it was"), ids(bb, ", so do not watch it .")
    assert batch.context[0] == before + after and batch.answer_pos == [[len(before)]]
    prompt = torch.randn(3, bb.dim)
    with torch.no_grad():
        got = bb.word_scores(prompt, batch)
        ref = [causal_reference(bb, before, ids(bb, w) + after, prompt) for w in ["great", "very good", "bad"]]
        # the old behaviour: before and after joined, the word scored at the end
        at_end = causal_reference(bb, before + after, ids(bb, "great"), prompt)
    assert got[0].tolist() == pytest.approx(ref, abs=1e-4)
    assert abs(float(got[0, 0]) - at_end) > 1e-3
    with torch.no_grad():
        nll = bb.gold_nll(prompt, batch)
    assert float(nll[0]) == pytest.approx(-ref[2] / (1 + len(after)), abs=1e-4)


def test_causal_later_slot_needs_the_earlier_slots_words():
    bb = make_backbone("causal")
    t = task("{text} . {mask:head} was {mask:tail} , so not fun .")
    batch = encode(bb, t, [ROW, {"text": "great acting", "label": "positive"}], slot="tail")
    assert batch.slot_names == ("head", "tail") and batch.word_slot == "tail"
    with pytest.raises(ConfigError, match="'head'.*fills"):
        bb.word_scores(None, batch)
    fill = [ids(bb, "the movie"), ids(bb, "it")]
    with torch.no_grad():
        got = bb.slot_word_scores(None, batch, "tail", fills={"head": fill})
    for b, text in enumerate(["the plot was dull .", "great acting ."]):
        before = ids(bb, text) + fill[b] + ids(bb, "was")
        # scored up to the end of the text: no answer slot follows "tail"
        ref = [causal_reference(bb, before, ids(bb, w) + ids(bb, ", so not fun .")) for w in ["great", "very good", "bad"]]
        assert got[b].tolist() == pytest.approx(ref, abs=1e-4)


def test_causal_first_slot_is_scored_up_to_the_next_slot():
    bb = make_backbone("causal")
    batch = encode(bb, task("{text} . {mask:head} was {mask:tail} , so not fun ."), [ROW], slot="head")
    with torch.no_grad():
        got = bb.slot_word_scores(None, batch, "head")
    before = ids(bb, "the plot was dull .")
    ref = [causal_reference(bb, before, ids(bb, w) + ids(bb, "was")) for w in ["great", "very good", "bad"]]
    assert got[0].tolist() == pytest.approx(ref, abs=1e-4)


def test_causal_word_at_the_end_scores_as_before():
    bb = make_backbone("causal")
    batch = encode(bb, task("{text} , it was {mask}"), [ROW])
    assert batch.answer_at_end
    prompt = torch.randn(2, bb.dim)
    with torch.no_grad():
        assert torch.allclose(bb.slot_word_scores(prompt, batch, "mask"), bb.word_scores(prompt, batch), atol=1e-5)


def test_masked_lm_reads_every_slot_as_masks_at_once():
    bb = make_backbone("masked")
    t = task("{text} . {mask:head} was {mask:tail} .")
    batch = encode(bb, t, [ROW], slot="tail")
    m = bb.mask_token_id
    pre, mid, post = ids(bb, "the plot was dull ."), ids(bb, "was"), ids(bb, ".")
    assert batch.context[0] == pre + [m] + mid + [m] + post
    assert batch.answer_pos == [[len(pre), len(pre) + 2]] and batch.mask_pos == [len(pre) + 2]
    with torch.no_grad():
        got = bb.slot_word_scores(None, batch, "tail")
        ref = []
        for w in ["great", "very good", "bad"]:
            w_ids = ids(bb, w)
            seq = bb.lead_ids + pre + [m] + mid + [m] * len(w_ids) + post + bb.trail_ids
            lp = torch.log_softmax(bb.model(input_ids=torch.tensor([seq])).logits[0], -1)
            at = len(bb.lead_ids) + len(pre) + 2
            ref.append(float(sum(lp[at + j, tok] for j, tok in enumerate(w_ids))))
        # the default path scores the same slot the same way
        assert torch.allclose(bb.word_scores(None, batch), got, atol=1e-5)
    assert got[0].tolist() == pytest.approx(ref, abs=1e-4)


def test_masked_lm_fill_writes_words_into_another_slot():
    bb = make_backbone("masked")
    batch = encode(bb, task("{text} . {mask:head} was {mask:tail} ."), [ROW], slot="head")
    with torch.no_grad():
        got = bb.slot_word_scores(None, batch, "head", fills={"tail": [ids(bb, "very bad")]})
        w_ids = ids(bb, "bad")
        seq = bb.lead_ids + ids(bb, "the plot was dull .") + [bb.mask_token_id] + ids(bb, "was very bad .") + bb.trail_ids
        lp = torch.log_softmax(bb.model(input_ids=torch.tensor([seq])).logits[0], -1)
        ref = float(lp[len(bb.lead_ids) + len(ids(bb, "the plot was dull .")), w_ids[0]])
    assert float(got[0, 2]) == pytest.approx(ref, abs=1e-4)


def test_seq2seq_encoder_reads_other_slots_empty_or_filled():
    bb = make_backbone("seq2seq")
    batch = encode(bb, task("{text} . {mask:head} was {mask:tail} ."), [ROW], slot="tail")
    pre = ids(bb, "the plot was dull .")
    assert batch.answer_pos == [[len(pre), len(pre) + 1]]

    def reference(encoder_text: str, word: str) -> float:
        w = ids(bb, word)
        out = bb.model(input_ids=torch.tensor([ids(bb, encoder_text) + bb.trail_ids]),
                       decoder_input_ids=torch.tensor([[bb.pad_id] + w[:-1]]))
        lp = torch.log_softmax(out.logits[0].float(), -1)
        return float(sum(lp[j, t] for j, t in enumerate(w)))

    with torch.no_grad():
        empty = bb.slot_word_scores(None, batch, "tail")
        filled = bb.slot_word_scores(None, batch, "tail", fills={"head": [ids(bb, "the acting")]})
        assert empty[0].tolist() == pytest.approx(
            [reference("the plot was dull . was .", w) for w in ["great", "very good", "bad"]], abs=1e-4)
        assert filled[0].tolist() == pytest.approx(
            [reference("the plot was dull . the acting was .", w) for w in ["great", "very good", "bad"]], abs=1e-4)
        assert torch.allclose(bb.word_scores(None, batch), empty, atol=1e-5)


@pytest.mark.parametrize("family", ["causal", "seq2seq", "masked"])
def test_per_row_prompts_score_as_each_prompt_alone(family):
    bb = make_backbone(family)
    rows = [ROW, {"text": "great acting", "label": "positive"}]
    batch = encode(bb, task("{text} , it was {mask} , so fun ."), rows)
    p1, p2 = torch.randn(2, bb.dim), torch.randn(3, bb.dim)
    with torch.no_grad():
        mixed = bb.slot_word_scores([p1, p2], batch, "mask")
        assert torch.allclose(mixed[0], bb.slot_word_scores(p1, batch.select([0]), "mask")[0], atol=1e-5)
        assert torch.allclose(mixed[1], bb.slot_word_scores(p2, batch.select([1]), "mask")[0], atol=1e-5)


def test_wrong_slot_words_or_fills_are_refused():
    bb = make_backbone("masked")
    batch = encode(bb, task("{text} . {mask:head} was {mask:tail} ."), [ROW], slot="tail")
    with pytest.raises(ConfigError, match="'nope'.*head, tail"):
        bb.slot_word_scores(None, batch, "nope")
    with pytest.raises(ConfigError, match="words for 'head'"):
        bb.slot_word_scores(None, batch, "head")
    with pytest.raises(ConfigError, match="fills for 'tail'"):
        bb.slot_word_scores(None, batch, "tail", fills={"tail": [[5]]})


@pytest.mark.parametrize("family", ["causal", "causal-bos", "seq2seq", "masked"])
def test_virtual_tokens_before_and_after_a_slot_inside_the_text_sit_where_they_were(family):
    """Virtual tokens whose vectors are real tokens' embeddings score as those tokens written into
    the context, on both sides of a slot the word is scored inside the text at."""
    import dataclasses

    from softprompt.conditioning import Conditioning

    bb = make_backbone(family)
    # On a decoder the text after the slot is scored, and a virtual token there is read but never
    # predicted, so it would not equal a written token: there the virtual tokens come before the slot.
    after = "" if family.startswith("causal") else "{soft:b} "
    batch = encode(bb, task("{text} {soft:a*2} it was {mask} , " + after + "so ."), [ROW])
    chosen = {"a": [7, 9], "b": [11]}
    context = list(batch.context[0])
    for pos, name, i in batch.virtual[0]:
        context[pos] = chosen[name][i]
    written = dataclasses.replace(batch, context=[context], virtual=[[]])
    cond = Conditioning(virtual_tokens={n: bb.embed(torch.tensor(t)).detach() for n, t in chosen.items()
                                        if any(v[1] == n for v in batch.virtual[0])})
    with torch.no_grad():
        got = bb.word_scores(cond, batch)
        ref = bb.word_scores(None, written)
    assert got[0].tolist() == pytest.approx(ref[0].tolist(), abs=1e-4)


def test_causal_last_slot_after_an_empty_one_is_not_scored_as_joined_text():
    bb = make_backbone("causal")
    batch = encode(bb, task("{text} , {mask:a} and {mask:b}"), [ROW], slot="b")
    assert not batch.answer_at_end  # b ends the text, but slot a before it is empty
    with pytest.raises(ConfigError, match="'a'.*fills"):
        bb.word_scores(None, batch)
    adjacent = encode(bb, task("{text} , {mask:a}{mask:b} ."), [ROW], slot="b")
    with pytest.raises(ConfigError, match="'a'.*fills"):
        bb.slot_word_scores(None, adjacent, "b")


def test_causal_generation_continues_the_text_before_the_slot():
    bb = make_backbone("causal")
    inside = encode(bb, task("{text} , it was {mask} , so do not watch it ."), [ROW])
    before = encode(bb, task("{text} , it was"), [ROW])
    assert inside.before_answer().context == before.context
    with torch.no_grad():
        assert bb.generate(None, inside, 4) == bb.generate(None, before, 4)
    two = encode(bb, task("{text} . {mask:head} was {mask:tail} ."), [ROW], slot="tail")
    with pytest.raises(ConfigError, match="--scoring rank"):
        bb.generate(None, two, 4)


def test_a_virtual_token_in_the_text_a_decoder_scores_is_read_not_predicted():
    from softprompt.conditioning import Conditioning

    bb = make_backbone("causal")
    batch = encode(bb, task("{text} it was {mask} , {soft:b} so ."), [ROW])
    assert [v[1] for v in batch.virtual[0]] == ["b"]
    vec = bb.embed(torch.tensor([11])).detach()
    with torch.no_grad():
        scores = bb.slot_word_scores(Conditioning(virtual_tokens={"b": vec}), batch, "mask", length_normalize=True)
        other = bb.slot_word_scores(Conditioning(virtual_tokens={"b": vec + 1}), batch, "mask", length_normalize=True)
    assert torch.isfinite(scores).all() and not torch.allclose(scores, other)  # read: it moves what follows
    after = len(batch.context[0]) - batch.answer_pos[0][0]  # tokens after the slot, the virtual one included
    with torch.no_grad():
        plain = bb.slot_word_scores(Conditioning(virtual_tokens={"b": vec}), batch, "mask")
    # length normalisation divides by the tokens predicted: the word's and the text's, not the virtual one
    assert float(scores[0, 2]) == pytest.approx(float(plain[0, 2]) / (1 + after - 1), abs=1e-5)

