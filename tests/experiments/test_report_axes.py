"""Report tables by an axis, spread over templates, curves and the budget, from fabricated results."""

import json

import pytest
import yaml

from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, write_report

VARY = {"template": {"t0": "{text}\nIt was", "t1": "{text}\nJust"},
        "verbalizer": {"manual": {}, "kpt": {"label_words": "negative=bad,awful;positive=good,great"}}}


def _experiment(tmp_path, tiny_model_dirs, toy_data, report, grids=None):
    from conftest import write_toy_data

    write_toy_data(toy_data, "toy")
    spec = {
        "name": "axes", "out": str(tmp_path / "results"),
        "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "max_steps": 30,
                     "batch_size": 8, "label_words": "negative=bad;positive=good"},
        "grids": grids or [
            {"name": "zs", "tasks": ["rotten_tomatoes", "toy"], "methods": ["manual"], "vary": VARY},
            {"name": "fs", "tasks": ["rotten_tomatoes"], "methods": ["prompt-tuning"], "prompt_length": [4],
             "seeds": [0, 1], "vary": {"verbalizer": VARY["verbalizer"], "shots": [1, 5]}},
        ],
        "report": report,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_experiment(path)


def _store(exp, value_of):
    for spec in expand(exp):
        spec.out.mkdir(parents=True, exist_ok=True)
        steps = 0 if spec.axes["method"] == "manual" else 30
        seconds = 10 if steps == 0 else 60
        (spec.out / "results.json").write_text(json.dumps(
            {"test": {"accuracy": value_of(spec.axes), "n": 10}, "steps": steps, "seconds": seconds}))


# zero-shot accuracies: (task, verbalizer, template)
ZS = {("rotten_tomatoes", "manual", "t0"): 0.6, ("rotten_tomatoes", "manual", "t1"): 0.8,
      ("rotten_tomatoes", "kpt", "t0"): 0.7, ("rotten_tomatoes", "kpt", "t1"): 0.7,
      ("toy", "manual", "t0"): 0.5, ("toy", "manual", "t1"): 0.5,
      ("toy", "kpt", "t0"): 0.9, ("toy", "kpt", "t1"): 0.5}
# few-shot: (verbalizer, shots, seed)
FS = {("manual", "1", 0): 0.5, ("manual", "1", 1): 0.7, ("manual", "5", 0): 0.6, ("manual", "5", 1): 0.6,
      ("kpt", "1", 0): 0.7, ("kpt", "1", 1): 0.7, ("kpt", "5", 0): 0.8, ("kpt", "5", 1): 0.9}


def _value(axes):
    if axes["method"] == "manual":
        return ZS[(axes["task"], axes["verbalizer"], axes["template"])]
    return FS[(axes["verbalizer"], axes["shots"], axes["seed"])]


REPORT = {"labels": {"kpt": "KPT"}, "budget": True,
          "tables": [{"grid": "zs", "rows": "verbalizer", "over": ["template", "seed"], "spread": "template"}],
          "curves": [{"grid": "fs", "x": "shots", "series": "verbalizer"}]}


