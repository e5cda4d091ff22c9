"""Grids with ``vary:`` axes: expansion, validation, and the keys of existing experiments."""

import shutil
from pathlib import Path

import pytest
import yaml

from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, write_report
from softprompt.experiments.config import command_line

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, tiny_model_dirs, toy_data, vary, methods=("manual", "prompt-tuning"), tasks=("rotten_tomatoes",)):
    spec = {
        "name": "vary", "out": str(tmp_path / "results"),
        "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "max_steps": 2},
        "grids": [{"name": "g", "tasks": list(tasks), "methods": list(methods), "prompt_length": [4],
                   "seeds": [0, 1], "options": {"label_words": "negative=bad;positive=good"}, "vary": vary}],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_lists_bundles_and_per_task_values_expand_in_file_order(tmp_path, tiny_model_dirs, toy_data):
    vary = {
        "template": {"per_task": {"rotten_tomatoes": {"t0": "{text}\nIt was", "t1": {"template": "{text}\nJust"}},
                                  "toy": {"t0": "{text}\nSo"}}},
        "verbalizer": {"manual": {}, "words": {"label_words": "negative=awful;positive=great", "word_scoring": "first-token"}},
        "shots": [1, 5],
    }
    exp = load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, vary, methods=("manual",),
                                 tasks=("rotten_tomatoes", "toy")))
    runs = {s.key: s for s in expand(exp)}
    rt = [k for k in runs if k.startswith("rotten_tomatoes/")]
    # the manual method draws nothing at random: one seed, but every template, variant and shots value
    assert rt == [f"rotten_tomatoes/manual/template-{t}/verbalizer-{v}/shots-{k}/seed0"
                  for t in ("t0", "t1") for v in ("manual", "words") for k in (1, 5)]
    cfg = runs["rotten_tomatoes/manual/template-t1/verbalizer-words/shots-5/seed0"].config
    assert (cfg.template, cfg.label_words, cfg.word_scoring, cfg.shots) == (
        "{text}\nJust", "negative=awful;positive=great", "first-token", 5)
    # vary is applied after the grid's options; an empty bundle keeps them
    assert runs["rotten_tomatoes/manual/template-t0/verbalizer-manual/shots-1/seed0"].config.label_words == \
        "negative=bad;positive=good"
    assert runs["toy/manual/template-t0/verbalizer-manual/shots-1/seed0"].config.template == "{text}\nSo"
    assert len([k for k in runs if k.startswith("toy/")]) == 4
    spec = runs["rotten_tomatoes/manual/template-t0/verbalizer-words/shots-1/seed0"]
    assert spec.axes == {"task": "rotten_tomatoes", "method": "manual", "template": "t0", "verbalizer": "words",
                         "shots": "1", "seed": 0}
    assert "--word-scoring first-token" in command_line(cfg)


def test_an_axis_of_method_options_collapses_for_a_method_that_ignores_them(tmp_path, tiny_model_dirs, toy_data):
    vary = {"size": {"small": {"prompt_length": 2}, "big": {"prompt_length": 8}}, "shots": [4]}
    keys = [s.key for s in expand(load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, vary)))]
    assert keys == [
        "rotten_tomatoes/manual/shots-4/seed0",  # no prompt: the size axis collapses, shots does not
        "rotten_tomatoes/prompt-tuning/len2-class-labels/size-small/shots-4/seed0",
        "rotten_tomatoes/prompt-tuning/len2-class-labels/size-small/shots-4/seed1",
        "rotten_tomatoes/prompt-tuning/len8-class-labels/size-big/shots-4/seed0",
        "rotten_tomatoes/prompt-tuning/len8-class-labels/size-big/shots-4/seed1",
    ]


@pytest.mark.parametrize("vary, message", [
    ({"verbalizer": {"kpt": {"refyne": "none"}}}, r"grids\[0\] \(g\): vary.verbalizer.kpt: unknown option\(s\) 'refyne' \(did you mean 'refine'\?\)"),
    ({"template": {"per_task": {"other": ["{text}"]}}}, r"vary.template.per_task: .*missing \['rotten_tomatoes'\]"),
    ({"style": ["plain"]}, r"vary.style.plain: style is not an option"),
    ({"shots": [1, 1]}, r"vary.shots: value names must be unique"),
    ({"template": {"a b": "{text}"}}, r"value name 'a b' is used in run folders"),
    ({"seed": [1]}, r"vary.seed: seed is a grid axis already"),
    ({"shots": 3}, r"vary.shots: expected a list"),
])
def test_bad_vary_is_refused_at_load_naming_grid_axis_and_value(tmp_path, tiny_model_dirs, toy_data, vary, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, vary))


