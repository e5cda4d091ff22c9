import json

import pytest

from conftest import TOY_NEG, TOY_POS, make_model, make_tokenizer
from cli_help import option_flags
from softprompt.cli import main
from softprompt.config import TrainConfig


@pytest.fixture
def trained(tiny_model_dirs, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "3",
               "--max-steps", "2", "--eval-every", "2", "--batch-size", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    (out / "stdout.txt").write_text(capsys.readouterr().out)
    return out


def test_train_eval_predict(trained, toy_data, capsys):
    out = (trained / "stdout.txt").read_text()
    assert "test accuracy with the learned prompt" in out and "zero-shot" in out
    assert main(["eval", "--prompt", str(trained / "best"), "--data-dir", str(toy_data), "--split", "validation",
                 "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 16 and 0 <= res["accuracy"] <= 1
    assert main(["eval", "--prompt", str(trained / "best"), "--data-dir", str(toy_data), "--split", "validation",
                 "--mixed-precision", "bf16", "--no-progress"]) == 0
    half = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert half["n"] == 16 and abs(half["accuracy"] - res["accuracy"]) <= 2 / 16  # bf16 rounding may flip a close call
    assert main(["predict", "--prompt", str(trained / "best"), "--json", "great fun", "awful"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert [ln["input"] for ln in lines] == ["great fun", "awful"]
    assert all(ln["label"] in ("positive", "negative") for ln in lines)


def test_every_train_option_comes_from_the_config():
    flags = {flag for flag in option_flags("train") if not flag.startswith("--no-")} - {"-h", "--help", "--config", "-v"}
    assert flags == {"--" + name.replace("_", "-") for name in TrainConfig.__dataclass_fields__}


def test_yaml_config_and_override(tiny_model_dirs, toy_data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data-dir: {toy_data}\nmodel: {tiny_model_dirs['causal']}\nprompt_length: 2\nmax_steps: 1\n"
                   f"eval_every: 1\nout: {tmp_path / 'y'}\nprogress: false\ntest_split: ''\n")
    assert main(["train", "--config", str(cfg), "--max-steps", "2", "--eval-every", "2"]) == 0
    assert json.loads((tmp_path / "y" / "results.json").read_text())["steps"] == 2
    cfg.write_text("bogus_option: 1\n")
    assert main(["train", "--config", str(cfg)]) == 2


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_get_clear_errors(tiny_model_dirs, toy_data, tmp_path, capsys):
    # your own files in rotten_tomatoes' format (its template and label words)
    model = ["--task", "rotten_tomatoes", "--model", str(tiny_model_dirs["causal"]), "--no-progress", "--out", str(tmp_path / "o")]
    assert "not found" in _err(capsys, ["train", "--train-file", str(tmp_path / "missing.jsonl"), *model])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "good", "label": "positive"}\n{"text": "oops", "label": \n')
    assert "bad.jsonl" in (e := _err(capsys, ["train", "--train-file", str(bad), "--validation-file", str(bad), *model])) and ":2" in e
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"text": "good", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n')
    assert "neutral" in _err(capsys, ["train", "--train-file", str(unknown), "--validation-file", str(unknown), *model])
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": "", "label": "positive"}\n')
    assert "empty" in _err(capsys, ["train", "--train-file", str(empty), "--validation-file", str(empty), *model])
    csv = tmp_path / "d.csv"
    csv.write_text("sentence,label\ngood,positive\n")
    assert "text" in _err(capsys, ["train", "--train-file", str(csv), "--validation-file", str(csv), *model])
    # ... and the same file works once the column is mapped
    assert main(["train", "--train-file", str(csv), "--validation-file", str(csv), "--field-map", "text=sentence",
                 "--max-steps", "1", "--eval-every", "1", "--prompt-length", "2", "--test-split", "", *model]) == 0


def test_prompt_trained_for_another_model_is_refused(trained, tmp_path, capsys):
    tok = make_tokenizer("causal")
    other = tmp_path / "other"
    make_model("causal", tok, seed=7).save_pretrained(other)
    tok.save_pretrained(other)
    err = _err(capsys, ["predict", "--prompt", str(trained / "best"), "--model", str(other), "great"])
    assert "trained for model" in err and str(other) in err


def test_truncated_prompt_file(trained, capsys):
    f = trained / "best" / "prompt.safetensors"
    f.write_bytes(f.read_bytes()[:30])
    assert "truncated or corrupt" in _err(capsys, ["predict", "--prompt", str(trained / "best"), "great"])


def test_peft_export_import_cli(trained, tmp_path, capsys):
    assert main(["export-peft", str(trained / "best"), "--out", str(tmp_path / "peft")]) == 0
    assert (tmp_path / "peft" / "adapter_model.safetensors").exists()
    assert main(["import-peft", str(tmp_path / "peft"), "--out", str(tmp_path / "back"), "--task", "rotten_tomatoes"]) == 0
    assert main(["predict", "--prompt", str(tmp_path / "back"), "great fun"]) == 0


def test_a_prompt_imported_without_a_task_is_scored_with_the_task_given(trained, tmp_path, toy_data, capsys):
    """--task (or --template and --label-words) names the task of an output saved without one; the
    error without them says so, and its re-import command works as written."""
    assert main(["export-peft", str(trained / "best"), "--out", str(tmp_path / "peft")]) == 0
    bare = tmp_path / "bare"
    assert main(["import-peft", str(tmp_path / "peft"), "--out", str(bare)]) == 0
    capsys.readouterr()
    err = _err(capsys, ["predict", "--prompt", str(bare), "great fun"])
    assert "has no task in its metadata" in err and "name it with --task NAME" in err
    hint = err.split("`")[1].split()  # softprompt import-peft ADAPTER --out ... --task NAME --overwrite
    assert main([hint[1], str(tmp_path / "peft"), *hint[3:5], "--task", "rotten_tomatoes", *hint[7:]]) == 0
    assert main(["import-peft", str(tmp_path / "peft"), "--out", str(bare), "--overwrite"]) == 0  # bare again
    capsys.readouterr()
    assert main(["predict", "--prompt", str(bare), "--task", "rotten_tomatoes", "--json", "great fun"]) == 0
    with_task = capsys.readouterr().out
    assert main(["predict", "--prompt", str(trained / "best"), "--json", "great fun"]) == 0
    assert with_task == capsys.readouterr().out  # the same prompt and task: the same scores
    assert main(["predict", "--prompt", str(bare), "--template", "Review: {text}\nSentiment:", "--label-words",
                 "positive=positive;negative=negative", "great fun"]) == 0
    assert main(["eval", "--prompt", str(bare), "--task", "rotten_tomatoes", "--data-dir", str(toy_data),
                 "--limit", "4"]) == 0


def test_tasks_lists_builtins(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "rotten_tomatoes" in out and "boolq" in out


def test_entry_exits_with_main_status(monkeypatch, capsys):
    from softprompt import cli

    monkeypatch.setattr("sys.argv", ["softprompt", "eval", "--prompt", "/no/such/prompt"])
    with pytest.raises(SystemExit) as exc:
        cli.entry()
    assert exc.value.code == 2 and "softprompt: error" in capsys.readouterr().err


def test_entry_in_a_process_group_closes_it_and_skips_teardown(monkeypatch, capsys):
    """Under torchrun the process leaves through os._exit (gloo threads abort interpreter teardown),
    with its status, after closing the group and flushing what it printed."""
    import torch.distributed as dist

    from softprompt import cli

    class Exited(Exception):
        pass

    calls = []
    monkeypatch.setattr(cli, "main", lambda: 3)
    monkeypatch.setattr(cli, "_distributed", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroyed"))

    def fake_exit(code):
        calls.append(code)
        raise Exited

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(Exited):
        cli.entry()
    assert calls == ["destroyed", 3]

    def crash():
        raise RuntimeError("boom")

    monkeypatch.setattr(cli, "main", crash)
    calls.clear()
    with pytest.raises(Exited):
        cli.entry()
    assert calls == ["destroyed", 1] and "RuntimeError: boom" in capsys.readouterr().err  # the traceback is kept


def test_verbose_prints_an_errors_traceback_and_keeps_the_short_message_last(capsys):
    argv = ["inspect", "nosuch", "--k", "0"]
    short = "softprompt: error: --k must be at least 1, got 0\n"
    assert _err(capsys, argv) == short  # without -v: the message alone
    err = _err(capsys, ["-v", *argv])
    assert err.startswith("Traceback (most recent call last):") and err.endswith(short)
    assert "softprompt.errors.ConfigError: --k must be at least 1, got 0" in err and "in at_least_one" in err
    for after in ([*argv, "-v"], [*argv, "--verbose"], [argv[0], "-v", *argv[1:]]):  # after the command: the same
        assert _err(capsys, after) == err


def test_no_progress_hides_the_model_loading_bar_too(trained, tiny_model_dirs, toy_data, tmp_path, loading_bars_shown,
                                                     capsys):
    argv = ["eval", "--prompt", str(trained / "best"), "--data-dir", str(toy_data), "--limit", "2"]
    capsys.readouterr()
    assert main([*argv, "--no-progress"]) == 0
    assert "Loading weights" not in capsys.readouterr().err
    assert main(argv) == 0
    assert "Loading weights" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "2",
                 "--max-steps", "1", "--eval-every", "1", "--test-split", "", "--out", str(tmp_path / "quiet"),
                 "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    best = str(trained / "best")
    for argv in (["predict", "--prompt", best, "great"], ["inspect", best], ["export-peft", best, "--out", str(tmp_path / "p")],
                 ["import-peft", str(tmp_path / "p"), "--out", str(tmp_path / "back")],
                 ["label-words", "--model", str(tiny_model_dirs["causal"]), "--per-label", "2", "--out",
                  str(tmp_path / "words.txt")]):  # every other command that loads a model
        assert main([*argv, "--no-progress"]) == 0
        assert capsys.readouterr().err == "", argv
        assert main([*argv, "--progress"] + (["--overwrite"] if "peft" in argv[0] else [])) == 0
        assert "Loading weights" in capsys.readouterr().err, argv


def test_your_own_files_without_task_are_named_after_them_everywhere(tiny_model_dirs, tmp_path, capsys):
    """Not 'rotten_tomatoes' (the default task): the saved metadata, results, eval's output and the
    server's task list name the user's data."""
    from softprompt.api import PromptedModel
    from softprompt.serving.engine import MultiPromptModel

    rows = [{"sentence": t, "mood": "good" if i < 8 else "bad"} for i, t in enumerate(TOY_POS + TOY_NEG)]
    data = tmp_path / "reviews"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"reviews_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    own = ["--template", "{text} it was", "--label-words", "good=good;bad=bad", "--field-map", "text=sentence,label=mood"]
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dirs["causal"]), "--train-file", str(data / "reviews_train.jsonl"),
                 "--validation-file", str(data / "reviews_dev.jsonl"), "--test-file", str(data / "reviews_test.jsonl"),
                 *own, "--prompt-length", "2", "--max-steps", "2", "--eval-every", "2", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["task"] == "reviews"
    saved = json.loads((out / "best" / "softprompt.json").read_text())
    assert saved["task"]["name"] == saved["task_name"] == "reviews"
    capsys.readouterr()
    assert main(["eval", "--prompt", str(out / "best"), "--file", str(data / "reviews_test.jsonl"), "--field-map",
                 "text=sentence,label=mood", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "reviews"
    assert main(["eval", "--model", str(tiny_model_dirs["causal"]), "--file", str(data / "reviews_test.jsonl"), *own,
                 "--no-progress"]) == 0  # zero-shot on your own file
    assert json.loads(capsys.readouterr().out)["task"] == "reviews"
    (tmp_path / "served").mkdir()
    (out / "best").rename(tmp_path / "served" / "mine")
    engine = MultiPromptModel.from_dir(PromptedModel.from_saved(tmp_path / "served" / "mine").backbone, tmp_path / "served")
    assert [(t["name"], t["task"]) for t in engine.tasks()] == [("mine", "reviews")]


def test_inputs_with_wrong_fields_are_refused_before_any_model_work(trained, tiny_model_dirs, tmp_path, monkeypatch,
                                                                     capsys):
    """A JSON input or a JSONL row without the template's fields fails at once, naming the missing
    field and those present, not after the model loads and KPT refines its words."""
    import softprompt.api
    import softprompt.modeling

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(softprompt.modeling, "load_model", no_model)
    monkeypatch.setattr(softprompt.api, "load_model", no_model)
    kpt = ["--verbalizer", "knowledgeable", "--refine", "frequency"]
    err = _err(capsys, ["predict", "--prompt", str(trained / "best"), *kpt, '{"review": "great fun"}'])
    assert "task 'rotten_tomatoes'" in err and "template slot {text} has no matching field; the examples have 'review'" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"review": "great fun", "label": "positive"}) + "\n")
    for source in (["--prompt", str(trained / "best"), *kpt],
                   ["--model", str(tiny_model_dirs["causal"]), "--template", "{text} it was", "--label-words",
                    "positive=good;negative=bad"]):
        err = _err(capsys, ["eval", *source, "--file", str(bad), "--no-progress"])
        assert f"{bad}:1: task" in err and "{text} has no matching field; the examples have 'review', 'label'" in err


def test_predict_names_the_bad_input_among_several(trained, monkeypatch, capsys):
    """Of several texts, or lines read from stdin, the bad one is named: its position (0-based, as
    the API's) and, from stdin, its line (blank lines counted)."""
    import io

    best = ["predict", "--prompt", str(trained / "best")]
    err = _err(capsys, [*best, "great", '{"text": "fun"}', '{"review": "dull"}'])
    assert err.startswith("softprompt: error: input 2: task 'rotten_tomatoes': template slot {text} has no matching "
                          "field; the examples have 'review'")
    monkeypatch.setattr("sys.stdin", io.StringIO('great\n\n{"text": "fun"}\n{"text": "  "}\nawful\n'))
    err = _err(capsys, [*best, "-"])
    assert "softprompt: error: input 2 (<stdin>:4): task 'rotten_tomatoes': empty text in field 'text'" in err


def test_resume_names_an_option_the_run_cannot_change_and_takes_those_left_out(tiny_model_dirs, toy_data, tmp_path,
                                                                              capsys):
    """Trained with --prompt-length 5 (a checkpoint every step), resumed with 8: the error names the
    option, both values and the fix, not the model; left out, the run's values are taken."""
    out = str(tmp_path / "run")
    first = ["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "5",
             "--max-steps", "3", "--eval-every", "1", "--test-split", "", "--out", out, "--no-progress"]
    assert main(first) == 0
    err = _err(capsys, [*first, "--resume", "--prompt-length", "8"])
    assert err == (f"softprompt: error: --resume continues the run in {out} as it was started, so --prompt-length (the "
                   "run's: 5, given: 8) cannot change: leave it out to keep the run's, or start a new run with another "
                   "--out (or --overwrite to replace this one)\n")
    for option, value, was in (("--method", "prefix-tuning", "'prompt-tuning'"), ("--init", "vocab", "'class-labels'"),
                               ("--model", str(tiny_model_dirs["seq2seq"]), repr(str(tiny_model_dirs["causal"]))),
                               ("--task", "sst2", "'rotten_tomatoes'"), ("--seed", "1", "0"),
                               ("--prompt-length", "100", "5")):  # given at its default is still given
        err = _err(capsys, [*first, "--resume", option, value])
        assert f"so {option} (the run's: {was}, given: " in err and "cannot change: leave it out" in err, err
    assert main(["train", "--resume", "--out", out, "--max-steps", "4", "--no-progress"]) == 0  # the rest is the run's
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 4
    saved = json.loads((tmp_path / "run" / "last" / "softprompt.json").read_text())
    assert saved["length"] == 5 and saved["training"]["data_dir"] == str(toy_data)


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`softprompt tasks | head -1`: the pipe closes before the output is written; the command
    stops with status 1 and no traceback (nor Python's 'Exception ignored' at exit)."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    proc = subprocess.Popen([sys.executable, "-m", "softprompt.cli", "tasks"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    proc.stdout.close()  # the reader is gone before the command prints anything
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1
    assert err == ""


def test_a_misspelt_option_gets_its_command_s_usage_and_the_nearest_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--promt-length", "5"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("usage: softprompt train ")
    assert "softprompt train: error: unrecognized arguments: --promt-length (did you mean --prompt-length?) 5" in err
    with pytest.raises(SystemExit):
        main(["eval", "--limt=3"])
    assert "--limt=3 (did you mean --limit?)" in capsys.readouterr().err
