"""Metrics over predicted and gold label strings, written out by hand.

Each metric is a function ``(preds, golds, labels, positive_label) -> float`` in
``METRICS``, chosen by name. F1 follows scikit-learn's ``f1_score`` with ``zero_division=0``;
macro-F1 averages over the classes that are gold or predicted at least once (scikit-learn's
default label set, as SuperGLUE scores CB), so a class absent from a small evaluation sample
(``--limit``) and never predicted does not count as an F1 of 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

from softprompt.errors import ConfigError, DataError
from softprompt.tasks.semeval import semeval_micro_f1, semeval_official_f1

MetricFn = Callable[[Sequence[str], Sequence[str], Sequence[str], "str | None"], float]


def accuracy(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str], positive_label: str | None) -> float:
    """Share of predictions equal to the gold label."""
    return sum(p == g for p, g in zip(preds, golds)) / len(golds)


def f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str], positive_label: str | None) -> float:
    """Binary F1 of ``positive_label``."""
    if positive_label is None:
        raise ConfigError("the f1 metric needs positive_label (the class whose F1 is reported)")
    return _class_f1(preds, golds, positive_label)


def macro_f1(preds: Sequence[str], golds: Sequence[str], labels: Sequence[str], positive_label: str | None) -> float:
    """Unweighted mean of the per-class F1 over the ``labels`` that are gold or predicted at least
    once (a class with neither has no defined F1; a label outside ``labels`` still counts)."""
    if not labels:
        raise ConfigError("macro_f1 needs the list of labels to average over")
    seen = set(golds) | set(preds)
    present = [label for label in labels if label in seen] + sorted(seen - set(labels), key=str)
    return sum(_class_f1(preds, golds, label) for label in present) / len(present)


METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1}
# Relation classification (issue 17): SemEval-2010 Task 8's official score and micro-F1 without Other.
METRICS.update(semeval_f1=semeval_official_f1, micro_f1_no_other=semeval_micro_f1)


def compute_metrics(
    names: Sequence[str],
    preds: Sequence[str],
    golds: Sequence[str],
    labels: Sequence[str],
    positive_label: str | None = None,
) -> dict[str, float]:
    """``{name: value}`` for each metric in ``names``; every value lies in [0, 1]."""
    if isinstance(names, str):
        names = [names]
    check_metric_names(names)
    if len(preds) != len(golds):
        raise DataError(f"got {len(preds)} predictions for {len(golds)} gold labels; they must pair up")
    if not golds:
        raise DataError("no examples to score: the evaluation set is empty")
    return {name: METRICS[name](preds, golds, labels, positive_label) for name in names}


def check_metric_names(names: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for a name not in ``METRICS``."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known: {', '.join(METRICS)}")


def majority_baseline(golds: Sequence[str]) -> float:
    """Accuracy of always predicting the most common gold label."""
    if not golds:
        raise DataError("no gold labels: the majority baseline of an empty set is undefined")
    return Counter(golds).most_common(1)[0][1] / len(golds)


def _class_f1(preds: Sequence[str], golds: Sequence[str], label: str) -> float:
    tp = sum(p == label and g == label for p, g in zip(preds, golds))
    fp = sum(p == label and g != label for p, g in zip(preds, golds))
    fn = sum(p != label and g == label for p, g in zip(preds, golds))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
