"""Errors stop early and point to options that exist on the command at hand."""

import json
import re

import pytest

from conftest import make_model, make_tokenizer, write_toy_data
from cli_help import option_flags
from softprompt.cli import main
from softprompt.training import train

WORDS = "positive=great;negative=terrible"
TEMPLATE = "Review: {text}\\nSentiment:"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("data"), "rotten_tomatoes")


@pytest.fixture(scope="module")
def prompt(tiny_model_dirs, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=3,
          batch_size=4, max_steps=1, eval_every=1, out=str(out), progress=False, test_split="")
    return out / "best"


def _options(command: str) -> set[str]:
    return option_flags(command)


def _named_flags(command: str, message: str) -> list[tuple[str, str]]:
    """``(command, flag)`` for every ``--flag`` a message names; ``softprompt CMD --flag`` names CMD's."""
    return [(other or command, flag) for other, flag in re.findall(r"(?:softprompt ([a-z-]+) )?(--[a-z][a-z0-9-]*)", message)]


def _error(capsys, argv) -> str:
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "softprompt: error: " in err, err
    return err[err.index("softprompt: error: "):]


def _files(tmp_path):
    files = {
        "unknown": ('{"text": "meh", "label": "neutral"}\n', ".jsonl"),
        "number": ('{"text": "great fun", "label": 1.0}\n', ".jsonl"),
        "columns": ("sentence,label\ngreat fun,positive\n", ".csv"),
        "good": ("text,label\ngreat fun,positive\nawful,negative\n", ".csv"),
    }
    out = {}
    for name, (text, suffix) in files.items():
        out[name] = tmp_path / f"{name}{suffix}"
        out[name].write_text(text)
    out["missing"] = tmp_path / "missing.jsonl"
    return {k: str(v) for k, v in out.items()}


def test_every_flag_an_error_names_exists_on_its_command(prompt, data, tiny_model_dirs, tmp_path, capsys):
    f, model, p = _files(tmp_path), str(tiny_model_dirs["causal"]), str(prompt)
    other = tmp_path / "other"
    tok = make_tokenizer("causal")
    make_model("causal", tok, seed=7).save_pretrained(other)
    tok.save_pretrained(other)
    run = ["--model", model, "--no-progress", "--max-steps", "1", "--eval-every", "1", "--data-dir", str(data)]
    cases = {
        "eval": [
            ["--model", model],
            ["--task", "sst2", "--model", model],
            ["--prompt", p, "--file", f["missing"]],
            ["--prompt", p, "--file", f["unknown"]],
            ["--prompt", p, "--file", f["columns"]],
            ["--prompt", p, "--file", f["good"], "--field-map", "bogus"],
            ["--prompt", p, "--file", f["good"], "--field-map", "text=sentence"],
            ["--prompt", p, "--file", f["good"], "--label-words", "no equals sign"],
            ["--prompt", p, "--data-dir", str(data), "--max-length", "10"],
            ["--prompt", p, "--data-dir", str(data), "--split", "nosuch"],
            ["--prompt", p, "--model", str(other), "--data-dir", str(data)],
        ],
        "predict": [
            ["great fun"],
            ["--task", "sst2", "--model", model, "great fun"],
            ["--prompt", p, '{"sentence": "great fun"}'],
            ["--prompt", p, "--field-map", "text=sentence", '{"other": "great fun"}'],
            ["--prompt", p, "--max-length", "10", "great fun"],
            ["--prompt", p, "--model", str(other), "great fun"],
        ],
        "train": [
            ["--task", "sst2", *run, "--out", str(tmp_path / "a")],
            ["--test-file", f["missing"], *run, "--out", str(tmp_path / "b")],
            ["--test-file", f["unknown"], *run, "--out", str(tmp_path / "c")],
            ["--test-file", f["columns"], *run, "--out", str(tmp_path / "d")],
            ["--prompt-length", "250", *run, "--out", str(tmp_path / "e")],
        ],
    }
    named = {}
    for command, argvs in cases.items():
        for argv in argvs:
            err = _error(capsys, [command, *argv])
            for cmd, flag in _named_flags(command, err):
                named.setdefault(cmd, set()).add(flag)
                assert flag in _options(cmd), f"`softprompt {command}` advises {flag}, which `{cmd}` lacks: {err}"
    assert {"--template", "--label-words", "--field-map", "--model", "--max-length"} <= named["eval"]
    assert {"--template", "--label-words", "--field-map", "--model", "--max-length"} <= named["predict"]
    assert "--prompt-length" in named["train"]


