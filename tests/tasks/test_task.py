"""softprompt.tasks.task: a bad row of a data file, or a bad input, is named where it is."""

import pytest

from softprompt.errors import DataError, TemplateError, UnknownLabelError
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer

TASK = Task(name="reviews", template=Template("{text} it was"), verbalizer=Verbalizer({"good": "good", "bad": "bad"}))


def test_a_bad_row_of_a_jsonl_file_is_named_by_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine", "label": "good"}\n\n{"text": "ok", "label": "bad"}\n'
                    '{"review": "oops", "label": "bad"}\n', encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        TASK.read_file(path)
    assert str(err.value).startswith(f"{path}:4: task 'reviews': example idx=2: template slot {{text}} has no matching "
                                     "field; the examples have 'review', 'label', 'idx'")


def test_a_bad_row_of_a_csv_file_is_named_by_the_line_it_starts_on(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",good\nfine,meh\n', encoding="utf-8")  # the row on line 4 has no such label
    with pytest.raises(UnknownLabelError, match=rf"^{path}:4: task 'reviews': unknown label 'meh' \(example idx=1\)"):
        TASK.read_file(path)
    assert TASK.read_file(path, labelled=False) == [{"text": "two\nlines", "label": "good", "idx": 0},
                                                    {"text": "fine", "label": "meh", "idx": 1}]
    with pytest.raises(UnknownLabelError, match=r"^bundled d\.csv:4: task"):
        TASK.read_file(path, shown_as="bundled d.csv")


def test_an_unknown_label_gets_a_label_words_example_in_the_datas_own_labels():
    rows = [{"text": "fine", "label": "good"}, {"text": "meh", "label": "so-so"}, {"text": "dull", "label": "bad"},
            {"text": "awful", "label": 0}]
    with pytest.raises(UnknownLabelError) as err:
        TASK.validate(rows)
    assert str(err.value) == (
        "task 'reviews': unknown label 'so-so'; the verbalizer knows 'good', 'bad'; the data's labels "
        "are '0', 'bad', 'good', 'so-so': fix the data's labels or give every label its words, e.g. --label-words "
        '"0=WORD;bad=bad;good=good;so-so=WORD"')
    with pytest.raises(UnknownLabelError, match=r"'goood' \(did you mean 'good'\?\); the verbalizer knows 'good', 'bad': "
                                                r".*--label-words \"good=good;bad=bad;goood=WORD\"$"):
        TASK.verbalizer.gold_index({"text": "x", "label": "goood"})  # one row alone: its label beside the known ones


def test_names_name_each_example_in_place_of_where():
    rows = [{"text": "fine"}, {"text": "  "}]
    with pytest.raises(DataError, match=r"^input 1 \(<stdin>:3\): task 'reviews': empty text in field 'text'"):
        TASK.validate(rows, labelled=False, names=["input 0 (<stdin>:1)", "input 1 (<stdin>:3)"])
    with pytest.raises(DataError, match=r"^batch: task 'reviews': empty text in field 'text'"):
        TASK.validate(rows, where="batch", labelled=False)  # no names: the one place given for all
    with pytest.raises(ValueError, match="1 names for 2 examples"):
        TASK.validate(rows, names=["input 0"])
