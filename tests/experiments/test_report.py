import json

import pytest
import yaml

from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, write_report


def _experiment(tmp_path, tiny_model_dirs, toy_data, report):
    from conftest import write_toy_data

    write_toy_data(toy_data, "toy_transfer")
    spec = {
        "name": "cmp", "out": str(tmp_path / "results"),
        "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "max_steps": 2},
        "tasks": {"toy_transfer": {"template": "Review: {text}\nSentiment:",
                                   "label_words": "positive=positive;negative=negative"}},
        "grids": [{"name": "init", "tasks": ["rotten_tomatoes", "toy_transfer"], "methods": ["prompt-tuning"],
                   "init": ["vocab", "random-uniform"], "seeds": [0, 1]}],
        "report": report,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


def _store(exp, accuracy):
    """Write a results.json with a known accuracy for every run (nothing is trained)."""
    for spec in expand(exp):
        spec.out.mkdir(parents=True, exist_ok=True)
        value = accuracy[(spec.config.task, spec.axes["init"], spec.axes["seed"])]
        (spec.out / "results.json").write_text(json.dumps({"test": {"accuracy": value, "n": 10}, "seconds": 1}))


def test_labels_and_paired_differences(tmp_path, tiny_model_dirs, toy_data):
    exp = _experiment(tmp_path, tiny_model_dirs, toy_data,
                      {"labels": {"vocab": "V"}, "compare": [{"grid": "init", "column": "V"}]})
    _store(exp, {("rotten_tomatoes", "vocab", 0): 0.8, ("rotten_tomatoes", "vocab", 1): 0.7,
                 ("toy_transfer", "vocab", 0): 0.6, ("toy_transfer", "vocab", 1): 0.6,
                 ("rotten_tomatoes", "random-uniform", 0): 0.7, ("rotten_tomatoes", "random-uniform", 1): 0.7,
                 ("toy_transfer", "random-uniform", 0): 0.5, ("toy_transfer", "random-uniform", 1): 0.7})
    report = write_report(exp).read_text()
    assert "| task | V | random-uniform |" in report  # the label replaces the axis value
    assert "`V` minus each other column, paired by task and seed" in report
    assert "| rotten_tomatoes | +0.050 ± 0.071 (2) |" in report  # +0.1 and 0.0
    assert "| toy_transfer | +0.000 ± 0.141 (2) |" in report  # +0.1 and -0.1
    assert "| **mean over tasks** | +0.025 ± 0.106 (2) |" in report  # seed means +0.1 and -0.05
    assert "| ahead in (pairs) | 2 of 4 (tied 1) |" in report


def test_a_column_without_runs_is_said_and_bad_report_options_are_named(tmp_path, tiny_model_dirs, toy_data):
    exp = _experiment(tmp_path, tiny_model_dirs, toy_data, {"compare": [{"grid": "init", "column": "PPT"}]})
    _store(exp, {(t, i, s): 0.5 for t in ("rotten_tomatoes", "toy_transfer") for i in ("vocab", "random-uniform")
                 for s in (0, 1)})
    assert "No finished runs of `PPT` yet." in write_report(exp).read_text()
    with pytest.raises(ConfigError, match="compare names grid 'main'"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"compare": [{"grid": "main", "column": "V"}]})
    with pytest.raises(ConfigError, match="each compare entry"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"compare": ["V"]})
    with pytest.raises(ConfigError, match="report: expected"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"colour": "red"})
