"""softprompt.config's resume rule: what --resume keeps, takes and refuses (resumed_config)."""

import dataclasses

import pytest

from softprompt.config import RESUME_DEFAULT, RESUME_KEPT, PretrainConfig, TrainConfig, build, resumed_config
from softprompt.errors import ConfigError

RUN = dataclasses.asdict(TrainConfig(task="sst2", prompt_length=5, init="vocab", model="tiny", lr=0.015,
                                     optimizer="adafactor", data_dir="data", max_steps=30, eval_every=3))


def test_options_left_out_take_the_runs_values():
    cfg, taken = resumed_config(TrainConfig(resume=True, max_steps=60, device="cpu"), RUN)
    assert taken == {"task": "sst2", "prompt_length": 5, "init": "vocab", "model": "tiny", "lr": 0.015,
                     "optimizer": "adafactor", "data_dir": "data", "eval_every": 3}
    assert (cfg.task, cfg.prompt_length, cfg.max_steps, cfg.device, cfg.resume) == ("sst2", 5, 60, "cpu", True)
    same, taken = resumed_config(cfg, RUN)
    assert same == cfg and taken == {}


def test_an_option_a_run_cannot_change_given_anew_is_named_with_both_values_and_the_fix():
    with pytest.raises(ConfigError) as err:
        resumed_config(TrainConfig(prompt_length=8, out="runs/r"), RUN)
    assert str(err.value) == ("--resume continues the run in runs/r as it was started, so --prompt-length (the run's: 5, "
                              "given: 8) cannot change: leave it out to keep the run's, or start a new run with another "
                              "--out (or --overwrite to replace this one)")
    with pytest.raises(ConfigError, match=r"so --model \(the run's: 'tiny', given: 'other'\), --init \(the run's: 'vocab', "
                                          r"given: 'random-uniform'\) and --method \(the run's: 'prompt-tuning', given: "
                                          r"'prefix-tuning'\) cannot change: leave them out to keep the run's"):
        resumed_config(TrainConfig(model="other", init="random-uniform", method="prefix-tuning"), RUN)
    with pytest.raises(ConfigError, match=r"--task \(the run's: 'sst2', given: 'rte'\)"):
        resumed_config(TrainConfig(task="rte"), RUN)


def test_an_option_given_at_its_default_counts_as_given_on_a_config_that_knows_what_was_given():
    """A config made by build (the command line, a YAML file) knows its given options: --prompt-length
    at its default (100) against a run of 5 is refused, --eval-every at its default replaces the
    run's 3. An unmarked config (made directly) can only take a value at its default as left out."""
    length, every = TrainConfig().prompt_length, TrainConfig().eval_every
    assert (length, every) == (100, 100)
    with pytest.raises(ConfigError, match=r"so --prompt-length \(the run's: 5, given: 100\) cannot change"):
        resumed_config(build(TrainConfig, {"prompt_length": length, "out": "runs/r"}), RUN)
    cfg, taken = resumed_config(build(TrainConfig, {"eval_every": every}), RUN)
    assert cfg.eval_every == 100 and "eval_every" not in taken and taken["prompt_length"] == 5
    cfg, taken = resumed_config(TrainConfig(prompt_length=length, eval_every=every), RUN)
    assert (cfg.prompt_length, cfg.eval_every) == (5, 3)
    copied = dataclasses.replace(build(TrainConfig, {"prompt_length": length}))  # a copy forgets what was given
    assert resumed_config(copied, RUN)[0].prompt_length == 5


def test_a_damaged_saved_value_is_named_with_its_file():
    with pytest.raises(ConfigError, match=r"option 'prompt_length' in r/softprompt.json must be a whole number, got str '5'"):
        resumed_config(TrainConfig(), {**RUN, "prompt_length": "5"}, "r/softprompt.json")


def test_where_the_data_is_and_how_long_it_trains_may_change(tmp_path):
    cfg, _ = resumed_config(TrainConfig(data_dir=str(tmp_path), max_steps=90, eval_every=9), RUN)
    assert (cfg.data_dir, cfg.max_steps, cfg.eval_every) == (str(tmp_path), 90, 9)
    (tmp_path / "tiny").mkdir()
    moved = {**RUN, "model": str(tmp_path / "tiny")}  # one folder, two spellings: the same model
    cfg, _ = resumed_config(TrainConfig(model=str(tmp_path / "." / "tiny")), moved)
    assert cfg.model == str(tmp_path / "." / "tiny")


def test_every_option_says_what_resume_does_with_it():
    """The marks are on the fields (no second list); the run-defining ones include every option the
    issue named, and those of the machine or the output are left as given."""
    marks = {f.name: f.metadata["resume"] for f in dataclasses.fields(TrainConfig)}
    assert {n for n, m in marks.items() if m == RESUME_KEPT} >= {"method", "method_options", "init", "model", "task",
                                                                 "prompt_length", "seed", "template", "label_words",
                                                                 "optimizer", "lr", "batch_size", "verbalizer"}
    assert {n for n, m in marks.items() if m == RESUME_DEFAULT} >= {"data_dir", "train_file", "max_steps", "eval_every"}
    assert {n for n, m in marks.items() if m is None} == {"device", "device_map", "offload_folder", "out", "resume",
                                                          "overwrite", "progress"}
    assert PretrainConfig.__dataclass_fields__["init"].metadata["resume"] == RESUME_KEPT


def test_the_method_help_names_every_registered_method():
    """--method's help lists the methods by hand (config cannot import the registry): it must not drift."""
    import dataclasses

    from softprompt.config import TrainConfig
    from softprompt.methods import METHODS

    field = next(f for f in dataclasses.fields(TrainConfig) if f.name == "method")
    shown = field.metadata["help"]
    assert all(name in shown for name in METHODS), [n for n in METHODS if n not in shown]


def test_a_misspelt_option_in_a_config_file_is_named_with_the_nearest(tmp_path):
    from softprompt.config import build, load_yaml

    path = tmp_path / "run.yaml"
    path.write_text("max-step: 3\nbatch_size: 4\nxyz: 1\n")
    with pytest.raises(ConfigError, match=rf"unknown option\(s\) 'max_step' \(did you mean 'max_steps'\?\), 'xyz' in {path} "
                                          r"for TrainConfig; valid: \["):
        build(TrainConfig, load_yaml(path), path)
