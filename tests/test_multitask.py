"""Multi-task runs: the task sampler follows the temperature, a run trains every task, picks its
best state by the mean dev metric, saves one output holding every task, resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_boolq, write_toy_data
from softprompt.cli import main
from softprompt.errors import ConfigError
from softprompt.methods.base import task_names
from softprompt.multitask import MEAN, TaskSampler, sampled_batches, task_runs
from softprompt.training import TrainState, train

@pytest.fixture
def two_tasks(tmp_path) -> Path:
    return write_boolq(write_toy_data(tmp_path / "data", "rotten_tomatoes"))


def _options(tiny_model_dirs, data, out, **kw):
    base = dict(task="rotten_tomatoes,boolq", data_dir=str(data), model=str(tiny_model_dirs["causal"]),
                method="multitask-prompt-tuning", prompt_length=3, init="vocab", batch_size=4, max_steps=6,
                eval_every=3, out=str(out), progress=False, optimizer="adam", lr=0.05, zero_shot_baseline=True)
    base.update(kw)
    return base


@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0, 1000.0])
def test_the_samplers_task_proportions_match_the_temperature(temperature):
    sizes = [2000, 200, 20]
    sampler = TaskSampler(sizes, temperature, seed=3)
    weights = [n ** (1 / temperature) for n in sizes]
    want = [w / sum(weights) for w in weights]
    assert sampler.probabilities == pytest.approx(want)
    steps = 20_000
    counts = [0, 0, 0]
    for step in range(steps):
        counts[sampler.task_at(step)] += 1
    # three standard deviations of a binomial proportion over 20,000 draws
    for c, p in zip(counts, want):
        assert abs(c / steps - p) < 3 * (p * (1 - p) / steps) ** 0.5 + 1e-9


def test_the_draws_depend_on_the_seed_and_step_alone_and_bad_settings_are_refused():
    a, b = TaskSampler([10, 10], 10, seed=1), TaskSampler([10, 10], 10, seed=1)
    assert [a.task_at(s) for s in range(50)] == [b.task_at(s) for s in range(50)]
    assert [a.task_at(s) for s in range(50)] != [TaskSampler([10, 10], 10, seed=2).task_at(s) for s in range(50)]
    assert [a.task_at(s) for s in range(20, 30)] == [b.task_at(s) for s in range(20, 30)]  # no state between draws
    with pytest.raises(ConfigError, match="temperature"):
        TaskSampler([10], 0, seed=0)
    with pytest.raises(ConfigError, match="training rows"):
        TaskSampler([10, 0], 10, seed=0)


def test_random_draws_can_leave_a_task_out_of_a_short_run_where_systematic_ones_do_not():
    sizes = [2490, 250]  # rte, cb: T = 10 gives 0.56 and 0.44
    assert [TaskSampler(sizes, 10, seed=0).task_at(s) for s in range(6)] == [0] * 6
    assert sorted(TaskSampler(sizes, 10, seed=0, sampling="systematic").task_at(s) for s in range(6)) == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("sizes, temperature", [([2490, 3668, 250, 9427, 8056, 21147], 10.0),
                                                ([2490, 3668, 250, 9427, 8056, 21147], 1.0),
                                                ([2000, 200, 20], 2.0), ([10, 10, 10], 10.0)])
def test_systematic_counts_stay_within_one_of_each_tasks_share_at_every_step(sizes, temperature):
    sampler = TaskSampler(sizes, temperature, seed=5, sampling="systematic")
    counts = [0] * len(sizes)
    for step in range(60):
        counts[sampler.task_at(step)] += 1
        for c, p in zip(counts, sampler.probabilities):
            assert abs(c - p * (step + 1)) < 1
    assert sum(counts) == 60
    if len(set(sizes)) == 1:  # equal shares, ties to the earlier task: round-robin
        assert [sampler.task_at(s) for s in range(6)] == [0, 1, 2, 0, 1, 2]


def test_systematic_draws_depend_on_the_step_alone():
    whole = TaskSampler([300, 100], 1.0, seed=0, sampling="systematic")
    order = [whole.task_at(s) for s in range(40)]
    assert order[:4] == [0, 0, 1, 0]  # shares 0.75, 0.25: lags 0.75/0.25, then 0.5/0.5 (tie: the first), 0.25/0.75
    late = TaskSampler([300, 100], 1.0, seed=9, sampling="systematic")  # asked from the middle first, another seed
    assert [late.task_at(s) for s in range(25, 40)] == order[25:]
    assert [late.task_at(s) for s in range(25)] == order[:25]
    with pytest.raises(ConfigError, match="--task-sampling must be one of random, systematic"):
        TaskSampler([10, 10], 10, seed=0, sampling="round-robin")


def test_each_tasks_batches_run_through_its_rows_epoch_after_epoch_and_resume_where_they_stood(two_tasks):
    from softprompt.config import TrainConfig

    runs = task_runs(TrainConfig(task="rotten_tomatoes,boolq", data_dir=str(two_tasks)))
    assert [r.task.name for r in runs] == ["rotten_tomatoes", "boolq"] and [len(r.data.train) for r in runs] == [16, 12]
    sampler = TaskSampler([16, 12], 10, seed=0)
    state = TrainState()
    source = sampled_batches(state, runs, sampler, 4, 0)
    drawn = []
    for _ in range(14):
        drawn.append(next(source))
        state.step += 1
    assert [ti for ti, _ in drawn] == [sampler.task_at(s) for s in range(14)]
    for ti, size in ((0, 16), (1, 12)):
        rows = [r for t, batch in drawn if t == ti for r in batch]
        assert len(rows) == 4 * state.task_batches[runs[ti].task.name]
        whole = len(rows) // size * size  # every complete epoch holds each row once
        for start in range(0, whole, size):
            assert sorted(rows[start: start + size]) == list(range(size))
    # a fresh source from a copy of the state continues with the same batches
    copy = TrainState(step=state.step, task_batches=dict(state.task_batches))
    assert [next(sampled_batches(copy, runs, sampler, 4, 0))] == [next(source)]


def test_options_of_one_tasks_format_are_refused_with_several_tasks(two_tasks):
    from softprompt.config import TrainConfig

    with pytest.raises(ConfigError, match="--template describe one task"):
        task_runs(TrainConfig(task="rotten_tomatoes,boolq", data_dir=str(two_tasks), template="{text} ?"))
    with pytest.raises(ConfigError, match="more than once"):
        task_runs(TrainConfig(task="boolq,boolq", data_dir=str(two_tasks)))


METHODS = {"multitask-prompt-tuning": {}, "hyperformer": {"method_options": "bottleneck=4,task_embedding_dim=6"},
           "adapter": {"method_options": "bottleneck=4"},
           "hyperprompt": {"method_options": "bottleneck=4,task_embedding_dim=6"}}


@pytest.mark.parametrize("method", METHODS)
def test_a_multitask_run_trains_every_task_and_reports_each_and_the_mean(method, tiny_model_dirs, two_tasks, tmp_path,
                                                                        capsys):
    # 4 training rows of each task are its dev set; the final split is the test split where the task has one
    # (rotten_tomatoes), else the validation split (boolq, whose test labels are hidden)
    result = train(**_options(tiny_model_dirs, two_tasks, tmp_path / "run", dev_from_train=4, method=method,
                              **METHODS[method]))
    out = tmp_path / "run"
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [ln for ln in lines if "loss" in ln]
    sampler = TaskSampler([12, 8], 10.0, 0)
    assert [ln["task"] for ln in steps] == [["rotten_tomatoes", "boolq"][sampler.task_at(s)] for s in range(6)]
    dev = [ln for ln in lines if ln.get("split") == "validation"]
    assert len(dev) == 2
    for d in dev:
        per_task = [d["rotten_tomatoes"]["accuracy"], d["boolq"]["accuracy"]]
        assert d[MEAN] == pytest.approx(sum(per_task) / 2)
    assert result.dev["best_mean"] == max(d[MEAN] for d in dev)
    best = next(d for d in dev if d["step"] == result.dev["best_step"])  # each task's numbers are best/'s, not the last's
    assert {k: result.dev[k] for k in ("rotten_tomatoes", "boolq", MEAN)} == {k: best[k] for k in ("rotten_tomatoes", "boolq", MEAN)}
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"] == ["rotten_tomatoes", "boolq"] and res["train_rows"] == {"rotten_tomatoes": 12, "boolq": 8}
    assert res["test_split"] == "test,validation"
    assert res["test"]["rotten_tomatoes"]["n"] == 16 and res["test"]["boolq"]["n"] == 12
    assert res["test"][MEAN] == pytest.approx((res["test"]["rotten_tomatoes"]["accuracy"] + res["test"]["boolq"]["accuracy"]) / 2)
    assert set(res["zero_shot_test"]) == {MEAN, "rotten_tomatoes", "boolq"}
    assert sum(res["task_batches"].values()) == 6
    saved = json.loads((out / "best/softprompt.json").read_text())
    assert [t["name"] for t in saved["tasks"]] == ["rotten_tomatoes", "boolq"]
    # one task of the saved run, evaluated alone, scores as the run's final evaluation did
    capsys.readouterr()
    for name, split in (("boolq", "validation"), ("rotten_tomatoes", "test")):
        assert main(["eval", "--prompt", str(out / "best"), "--task", name, "--data-dir", str(two_tasks),
                     "--split", split, "--no-progress"]) == 0
        got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert got["task"] == name and got["accuracy"] == res["test"][name]["accuracy"]
    # without --data-dir, eval reads the data the run was trained on, not the bundled Rotten Tomatoes
    assert main(["eval", "--prompt", str(out / "best"), "--task", "rotten_tomatoes", "--no-progress"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["data_dir"] == str(two_tasks) and got["n"] == 16
    assert got["accuracy"] == res["test"]["rotten_tomatoes"]["accuracy"]
    if method != "adapter":  # one adapter serves any task; a method with a part per task refuses another task
        assert main(["eval", "--prompt", str(out / "best"), "--task", "rte", "--data-dir", str(two_tasks),
                     "--split", "test", "--no-progress"]) == 2
        assert "trained for tasks ['rotten_tomatoes', 'boolq'], not 'rte'" in capsys.readouterr().err
    # inspect titles each task's prompt (and HyperPrompt's global prompt) instead of printing tensor names alone
    titles = {"multitask-prompt-tuning": ["prompts.0.weight (rotten_tomatoes's prompt):", "prompts.1.weight (boolq's prompt):"],
              "hyperprompt": ["hyper.embedding (the global prompt E, shared by every task):"]}.get(method)
    if titles:
        assert main(["inspect", str(out / "best"), "--k", "2", "--no-progress"]) == 0
        shown = [ln for ln in capsys.readouterr().out.splitlines() if ln.endswith(":")]
        assert shown == titles


@pytest.mark.parametrize("sampling", ["random", "systematic"])
def test_a_resumed_multitask_run_ends_as_an_uninterrupted_one(sampling, tiny_model_dirs, two_tasks, tmp_path, monkeypatch):
    from conftest import crash_at_call
    from softprompt.artifacts import load_artifact
    from softprompt.methods import MultiTaskPromptTuning

    options = _options(tiny_model_dirs, two_tasks, tmp_path, max_steps=9, zero_shot_baseline=False,
                       method_options="shared_length=2", task_sampling=sampling)
    train(**{**options, "out": str(tmp_path / "straight")})
    restore = crash_at_call(monkeypatch, MultiTaskPromptTuning, 5)  # dies in step 5, after the step-3 checkpoint
    with pytest.raises(KeyboardInterrupt):
        train(**{**options, "out": str(tmp_path / "cut")})
    restore()
    train(**{**options, "out": str(tmp_path / "cut")}, resume=True)
    a, b = load_artifact(tmp_path / "straight/last"), load_artifact(tmp_path / "cut/last")
    assert sorted(a.tensors) == ["prompts.0.weight", "prompts.1.weight", "shared.weight"]
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    logs = [[json.loads(ln) for ln in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("straight", "cut")]
    assert [ln.get("task") for ln in logs[0]] == [ln.get("task") for ln in logs[1]]
    sampler = TaskSampler([16, 12], 10.0, 0, sampling)  # the option reached the run
    assert [ln["task"] for ln in logs[0] if "loss" in ln] == [["rotten_tomatoes", "boolq"][sampler.task_at(s)]
                                                               for s in range(9)]


@pytest.mark.parametrize("spec", ["rte,", ",rte", "rte,,cb"])
def test_an_empty_task_name_between_commas_is_refused(spec):
    with pytest.raises(ConfigError, match="empty name between its commas"):
        task_names(spec)
