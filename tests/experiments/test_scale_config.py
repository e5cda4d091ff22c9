"""experiments/scale.yaml (issue 20, item 3) expands into the runs it promises: both sizes, three
tasks, prompt tuning at 20 and 100, full and prefix tuning, 3 seeds, one manual run per task and
size; every run with the same steps, batch and evaluation rows; a learning rate per method and size."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from softprompt.experiments import expand, load_experiment

SCALE = Path(__file__).resolve().parents[2] / "experiments" / "scale.yaml"


def test_the_scale_experiment_expands_to_both_sizes_and_every_method():
    runs = expand(load_experiment(SCALE))
    assert len(runs) == 78 and len({r.key for r in runs}) == 78
    per = Counter((r.config.model, r.config.method) for r in runs)
    for model in ("smollm2-135m", "gemma-3-270m"):
        assert per[(model, "prompt-tuning")] == 3 * 2 * 3
        assert per[(model, "full-tuning")] == per[(model, "prefix-tuning")] == 3 * 3
        assert per[(model, "manual")] == 3
    assert {r.config.prompt_length for r in runs if r.config.method == "prompt-tuning"} == {20, 100}
    assert {r.config.task for r in runs} == {"rotten_tomatoes", "boolq", "rte"}
    assert {(r.config.max_steps, r.config.batch_size, r.config.eval_limit, r.config.test_limit, r.config.max_length)
            for r in runs} == {(40, 8, 100, 200, 256)}
    for task in ("boolq", "rte"):  # no labelled test split: the same held-out rows for every run
        assert {r.config.dev_from_train for r in runs if r.config.task == task} == {100}
    lrs = {(r.config.model, r.config.method): r.config.lr for r in runs if r.config.method != "manual"}
    assert lrs[("gemma-3-270m", "prompt-tuning")] != lrs[("smollm2-135m", "prompt-tuning")]
    assert all(f"model-{r.config.model}" in r.key.split("/") for r in runs)  # the model names each run


def test_the_learning_rate_sweep_sees_dev_rows_only_around_each_method_s_starting_rate():
    """experiments/scale_lr.yaml: scale.yaml's runs (same steps, batch, dev rows) without a final
    evaluation, one seed, each method and size at x0.3, x1 and x3 of the rate scale.yaml starts from."""
    sweep = expand(load_experiment(SCALE.with_name("scale_lr.yaml")))
    final = expand(load_experiment(SCALE))
    assert len(sweep) == 54 and {r.config.test_split for r in sweep} == {""} and {r.axes["seed"] for r in sweep} == {0}
    same = lambda c: (c.max_steps, c.batch_size, c.eval_every, c.eval_limit, c.max_length, c.dev_from_train, c.optimizer)  # noqa: E731
    settings = {(r.config.task, r.config.method): same(r.config) for r in final if r.config.method != "manual"}
    assert all(same(r.config) == settings[(r.config.task, r.config.method)] for r in sweep)
    started = {(r.config.model, r.config.method): r.config.lr for r in final if r.config.method != "manual"}
    swept: dict = {}
    for r in sweep:
        swept.setdefault((r.config.model, r.config.method), set()).add(r.config.lr)
    assert set(swept) == set(started)
    for key, lrs in swept.items():
        assert sorted(round(lr / started[key], 1) for lr in lrs) == [0.3, 1.0, 3.0], key
