import pytest

from softprompt.errors import DataError, TemplateError
from softprompt.tasks.template import Part, Template, field_text


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
