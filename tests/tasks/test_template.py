import pytest

from softprompt.errors import DataError, TemplateError
from softprompt.tasks.template import Part, Segment, Template, field_text


def test_parse_parts_fields_and_mask():
    t = Template("Review: {text}\nAbout {movie}; {text} is {mask}")
    assert t.parts == (
        Part("text", "Review: "),
        Part("field", "text"),
        Part("text", "\nAbout "),
        Part("field", "movie"),
        Part("text", "; "),
        Part("field", "text"),
        Part("text", " is "),
        Part("mask", "mask"),
    )
    assert t.fields == ("text", "movie")
    assert t.has_mask


def test_render_fills_slots_with_str():
    t = Template("Word: {word} at {start1}\nAnswer:")
    assert t.render({"word": "class", "start1": 25, "label": "same"}) == "Word: class at 25\nAnswer:"


def test_double_braces_are_literal():
    t = Template("{{json}}: {text} }}")
    assert t.fields == ("text",)
    assert t.render({"text": "x"}) == "{json}: x }"


@pytest.mark.parametrize("text", ["{text!r}", "{text:>3}", "{}{text}", "{a.b}", "{a[0]}", "{ text }"])
def test_bad_slots_are_refused(text):
    with pytest.raises(TemplateError):
        Template(text)


@pytest.mark.parametrize("text", ["{text", "text}", "{text}}"])
def test_unbalanced_braces(text):
    with pytest.raises(TemplateError, match="literal brace"):
        Template(text)


def test_template_without_field_or_with_two_masks():
    with pytest.raises(TemplateError, match="no {field} slot"):
        Template("Answer:")
    with pytest.raises(TemplateError, match="more than one"):
        Template("{text} {mask} {mask}")


def test_check_fields_message_names_slot_fields_and_fixes():
    t = Template("{premise} {hypothesis}")
    t.check_fields(["premise", "hypothesis", "label"])
    with pytest.raises(TemplateError) as info:
        t.check_fields(["premise", "sentence2", "label"], where="rte/train.jsonl")
    message = str(info.value)
    for part in ["rte/train.jsonl", "{hypothesis}", "'sentence2'", "--template", "--field-map"]:
        assert part in message


def test_render_missing_field():
    with pytest.raises(TemplateError, match=r"\{question\}.*idx=7.*'passage'"):
        Template("{passage} {question}").render({"passage": "p", "idx": 7})


@pytest.mark.parametrize("value", ["", "   \n", None, []])
def test_empty_text_is_a_data_error(value):
    with pytest.raises(DataError, match=r"empty text in field 'text' \(example idx=3\)"):
        Template("Review: {text}").render({"text": value, "idx": 3})


def test_mask_handling():
    t = Template("{text}\nSentiment:")
    assert not t.has_mask
    masked = t.with_mask()
    assert masked.text == "{text}\nSentiment: {mask}"
    assert masked.with_mask() is masked
    assert masked.render({"text": "fun"}, mask_token="<mask>") == "fun\nSentiment: <mask>"
    with pytest.raises(TemplateError, match="mask token"):
        masked.render({"text": "fun"})


def test_overrides_replace_field_values():
    t = Template("{premise} / {hypothesis}")
    example = {"premise": "a very long premise", "hypothesis": "h"}
    assert t.render(example, overrides={"premise": "a very"}) == "a very / h"
    # an override also stands in for a missing field
    assert t.render({"hypothesis": "h"}, overrides={"premise": "p"}) == "p / h"


def test_list_values_are_joined_with_spaces():
    t = Template("{choices}\nWhich caused the other?")
    example = {"choices": ["It rained.", "The street got wet."]}
    assert t.render(example) == "It rained. The street got wet.\nWhich caused the other?"
    assert field_text(example, "choices") == "It rained. The street got wet."


def test_dict_round_trip_and_equality():
    t = Template("Q: {question}?\nA:")
    again = Template.from_dict(t.to_dict())
    assert again == t and hash(again) == hash(t) and again.parts == t.parts
    assert t != Template("Q: {question}\nA:")
    with pytest.raises(TemplateError):
        Template.from_dict({"txt": "x"})