def test_a_bad_test_file_stops_the_run_before_training(data, tiny_model_dirs, tmp_path, capsys):
    f = _files(tmp_path)
    run = ["train", "--model", str(tiny_model_dirs["causal"]), "--no-progress", "--data-dir", str(data),
           "--max-steps", "1", "--eval-every", "1"]
    err = _error(capsys, [*run, "--test-file", f["missing"], "--out", str(tmp_path / "a")])
    assert f"data file not found: {f['missing']}" in err
    assert not (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "a" / "best").exists()
    err = _error(capsys, [*run, "--test-file", f["unknown"], "--out", str(tmp_path / "b")])
    assert f["unknown"] in err and "unknown label 'neutral'" in err
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


def test_a_bad_validation_file_stops_a_dev_from_train_run_before_training(data, tiny_model_dirs, tmp_path, capsys):
    f = _files(tmp_path)
    err = _error(capsys, ["train", "--model", str(tiny_model_dirs["causal"]), "--no-progress", "--data-dir", str(data),
                          "--dev-from-train", "4", "--validation-file", f["unknown"], "--max-steps", "1",
                          "--out", str(tmp_path / "a")])
    assert f["unknown"] in err and "'neutral'" in err and not (tmp_path / "a" / "metrics.jsonl").exists()


def test_dev_from_train_prints_the_split_it_evaluated(tiny_model_dirs, tmp_path, capsys):
    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    (data / "rotten_tomatoes" / "test.jsonl").unlink()  # no test split: the validation split is the final one
    assert main(["train", "--model", str(tiny_model_dirs["causal"]), "--no-progress", "--data-dir", str(data),
                 "--dev-from-train", "4", "--max-steps", "1", "--eval-every", "1", "--prompt-length", "2",
                 "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy with the learned prompt" in out and "validation accuracy zero-shot" in out
    assert "test accuracy" not in out
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test_split"] == "validation"


def test_a_number_written_another_way_gets_a_hint(tiny_model_dirs, tmp_path, capsys):
    f = _files(tmp_path)
    err = _error(capsys, ["eval", "--model", str(tiny_model_dirs["causal"]), "--file", f["number"], "--template",
                          TEMPLATE, "--label-words", "1=great;0=terrible", "--no-progress"])
    assert "unknown label '1.0'" in err and "did you mean '1'?" in err


def test_eval_and_predict_score_your_own_data_zero_shot(tiny_model_dirs, tmp_path, capsys):
    f, model = _files(tmp_path), str(tiny_model_dirs["causal"])
    assert main(["eval", "--model", model, "--file", f["good"], "--template", TEMPLATE, "--label-words", WORDS,
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["prompt"] is None and res["n"] == 2 and res["scoring"] == "rank"
    assert main(["predict", "--model", model, "--template", TEMPLATE, "--label-words", WORDS, "--json",
                 "--field-map", "text=review", '{"review": "great fun"}', "awful"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [ln["input"] for ln in lines] == ['{"review": "great fun"}', "awful"]
    assert all(list(ln["scores"]) == ["positive", "negative"] for ln in lines)


def test_eval_applies_template_and_label_words_to_a_saved_prompt(prompt, tmp_path, capsys):
    f = _files(tmp_path)
    assert main(["eval", "--prompt", str(prompt), "--file", f["number"], "--label-words", "1=great;0=terrible",
                 "--no-progress"]) == 2  # the saved task's template, the given verbalizer: '1.0' is still unknown
    assert "did you mean '1'?" in capsys.readouterr().err
    assert main(["predict", "--prompt", str(prompt), "--label-words", "good=great;bad=terrible", "--json", "fun"]) == 0
    assert list(json.loads(capsys.readouterr().out)["scores"]) == ["good", "bad"]
