"""Backbone.text_states (issue 18): the text's last-layer states and the answer slot's, in one pass,
agreeing with what word_scores reads; an encoder-decoder has none."""

from __future__ import annotations

import pytest
import torch

from softprompt.conditioning import Conditioning
from softprompt.encoding import encode
from softprompt.errors import ConfigError
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer

from conftest import make_backbone

ROWS = [{"text": "i love this movie", "label": "yes"}, {"text": "a dull and boring plot that was long", "label": "no"}]


@pytest.mark.parametrize("family,template", [("causal", "{text} . it was {soft:x} so"),
                                             ("causal", "{text} . it was {mask} , so {soft:x} ."),
                                             ("masked", "{text} . it was {mask} {soft:x} .")])
def test_text_states_read_the_answer_where_word_scores_do(family, template):
    bb = make_backbone(family)
    task = Task(name="t", template=Template(template), verbalizer=Verbalizer({"yes": "good", "no": "bad"}))
    batch = encode(bb, task, ROWS)
    g = torch.Generator().manual_seed(0)
    cond = Conditioning(input_vectors=torch.randn(2, bb.dim, generator=g), answer_vectors=torch.randn(2, bb.dim, generator=g),
                        virtual_tokens={"x": torch.randn(1, bb.dim, generator=g)})
    states = bb.text_states(cond, batch)
    assert states.hidden.shape[:2] == states.mask.shape and states.mask.sum(1).tolist() == [len(c) for c in batch.context]
    torch.testing.assert_close(bb.answer_log_scores(states.answer, cond.answer_vectors), bb.word_scores(cond, batch))
    slot = batch.slot_positions(batch.word_slot)
    if family == "masked":
        assert states.answer_at.tolist() == slot  # the mask itself
    else:  # the token before the slot, whose state the answer vectors multiply
        assert states.answer_at.tolist() == [p - 1 for p in slot]
        torch.testing.assert_close(states.hidden[torch.arange(2), states.answer_at], states.answer)


def test_an_encoder_decoder_has_no_text_states():
    bb = make_backbone("seq2seq")
    task = Task(name="t", template=Template("{text} it was"), verbalizer=Verbalizer({"yes": "good", "no": "bad"}))
    with pytest.raises(ConfigError, match="decoder-only or a masked"):
        bb.text_states(Conditioning(), encode(bb, task, ROWS))