def test_render_around_mask_splits_at_the_slot():
    t = Template("Review: {text} It was {mask}.")
    assert t.render_around_mask({"text": "fun [MASK]"}) == ("Review: fun [MASK] It was ", ".")
    assert t.render_around_mask({"text": "fun"}, overrides={"text": "f"}) == ("Review: f It was ", ".")
    assert Template("Review: {text}").render_around_mask({"text": "fun"}) == ("Review: fun", "")


def test_named_answer_slots_virtual_tokens_and_repeated_fields():
    t = Template("{soft:subj*2} {subj} is {mask:head} of {obj}{soft} ; {subj} {mask:rel} {soft*3}{soft:subj*2}")
    assert t.fields == ("subj", "obj")
    assert t.answer_slots == ("head", "rel") and t.has_mask
    assert t.virtual_tokens == {"subj": 2, "soft1": 1, "soft2": 3}  # unnamed {soft}s: vectors of their own
    assert [p for p in t.parts if p.kind in ("mask", "soft")] == [
        Part("soft", "subj", 2), Part("mask", "head"), Part("soft", "soft1"), Part("mask", "rel"),
        Part("soft", "soft2", 3), Part("soft", "subj", 2),
    ]
    assert Template("{text} {mask}").answer_slots == ("mask",)
    assert Template("{text}").answer_slots == () and Template("{text}").virtual_tokens == {}


@pytest.mark.parametrize("text,slot", [
    ("{text} {mask:}", "{mask:}"),
    ("{text} {mask:1st}", "{mask:1st}"),
    ("{text} {mask:a b}", "{mask:a b}"),
    ("{text} {soft*0}", "{soft*0}"),
    ("{text} {soft*x}", "{soft*x}"),
    ("{text} {soft*}", "{soft*}"),
    ("{text} {soft:}", "{soft:}"),
    ("{text} {soft:a-b*2}", "{soft:a-b*2}"),
    ("{text} {soft:soft1}", "{soft:soft1}"),
    ("{text} {soft:x*2} {soft:x*3}", "{soft:x*2} and {soft:x*3}"),
    ("{text} {soft:x*2} {soft:x}", "{soft:x*2} and {soft:x}"),
    ("{text} {mask:a} {mask:a}", "{mask:a} twice"),
    ("{text} {mask} {mask:mask}", "{mask:mask} twice"),
])
def test_bad_special_slots_are_named(text, slot):
    with pytest.raises(TemplateError) as info:
        Template(text)
    assert slot in str(info.value)


def test_segments_join_text_and_keep_slots_in_order():
    t = Template("{soft*2}Q: {q} {mask:a}{soft:x} or {q}? {mask:b}")
    assert t.segments({"q": "why"}) == (
        Segment("virtual", "soft1", 2), Segment("text", "Q: why "), Segment("answer", "a"),
        Segment("virtual", "x"), Segment("text", " or why? "), Segment("answer", "b"),
    )
    assert t.segments({"q": "why"}, overrides={"q": "w"})[1] == Segment("text", "Q: w ")


def test_render_writes_each_answer_slot_and_leaves_virtual_tokens_out():
    t = Template("{soft*2}{subj} {mask:head} {soft:x} {subj} {mask:tail}")
    assert t.render({"subj": "it"}, mask_token="<m>") == "it <m>  it <m>"
    with pytest.raises(TemplateError, match=r"\{mask:head\}.*mask token"):
        t.render({"subj": "it"})
    with pytest.raises(TemplateError, match="several answer slots"):
        t.render_around_mask({"subj": "it"})


def test_saved_templates_round_trip_and_old_ones_keep_their_meaning():
    new = Template("{soft:s*2} {text} {mask:head}")
    assert new.to_dict() == {"text": "{soft:s*2} {text} {mask:head}", "syntax": 2}
    again = Template.from_dict(new.to_dict())
    assert again == new and again.parts == new.parts
    plain = Template("Review: {text} {mask}")
    assert plain.to_dict() == {"text": "Review: {text} {mask}"}  # unchanged for templates that read alike
    assert Template.from_dict(plain.to_dict()) == plain
    # saved before virtual tokens existed: {soft} was a field named soft
    old = Template.from_dict({"text": "{soft} {text}"})
    assert old.fields == ("soft", "text") and old.virtual_tokens == {}
    assert old.render({"soft": "s", "text": "t"}) == "s t"
    assert Template.from_dict(old.to_dict()) == old and old != Template("{soft} {text}")
