"""The report's gap section: upper minus lower per model size, task and seed, from stored results."""

import json

import pytest
import yaml

from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, write_report

SIZES = {"small": 100_000_000, "large": 300_000_000}


def _experiment(tmp_path, toy_data, gap):
    grids = []
    for size in SIZES:
        grids += [{"name": f"full-{size}", "vary": {"model": [size]}, "tasks": ["rotten_tomatoes", "boolq"],
                   "methods": ["full-tuning"], "seeds": [0, 1]},
                  {"name": f"prompt-{size}", "vary": {"model": [size]}, "tasks": ["rotten_tomatoes", "boolq"],
                   "methods": ["prompt-tuning"], "prompt_length": [5, 10], "seeds": [0, 1]}]
    spec = {"name": "gap", "out": str(tmp_path / "results"), "defaults": {"data_dir": str(toy_data), "max_steps": 2},
            "grids": grids, "report": {"labels": {"prompt-tuning": "PT"}, "gap": gap}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


def _store(exp, value):
    """A results.json per run with accuracy ``value(model, method, length, task, seed)`` (nothing trains)."""
    for s in expand(exp):
        s.out.mkdir(parents=True, exist_ok=True)
        acc = value(s.config.model, s.axes["method"], s.axes.get("prompt_length"), s.axes["task"], s.axes["seed"])
        (s.out / "results.json").write_text(json.dumps({"test": {"accuracy": acc, "n": 10}, "seconds": 1,
                                                        "parameters": {"model": SIZES[s.config.model]}}))


def _value(model, method, length, task, seed):
    if method == "full-tuning":
        return 0.9
    # the gap: small 0.2 (length 5) / 0.1 (length 10); large 0.1 / 0.05; seed 1 and boolq add 0.02 each
    gap = {("small", 5): 0.2, ("small", 10): 0.1, ("large", 5): 0.1, ("large", 10): 0.05}[(model, length)]
    return 0.9 - gap - 0.02 * seed - (0.02 if task == "boolq" else 0)


def test_the_gap_per_size_task_and_seed_and_its_change_with_size(tmp_path, toy_data):
    exp = _experiment(tmp_path, toy_data, [{
        "upper": ["full-small", "full-large"], "lower": ["prompt-small", "prompt-large"], "title": "The gap",
        "reference": {"label": "T5 (read off a figure)", "points": [[6.0e7, 10.0], [2.2e8, 8.0]]}}])
    _store(exp, _value)
    report = write_report(exp).read_text()
    assert "## The gap" in report
    assert "| lower | model | parameters | rotten_tomatoes | boolq | mean | change |" in report
    # small, length 5: rotten_tomatoes gaps 0.20/0.22, boolq 0.22/0.24; seed means 0.21/0.23
    assert "| PT, 5 | small | 100.0 M | +0.210 ± 0.014 (2) | +0.230 ± 0.014 (2) | +0.220 ± 0.014 (2) | – |" in report
    # large, length 5: seed means 0.11/0.13, 0.1 below the small model's for both seeds
    assert "| PT, 5 | large | 300.0 M | +0.110 ± 0.014 (2) | +0.130 ± 0.014 (2) | +0.120 ± 0.014 (2) | " \
           "-0.100 ± 0.000 (2) |" in report
    assert "| PT, 10 | large | 300.0 M | +0.060 ± 0.014 (2) | +0.080 ± 0.014 (2) | +0.070 ± 0.014 (2) | " \
           "-0.050 ± 0.000 (2) |" in report
    assert "Reference series: T5 (read off a figure) (points: 60 M: +10.0, 220 M: +8.0)." in report
    assert (tmp_path / "results" / "gap-0.png").stat().st_size > 1000


def test_a_size_without_both_sides_is_left_out_and_nothing_finished_is_said(tmp_path, toy_data):
    exp = _experiment(tmp_path, toy_data, [{"upper": ["full-small", "full-large"], "lower": ["prompt-small"]}])
    report = write_report(exp).read_text()
    assert "No model has finished runs of both sides yet." in report
    _store(exp, _value)
    report = write_report(exp).read_text()
    assert "| PT, 10 | small |" in report and "| large |" not in report  # no prompt runs on the large model


@pytest.mark.parametrize("gap, message", [
    ([{"upper": ["full-small"]}], "expected {upper"),
    ([{"upper": ["full-small"], "lower": ["prompt-huge"]}], r"lower grids \['prompt-huge'\] are not grids"),
    ([{"upper": ["full-small"], "lower": ["prompt-small"], "reference": {"label": "T5", "points": [[0, 1]]}}],
     "PARAMETERS > 0"),
    ([{"upper": ["full-small"], "lower": ["prompt-small"], "reference": {"points": [[6e7, 1]]}}], "reference must be"),
])
def test_bad_gap_entries_are_named(tmp_path, toy_data, gap, message):
    with pytest.raises(ConfigError, match=message):
        _experiment(tmp_path, toy_data, gap)
