import json

import pytest

from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.splits import final_rows, run_data
from softprompt.tasks.from_config import task_from_config
from softprompt.training import train


def _cfg(toy_data, **kw):
    return TrainConfig(task="rotten_tomatoes", data_dir=str(toy_data), **kw)


def test_standard_protocol_uses_the_splits(toy_data):
    cfg = _cfg(toy_data, eval_limit=5)
    task = task_from_config(cfg)
    data = run_data(task, cfg)
    assert len(data.train) == 16 and len(data.dev) == 5 and data.dev_source == "validation"
    assert final_rows(task, cfg, data)[0] == "test"


def test_few_shot_samples_disjoint_train_and_dev_per_seed(toy_data):
    cfg = _cfg(toy_data, shots=4, seed=3)
    task = task_from_config(cfg)
    a, b = run_data(task, cfg), run_data(task, cfg)
    assert a.train == b.train and len(a.train) == 4 and len(a.dev) == 4 and a.dev_source == "train"
    assert not {r["text"] for r in a.train} & {r["text"] for r in a.dev}
    other = run_data(task, _cfg(toy_data, shots=4, seed=4))
    assert other.train != a.train
    held = run_data(task, _cfg(toy_data, dev_from_train=6))
    assert len(held.dev) == 6 and len(held.train) == 10
    with pytest.raises(ConfigError, match="need 20"):
        run_data(task, _cfg(toy_data, shots=10, dev_from_train=10))


def test_final_evaluation_falls_back_to_validation_only_when_dev_came_from_train(toy_data):
    (toy_data / "rotten_tomatoes" / "test.jsonl").unlink()
    cfg = _cfg(toy_data, shots=4, test_split="test")
    task = task_from_config(cfg)
    split, rows = final_rows(task, cfg, run_data(task, cfg))
    assert split == "validation" and len(rows) == 16
    plain = _cfg(toy_data)
    assert final_rows(task, plain, run_data(task, plain)) is None  # the validation split chose the model


def test_a_method_with_nothing_to_train_is_evaluated(tiny_model_dirs, toy_data, tmp_path):
    result = train(_cfg(toy_data, model=str(tiny_model_dirs["causal"]), method="manual", out=str(tmp_path / "m"),
                        progress=False))
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    assert res["method"] == "manual" and res["test"]["n"] == 16 and res["steps"] == 0
    assert result.dev["n"] == 16 and result.zero_shot_test is None


def test_method_options_are_checked(tiny_model_dirs, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="has no setting"):
        train(_cfg(toy_data, model=str(tiny_model_dirs["causal"]), method_options="hidden=3", out=str(tmp_path / "x"),
                   progress=False))
    with pytest.raises(ConfigError, match="not key=value"):
        train(_cfg(toy_data, model=str(tiny_model_dirs["causal"]), method_options="hidden", out=str(tmp_path / "x"),
                   progress=False))


def test_each_method_brings_its_own_optimizer_and_learning_rate():
    from softprompt.methods import with_method_defaults

    pt = with_method_defaults(TrainConfig())
    assert (pt.optimizer, pt.lr) == ("adafactor", None)  # resolved from the model's embedding scale once loaded
    full = with_method_defaults(TrainConfig(method="full-tuning"))
    assert (full.optimizer, full.lr) == ("adam", 1e-5)
    prefix = with_method_defaults(TrainConfig(method="prefix-tuning", lr=0.01))
    assert (prefix.optimizer, prefix.lr) == ("adam", 0.01)  # what is given wins
