import json

import pytest

from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.tasks.from_config import data_name, load_rows, task_from_config
from softprompt.tasks.verbalizer import ChoiceVerbalizer


def test_label_words_choices_field_makes_a_multiple_choice_task(tmp_path):
    rows = [{"question": "sky?", "options": ["blue", "green"], "label": "blue"},
            {"question": "grass?", "options": ["red", "green"], "label": "green"}]
    f = tmp_path / "mc.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(task="mine", train_file=str(f), template="Q: {question}\nA:", label_words="choices:options")
    task = task_from_config(cfg)
    assert isinstance(task.verbalizer, ChoiceVerbalizer) and task.verbalizer.choices_field == "options"
    assert task.verbalizer.label_names(rows[1]) == ["red", "green"]
    assert len(load_rows(task, cfg, "train")) == 2
    with pytest.raises(ConfigError, match="choices:FIELD"):
        task_from_config(TrainConfig(task="mine", train_file=str(f), template="Q: {question}", label_words="choices:"))


def test_a_typed_backslash_n_in_a_template_is_a_line_break_and_commands_write_it_back():
    from softprompt.experiments.config import command_line

    typed = TrainConfig(task="mine", template="Review: {text}\\nSentiment:", label_words="pos=good;neg=bad")
    assert task_from_config(typed).template.text == "Review: {text}\nSentiment:"
    cmd = command_line(TrainConfig(task="mine", template="Review: {text}\nSentiment:", label_words="pos=good;neg=bad"))
    assert "\n" not in cmd and "--template 'Review: {text}\\nSentiment:'" in cmd


def test_label_words_choose_the_verbalizer_kind():
    from softprompt.tasks.from_config import verbalizer_from_spec
    from softprompt.tasks.verbalizer import AnswerVectorVerbalizer, LearnedWeightsVerbalizer, Verbalizer

    plain = verbalizer_from_spec("pos=great,good;neg=bad")
    assert type(plain) is Verbalizer and not plain.shared_words
    shared = verbalizer_from_spec("shared:pos=good,great;neg=bad,good")
    assert type(shared) is Verbalizer and shared.shared_words and shared.words == [["good", "great"], ["bad", "good"]]
    learned = verbalizer_from_spec("learned:pos=great,good;neg=bad")
    assert type(learned) is LearnedWeightsVerbalizer and not learned.shared_words
    assert verbalizer_from_spec("learned+shared:pos=good;neg=good,bad").shared_words
    vectors = verbalizer_from_spec("answer-vectors:positive, negative")
    assert type(vectors) is AnswerVectorVerbalizer and vectors.labels == ["positive", "negative"]
    with pytest.raises(ConfigError, match="--label-words 'shared:"):
        verbalizer_from_spec("pos=good,great;neg=bad,good")
    with pytest.raises(ConfigError, match="answer-vectors:LABEL,LABEL"):
        verbalizer_from_spec("answer-vectors:positive,")


@pytest.mark.parametrize("path, name", [("reviews_train.jsonl", "reviews"), ("data/reviews-test.csv", "reviews"),
                                        ("reviews.dev.tsv", "reviews"), ("data/reviews/train.jsonl", "reviews"),
                                        ("contest.jsonl", "contest"), ("tweets.jsonl", "tweets")])
def test_your_own_data_is_named_after_its_file(path, name):
    assert data_name(path) == name


def test_your_own_files_without_task_make_a_task_named_after_them(tmp_path):
    f = tmp_path / "tweets_train.jsonl"
    f.write_text(json.dumps({"text": "so much fun", "label": "pos"}) + "\n")
    assert TrainConfig().task == "rotten_tomatoes" and TrainConfig(train_file=str(f)).task is None
    # a test (or validation) file alone evaluates the default task's training on your rows: its name stays
    assert TrainConfig(test_file=str(f)).task == "rotten_tomatoes"
    task = task_from_config(TrainConfig(train_file=str(f), template="Tweet: {text} Mood:", label_words="pos=happy;neg=sad"))
    assert task.name == "tweets" and task.splits == {"train": str(f)} and task.verbalizer.labels == ["pos", "neg"]
    named = task_from_config(TrainConfig(task="mine", train_file=str(f), template="{text}", label_words="pos=a;neg=b"))
    assert named.name == "mine"
    assert task_from_config(TrainConfig(task="rotten_tomatoes", train_file=str(f))).name == "rotten_tomatoes"
    with pytest.raises(ConfigError, match=r"--train-file .*tweets_train.jsonl: your own data needs its format, "
                                          r"--template and --label-words \(the task is then named 'tweets'.*--task NAME"):
        task_from_config(TrainConfig(train_file=str(f)))
    with pytest.raises(ConfigError, match=r"needs its format, --label-words \("):
        task_from_config(TrainConfig(train_file=str(f), template="{text}"))
    clash = tmp_path / "ag_news" / "train.jsonl"
    with pytest.raises(ConfigError, match="named 'ag_news' after the file, the name of a built-in task; .*--task NAME"):
        task_from_config(TrainConfig(train_file=str(clash), template="{text}", label_words="pos=a;neg=b"))


def test_the_field_map_is_part_of_the_task_a_saved_run_keeps_and_a_given_one_replaces(tmp_path):
    """--field-map goes into the task (saved with it by to_dict) and reads its files; a task built
    over a saved one keeps its map unless another is given; a malformed saved map is refused."""
    from softprompt.config import EvalConfig
    from softprompt.tasks.task import Task

    f = tmp_path / "mood_train.jsonl"
    f.write_text(json.dumps({"sentence": "great fun", "mood": "good"}) + "\n")
    trained = task_from_config(TrainConfig(train_file=str(f), template="{text} it was", label_words="good=good;bad=bad",
                                           field_map="text=sentence,label=mood"))
    assert trained.field_map == {"text": "sentence", "label": "mood"}
    assert load_rows(trained, TrainConfig(train_file=str(f)), "train") == [{"text": "great fun", "label": "good", "idx": 0}]
    saved = Task.from_dict(json.loads(json.dumps(trained.to_dict())))
    assert saved.field_map == trained.field_map
    assert task_from_config(EvalConfig(metrics="accuracy"), base=saved).field_map == trained.field_map
    assert task_from_config(EvalConfig(field_map="text=review"), base=saved).field_map == {"text": "review"}
    assert saved.field_map == trained.field_map  # the base is left as it was
    assert "field_map" not in task_from_config(TrainConfig(task="rotten_tomatoes")).to_dict()  # none: not written
    with pytest.raises(ConfigError, match="field_map"):
        Task.from_dict({**trained.to_dict(), "field_map": {"text": 5}})
