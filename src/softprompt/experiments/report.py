"""``report.md`` and PNG plots from an experiment's stored results (nothing is recomputed).

Every number is a mean and a standard deviation over seeds (sample standard deviation; 0 with
one seed), with the number of seeds; the report lists the command of every run.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..methods.base import task_names
from .config import Experiment, RunSpec, command_line, expand
from .gap import gap_section
from .tables import fmt, markdown_table, mean_std, primary_metric, save_figure, task_values


def _load(spec: RunSpec) -> dict[str, Any] | None:
    path = spec.out / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def _label(spec: RunSpec, keys: tuple[str, ...]) -> str:
    return ", ".join(f"{spec.axes[k]}" for k in keys if k in spec.axes)


def _plot(path: Path, kind: str, series: dict[str, dict[Any, list[float]]], xlabel: str, ylabel: str, title: str) -> None:
    """A grouped bar chart (``kind='bar'``) or a line plot with error bars (``'line'``), saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    names = list(series)
    if kind == "line":
        for name in names:
            xs = sorted(series[name])
            ms = [mean_std(series[name][x]) for x in xs]
            ax.errorbar(xs, [m[0] for m in ms], yerr=[m[1] for m in ms], marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xticks(sorted({x for s in series.values() for x in s}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    else:
        groups = sorted({g for s in series.values() for g in s}, key=str)
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            ms = [mean_std(series[name].get(g, [])) for g in groups]
            xs = [j + i * width for j in range(len(groups))]
            ax.bar(xs, [m[0] if m[2] else 0 for m in ms], width, yerr=[m[1] if m[2] else 0 for m in ms],
                   capsize=3, label=name)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(groups))], [str(g) for g in groups])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def _grid_runs(specs: list[RunSpec], results: dict[str, dict[str, Any] | None], grid: str) -> list[tuple[RunSpec, dict[str, Any]]]:
    return [(s, results[s.key]) for s in specs
            if grid in s.grids and results[s.key] is not None and primary_metric(results[s.key]) is not None]