def test_a_bad_value_in_a_bundle_names_the_run_cell(tmp_path, tiny_model_dirs, toy_data):
    with pytest.raises(ConfigError, match=r"grid 'g', task rotten_tomatoes, method manual, vary v=bad: .*batch"):
        load_experiment(_write(tmp_path, tiny_model_dirs, toy_data, {"v": {"bad": {"batch_size": 0}}},
                               methods=("manual",)))


@pytest.mark.parametrize("name", ["quick", "ppt_cpu", "ppt_fewshot"])
def test_committed_experiments_keep_their_run_keys(name):
    exp = load_experiment(REPO / "experiments" / f"{name}.yaml")
    runs = REPO / exp.out / "runs"
    stored = {str(p.parent.relative_to(runs)) for p in runs.rglob("results.json")}
    keys = {s.key for s in expand(exp)}
    assert stored and stored <= keys, sorted(stored - keys)[:5]


def test_committed_quick_report_rebuilds_byte_for_byte(tmp_path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    shutil.copy(REPO / "experiments" / "quick.yaml", tmp_path / "experiments" / "quick.yaml")
    shutil.copytree(REPO / "docs" / "results" / "quick", tmp_path / "docs" / "results" / "quick")
    monkeypatch.chdir(tmp_path)
    exp = load_experiment(Path("experiments/quick.yaml"))
    report = write_report(exp)
    assert report.read_bytes() == (REPO / "docs" / "results" / "quick" / "report.md").read_bytes()


def test_kpt_experiment_expands_to_its_stated_runs():
    """experiments/kpt.yaml (issue 16): 56 zero-shot and 72 few-shot runs; it names the knowledgeable
    verbalizer's options, so it loads only where they exist."""
    import dataclasses

    from softprompt.config import TrainConfig

    if "label_words_file" not in {f.name for f in dataclasses.fields(TrainConfig)}:
        pytest.skip("the knowledgeable verbalizer's options are not in this tree")
    exp = load_experiment(REPO / "experiments" / "kpt.yaml")
    runs = {s.key: s for s in expand(exp)}
    assert sum("zero-shot" in s.grids for s in runs.values()) == 56
    assert sum("few-shot" in s.grids for s in runs.values()) == 72
    kpt = runs["ag_news/manual/template-t2/verbalizer-kpt-no-frequency/seed0"].config
    assert (kpt.template, kpt.refine, kpt.calibrate) == ("{title} {text}\n[ Topic :", "relevance", True)
    few = runs["rotten_tomatoes/prompt-tuning/len20-class-labels/template-t0/verbalizer-kpt-learned/shots-5/seed2"].config
    assert (few.shots, few.shots_per_class, few.learn_word_weights, few.calibrate, few.word_scoring) == (
        5, True, True, False, "first-token")
    assert runs["ag_news/manual/template-t0/verbalizer-kpt/seed0"].config.eval_limit == 100


def test_a_vary_grid_runs_records_its_axes_and_rebuilds_its_report(tmp_path, tiny_model_dirs, toy_data):
    import json

    from softprompt.experiments import run_experiment

    vary = {"template": {"t0": "{text}\nIt was", "t1": "{text}\nSo"},
            "verbalizer": {"one": {}, "two": {"label_words": "negative=bad,awful;positive=good,great"}}}
    path = _write(tmp_path, tiny_model_dirs, toy_data, vary, methods=("manual",))
    data = yaml.safe_load(path.read_text())
    data["defaults"].update(zero_shot_baseline=False, test_limit=8)
    data["report"] = {"tables": [{"grid": "g", "rows": "verbalizer", "over": ["template"], "spread": "template"}]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert run_experiment(path, progress=False)["ran"] == 4
    out = tmp_path / "results"
    stored = json.loads((out / "runs/rotten_tomatoes/manual/template-t1/verbalizer-two/seed0/results.json").read_text())
    assert stored["axes"] == {"task": "rotten_tomatoes", "method": "manual", "template": "t1", "verbalizer": "two",
                              "seed": 0}
    assert stored["config"]["label_words"] == "negative=bad,awful;positive=good,great"
    report = (out / "report.md").read_bytes()
    assert b"| verbalizer | rotten_tomatoes | rotten_tomatoes: spread over template |" in report
    assert run_experiment(path, progress=False)["ran"] == 0  # the axes written into results.json keep it done
    assert (out / "report.md").read_bytes() == report
