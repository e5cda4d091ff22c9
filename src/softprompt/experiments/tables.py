"""Numbers and tables shared by reports (:mod:`.report`) and their sections (:mod:`.gap`): a
run's final metric read from its ``results.json``, mean ± std over seeds, markdown tables and
PNG files written atomically."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..methods.base import task_names
from .config import RunSpec


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """``(mean, sample std, n)``; std is 0 for a single value."""
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def fmt(values: list[float], signed: bool = False) -> str:
    """``0.812 ± 0.011 (3)`` (``signed``: ``+0.012 ± 0.030 (5)``, for differences), or ``–`` when
    there is nothing."""
    m, s, n = mean_std(values)
    return "–" if n == 0 else f"{m:{'+' if signed else ''}.3f} ± {s:.3f} ({n})"


def primary_metric(result: dict[str, Any]) -> tuple[str, float] | None:
    """``(name, value)`` of a run's primary metric on its final split; for a run without one (a
    dev-only run, ``test_split: ''``, e.g. a learning-rate sweep that leaves the final rows
    unseen) its best dev value, named ``dev <metric>``; None when neither is there."""
    test = result.get("test") or {}
    for name, value in test.items():
        if name not in ("n", "truncated", "invalid"):
            return name, float(value)
    if not test:
        for name, value in (result.get("dev") or {}).items():
            if name.startswith("best_") and name != "best_step" and isinstance(value, (int, float)):
                return f"dev {name[len('best_'):]}", float(value)
    return None


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG at ``path`` atomically (a reader never sees half a file) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def task_values(spec: RunSpec, result: dict[str, Any], metric: str | None) -> dict[str, float]:
    """Each task's final ``metric`` (None: the task's primary one, the first listed) in a run's
    results: a multi-task run's from its per-task results, a single task's from its own."""
    test = result.get("test") or {}
    names = task_names(spec.axes["task"]) or (spec.axes["task"],)
    if len(names) == 1:
        test = {names[0]: test}
    out = {}
    for name in names:
        got = test.get(name)
        if not isinstance(got, dict):
            continue
        primary = None if metric else primary_metric({"test": got})
        value = got.get(metric) if metric else primary[1] if primary else None
        if value is not None:
            out[name] = float(value)
    return out
