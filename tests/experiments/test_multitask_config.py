"""experiments/multitask.yaml (issue 19, item 6) expands into the runs it promises: single-task
prompt tuning and adapters per task, the four multi-task methods over the six tasks, a
Hyperformer++ run on five tasks and the sixth task's embedding alone at k = 32 from it, 3 seeds;
every run on the same model, lengths, batch and evaluation rows; as many batches per task in a
multi-task run as a single-task run takes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from softprompt.experiments import expand, load_experiment, run_experiment
from softprompt.methods.base import task_names

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "multitask.yaml"
SIX = ["rte", "mrpc", "cb", "boolq", "rotten_tomatoes", "qqp_sample"]


def test_the_multitask_experiment_expands_to_every_method_and_the_new_task_case():
    exp = load_experiment(CONFIG)
    runs = expand(exp)
    assert len({r.key for r in runs}) == len(runs)
    per = Counter((r.grids[0], r.config.method, r.config.task) for r in runs)
    for task in SIX:
        assert per[("single", "prompt-tuning", task)] == per[("single", "adapter", task)] == 3
    for method in ("multitask-prompt-tuning", "adapter", "hyperformer", "hyperprompt"):
        assert per[("joint", method, ",".join(SIX))] == 3
    assert per[("five", "hyperformer", ",".join(SIX[:5]))] == 3
    assert per[("new-task", "hyperformer", "qqp_sample")] == 3
    assert per[("new-task-alone", "prompt-tuning", "qqp_sample")] == per[("new-task-alone", "adapter", "qqp_sample")] == 3
    assert {(r.config.model, r.config.max_length, r.config.batch_size, r.config.test_limit, r.config.mixed_precision)
            for r in runs} == {("smollm2-135m", 128, 8, exp.defaults["test_limit"], "bf16")}
    prompts = [r for r in runs if r.config.method in ("prompt-tuning", "multitask-prompt-tuning", "hyperprompt")]
    assert {(r.config.prompt_length, r.config.init) for r in prompts} == {(20, "vocab")}
    # as many batches per task: a multi-task run takes (its tasks) x a single-task run's steps
    single = {r.config.max_steps for r in runs if r.grids[0] == "single"}
    assert len(single) == 1
    for r in runs:
        if r.grids[0] in ("joint", "five"):
            assert r.config.max_steps == len(task_names(r.config.task)) * next(iter(single))
            assert r.config.task_sampling == "systematic"
    # the same dev and final rows for a task whether it trains alone or with the others
    full = [r for r in runs if not r.grids[0].startswith("new-task")]
    assert {r.config.dev_from_train for r in full} == {exp.defaults["dev_from_train"]}
    # k = 32: the new task's embedding alone, from the same-seed five-task run
    bases = {r.axes["seed"]: r for r in runs if r.grids[0] == "five"}
    for r in (r for r in runs if r.grids[0] == "new-task"):
        base = bases[r.axes["seed"]]
        assert r.config.shots == 32 and r.config.dev_from_train is None and r.depends == {base.key: base.fingerprint}
        assert r.config.method_options.endswith(f"base={base.out / 'best'}")
    assert {(r.config.shots, r.config.max_steps) for r in runs if r.grids[0].startswith("new-task")} == {(32, 40)}


def test_the_dry_run_lists_every_run(capsys):
    summary = run_experiment(CONFIG, dry_run=True)
    lines = capsys.readouterr().out.splitlines()
    assert summary["runs"] == len(expand(load_experiment(CONFIG))) == len(lines)
    new = [i for i, ln in enumerate(lines) if ln.split()[1].startswith("qqp_sample/hyperformer/shots-32/")]
    five = [i for i, ln in enumerate(lines) if ln.split()[1].startswith("rte+mrpc+cb+boolq+rotten_tomatoes/")]
    assert len(new) == len(five) == 3 and all("(after rte+mrpc+cb+boolq+rotten_tomatoes/hyperformer/seed" in lines[i]
                                              for i in new)
