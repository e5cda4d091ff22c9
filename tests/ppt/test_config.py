import dataclasses
from pathlib import Path

import pytest

from cli_help import option_flags
from softprompt.cli import build_parser, config_from_args, main
from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.ppt import PretrainConfig
from softprompt.ppt.pretrain import training_config


def test_the_cli_command_parses_into_a_pretrain_config():
    args = build_parser().parse_args(["pretrain-prompt", "--corpus", "c.txt", "--format", "pair", "--max-steps", "20",
                                      "--no-length-normalize", "--prompt-length", "8"])
    cfg = config_from_args(PretrainConfig, args)
    assert (cfg.corpus, cfg.format, cfg.max_steps, cfg.length_normalize, cfg.prompt_length) == ("c.txt", "pair", 20, False, 8)
    assert (cfg.init, cfg.examples, cfg.out) == ("vocab", 10000, "runs/ppt")
    flags = {flag for flag in option_flags("pretrain-prompt") if not flag.startswith("--no-")} - {"-h", "--help", "--config", "-v"}
    assert flags == {"--" + f.name.replace("_", "-") for f in dataclasses.fields(PretrainConfig)}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain-prompt", "--corpus", "c.txt", "--format", "nsp"])


def test_the_cli_reports_a_missing_corpus(tmp_path, capsys):
    assert main(["pretrain-prompt", "--corpus", str(tmp_path / "none.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "corpus file not found" in capsys.readouterr().err
    assert main(["pretrain-prompt"]) == 2
    assert "give --corpus FILE" in capsys.readouterr().err


def test_shared_options_follow_train_and_bad_values_are_refused():
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for f in dataclasses.fields(PretrainConfig):
        if f.name in train_fields:
            assert f.metadata["choices"] == train_fields[f.name].metadata["choices"]
    cfg = PretrainConfig(corpus="c.txt", format="choice", lr=0.05, batch_size=2)
    tmp = Path("d")
    tc = training_config(cfg, tmp)
    assert (tc.task, tc.label_words, tc.test_split, tc.zero_shot_baseline) == ("ppt_choice", "choices:choices", "", False)
    assert tc.template.startswith("{sentence}\n")
    assert (tc.lr, tc.batch_size, tc.train_file) == (0.05, 2, str(tmp / "train.jsonl"))
    tc = training_config(PretrainConfig(corpus="c.txt", format="single"), tmp)
    assert tc.label_words == "first=yes;later=no" and tc.template.startswith("{sentence}\n")
    for bad in ({"examples": 0}, {"options": 1}, {"format": "nsp"}):
        with pytest.raises(ConfigError):
            PretrainConfig(corpus="c.txt", **bad)
    with pytest.raises(ConfigError, match="--max-steps must be at least 1"):
        training_config(PretrainConfig(corpus="c.txt", max_steps=0), tmp)
