import pytest

from softprompt.encoding import encode
from softprompt.errors import ConfigError, DataError, TemplateError, UnknownLabelError
from softprompt.tasks.registry import get_task


def test_overlong_text_is_truncated_from_its_field_and_counted(causal_backbone):
    bb = causal_backbone
    bb.max_length = 40
    task = get_task("rotten_tomatoes")
    long_text = " ".join(["great fun"] * 100)
    batch = encode(bb, task, [{"text": long_text, "label": "positive"}, {"text": "bad", "label": "negative"}],
                   prompt_length=10)
    assert batch.truncated == 1
    assert len(batch.context[0]) + 10 + 1 <= 40
    # the template's cue at the end survives
    assert batch.context[0][-2:] == bb.tokenize("sentiment :")
    assert batch.context[1] == bb.tokenize("Review: bad\nSentiment:")


def test_prompt_too_long_for_the_context_is_refused(causal_backbone):
    causal_backbone.max_length = 20
    with pytest.raises(ConfigError, match="--prompt-length"):
        encode(causal_backbone, get_task("rotten_tomatoes"), [{"text": "bad", "label": "negative"}], prompt_length=15)


def test_unknown_label_empty_text_and_missing_field(causal_backbone):
    task = get_task("rotten_tomatoes")
    with pytest.raises(UnknownLabelError, match="neutral"):
        encode(causal_backbone, task, [{"text": "ok", "label": "neutral"}])
    with pytest.raises(DataError, match="empty"):
        encode(causal_backbone, task, [{"text": "  ", "label": "positive"}])
    with pytest.raises(TemplateError, match="text"):
        encode(causal_backbone, task, [{"sentence": "good", "label": "positive"}])


def test_masked_models_get_a_mask_slot(any_backbone):
    batch = encode(any_backbone, get_task("rotten_tomatoes"), [{"text": "great fun", "label": "positive"}])
    if any_backbone.family == "masked":
        assert batch.context[0][batch.mask_pos[0]] == any_backbone.mask_token_id
    else:
        assert batch.mask_pos == []
    assert batch.gold == [1] and batch.single_token


def test_choice_tasks_carry_their_own_candidates(causal_backbone):
    task = get_task("copa")
    rows = [{"premise": "it was dull", "question": "effect", "choices": ["i love it", "i hate it"], "label": "i hate it"}]
    batch = encode(causal_backbone, task, rows)
    assert not batch.shared_words and batch.gold == [1] and batch.label_names == [["i love it", "i hate it"]]
