"""Multi-task runs: several tasks trained together, one task per batch (docs/multitask.md).

``softprompt train --task rte,mrpc,cb`` builds each task from its own defaults (template,
verbalizer, metrics: :func:`task_runs`) and draws, at every step, which task the batch comes
from by temperature sampling (:class:`TaskSampler`): ``p_t ∝ N_t^(1/T)``, ``N_t`` the task's
training rows, ``T = 10`` by default (Karimi Mahabadi et al., ACL 2021, after Raffel et al.;
the authors' code, rabeehk/hyperformer, also draws one task per batch), at random or, for short
runs, systematically (``--task-sampling``). The task of step ``s`` depends on the seed and ``s``
alone, and the ``n``-th batch of a task on the seed, the task and
``n`` alone, so a resumed run (which saves each task's count, ``TrainState.task_batches``)
replays the same batches (:func:`sampled_batches`).

Dev metrics are each task's primary metric and their mean, which picks the best checkpoint
(:func:`evaluate_runs`); the final split is evaluated per task, with the mean. What a method
gives each task is the method's choice (:class:`~softprompt.methods.base.PerTaskMethod`); the
trainer calls its ``use_task`` before each batch and evaluation.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from .batching import estimate_lengths, training_batches
from .errors import ConfigError
from .methods.base import task_names
from .splits import RunData, run_data
from .tasks.from_config import check_files, task_from_config

MEAN = "mean"
"""The name of the mean over tasks of each task's primary metric (a multi-task run's primary metric)."""


@dataclass
class TaskRun:
    """One task of a run: the task, its rows (:class:`~softprompt.splits.RunData`), the options
    it was built from (``cfg`` with ``task`` set to its name) and its rows' estimated lengths."""

    task: Any
    data: RunData
    cfg: Any
    lengths: list[int]


_ONE_FORMAT = ("template", "label_words", "label_words_file", "train_file", "validation_file", "test_file")


def task_runs(cfg) -> list[TaskRun]:
    """Every task ``cfg.task`` names (comma-separated), each built from its own defaults and read
    as ``cfg``'s data options say, checked before any model is loaded. Raises
    :class:`ConfigError` for options that describe one task's format or files (``--template``,
    ``--label-words``, ``--train-file``, ...), a knowledgeable verbalizer, or a task whose
    template or verbalizer learns vectors of its own, with several tasks."""
    names = task_names(cfg.task)
    if len(names) > 1:
        given = [f"--{name.replace('_', '-')}" for name in _ONE_FORMAT if getattr(cfg, name, None)]
        if cfg.verbalizer == "knowledgeable":
            given.append("--verbalizer knowledgeable")
        if given:
            raise ConfigError(f"{', '.join(given)} describe one task, but --task names {len(names)} ({cfg.task}): "
                              "a multi-task run takes each task's own template and verbalizer; train one task to "
                              "change them, or register your own task (docs/multitask.md)")
    runs = []
    for name in names or (cfg.task,):
        one = dataclasses.replace(cfg, task=name)
        task = task_from_config(one)
        if len(names) > 1 and (task.template.virtual_tokens or list(task.verbalizer.parameters())):
            raise ConfigError(f"task {name!r} learns vectors in its template or verbalizer, which a multi-task run "
                              "does not share between tasks: train it alone")
        data = run_data(task, one)
        check_files(task, one, read=("train", "validation") if data.dev_source == "validation" else ("train",))
        runs.append(TaskRun(task, data, one, estimate_lengths(data.train, task.template.fields)))
    return runs


SAMPLINGS = ("random", "systematic")
"""How :class:`TaskSampler` turns the tasks' probabilities into each step's task."""