def write_report(exp: Experiment) -> Path:
    """Write ``exp.out/report.md`` (and ``exp.out/*.png``) from what is stored; returns its path."""
    specs = expand(exp)
    out = exp.out
    cmd = f"softprompt experiment {exp.path}" if exp.path else "softprompt experiment CONFIG.yaml"
    lines = [f"# Experiment `{exp.name}`", ""]
    if exp.description:
        lines += [exp.description.strip(), ""]
    results = {s.key: _load(s) for s in specs}  # each results.json read once
    done = [s for s in specs if results[s.key] is not None]
    seconds = sum(results[s.key].get("seconds", 0) for s in done)
    lines += [f"Made by `{cmd}` ({len(done)} of {len(specs)} runs finished, {seconds / 60:.1f} min of run time). "
              "Every cell is mean ± standard deviation over seeds (number of seeds). The metric is each task's "
              "primary metric on its final evaluation split (see each run's `results.json`); a run without one "
              "(`test_split: ''`) gives its best dev value, named `dev METRIC`.", ""]
    if exp.report.get("budget"):
        lines += _budget(exp, specs, results)
    for grid in exp.grids:
        runs = _grid_runs(specs, results, grid.name)
        if not runs:
            continue
        lines += _grid_section(exp, grid, runs, out)
        for t in exp.report.get("tables", []):
            if t["grid"] == grid.name:
                lines += _axis_table(exp, grid, runs, t)
        for c in exp.report.get("curves", []):
            if c["grid"] == grid.name:
                lines += _curve(exp, grid, runs, c, out)
    for t in exp.report.get("per_task", []):
        lines += _per_task_section(exp, specs, results, t)
    for i, g in enumerate(exp.report.get("gap", [])):
        lines += gap_section(exp, specs, results, g, out, i)
    lines += _ensemble_section(exp, out)
    lines += _transfer_section(exp, specs, out)
    lines += _inspect_section(exp, out)
    lines += ["## Runs", "", "Each run's command (the experiment runs the same `train` in-process):", ""]
    rows = []
    for s in specs:
        r = results[s.key]
        p = primary_metric(r) if r else None
        rows.append([f"`{s.key}`", f"{p[0]} {p[1]:.4f}" if p else "not run", str(r.get("test_split") or "dev") if r else "–",
                     f"{(r or {}).get('seconds', 0):.0f}", f"`{command_line(s.config)}`"])
    lines.append(markdown_table(["run", "result", "split", "s", "command"], rows))
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _grid_section(exp: Experiment, grid, runs, out: Path) -> list[str]:
    """A table (and a plot) of one grid: rows and columns chosen by which axes vary."""
    varied = [a for a in ("task", "method", "prompt_length", "init", *grid.vary)
              if len({s.axes.get(a) for s, _ in runs if a in s.axes}) > 1]
    metric = {primary_metric(r)[0] for _, r in runs}
    metric_name = metric.pop() if len(metric) == 1 else "primary metric"
    lines = [f"## Grid `{grid.name}`", ""]
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    by_seed: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    row_axis = "task" if "task" in varied or len(varied) < 2 else varied[0]
    col_axes = [a for a in varied if a != row_axis] or ["method"]
    labels = exp.report.get("labels", {})

    def shown(value: Any) -> str:
        return labels.get(str(value), str(value))

    for s, r in runs:
        row = shown(s.axes.get(row_axis))
        col = " / ".join(shown(s.axes.get(a, "–")) for a in col_axes)
        cells[(row, col)].append(primary_metric(r)[1])
        by_seed[(col, s.axes["seed"])][row] = primary_metric(r)[1]
    rows_ = sorted({k[0] for k in cells})
    cols = sorted({k[1] for k in cells}, key=_natural)
    lines.append(f"{metric_name} by {row_axis} (rows) and {' / '.join(col_axes)} (columns):")
    lines.append("")
    table = [[r] + [fmt(cells.get((r, c), [])) for c in cols] for r in rows_]
    if row_axis == "task" and len(rows_) > 1:  # each seed's average over the tasks, then mean ± std over seeds
        avg = []
        for c in cols:
            per_seed = [sum(v.values()) / len(v) for (col, _), v in sorted(by_seed.items()) if col == c and len(v) == len(rows_)]
            avg.append(fmt(per_seed))
        table.append(["**mean over tasks**"] + avg)
    lines.append(markdown_table([row_axis] + cols, table))
    lines.append("")
    zs = [r["zero_shot_test"][primary_metric(r)[0]] for _, r in runs if r.get("zero_shot_test")]
    if zs:
        lines += [f"Zero-shot (same template and verbalizer, no prompt) on the same rows: {fmt(zs[:1])} "
                  "(deterministic: one value).", ""]
    for cmp in exp.report.get("compare", []):
        if cmp["grid"] == grid.name:
            lines += _paired_section(cmp["column"], rows_, cols, by_seed, row_axis)
    png = out / f"{grid.name}.png"
    if col_axes == ["prompt_length"]:
        series = {r: {int(c): cells[(r, c)] for c in cols if (r, c) in cells} for r in rows_}
        _plot(png, "line", series, "prompt length", metric_name, f"{grid.name}: {metric_name} vs prompt length")
    else:
        series = {c: {r: cells[(r, c)] for r in rows_ if (r, c) in cells} for c in cols}
        _plot(png, "bar", series, row_axis, metric_name, f"{grid.name}: {metric_name}")
    lines += [f"![{grid.name}]({png.name})", ""]
    return lines


def _paired_section(against: str, rows_: list[str], cols: list[str], by_seed: dict[tuple[str, int], dict[str, float]],
                    row_axis: str) -> list[str]:
    """``against`` minus each other column, paired by row and seed (same seed = same sampled
    examples), with how often ``against`` was ahead; the mean over rows averages each seed over
    the rows first, counting only seeds where both columns finished every row."""
    lines = [f"`{against}` minus each other column, paired by {row_axis} and seed (positive: `{against}` is ahead):", ""]
    if against not in cols:
        return lines + [f"No finished runs of `{against}` yet.", ""]
    others = [c for c in cols if c != against]
    seeds = sorted({seed for (_, seed) in by_seed})
    diffs: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)  # (row, other) -> seed -> difference
    for c in others:
        for seed in seeds:
            a, b = by_seed.get((against, seed), {}), by_seed.get((c, seed), {})
            for row in set(a) & set(b):
                diffs[(row, c)][seed] = a[row] - b[row]
    table = [[row] + [fmt(list(diffs[(row, c)].values()), signed=True) for c in others] for row in rows_]
    wins_row = ["ahead in (pairs)"]
    if len(rows_) > 1:
        mean_row = ["**mean over " + row_axis + "s**"]
        for c in others:  # seeds where both columns finished every row, as in the table above
            per_seed = [statistics.fmean(diffs[(row, c)][seed] for row in rows_) for seed in seeds
                        if all(seed in diffs[(row, c)] for row in rows_)]
            mean_row.append(fmt(per_seed, signed=True))
        table.append(mean_row)
    for c in others:
        pairs = [v for (row, cc), d in diffs.items() if cc == c for v in d.values()]
        wins_row.append(f"{sum(v > 0 for v in pairs)} of {len(pairs)} (tied {sum(v == 0 for v in pairs)})")
    table.append(wins_row)
    return lines + [markdown_table([row_axis] + others, table), ""]


