"""Label-word lists from files (issue 16 item 1): KPT's .txt, CSV and JSON."""

from __future__ import annotations

import json

import pytest

from softprompt.errors import ConfigError
from softprompt.tasks.label_words import read_label_words, write_label_words


def test_txt_is_positional_skips_blank_lines_keeps_multi_token_words_and_counts_repeats(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("bad, awful ,cold-hearted,bad,bad\n\n   \ngood,sci fi,great,good\n")
    read = read_label_words(f, ["negative", "positive"])
    assert read.words == {"negative": ["bad", "awful", "cold-hearted"], "positive": ["good", "sci fi", "great"]}
    assert read.repeated == {"negative": {"bad": 3}, "positive": {"good": 2}}
    assert read.source == str(f) and read.counts() == {"negative": 3, "positive": 3}


def test_a_txt_with_another_number_of_lines_than_labels_is_refused_naming_named_formats(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text("politics,government\nsports,football\nbusiness\n")
    with pytest.raises(ConfigError, match=r"3 lists of words but the task has 4 labels.*\.json.*\.csv"):
        read_label_words(f, ["world", "sports", "business", "sci/tech"])


def test_csv_and_json_name_their_labels_in_any_order(tmp_path):
    csv = tmp_path / "w.csv"
    csv.write_text("positive,good,great\nnegative,bad,\"not good\"\n")
    assert read_label_words(csv, ["negative", "positive"]).words == {"negative": ["bad", "not good"],
                                                                    "positive": ["good", "great"]}
    js = tmp_path / "w.json"
    js.write_text(json.dumps({"positive": ["good"], "negative": ["bad", "awful"]}))
    assert read_label_words(js, ["negative", "positive"]).words == {"negative": ["bad", "awful"], "positive": ["good"]}
    js.write_text(json.dumps([["bad"], ["good", "fine"]]))  # a list of lists is positional, as .txt
    assert read_label_words(js, ["negative", "positive"]).words == {"negative": ["bad"], "positive": ["good", "fine"]}


def test_a_class_of_the_list_missing_from_the_data_or_a_data_label_missing_from_the_list_is_refused(tmp_path):
    js = tmp_path / "w.json"
    js.write_text(json.dumps({"negative": ["bad"], "positive": ["good"], "neutral": ["meh"]}))
    with pytest.raises(ConfigError, match=r"names labels the task lacks: \['neutral'\]"):
        read_label_words(js, ["negative", "positive"])
    csv = tmp_path / "w.csv"
    csv.write_text("negative,bad\n")
    with pytest.raises(ConfigError, match=r"lacks words for labels \['positive'\]"):
        read_label_words(csv, ["negative", "positive"])


def test_bad_files_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="unknown format"):
        read_label_words(tmp_path / "w.yaml", ["a"])
    with pytest.raises(ConfigError, match="cannot be read"):
        read_label_words(tmp_path / "missing.txt", ["a"])
    empty = tmp_path / "e.csv"
    empty.write_text("a, ,\nb,x\n")
    with pytest.raises(ConfigError, match="label 'a' has no words"):
        read_label_words(empty, ["a", "b"])


def test_written_lists_read_back(tmp_path):
    words = {"negative": ["bad", "cold-hearted"], "positive": ["good", "sci fi"]}
    path = write_label_words(tmp_path / "sub" / "w.txt", words)
    assert read_label_words(path, list(words)).words == words
    with pytest.raises(ConfigError, match="comma"):
        write_label_words(tmp_path / "x.txt", {"a": ["x,y"]})


def test_kpts_released_lists_read_in_the_built_in_tasks_label_order(shared_data):
    from softprompt.tasks import get_task

    root = shared_data / "kpt_label_words"
    ag = read_label_words(root / "agnews" / "knowledgeable_verbalizer.txt", get_task("ag_news").verbalizer.labels)
    assert [ws[0] for ws in ag.words.values()] == ["politics", "sports", "business", "technology"]
    assert sum(ag.counts().values()) > 1000
    imdb = read_label_words(root / "imdb" / "knowledgeable_verbalizer.txt", get_task("rotten_tomatoes").verbalizer.labels)
    assert imdb.words["negative"][0] == "bad" and imdb.repeated["negative"]["bad"] >= 2
    yahoo_file = root / "yahoo_answers_topics" / "knowledgeable_verbalizer.json"
    labels = list(json.loads(yahoo_file.read_text()))
    assert list(read_label_words(yahoo_file, labels).words) == labels


def test_a_file_without_knowledgeable_makes_a_plain_multi_word_verbalizer_sharing_words(tmp_path):
    from types import SimpleNamespace

    from softprompt.tasks import Verbalizer
    from softprompt.tasks.from_config import task_from_config

    f = tmp_path / "w.txt"
    f.write_text("bad,awful,fine\ngood,great,fine\n")
    cfg = SimpleNamespace(task="rotten_tomatoes", template=None, label_words=None, label_words_file=str(f),
                          verbalizer="auto")
    verb = task_from_config(cfg).verbalizer
    assert type(verb) is Verbalizer and verb.shared_words
    assert verb.candidates() == [["bad", "awful", "fine"], ["good", "great", "fine"]]
    cfg.verbalizer = "knowledgeable"  # left to the refinement, once the model is loaded
    assert task_from_config(cfg).verbalizer.candidates() == [["negative"], ["positive"]]
