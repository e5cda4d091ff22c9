"""Every command's options are one dataclass of softprompt.config, and one mechanism
(softprompt.arguments) makes every command's CLI from it: nothing is written by hand beside it."""

import dataclasses
import re

import pytest

from cli_help import option_flags, option_help, usage
from softprompt import config
from softprompt.arguments import config_from_args
from softprompt.arguments import add_options
from softprompt.cli import COMMANDS, VERBOSE, build_parser, main
from softprompt.config import (COMMAND_CONFIGS, COMMAND_HELP, KNOWLEDGEABLE, DataConfig, ExperimentConfig,
                               ExportPeftConfig, ImportPeftConfig, InspectConfig, MetricOptions, ModelOptions,
                               ProgressOptions, RunOptions, ScoringOptions, TaskFormat, options_in)
from softprompt.errors import ConfigError


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_option_of_every_command_is_a_field_of_its_config(command):
    cls = COMMAND_CONFIGS[command]
    flags = {f for f in option_flags(command) if not f.startswith("--no-")} - {"-h", "--config", *VERBOSE}
    fields = dataclasses.fields(cls)
    assert flags == {"--" + f.name.replace("_", "-") for f in fields if not f.metadata["positional"]}
    for f in fields:
        if f.metadata["positional"]:
            assert re.search(rf"[\s\[]{f.name}(\s|$)", usage(command)), f.name  # an argument without a flag
    assert ("--config" in option_flags(command)) == COMMANDS[command].yaml


def test_the_commands_and_their_configs_are_one_table():
    assert set(COMMANDS) == set(COMMAND_CONFIGS)
    assert {name for name in COMMAND_CONFIGS} == {"train", "eval", "predict", "inspect", "serve", "pretrain-prompt",
                                                  "experiment", "export-peft", "import-peft", "tasks", "label-words"}


def _parse(argv):
    args = build_parser().parse_args(argv)
    return config_from_args(COMMAND_CONFIGS[argv[0]], args, yaml=COMMANDS[argv[0]].yaml)


def test_the_formerly_hand_written_commands_parse_into_their_configs():
    assert _parse(["inspect", "runs/rt/best", "--k", "3", "--json"]) == InspectConfig(prompt="runs/rt/best", k=3, json=True)
    assert _parse(["experiment", "experiments/quick.yaml", "--only", "a", "b", "--tasks", "sst2", "--dry-run",
                   "--no-progress"]) == ExperimentConfig(config="experiments/quick.yaml", only=["a", "b"], tasks=["sst2"],
                                                         dry_run=True, progress=False)
    assert _parse(["experiment", "e.yaml", "--report-only", "--out", "r"]) == ExperimentConfig(config="e.yaml", out="r",
                                                                                               report_only=True)
    assert _parse(["export-peft", "runs/rt/best", "--out", "adapter", "--fold-bos"]) == ExportPeftConfig(
        prompt="runs/rt/best", out="adapter", fold_bos=True)
    assert _parse(["import-peft", "adapter", "--out", "back", "--task", "sst2", "--allow-bos-mismatch"]) == ImportPeftConfig(
        adapter="adapter", out="back", task="sst2", allow_bos_mismatch=True)