def _budget(exp: Experiment, specs: list[RunSpec], results: dict[str, dict[str, Any] | None]) -> list[str]:
    """Each grid's compute, from the stored results: training steps and batch size of the runs
    that trained, and the run time of all its finished runs (sum, and per run mean, min and max)."""
    lines = ["Compute budget (from the stored results):", ""]
    for grid in exp.grids:
        mine = [s for s in specs if grid.name in s.grids]
        done = [(s, results[s.key]) for s in mine if results[s.key] is not None]
        if not done:
            lines.append(f"- grid `{grid.name}`: 0 of {len(mine)} runs finished.")
            continue
        trained = [(s, r) for s, r in done if r.get("steps")]
        steps = sorted({int(r["steps"]) for _, r in trained})
        batch = sorted({s.config.batch_size for s, _ in trained})
        secs = [float(r.get("seconds", 0)) for _, r in done]
        what = (f"{', '.join(map(str, steps))} training steps of batch {', '.join(map(str, batch))}" if trained
                else "no training (scoring only)")
        lines.append(f"- grid `{grid.name}`: {len(done)} of {len(mine)} runs finished, {what}; run time "
                     f"{sum(secs) / 60:.1f} min in all, {statistics.fmean(secs):.0f} s per run "
                     f"({min(secs):.0f}–{max(secs):.0f} s).")
    return lines + [""]


def _per_task_section(exp: Experiment, specs: list[RunSpec], results: dict[str, dict[str, Any] | None],
                      t: dict[str, Any]) -> list[str]:
    """Methods (rows) x tasks (columns) over single- and multi-task runs of ``t['grids']``: each
    cell mean ± std over seeds; the mean over the row's tasks (per seed, then over seeds, from
    the seeds that have every task of the row); a task's own trained part and the run's total
    per task, from each run's ``parameters``."""
    labels = exp.report.get("labels", {})
    metric = t.get("metric")
    rows: dict[str, dict[str, Any]] = {}  # row name -> {"values": {task: {seed: v}}, "own": set, "share": set}
    tasks: list[str] = []
    for grid in t["grids"]:
        mine = [s for s in specs if grid in s.grids]
        for s in mine:
            r = results[s.key]
            if r is None:
                continue
            same = [o for o in mine if o.axes["method"] == s.axes["method"]]  # axes with one value stay out of the name
            extra = [str(v) for k, v in s.axes.items() if k not in ("task", "method", "seed")
                     and len({str(o.axes.get(k)) for o in same}) > 1]
            name = "/".join([grid, s.axes["method"], *extra])
            row = rows.setdefault(name, {"values": defaultdict(dict), "own": set(), "share": set()})
            got = task_values(s, r, metric)
            for task, value in got.items():
                row["values"][task][s.axes["seed"]] = value
                if task not in tasks:
                    tasks.append(task)
            counts = r.get("parameters") or {}
            if counts:
                row["own"].add(counts["per_task"])
                row["share"].add(counts["trained"] / max(1, len(task_names(s.axes["task"]))))
                row["model"] = counts["model"]
    if not rows:
        return []

    def size(numbers: set, model: int | None) -> str:
        if not numbers:
            return "–"
        shown = " / ".join(f"{n:,.0f}" for n in sorted(numbers))
        if not model or not max(numbers):
            return shown
        percent = 100 * max(numbers) / model  # two significant digits, never in e-notation: 0.000048, 0.29, 3.37
        return f"{shown} ({percent:.{max(2, 1 - math.floor(math.log10(percent)))}f} %)"

    table = []
    for name, row in rows.items():
        values, mine = row["values"], [task for task in tasks if task in row["values"]]
        seeds = sorted({seed for per in values.values() for seed in per})
        means = [statistics.fmean(values[task][seed] for task in mine) for seed in seeds
                 if all(seed in values[task] for task in mine)]
        table.append([labels.get(name, name)] + [fmt(list(values[task].values())) if task in values else "–"
                                                 for task in tasks]
                     + [f"{fmt(means)} of {len(mine)}", size(row["own"], row.get("model")),
                        size(row["share"], row.get("model"))])
    title = t.get("title") or f"Tasks of grids {', '.join(t['grids'])}"
    return [f"## {title}", "",
            f"{metric or 'primary metric'} on each task's final split, mean ± std over seeds (number of seeds); a "
            "multi-task run gives each of its tasks a value. **mean**: each seed's mean over the row's tasks, then mean "
            "± std over seeds (seeds with every task of the row), and over how many tasks. **own per task**: the "
            "numbers a task needs of its own (all of a method every task shares); **trained per task**: all the run "
            "trained divided by its tasks; in brackets, % of the model's parameters.", "",
            markdown_table(["method"] + tasks + ["mean", "own per task", "trained per task"], table), ""]