def test_table_by_axis_with_spread_breakdown_curve_and_budget(tmp_path, tiny_model_dirs, toy_data):
    exp = _experiment(tmp_path, tiny_model_dirs, toy_data, REPORT)
    _store(exp, _value)
    text = write_report(exp).read_text()
    assert ("| verbalizer | rotten_tomatoes | rotten_tomatoes: spread over template | toy | toy: spread over template |"
            in text)
    # manual on rotten_tomatoes: 0.6 and 0.8 -> 0.700 ± 0.141, template means 0.6, 0.8 -> spread 0.141
    assert "| manual | 0.700 ± 0.141 (2) | 0.141 (2) | 0.500 ± 0.000 (2) | 0.000 (2) |" in text
    assert "| KPT | 0.700 ± 0.000 (2) | 0.000 (2) | 0.700 ± 0.283 (2) | 0.283 (2) |" in text
    # the per-template breakdown
    assert "| verbalizer | rotten_tomatoes t0 | rotten_tomatoes t1 | toy t0 | toy t1 |" in text
    assert "| KPT | 0.700 ± 0.000 (1) | 0.700 ± 0.000 (1) | 0.900 ± 0.000 (1) | 0.500 ± 0.000 (1) |" in text
    # the curve: shots as columns, mean ± std over seeds
    assert "| verbalizer \\ shots | 1 | 5 |" in text
    assert "| manual | 0.600 ± 0.141 (2) | 0.600 ± 0.000 (2) |" in text
    assert "| KPT | 0.700 ± 0.000 (2) | 0.850 ± 0.071 (2) |" in text
    assert (exp.out / "fs-shots-rotten_tomatoes.png").stat().st_size > 0
    assert "![fs rotten_tomatoes](fs-shots-rotten_tomatoes.png)" in text
    # the budget: 8 zero-shot runs of 10 s, 8 few-shot runs of 60 s
    assert "- grid `zs`: 8 of 8 runs finished, no training (scoring only); run time 1.3 min in all, 10 s per run (10–10 s)." in text
    assert "- grid `fs`: 8 of 8 runs finished, 30 training steps of batch 8; run time 8.0 min in all, 60 s per run (60–60 s)." in text
    # vary axes are columns of the grid's own table, and every run's key names them
    assert "`rotten_tomatoes/manual/template-t1/verbalizer-kpt/seed0`" in text
    assert write_report(exp).read_text() == text  # rebuilt from what is stored: the same bytes


def test_unfinished_cells_and_bad_report_options(tmp_path, tiny_model_dirs, toy_data):
    exp = _experiment(tmp_path, tiny_model_dirs, toy_data, REPORT)
    _store(exp, _value)
    for spec in expand(exp):
        if spec.axes.get("template") == "t1" and spec.axes["task"] == "toy":
            (spec.out / "results.json").unlink()
    text = write_report(exp).read_text()
    assert "| KPT | 0.700 ± 0.000 (2) | 0.000 (2) | 0.900 ± 0.000 (1) | – |" in text  # one template: no spread
    assert "- grid `zs`: 6 of 8 runs finished" in text
    with pytest.raises(ConfigError, match=r"tables\[0\]: rows names axis 'style'"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"tables": [{"grid": "zs", "rows": "style"}]})
    with pytest.raises(ConfigError, match=r"curves\[0\]: no grid named 'nope'"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"curves": [{"grid": "nope", "x": "shots", "series": "verbalizer"}]})
    with pytest.raises(ConfigError, match=r"curves\[0\]: expected keys"):
        _experiment(tmp_path, tiny_model_dirs, toy_data, {"curves": [{"grid": "fs", "x": "shots"}]})


def test_a_dev_only_sweep_is_reported_by_its_best_dev_values(tmp_path, tiny_model_dirs, toy_data):
    """Runs with no final split (test_split '', a learning-rate sweep that leaves the final rows
    unseen) report their best dev value, named as such, with the mean over tasks per lr."""
    grids = [{"name": "lr-sweep", "tasks": ["rotten_tomatoes", "boolq"], "methods": ["prompt-tuning"],
              "prompt_length": [4], "seeds": [0], "options": {"test_split": ""}, "vary": {"lr": [0.003, 0.03]}}]
    exp = _experiment(tmp_path, tiny_model_dirs, toy_data, {}, grids)
    dev = {("rotten_tomatoes", "0.003"): 0.6, ("rotten_tomatoes", "0.03"): 0.8, ("boolq", "0.003"): 0.7, ("boolq", "0.03"): 0.5}
    for spec in expand(exp):
        spec.out.mkdir(parents=True, exist_ok=True)
        best = dev[(spec.axes["task"], spec.axes["lr"])]
        (spec.out / "results.json").write_text(json.dumps(
            {"dev": {"best_accuracy": best, "best_step": 20, "accuracy": best, "n": 100}, "test": None,
             "test_split": None, "steps": 30, "seconds": 5}))
    text = write_report(exp).read_text()
    assert "dev accuracy by task (rows) and lr (columns):" in text
    assert "| rotten_tomatoes | 0.600 ± 0.000 (1) | 0.800 ± 0.000 (1) |" in text
    assert "| **mean over tasks** | 0.650 ± 0.000 (1) | 0.650 ± 0.000 (1) |" in text
    assert "| `rotten_tomatoes/prompt-tuning/len4-class-labels/lr-0.03/seed0` | dev accuracy 0.8000 | dev |" in text
