"""softprompt.api: inputs become a task's rows without a model (as_examples)."""

import pytest

from softprompt.api import as_examples
from softprompt.errors import DataError
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer

TASK = Task(name="reviews", template=Template("{text} it was"), verbalizer=Verbalizer({"good": "good", "bad": "bad"}))
PAIR = Task(name="pairs", template=Template("{premise} ? {hypothesis}"), verbalizer=Verbalizer({"yes": "yes", "no": "no"}))


def test_texts_json_objects_and_mappings_become_rows():
    assert as_examples(TASK, ["great fun", '{"text": "awful"}', {"text": "dull"}]) == [
        {"text": "great fun"}, {"text": "awful"}, {"text": "dull"}]
    assert as_examples(PAIR, ['{"premise": "a", "hypothesis": "b"}']) == [{"premise": "a", "hypothesis": "b"}]


def test_the_field_map_renames_columns_and_an_input_needs_no_label_column():
    """The field map a run was trained with (label included) reads unlabelled inputs too."""
    field_map = {"text": "sentence", "label": "mood"}
    assert as_examples(TASK, ['{"sentence": "great fun"}', {"sentence": "awful", "mood": "bad"}], field_map) == [
        {"text": "great fun"}, {"text": "awful", "label": "bad"}]
    with pytest.raises(DataError, match=r"input 0: the field map needs column\(s\) 'sentence', but the row has 'review'"):
        as_examples(TASK, ['{"review": "great fun"}'], field_map)


def test_wrong_fields_are_named_with_the_fields_present():
    with pytest.raises(DataError, match=r"task 'reviews'.*template slot \{text\} has no matching field; "
                                        r"the examples have 'review'"):
        as_examples(TASK, ['{"review": "great fun"}'])
    with pytest.raises(DataError, match=r"input 0: task 'pairs' reads fields \['premise', 'hypothesis'\]; pass a JSON object"):
        as_examples(PAIR, ["just a text"])


def test_a_bad_input_among_several_is_named_by_its_position_or_the_name_given():
    inputs = ["great fun", {"text": "dull"}, '{"review": "awful"}', '{"text": ""}']
    with pytest.raises(DataError, match=r"^input 2: task 'reviews': template slot \{text\} has no matching field; "
                                        r"the examples have 'review'"):
        as_examples(TASK, inputs)
    with pytest.raises(DataError, match=r"^input 3: task 'reviews': empty text in field 'text'"):
        as_examples(TASK, [inputs[0], inputs[1], '{"text": "ok"}', inputs[3]])
    with pytest.raises(DataError, match=r"^line 7: task 'pairs' reads fields"):
        as_examples(PAIR, ['{"premise": "a", "hypothesis": "b"}', "just a text"], names=["line 5", "line 7"])
    with pytest.raises(DataError, match=r"^input 1: task 'pairs' reads fields \['premise', 'hypothesis'\]; pass a JSON "
                                        r"object with them \(this one is not valid JSON: Expecting ',' delimiter at column 17\)"):
        as_examples(PAIR, ['{"premise": "a", "hypothesis": "b"}', '{"premise": "a" "hypothesis": "b"}'])