def _ordered(values) -> list:
    """Distinct values in first-seen order (the order of the experiment file)."""
    return list(dict.fromkeys(values))


def _tasks(grid, runs) -> list[str]:
    have = {s.axes["task"] for s, _ in runs}
    return [t for t in grid.tasks if t in have]


def _axis_table(exp: Experiment, grid, runs, t: dict[str, Any]) -> list[str]:
    """One row per value of ``t['rows']``, one column per task: mean ± std over every run of that
    row and task (the axes of ``t['over']``), and the spread over ``t['spread']`` (the standard
    deviation of that axis's per-value means), then the breakdown by that axis."""
    labels = exp.report.get("labels", {})
    shown = lambda v: labels.get(str(v), str(v))  # noqa: E731
    rows_axis, spread = t["rows"], t.get("spread")
    over = t.get("over") or [a for a in (spread, "seed") if a]
    tasks = _tasks(grid, runs)
    metric = _metric_name(runs)
    values: dict[tuple, list[float]] = defaultdict(list)  # (row, task, spread value) -> metric values
    for s, r in runs:
        values[(s.axes.get(rows_axis), s.axes["task"], s.axes.get(spread) if spread else None)].append(primary_metric(r)[1])
    row_values = _ordered(s.axes.get(rows_axis) for s, _ in runs)
    spread_values = _ordered(s.axes.get(spread) for s, _ in runs) if spread else [None]
    header, table = [rows_axis], []
    for task in tasks:
        header += [task] + ([f"{task}: spread over {spread}"] if spread else [])
    for rv in row_values:
        row = [shown(rv)]
        for task in tasks:
            pooled = [v for sv in spread_values for v in values.get((rv, task, sv), [])]
            row.append(fmt(pooled))
            if spread:
                means = [statistics.fmean(values[(rv, task, sv)]) for sv in spread_values if values.get((rv, task, sv))]
                row.append(f"{statistics.stdev(means):.3f} ({len(means)})" if len(means) > 1 else "–")
        table.append(row)
    lines = [f"{metric} of grid `{grid.name}` by {rows_axis} (rows) and task (columns), mean ± std over "
             f"{', '.join(over)} (number of runs)"
             + (f"; the spread is the standard deviation of the per-{spread} means (number of {spread} values)" if spread else "")
             + ":", "", markdown_table(header, table), ""]
    if spread:
        header = [rows_axis] + [f"{task} {shown(sv)}" for task in tasks for sv in spread_values]
        table = [[shown(rv)] + [fmt(values.get((rv, task, sv), [])) for task in tasks for sv in spread_values]
                 for rv in row_values]
        lines += [f"By {spread} (mean ± std over the other axes):", "", markdown_table(header, table), ""]
    return lines


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _curve(exp: Experiment, grid, runs, c: dict[str, Any], out: Path) -> list[str]:
    """Per task: the metric against axis ``c['x']``, one series per value of ``c['series']``, mean ±
    std over the other axes; a table and a PNG (``<grid>-<x>-<task>.png``)."""
    labels = exp.report.get("labels", {})
    shown = lambda v: labels.get(str(v), str(v))  # noqa: E731
    x_axis, s_axis = c["x"], c["series"]
    metric = _metric_name(runs)
    xs = _ordered(s.axes.get(x_axis) for s, _ in runs)
    numeric = all(_number(x) is not None for x in xs)
    if numeric:
        xs = sorted(xs, key=_number)
    series_values = _ordered(s.axes.get(s_axis) for s, _ in runs)
    lines = []
    for task in _tasks(grid, runs):
        values: dict[tuple, list[float]] = defaultdict(list)
        for s, r in runs:
            if s.axes["task"] == task:
                values[(s.axes.get(s_axis), s.axes.get(x_axis))].append(primary_metric(r)[1])
        table = [[shown(sv)] + [fmt(values.get((sv, x), [])) for x in xs] for sv in series_values]
        lines += [f"{metric} of grid `{grid.name}` on {task} against {x_axis} (columns), one row per {s_axis}, "
                  "mean ± std over the other axes (number of runs):", "",
                  markdown_table([f"{s_axis} \\ {x_axis}"] + [shown(x) for x in xs], table), ""]
        png = out / f"{grid.name}-{x_axis}-{task}.png"
        if numeric:
            series = {shown(sv): {_number(x): values[(sv, x)] for x in xs if values.get((sv, x))} for sv in series_values}
            _plot(png, "line", series, x_axis, metric, f"{grid.name}, {task}: {metric} vs {x_axis}")
        else:
            series = {shown(sv): {shown(x): values[(sv, x)] for x in xs if values.get((sv, x))} for sv in series_values}
            _plot(png, "bar", series, x_axis, metric, f"{grid.name}, {task}: {metric}")
        lines += [f"![{grid.name} {task}]({png.name})", ""]
    return lines