@pytest.mark.parametrize("argv, missing", [
    (["export-peft", "dir"], "--out"), (["import-peft", "dir"], "--out"), (["export-peft", "--out", "o"], "prompt"),
    (["inspect"], "prompt"), (["experiment"], "config"),
])
def test_a_missing_argument_is_a_usage_error(argv, missing, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"the following arguments are required: {missing}" in capsys.readouterr().err


def test_a_bad_value_on_a_formerly_hand_written_command_is_exit_2_naming_the_option(capsys):
    assert main(["inspect", "nosuch", "--k", "0"]) == 2
    assert "--k must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "nosuch", "--k", "many"])
    assert "argument --k: invalid int value: 'many'" in capsys.readouterr().err


def test_shared_options_are_written_once():
    """A shared field is one dataclass field, inherited: same default, same help, on every command."""
    def same(group, *commands, but=()):
        for f in dataclasses.fields(group):
            if f.name not in but:
                assert all(COMMAND_CONFIGS[c].__dataclass_fields__[f.name] is f for c in commands), (group, f.name)

    same(TaskFormat, "train", "eval", "predict")
    same(DataConfig, "train")
    same(MetricOptions, "train", "eval")
    same(ScoringOptions, "eval", "predict")
    same(ModelOptions, "eval", "predict", "inspect", "serve", "label-words", but={"model"})
    same(ModelOptions, "eval", "predict", "inspect", "serve")
    same(ProgressOptions, *(set(COMMAND_CONFIGS) - {"tasks"}))
    same(RunOptions, "train", "pretrain-prompt", but={"init", "patience", "length_normalize", "seed", "out"})
    assert config.TrainConfig.__dataclass_fields__["init"].default == "class-labels"
    assert config.PretrainConfig.__dataclass_fields__["init"].default == "vocab"  # PPT's own default, redeclared


def test_serve_and_pretrain_configs_live_in_config_and_old_imports_still_work():
    from softprompt.ppt import PretrainConfig as from_ppt
    from softprompt.ppt.config import PretrainConfig as from_ppt_config
    from softprompt.serving.app import ServeConfig as from_app

    assert from_app is config.ServeConfig and from_ppt is from_ppt_config is config.PretrainConfig


def test_a_library_user_gets_the_same_checks_as_the_command_line():
    with pytest.raises(ConfigError, match="--max-steps must be at least 1, got 0"):
        config.PretrainConfig(corpus="c.txt", max_steps=0)
    with pytest.raises(ConfigError, match="--limit must be at least 1, got 0"):
        config.EvalConfig(limit=0)
    with pytest.raises(ConfigError, match="--shots must be at least 1, got 0"):
        config.TrainConfig(shots=0)


def test_ppt_option_bounds_match_the_formats():
    from softprompt.ppt.formats import FORMATS, LETTERS, PPT_FORMATS

    assert set(PPT_FORMATS) == set(FORMATS) == set(config.PRETRAIN_FORMATS) and config.MAX_OPTIONS == len(LETTERS)


@pytest.mark.parametrize("command, absent", [("eval", {"--learn-word-weights"}),
                                             ("predict", {"--learn-word-weights", "--metrics"})])
def test_a_command_offers_no_option_it_would_ignore(command, absent, capsys):
    """eval and predict train no word weights, and predict computes no metric: such an option is
    not in their help, and given anyway it is a usage error, not silently dropped."""
    assert not absent & option_flags(command)
    assert {"--learn-word-weights", "--metrics"} <= option_flags("train") and "--metrics" in option_flags("eval")
    for flag in absent:
        with pytest.raises(SystemExit) as exc:
            main([command, flag, *(["accuracy"] if flag == "--metrics" else []), "great"])
        assert exc.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_the_knowledgeable_options_are_one_group_marked_on_their_fields():
    """The options only --verbalizer knowledgeable reads are the fields marked so (not a second list),
    and they are exactly those whose help says they are read by it."""
    kpt = ("refine", "calibrate", "frequency_cutoff", "relevance_threshold", "support_size", "duplicates",
           "support_file", "expand")
    assert options_in(config.EvalConfig, KNOWLEDGEABLE) == options_in(config.PredictConfig, KNOWLEDGEABLE) == kpt
    assert set(options_in(config.TrainConfig, KNOWLEDGEABLE)) == {*kpt, "learn_word_weights"}
    for cls in (config.TrainConfig, config.EvalConfig):
        by_help = {f.name for f in dataclasses.fields(cls) if f.metadata["help"].startswith("knowledgeable")}
        assert by_help == set(options_in(cls, KNOWLEDGEABLE))


def _least_argv(command: str) -> list[str]:
    """The fewest arguments ``softprompt COMMAND`` parses with: its positional and required options."""
    argv = [command]
    for f in dataclasses.fields(COMMAND_CONFIGS[command]):
        if f.metadata["positional"]:
            argv.append("x")
        elif f.metadata["required"]:
            argv += ["--" + f.name.replace("_", "-"), "x"]
    return argv


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_verbose_is_accepted_before_and_after_every_command(command):
    argv = _least_argv(command)
    parser = build_parser()
    assert parser.parse_args(argv).verbose is False
    for flag in VERBOSE:
        assert parser.parse_args([flag, *argv]).verbose is True
        assert parser.parse_args([*argv, flag]).verbose is True
        assert parser.parse_args([argv[0], flag, *argv[1:]]).verbose is True
    assert "-v" in option_flags(command) and option_help(command)["--verbose"].startswith("log more")


def test_every_command_that_loads_a_model_or_loops_over_rows_has_no_progress():
    """One field (ProgressOptions.progress) gives every such command --progress/--no-progress;
    `tasks` lists names and loads nothing."""
    for command in set(COMMAND_CONFIGS) - {"tasks"}:
        assert {"--progress", "--no-progress"} <= option_flags(command), command
        assert build_parser().parse_args([*_least_argv(command), "--no-progress"]).progress is False
    assert "--no-progress" not in option_flags("tasks")


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_word_shared_options_for_themselves(command):
    """eval and predict train nothing and keep no checkpoint: no option of theirs says so, though
    they share --metrics, --expand, --label-words and --task's field with train."""
    helps = option_help(command)
    assert {"--task", "--expand", "--label-words", "--template", "--verbalizer"} <= set(helps)
    for flag, text in helps.items():
        assert not re.search(r"\btrains?\b|checkpoint|--out\b", text), (flag, text)
    train = option_help("train")
    assert "best checkpoint" in train["--metrics"] and "--out/label_words.txt" in train["--expand"]
    assert "'learned:' the word weights are trained" in train["--label-words"]
    if command == "eval":
        assert helps["--metrics"].startswith("metrics to report instead of the task's")
    for name in COMMAND_HELP[command]:  # worded here, declared once: the very field train has
        assert COMMAND_CONFIGS[command].__dataclass_fields__[name] is COMMAND_CONFIGS["train"].__dataclass_fields__[name]


def test_command_help_names_only_fields_of_its_command():
    for command, helps in COMMAND_HELP.items():
        assert set(helps) <= {f.name for f in dataclasses.fields(COMMAND_CONFIGS[command])}, command
    import argparse

    with pytest.raises(ConfigError, match=r"help given for \['metrics'\], which PredictConfig has no field for"):
        add_options(argparse.ArgumentParser(), COMMAND_CONFIGS["predict"], helps={"metrics": "x"})
    assert option_help("serve")["--model"].startswith("model to serve")
    assert not option_help("inspect")["--model"].startswith("model to serve")
