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


def slot_task(template, words=None):
    from softprompt.tasks.task import Task
    from softprompt.tasks.template import Template
    from softprompt.tasks.verbalizer import Verbalizer

    return Task(name="t", template=Template(template), verbalizer=Verbalizer(words or {"positive": "good", "negative": "bad"}))


def test_answer_slots_and_virtual_tokens_keep_their_positions(any_backbone):
    bb = any_backbone
    batch = encode(bb, slot_task("{soft:a*2} review : {text} {soft} , {mask:x} it was {mask:y} ."),
                   [{"text": "great fun", "label": "positive"}], slot="y")
    m = [] if bb.mask_token_id is None else [bb.mask_token_id]
    pad = bb.pad_id
    head, mid = bb.tokenize("review : great fun"), bb.tokenize(",")
    x = 2 + len(head) + 1 + len(mid)
    y = x + len(m) + len(bb.tokenize("it was"))
    assert batch.context[0] == [pad, pad] + head + [pad] + mid + m + bb.tokenize("it was") + m + bb.tokenize(".")
    assert batch.slot_names == ("x", "y") and batch.word_slot == "y" and batch.answer_pos == [[x, y]]
    assert batch.virtual == [[(0, "a", 0), (1, "a", 1), (2 + len(head), "soft1", 0)]]
    assert batch.mask_pos == ([y] if m else [])
    assert batch.slot_positions("x") == [x] and batch.select([0]).answer_pos == [[x, y]]
    assert batch.context_text == [" review : great fun  ,  it was "]  # the text as written, slots left out


def test_a_template_without_answer_slot_is_answered_at_its_end(any_backbone):
    batch = encode(any_backbone, get_task("rotten_tomatoes"), [{"text": "great fun", "label": "positive"}])
    assert batch.slot_names == ("mask",) and batch.virtual == [[]]
    if any_backbone.mask_token_id is None:
        assert batch.answer_pos == [[len(batch.context[0])]] and batch.answer_at_end
    else:
        assert batch.answer_pos == [batch.mask_pos] and not batch.answer_at_end


def test_truncation_cuts_fields_never_slots_and_counts_virtual_tokens(any_backbone):
    bb = any_backbone
    bb.max_length = 40
    row = {"text": " ".join(["great fun"] * 40), "label": "positive"}
    plain = encode(bb, slot_task("review : {text} it was {mask} ."), [row], prompt_length=4)
    soft = encode(bb, slot_task("{soft*3} review : {text} {soft:b} it was {mask} . {soft:c*2}"), [row], prompt_length=4)
    for batch in (plain, soft):
        assert batch.truncated == 1 and len(batch.context[0]) + 4 + bb.n_special + 1 <= 40
    assert [v[0] for v in soft.virtual[0]][:3] == [0, 1, 2] and len(soft.virtual[0]) == 6
    assert all(soft.context[0][p] == bb.pad_id for p, _, _ in soft.virtual[0])
    # the six virtual tokens take six tokens of the field's room
    field_plain = len(plain.context_text[0].split()) - len("review : it was".split())
    field_soft = len(soft.context_text[0].split()) - len("review : it was".split())
    assert field_plain - field_soft == 6
    tail = bb.tokenize("it was")
    pos = soft.answer_pos[0][0]
    assert soft.context[0][pos - len(tail): pos] == tail


def test_a_repeated_field_is_cut_alike_in_both_places(causal_backbone):
    bb = causal_backbone
    bb.max_length = 40
    row = {"a": " ".join(["the movie"] * 30), "b": "fun", "label": "positive"}
    batch = encode(bb, slot_task("{a} ; so {a} was {b} :"), [row])
    first, second = batch.context_text[0].split(" ; so ")
    assert first == second.rsplit(" was fun :", 1)[0] and row["a"].startswith(first)
    assert len(batch.context[0]) + 1 <= 40


def test_fixed_text_is_cut_from_its_start_but_never_past_a_slot(causal_backbone):
    bb = causal_backbone
    bb.max_length = 24
    fixed = " ".join(["the movie was fun"] * 6)
    row = {"text": "good", "label": "positive"}
    batch = encode(bb, slot_task(fixed + " {soft} {text}"), [row])  # today's last resort: the start goes
    assert len(batch.context[0]) + 1 == 24 and batch.virtual[0] == [(21, "soft1", 0)]
    assert batch.context[0][-1] == bb.tokenize("good")[0] and batch.context_text[0].startswith("fun the movie")
    with pytest.raises(ConfigError, match="fixed text"):  # the text after the slot alone is too long
        encode(bb, slot_task("{soft} {text} " + fixed), [row])


def test_several_answer_slots_need_the_scored_one_named(causal_backbone):
    t = slot_task("{text} {mask:a} or {mask:b}")
    with pytest.raises(ConfigError, match="answer slots a, b.*slot=name"):
        encode(causal_backbone, t, [{"text": "fun", "label": "positive"}])
    with pytest.raises(ConfigError, match="'c' is not in template"):
        encode(causal_backbone, t, [{"text": "fun", "label": "positive"}], slot="c")


@pytest.mark.parametrize("template", ["Review: {text}\nSentiment:", "{text} It was {mask}", "{text} It was {mask} ."])
def test_one_slot_templates_encode_as_before(any_backbone, template):
    # today's ids: the backbone's answer_ids over the text before and after the slot
    bb = any_backbone
    t = slot_task(template, {"positive": ["great", "very good"], "negative": "bad"})
    rows = [{"text": "the plot was dull", "label": "negative"}]
    batch = encode(bb, t, rows)
    tm = t.template if bb.mask_token_id is None else t.template.with_mask()
    before, after = tm.render_around_mask(rows[0])
    ids, words, _ = bb.answer_ids(before, after, ["great", "very good", "bad"], " ")
    assert batch.words[0] == words
    if bb.mask_token_id is not None or not after:
        assert batch.context[0] == ids
    else:  # no mask token: the text after the slot is kept after it (a decoder once read it before the word)
        pos = batch.answer_pos[0][0]
        assert batch.context[0] == bb.tokenize(before) + bb.tokenize(after) and pos == len(bb.tokenize(before))