def _metric_name(runs) -> str:
    metric = {primary_metric(r)[0] for _, r in runs}
    return metric.pop() if len(metric) == 1 else "primary metric"


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in text.replace("/", " ").split()]


def _analyses(out: Path, kind: str) -> list[dict[str, Any]]:
    folder = out / "analyses" / kind
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def _ensemble_section(exp: Experiment, out: Path) -> list[str]:
    found = _analyses(out, "ensemble")
    if not found:
        return []
    lines = ["## Prompt ensembles", "",
             "N prompts trained with different seeds, scored together in one batch on the frozen model, "
             "majority vote (ties to the higher mean probability).", ""]
    rows, series = [], {"mean single": {}, "best single": {}, "ensemble": {}}
    for e in found:
        name = e["members"][0].rsplit("/", 1)[0]
        singles = [m[e["metric"]] for m in e["member_metrics"].values()]
        rows.append([f"`{name}`", str(len(singles)), e["metric"], fmt(singles), f"{max(singles):.3f}",
                     f"{e['ensemble'][e['metric']]:.3f}", f"{e['all_agree']:.2f}", f"{e['split']} ({e['n']})"])
        series["mean single"][name] = singles
        series["best single"][name] = [max(singles)]
        series["ensemble"][name] = [e["ensemble"][e["metric"]]]
    lines.append(markdown_table(["prompts", "N", "metric", "single (mean ± std)", "best single", "ensemble",
                         "all agree", "split (rows)"], rows))
    _plot(out / "ensemble.png", "bar", series, "prompts", "metric", "ensemble vs single prompts")
    return lines + ["", "![ensemble](ensemble.png)", ""]


def _transfer_section(exp: Experiment, specs: list[RunSpec], out: Path) -> list[str]:
    found = _analyses(out, "transfer")
    if not found:
        return []
    lines = ["## Domain transfer", "",
             "Trained on the source task, evaluated without further training on the target task's final split "
             "(its own template and verbalizer). In-domain is the source task's own final evaluation.", ""]
    groups: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    zero = {}
    for t in found:
        m = t["metric"]
        if t["source"] is None:
            zero[t["target"]] = t["target_metrics"][m]
            continue
        g = groups[(t["source_task"], t["target"], t["method"])]
        g["target"].append(t["target_metrics"][m])
        if t.get("in_domain"):
            g["in"].append(primary_metric({"test": t["in_domain"]})[1])
    rows = []
    for (src, tgt, method), g in sorted(groups.items()):
        rows.append([src, tgt, method, fmt(g["in"]), fmt(g["target"]),
                     f"{zero[tgt]:.3f}" if tgt in zero else "–"])
    lines.append(markdown_table(["source", "target", "method", "in-domain", "target (transfer)", "target zero-shot"], rows))
    return lines + [""]


def _token(text: str) -> str:
    """A vocabulary token for a Markdown table: spaces shown as ``␣``, control characters escaped."""
    shown = repr(text)[1:-1].replace(" ", "␣").replace("|", "\\|").replace("`", "'")
    return f"`{shown}`" if shown else "(empty)"


def _inspect_section(exp: Experiment, out: Path) -> list[str]:
    found = _analyses(out, "inspect")
    if not found:
        return []
    kept = [all(x["kept"]) for x in found]
    lines = ["## Reading the prompts", "",
             f"Class-label-initialised prompts whose label positions still have their label word among the "
             f"{found[0]['k']} nearest vocabulary tokens (cosine) after training: **{sum(kept)} of {len(kept)}** "
             "(Lester et al. observed that they keep them).", ""]
    rows = []
    for x in found:
        for pos in x["neighbours"][: len(x["labels"]) + 1]:
            rows.append([f"`{x['run']}`", str(pos["position"]),
                         ", ".join(_token(t) for t in pos["tokens"]),
                         ("label " + x["labels"][pos["position"]] + (" kept" if x["kept"][pos["position"]] else " lost"))
                         if pos["position"] < len(x["labels"]) else ""])
    lines.append(markdown_table(["prompt", "position", "nearest tokens", "label word"], rows))
    return lines + [""]
