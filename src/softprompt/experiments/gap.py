"""The gap between two methods across model sizes, for a report (``report: gap:``).

The seed paper's headline (Lester et al., 2021, Figure 1) is that prompt tuning closes the gap to
model tuning as the frozen model grows. A ``gap`` entry names the grids of the *upper* method
(model tuning) and of the *lower* one (prompt tuning, possibly at several lengths). For each model
(a run's ``config.model``; its size is ``results.json``'s ``parameters.model``), each task and
seed: gap = upper - lower, on the task's final metric (paired by seed: the same seed draws the
same rows). Per model and lower variant, the table gives each task's gap and the mean over tasks
(each seed's mean first, then mean ± std over seeds), and how the gap changed from the smallest
model to each larger one, paired by seed. The plot draws the mean gap in points (100 x the metric
difference) against the model's parameter count, beside an optional reference series such as the
paper's T5 curve (entered by hand from the paper's figure and labelled as such).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .config import Experiment, RunSpec
from .tables import fmt, mean_std, markdown_table, save_figure, task_values

# the axes that place a run in the gap's arithmetic rather than name a lower variant
_PAIRING_AXES = ("task", "seed", "model", "method")


def gap_section(exp: Experiment, specs: list[RunSpec], results: dict[str, dict[str, Any] | None],
                g: dict[str, Any], out: Path, index: int) -> list[str]:
    """The markdown lines (and ``gap-<index>.png``) of one ``report: gap:`` entry ``g``:
    ``{upper: [GRID, ...], lower: [GRID, ...], metric, title, reference: {label, points}}``."""
    labels = exp.report.get("labels", {})
    metric = g.get("metric")
    sizes: dict[str, int] = {}
    upper: dict[tuple[str, str, int], float] = {}  # (model, task, seed) -> value
    lower: dict[str, dict[tuple[str, str, int], float]] = defaultdict(dict)  # variant -> (model, task, seed) -> value
    lower_runs = [s for s in specs if set(s.grids) & set(g["lower"])]
    varied = [k for k in dict.fromkeys(k for s in lower_runs for k in s.axes)
              if k not in _PAIRING_AXES and len({str(s.axes.get(k)) for s in lower_runs}) > 1]
    for side in ("upper", "lower"):
        for s in specs:
            r = results.get(s.key)
            if r is None or not set(s.grids) & set(g[side]):
                continue
            model = s.config.model
            if (r.get("parameters") or {}).get("model"):
                sizes[model] = int(r["parameters"]["model"])
            for task, value in task_values(s, r, metric).items():
                if side == "upper":
                    upper[(model, task, s.axes["seed"])] = value
                else:
                    name = ", ".join([labels.get(s.axes["method"], s.axes["method"])]
                                     + [labels.get(str(s.axes[k]), str(s.axes[k])) for k in varied if k in s.axes])
                    lower[name][(model, task, s.axes["seed"])] = value
    title = g.get("title") or f"Gap: {', '.join(g['upper'])} minus {', '.join(g['lower'])}"
    lines = [f"## {title}", ""]
    models = sorted({m for m, _, _ in upper} & {m for v in lower.values() for m, _, _ in v},
                    key=lambda m: (sizes.get(m, 0), m))
    if not models:
        return lines + ["No model has finished runs of both sides yet.", ""]
    tasks = list(dict.fromkeys(t for _, t, _ in upper))
    gaps: dict[str, dict[str, dict[str, dict[int, float]]]] = {}  # variant -> model -> task -> seed -> gap
    for name, values in lower.items():
        gaps[name] = {m: {t: {seed: upper[(m, t, seed)] - v for (mm, tt, seed), v in values.items()
                              if mm == m and tt == t and (m, t, seed) in upper} for t in tasks} for m in models}

    def seed_means(per_task: dict[str, dict[int, float]]) -> dict[int, float]:
        """Each seed's mean gap over the tasks, for seeds with every task."""
        seeds = set.intersection(*(set(d) for d in per_task.values())) if per_task else set()
        return {seed: statistics.fmean(per_task[t][seed] for t in tasks) for seed in sorted(seeds)}

    upper_name = ", ".join(g["upper"])
    lines += [f"{metric or 'Primary metric'} of `{upper_name}` minus that of each lower variant, per model, paired by "
              "task and seed (positive: the upper method is ahead); **mean**: each seed's mean over the tasks, then "
              "mean ± std over seeds (number of seeds). **change**: the mean gap at that size minus at the smallest, "
              "paired by seed (negative: the gap narrows with size).", ""]
    header = ["lower", "model", "parameters"] + tasks + ["mean", "change"]
    rows, curves = [], {}
    for name, per_model in gaps.items():
        smallest = seed_means(per_model[models[0]])
        curves[name] = {}
        for m in models:
            means = seed_means(per_model[m])
            change = [means[s] - smallest[s] for s in means if s in smallest] if m != models[0] else []
            rows.append([name, m, f"{sizes[m] / 1e6:,.1f} M" if m in sizes else "–"]
                        + [fmt(list(per_model[m][t].values()), signed=True) for t in tasks]
                        + [fmt(list(means.values()), signed=True), fmt(change, signed=True) if change else "–"])
            if means and m in sizes:
                curves[name][sizes[m]] = [100 * v for v in means.values()]
    lines += [markdown_table(header, rows), ""]
    reference = g.get("reference")
    png = out / f"gap-{index}.png"
    _plot_gap(png, curves, reference, f"{metric or 'primary metric'}: {upper_name} minus each lower variant")
    lines += [f"![gap]({png.name})", ""]
    if reference:
        lines += [f"Reference series: {reference['label']} (points: "
                  + ", ".join(f"{x / 1e6:,.0f} M: {y:+.1f}" for x, y in reference["points"]) + ").", ""]
    return lines


def _plot_gap(path: Path, curves: dict[str, dict[int, list[float]]], reference: dict[str, Any] | None,
              title: str) -> None:
    """Gap (points) against parameters (log scale): each lower variant's mean ± std over seeds,
    and the reference series dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, points in curves.items():
        xs = sorted(points)
        ms = [mean_std(points[x]) for x in xs]
        ax.errorbar(xs, [m[0] for m in ms], yerr=[m[1] for m in ms], marker="o", capsize=3, label=name)
    if reference:
        xs, ys = zip(*sorted(reference["points"]))
        ax.plot(xs, ys, linestyle="--", marker="s", color="grey", label=reference["label"])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("model parameters")
    ax.set_ylabel("gap (points: 100 x metric difference)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
