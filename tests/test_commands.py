"""Every command's options are one dataclass of softprompt.config, and one mechanism
(softprompt.arguments) makes every command's CLI from it: nothing is written by hand beside it."""

import dataclasses
import re

import pytest

from cli_help import option_flags, usage
from softprompt import config
from softprompt.arguments import config_from_args
from softprompt.cli import COMMANDS, build_parser, main
from softprompt.config import (COMMAND_CONFIGS, KNOWLEDGEABLE, DataConfig, ExperimentConfig, ExportPeftConfig,
                               ImportPeftConfig, InspectConfig, MetricOptions, ModelOptions, RunOptions, ScoringOptions,
                               TaskFormat, options_in)
from softprompt.errors import ConfigError


@pytest.mark.parametrize("command", sorted(COMMAND_CONFIGS))
def test_every_option_of_every_command_is_a_field_of_its_config(command):
    cls = COMMAND_CONFIGS[command]
    flags = {f for f in option_flags(command) if not f.startswith("--no-")} - {"-h", "--config"}
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
    same(ModelOptions, "eval", "predict", "inspect")
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
