"""Which rows a run trains on, early-stops on and is finally evaluated on.

Three protocols, chosen by :class:`~softprompt.config.TrainConfig` options:

* **standard** (default): train on the train split (``--train-limit`` keeps its first N rows),
  early-stop on the validation split (``--eval-limit``), finally evaluate on ``--test-split``.
* **held-out dev** (``--dev-from-train N``): N training rows, sampled with ``--seed``, become the
  dev set and are removed from training. The validation split is then untouched by model
  selection, so it serves as the final evaluation for tasks that have no labelled test split
  (BoolQ, RTE, CB, ... in the SuperGLUE style).
* **few-shot** (``--shots K``, PPT's protocol): K training rows sampled per seed are the whole
  training set; unless ``--dev-from-train`` says otherwise, another K rows (disjoint) are the dev
  set; the final evaluation is on the full test split, or the full validation split where the
  task has no test split.

``--shots-per-class`` makes K count rows of each label (stratified: K of each label train, K more
of each are the dev set), the usual few-shot protocol of relation classification.
Otherwise sampling is uniform without replacement (not stratified, as in PPT); the same seed gives the
same rows on every machine and in every process.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from .errors import ConfigError
from .tasks.from_config import load_rows

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """The rows of one run and where its dev rows came from (``"validation"`` or ``"train"``)."""

    train: list[dict]
    dev: list[dict]
    dev_source: str


def run_data(task, cfg) -> RunData:
    """Load the train and dev rows of ``task`` as ``cfg``'s protocol says (see module docstring)."""
    train = load_rows(task, cfg, "train", cfg.train_limit)
    shots, held = cfg.shots, cfg.dev_from_train
    if not shots and not held:
        return RunData(train, load_rows(task, cfg, "validation", cfg.eval_limit), "validation")
    n_dev = held if held else shots
    need = (shots or 1) + n_dev
    if len(train) < need:
        raise ConfigError(f"{task.name}: {len(train)} training rows, but --shots {shots} and a dev set of {n_dev} "
                          f"need {need}; lower them (or raise --train-limit)")
    order = list(range(len(train)))
    random.Random(f"split:{cfg.seed}").shuffle(order)
    if shots and getattr(cfg, "shots_per_class", False):
        return _per_class(task, cfg, train, order, shots, held)
    dev_idx = sorted(order[:n_dev])
    rest = order[n_dev:]
    train_idx = sorted(rest[:shots]) if shots else sorted(rest)
    dev = [train[i] for i in dev_idx]
    if cfg.eval_limit:
        dev = dev[: cfg.eval_limit]
    return RunData([train[i] for i in train_idx], dev, "train")


def _per_class(task, cfg, train, order, shots, held) -> RunData:
    """``--shots K --shots-per-class``: K training rows of each label (and K dev rows of each, or
    ``held`` dev rows sampled from all labels), in the seed's shuffled ``order``. A label with fewer
    rows trains on what it has, up to K, and gives the dev set what is left (logged): SemEval's
    ``Entity-Destination(e2,e1)`` has one training row."""
    dev_idx = order[:held] if held else []
    by_label: dict[str, list[int]] = {}
    for i in order[len(dev_idx):]:
        by_label.setdefault(str(train[i].get("label")), []).append(i)
    per_dev = 0 if held else shots
    short = {label: len(idx) for label, idx in by_label.items() if len(idx) < shots + per_dev}
    if short:
        log.warning("%s: --shots %d per class needs %d rows of each label, but %s; those labels train (and are "
                    "checked on dev) with what they have", task.name, shots, shots + per_dev,
                    ", ".join(f"{k!r} has {v}" for k, v in sorted(short.items())))
    train_idx = sorted(i for idx in by_label.values() for i in idx[:shots])
    dev_idx = sorted(dev_idx or [i for idx in by_label.values() for i in idx[shots: shots + per_dev]])
    dev = [train[i] for i in dev_idx]
    if cfg.eval_limit:
        dev = dev[: cfg.eval_limit]
    return RunData([train[i] for i in train_idx], dev, "train")


def final_rows(task, cfg, data: RunData) -> tuple[str, list[dict]] | None:
    """``(split name, rows)`` of the final evaluation, or None when there is none.

    ``--test-split`` if the task has it; else, when the dev rows came from the train split, the
    validation split (never used for model selection then); else nothing, with a warning.
    """
    if not cfg.test_split:
        return None
    try:
        return cfg.test_split, load_rows(task, cfg, cfg.test_split, cfg.test_limit)
    except Exception as exc:  # a task without a test split still trains
        if data.dev_source == "train" and cfg.test_split != "validation":
            log.info("no %s split (%s): the final evaluation uses the validation split", cfg.test_split, exc)
            return "validation", load_rows(task, cfg, "validation", cfg.test_limit)
        log.warning("no %s split evaluated: %s (use --dev-from-train N to free the validation split for it)",
                    cfg.test_split, exc)
        return None