class TaskSampler:
    """Which task each step's batch comes from: ``p_t ∝ N_t^(1/T)`` (``sizes``: ``N_t``, each
    task's training rows; ``temperature``: ``T``; T = 1 samples in proportion to size, a large T
    evenly).

    ``sampling`` says how a step's task follows from ``p``:

    * ``random`` (the paper's): drawn at random, from ``seed`` and the step alone;
    * ``systematic``: the task whose count of steps so far lags its share most, ``p_t * (step +
      1) - count_t`` the largest, ties to the earlier task (smooth weighted round-robin; the seed
      is not used). Each task's count after ``n`` steps stays within 1 of ``p_t * n``, so a short
      run trains every task in its proportion, where random draws may leave one out (T = 10,
      seed 0: the first 6 steps of ``rte,cb`` all draw RTE).

    Either way the task of a step depends on the step alone (the systematic order is replayed
    from step 0 and kept), so a resumed run draws what an uninterrupted one does. Raises
    :class:`ConfigError` for ``T <= 0``, a task without rows or an unknown ``sampling``."""

    def __init__(self, sizes: Sequence[int], temperature: float, seed: int, sampling: str = "random"):
        if not temperature > 0:
            raise ConfigError(f"--task-temperature must be > 0, got {temperature!r} (1: by size, 10: the paper's)")
        if not sizes or min(sizes) < 1:
            raise ConfigError(f"every task of a multi-task run needs training rows; sizes {list(sizes)}")
        if sampling not in SAMPLINGS:
            raise ConfigError(f"--task-sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        weights = [n ** (1.0 / temperature) for n in sizes]
        self.probabilities = [w / sum(weights) for w in weights]
        self.seed = seed
        self.sampling = sampling
        self._order: list[int] = []  # systematic: the task of each step so far
        self._counts = [0] * len(sizes)

    def task_at(self, step: int) -> int:
        """Index of the task of step ``step`` (0-based)."""
        if self.sampling == "random":
            return random.Random(f"task:{self.seed}:{step}").choices(range(len(self.probabilities)),
                                                                     self.probabilities)[0]
        while len(self._order) <= step:
            n = len(self._order) + 1
            lag = [p * n - c for p, c in zip(self.probabilities, self._counts)]
            ti = lag.index(max(lag))  # the first of equal lags
            self._counts[ti] += 1
            self._order.append(ti)
        return self._order[step]


def sampled_batches(state, runs: Sequence[TaskRun], sampler: TaskSampler, batch_size: int, seed: int,
                    min_rows: int = 1) -> Iterator[tuple[int, list[int]]]:
    """``(task index, row indices)`` of each step from ``state.step`` on, endlessly: the task by
    ``sampler``, then that task's next batch, counted in ``state.task_batches[name]`` (its ``n``-th
    batch is batch ``n mod B`` of epoch ``n div B`` of its own shuffled, length-bucketed order,
    :func:`~softprompt.batching.training_batches`, ``B`` batches an epoch). A batch of fewer than
    ``min_rows`` rows (a tail too small for every process) is passed over."""
    per_epoch = [len(training_batches(r.lengths, batch_size, _task_seed(seed, i), 0)) for i, r in enumerate(runs)]
    while True:
        ti = sampler.task_at(state.step)
        name = runs[ti].task.name
        while True:
            n = state.task_batches.get(name, 0)
            state.task_batches[name] = n + 1
            batch = training_batches(runs[ti].lengths, batch_size, _task_seed(seed, ti), n // per_epoch[ti])[n % per_epoch[ti]]
            if len(batch) >= min_rows:
                break
        yield ti, batch


def _task_seed(seed: int, index: int) -> int:
    """The data-order seed of the ``index``-th task of a run of seed ``seed``."""
    return seed * 1_000 + index


def evaluate_runs(runs: Sequence[TaskRun], method, evaluate_one, split: str = "dev") -> tuple[dict[str, Any], float]:
    """Each task's metrics and their mean: ``({MEAN: mean, name: summary, ...}, mean)``, the mean
    taken over each task's primary metric. ``evaluate_one(run) -> EvalResult | None`` evaluates
    one task (``method`` answering for it, :meth:`use_task`); a task it returns None for (no
    rows of that split) is left out of the mean and named in ``mean_left_out``. ``split`` names what is evaluated, for the error when no task has rows."""
    out: dict[str, Any] = {}
    values = []
    for run in runs:
        method.use_task(run.task.name)
        result = evaluate_one(run)
        if result is None:
            continue
        out[run.task.name] = result.summary()
        values.append(result.metrics[run.task.primary_metric()])
    if not values:
        raise ConfigError(f"no task of the run has {split} rows")
    mean = sum(values) / len(values)
    left_out = [r.task.name for r in runs if r.task.name not in out]
    return {MEAN: mean, **({"mean_left_out": left_out} if left_out else {}), **out}, mean
