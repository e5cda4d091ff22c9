"""Multi-task grids in the experiment runner: a grid whose task is several tasks (its folder, the
per-task options it reads), a grid whose runs start from another grid's runs (``base:``: run
first, its folder passed as ``base=``, its fingerprint part of theirs), and the report's table
of methods x tasks over single- and multi-task runs with what each trains per task."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import TOY_NEG, TOY_POS, write_boolq, write_toy_data
from softprompt.errors import ConfigError
from softprompt.experiments import expand, load_experiment, run_experiment
from softprompt.experiments.runner import run_done

HYPER = "bottleneck=4,task_embedding_dim=6,hidden=8,projected_dim=6"


def _write_mrpc(folder):
    """A tiny MRPC (sentence1, sentence2, label) in ``folder/mrpc``."""
    d = folder / "mrpc"
    d.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence1": a, "sentence2": b, "label": "equivalent" if (a in TOY_POS) == (b in TOY_POS) else "not_equivalent"}
            for a, b in zip(TOY_POS + TOY_NEG, TOY_NEG[:4] + TOY_POS[4:] + TOY_NEG[4:] + TOY_POS[:4])]
    for split in ("train", "validation", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps({**r, "idx": i}) + "\n" for i, r in enumerate(rows)))
    return folder


def _spec(tmp_path, tiny_model_dirs, **over):
    data = _write_mrpc(write_boolq(write_toy_data(tmp_path / "data", "rotten_tomatoes")))
    spec = {"name": "mt", "out": str(tmp_path / "results"),
            "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(data), "batch_size": 4,
                         "max_steps": 2, "eval_every": 2, "lr": 0.01, "optimizer": "adam", "dev_from_train": 4,
                         "zero_shot_baseline": False, "task_sampling": "systematic"},
            "methods": {"hyperformer": {"method_options": HYPER}, "adapter": {"method_options": "bottleneck=4"}},
            "grids": [{"name": "single", "tasks": ["rotten_tomatoes", "boolq"], "methods": ["adapter", "prompt-tuning"],
                       "prompt_length": [2, 3], "init": ["vocab"], "seeds": [0]},
                      {"name": "joint", "tasks": ["rotten_tomatoes,boolq"], "methods": ["adapter", "hyperformer"],
                       "seeds": [0]},
                      {"name": "new", "tasks": ["mrpc"], "methods": ["hyperformer"], "seeds": [0],
                       "base": {"grid": "joint", "method": "hyperformer"}, "options": {"shots": 4, "lr": 0.1}}],
            "report": {"per_task": [{"grids": ["single", "joint", "new"], "metric": "accuracy", "title": "Tasks"}],
                       "labels": {"joint/hyperformer": "Hyperformer++"}}}
    spec.update(over)
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_multitask_task_gets_a_folder_without_commas_and_a_base_run_comes_first(tmp_path, tiny_model_dirs, capsys):
    exp = load_experiment(_spec(tmp_path, tiny_model_dirs))
    runs = {s.key: s for s in expand(exp)}
    base, new = runs["rotten_tomatoes+boolq/hyperformer/seed0"], runs["mrpc/hyperformer/seed0"]
    assert base.axes["task"] == base.config.task == "rotten_tomatoes,boolq"
    assert new.config.method_options == f"{HYPER},base={base.out / 'best'}"
    assert new.depends == {base.key: base.fingerprint} and not base.depends
    summary = run_experiment(exp, only=["new"], dry_run=True)  # the base run comes along, first
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["run   rotten_tomatoes+boolq/hyperformer/seed0",
                     f"run   mrpc/hyperformer/seed0  (after {base.key})"]
    assert summary["todo"] == 2


def test_a_grid_base_runs_first_and_the_report_gives_each_task_and_the_trained_numbers(tmp_path, tiny_model_dirs):
    from softprompt.artifacts import load_artifact

    path = _spec(tmp_path, tiny_model_dirs)
    assert run_experiment(path, progress=False)["ran"] == 9
    runs = {s.key: s for s in expand(load_experiment(path))}
    base, new = runs["rotten_tomatoes+boolq/hyperformer/seed0"], runs["mrpc/hyperformer/seed0"]
    got = {k: run_done(s) for k, s in runs.items()}
    assert all(got.values())
    assert got[new.key]["depends"] == {base.key: base.fingerprint}
    # the new task's run trained its embedding alone and saved every task
    assert got[new.key]["parameters"]["trained"] == got[new.key]["parameters"]["per_task"] == 6
    assert load_artifact(new.out / "best").metadata["hyperformer"]["tasks"] == ["rotten_tomatoes", "boolq", "mrpc"]
    shared = got["rotten_tomatoes+boolq/adapter/seed0"]["parameters"]
    assert shared["per_task"] == shared["trained"] == got["boolq/adapter/seed0"]["parameters"]["trained"]
    hyper = got[base.key]["parameters"]
    assert hyper["per_task"] == 6 and hyper["trained"] > 2 * 6
    report = (tmp_path / "results" / "report.md").read_text()
    section = report[report.index("## Tasks"):report.index("## Runs")]
    header = next(ln for ln in section.splitlines() if ln.startswith("| method"))
    assert header == "| method | rotten_tomatoes | boolq | mrpc | mean | own per task | trained per task |"
    row = next(ln for ln in section.splitlines() if ln.startswith("| Hyperformer++ |")).split(" | ")
    test = got[base.key]["test"]
    acc = [test["rotten_tomatoes"]["accuracy"], test["boolq"]["accuracy"]]
    assert row[1:4] == [f"{acc[0]:.3f} ± 0.000 (1)", f"{acc[1]:.3f} ± 0.000 (1)", "–"]
    assert row[4] == f"{(acc[0] + acc[1]) / 2:.3f} ± 0.000 (1) of 2"
    model = hyper["model"]

    def numbers(cell):  # "1,234 (0.0052 %)" -> (1234, 0.0052)
        count, percent = cell.rstrip(" |").split(" (")
        return int(count.replace(",", "")), float(percent.rstrip(" %)"))

    assert numbers(row[5]) == (6, pytest.approx(100 * 6 / model, rel=0.05)) and "e" not in row[5]
    assert numbers(row[6]) == (round(hyper["trained"] / 2), pytest.approx(100 * hyper["trained"] / 2 / model, rel=0.05))
    single = next(ln for ln in section.splitlines() if ln.startswith("| single/adapter |")).split(" | ")
    assert single[1] == f"{got['rotten_tomatoes/adapter/seed0']['test']['accuracy']:.3f} ± 0.000 (1)"
    names = [ln.split(" | ")[0] for ln in section.splitlines() if ln.startswith("| ")][1:]
    assert names == ["| single/adapter", "| single/prompt-tuning/2", "| single/prompt-tuning/3", "| joint/adapter",
                     "| Hyperformer++", "| new/hyperformer"]  # an axis with one value (init) is left out of the name
    newrow = next(ln for ln in section.splitlines() if ln.startswith("| new/hyperformer |")).split(" | ")
    assert newrow[1:4] == ["–", "–", f"{got[new.key]['test']['accuracy']:.3f} ± 0.000 (1)"]
    assert run_experiment(path, progress=False)["ran"] == 0  # all done: nothing again


def test_a_changed_base_run_makes_its_dependents_stale(tmp_path, tiny_model_dirs):
    path = _spec(tmp_path, tiny_model_dirs)
    run_experiment(path, only=["new"], progress=False, report=False)
    before = {s.key: s for s in expand(load_experiment(path))}
    assert run_done(before["mrpc/hyperformer/seed0"]) is not None
    spec = yaml.safe_load(path.read_text())
    spec["grids"][1]["options"] = {"lr": 0.02}  # the base runs change; the new task's own options do not
    path.write_text(yaml.safe_dump(spec))
    after = {s.key: s for s in expand(load_experiment(path))}
    assert after["mrpc/hyperformer/seed0"].config == before["mrpc/hyperformer/seed0"].config
    assert run_done(after["mrpc/hyperformer/seed0"]) is None  # redone, after its base


def test_per_task_options_of_a_multitask_entry_must_agree(tmp_path, tiny_model_dirs):
    path = _spec(tmp_path, tiny_model_dirs, tasks={"rotten_tomatoes": {"eval_limit": 3}, "boolq": {"eval_limit": 3}})
    runs = {s.key: s for s in expand(load_experiment(path))}
    assert runs["rotten_tomatoes+boolq/adapter/seed0"].config.eval_limit == 3
    path = _spec(tmp_path, tiny_model_dirs, tasks={"rotten_tomatoes": {"eval_limit": 3}})
    with pytest.raises(ConfigError, match="applies one set of options to all its tasks"):
        load_experiment(path)
    path = _spec(tmp_path, tiny_model_dirs, tasks={"rotten_tomatoes,boolq": {"eval_limit": 2}})
    runs = {s.key: s for s in expand(load_experiment(path))}
    assert runs["rotten_tomatoes+boolq/adapter/seed0"].config.eval_limit == 2
    assert runs["rotten_tomatoes/adapter/seed0"].config.eval_limit is None


@pytest.mark.parametrize("base, message", [
    ({"grid": "new"}, "not a grid before this one"),
    ({"grid": "joint"}, "matches 2 runs of seed 0"),
    ({"grid": "joint", "method": "hyperformer", "seeds": 1}, "base must be"),
])
def test_a_base_that_names_no_single_earlier_run_is_refused(tmp_path, tiny_model_dirs, base, message):
    spec = yaml.safe_load(_spec(tmp_path, tiny_model_dirs).read_text())
    spec["grids"][2]["base"] = base
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message):
        load_experiment(path)


def test_a_method_that_cannot_start_from_a_run_refuses_a_base(tmp_path, tiny_model_dirs):
    spec = yaml.safe_load(_spec(tmp_path, tiny_model_dirs).read_text())
    spec["grids"][2]["methods"] = ["adapter"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match="method 'adapter' cannot"):
        load_experiment(path)
