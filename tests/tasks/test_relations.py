"""Relation rows: entities marked in the sentence (none, tags, typed), kept by a saved task (issue 17)."""

import json

import pytest

from softprompt.encoding import encode
from softprompt.errors import ConfigError, DataError
from softprompt.tasks import get_task, load_split
from softprompt.tasks.relations import mark_entities
from softprompt.tasks.task import Task

from conftest import make_backbone

ROW = {"text": "The company fabricates plastic chairs.", "e1": "company", "e2": "chairs",
       "e1_span": [4, 11], "e2_span": [31, 37], "label": "Product-Producer(e2,e1)", "idx": 3}


def test_markers_by_span_by_string_and_typed():
    assert mark_entities(ROW, "none")["text"] == ROW["text"]
    assert mark_entities(ROW, "tags")["text"] == "The <e1>company</e1> fabricates plastic <e2>chairs</e2>."
    no_spans = {"text": "the cat saw the cat toy", "e1": "cat", "e2": "cat toy"}
    assert mark_entities(no_spans, "tags")["text"] == "the <e1>cat</e1> saw the <e2>cat toy</e2>"
    typed = {**ROW, "e1_type": "organization", "e2_type": "product"}
    assert mark_entities(typed, "typed")["text"] == \
        "The <e1:organization>company</e1:organization> fabricates plastic <e2:product>chairs</e2:product>."


def test_marker_errors_say_what_to_do():
    with pytest.raises(DataError, match="'typed' need.*row idx=3.*lacks e1_type, e2_type.*--entity-markers tags"):
        mark_entities(ROW, "typed")
    with pytest.raises(DataError, match="e1_span \\[0, 3\\].*holds 'The', not e1 = 'company'"):
        mark_entities({**ROW, "e1_span": [0, 3]}, "tags")
    with pytest.raises(DataError, match="e2 = 'dogs' is not in the text"):
        mark_entities({"text": "a cat", "e1": "cat", "e2": "dogs"}, "tags")
    with pytest.raises(ConfigError, match="unknown entity markers 'bold'"):
        Task(name="r", template="{text}", verbalizer=get_task("rotten_tomatoes").verbalizer, entity_markers="bold")


def test_sample_matches_the_data_s_own_markup_and_the_task_keeps_its_markers():
    task = get_task("semeval2010_task8")
    rows = load_split(task, "train")
    assert all(mark_entities(r, "tags")["text"] == r["marked_text"] for r in rows)
    tagged = Task.from_dict(json.loads(json.dumps({**task.to_dict(), "entity_markers": "tags"})))
    assert tagged.entity_markers == "tags" and tagged.prepare(rows[0])["text"] == rows[0]["marked_text"]
    with pytest.raises(DataError, match="lacks e1_type"):
        Task.from_dict({**task.to_dict(), "entity_markers": "typed"}).validate(rows[:1])


def test_encode_reads_the_marked_text():
    bb = make_backbone("causal")
    from softprompt.tasks.rules import RuleVerbalizer

    rules = RuleVerbalizer({"A": ["the", "is", "a"], "B": ["a", "is", "the"]}, ["head", "link", "tail"])
    row = {"text": "i love this movie", "e1": "i", "e2": "movie", "label": "A"}
    plain = Task(name="r", template="{text} {mask:head} {e1} {mask:link} {mask:tail} {e2}", verbalizer=rules)
    tagged = Task(name="r", template=plain.template, verbalizer=rules, entity_markers="tags")
    assert encode(bb, tagged, [row]).context_text != encode(bb, plain, [row]).context_text


@pytest.mark.parametrize("markers", ["tags", "typed"])
def test_setup_and_serving_checks_encode_a_placeholder_with_markers(markers):
    """Prompt tuning reads the label words' ids, and the server checks a saved run fits, by encoding
    a one-word placeholder row: with entity markers on, its entities must be found in its text
    (a trial found every prompt-tuning run with --entity-markers refused: "e2 = 'x' is not in the text")."""
    from softprompt.encoding import label_word_ids
    from softprompt.tasks import Verbalizer

    bb = make_backbone("causal")
    task = Task(name="r", template="{text}\n{e1} and {e2}:", verbalizer=Verbalizer({"A": "yes", "B": "no"}),
                entity_markers=markers)
    row = task.placeholder()
    assert task.prepare(row)["text"] != row["text"]  # the markers were placed
    assert [len(w) for w in label_word_ids(bb, task)] == [1, 1]


@pytest.mark.parametrize("style", ["tags", "typed"])
def test_a_row_without_text_is_a_data_error_naming_its_fields(style):
    row = {"sentence": "The company makes chairs.", "e1": "company", "e2": "chairs", "e1_type": "org", "e2_type": "thing"}
    with pytest.raises(DataError, match=r"lacks 'text' \(it has 'sentence', 'e1'.*--field-map text=COLUMN"):
        mark_entities(row, style)
