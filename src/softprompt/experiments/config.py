"""The experiment file and its expansion into runs.

An experiment YAML holds::

    name: quick
    out: docs/results/quick          # runs/, analyses/, report.md and plots go here
    defaults: {max_steps: 50, ...}   # TrainConfig options of every run
    tasks:   {rotten_tomatoes: {test_limit: 300}, ...}     # per-task options
    methods: {full-tuning: {optimizer: adam, lr: 1e-5}, ...} # per-method options
    grids:                           # each a cross product; runs shared by grids run once
      - {name: main, tasks: [...], methods: [...], prompt_length: [20], init: [class-labels], seeds: [0, 1, 2]}
      - name: kpt                    # ``vary``: more axes, each a list of one option's values or named bundles
        tasks: [ag_news]
        methods: [manual]
        vary:
          shots: [1, 5]                                   # option shots = 1, then 5
          verbalizer: {manual: {label_words: "..."}, kpt: {label_words_file: ..., calibrate: true}}
          template: {per_task: {ag_news: {t0: "{title} {text}\\nIt is about", t1: ...}}}  # per task
      - {name: joint, tasks: ["rte,cb"], methods: [hyperformer]}   # one multi-task run (folder rte+cb)
      - name: few                    # ``base``: each run starts from the same-seed run of an earlier grid
        tasks: [mrpc]                  # (passed as --method-options base=RUN/best; it runs first)
        methods: [hyperformer]
        base: {grid: joint, method: hyperformer}
    ensembles: [{grid: main, task: rotten_tomatoes, method: prompt-tuning}]
    transfer:  [{grid: main, train: qqp_sample, eval: [mrpc], methods: [prompt-tuning, full-tuning]}]
    inspect:   {grid: main, k: 5}

Options are applied in that order (defaults, task, method, grid ``options``, then the grid's
axes, ``vary`` last). Axes a method does not read (``prompt_length`` for full tuning) collapse, and a method
that draws nothing at random (the manual prompt) runs with one seed, so no run is repeated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig, build, field_default, load_yaml
from ..errors import ConfigError, with_suggestions
from ..methods import METHODS, get_method, with_method_defaults
from ..methods.base import task_names

# Options that say where/how a run is shown, not what it computes.
_VOLATILE = {"out", "resume", "overwrite", "progress"}
_TOP_KEYS = {"name", "out", "description", "defaults", "tasks", "methods", "grids", "ensembles", "transfer",
             "inspect", "report"}


@dataclass
class Grid:
    """One cross product of tasks x methods x prompt lengths x initialisers x seeds."""

    name: str
    tasks: list[str]
    methods: list[str]
    prompt_length: list[int] | None = None
    init: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    options: dict[str, Any] = field(default_factory=dict)
    # each run starts from the same-seed run of another grid: {grid: G, task: T, method: M} (task, method optional)
    base: dict[str, str] | None = None
    # axis -> task (or None: every task) -> [(value name, options it sets)], in file order
    vary: dict[str, dict[str | None, list[tuple[str, dict[str, Any]]]]] = field(default_factory=dict)

    def axis_values(self, axis: str, task: str) -> list[tuple[str, dict[str, Any]]]:
        """The named values of a ``vary`` axis for one task."""
        per = self.vary[axis]
        return per[task] if task in per else per[None]


@dataclass
class Experiment:
    """A parsed experiment file."""

    name: str
    out: Path
    path: Path | None
    defaults: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    methods: dict[str, dict[str, Any]]
    grids: list[Grid]
    ensembles: list[dict[str, Any]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    inspect: dict[str, Any] | None = None
    description: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # labels, compare, tables, curves, budget, per_task: see _report_options

    def task_options(self, task: str) -> dict[str, Any]:
        """The per-task options of ``task``. A multi-task entry (``rte,mrpc,cb``) applies one set of
        options to every task of its run, so its tasks' own entries must agree (the same options,
        or none for each), as the single-task runs of the same tasks then read the same rows; the
        entry's own key (``"rte,mrpc,cb": {...}``) adds to them. :class:`ConfigError` otherwise."""
        names = task_names(task)
        if len(names) < 2:
            return dict(self.tasks.get(task) or {})
        own = {n: dict(self.tasks.get(n) or {}) for n in names}
        if any(o != own[names[0]] for o in own.values()):
            differ = {n: o for n, o in own.items() if o}
            raise ConfigError(f"task {task!r}: a multi-task run applies one set of options to all its tasks, but the "
                              f"per-task options of its tasks differ ({differ}); give them every task alike (or move "
                              f"them to defaults), or set the run's own under tasks: {{'{task}': {{...}}}}")
        return {**own[names[0]], **(self.tasks.get(task) or {})}


@dataclass
class RunSpec:
    """One run: its key (also its folder under ``out/runs``), the grids that asked for it, its config."""

    key: str
    grids: list[str]
    config: TrainConfig
    axes: dict[str, Any]
    depends: dict[str, str] = field(default_factory=dict)  # runs that must finish first: key -> their fingerprint

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def fingerprint(self) -> str:
        return run_fingerprint(self.config, self.depends)


# An option left at its default is left out of the hash, so that a run stored before an option
# existed still matches the same run now (and a changed default does change the hash).
_DEFAULTS = {f.name: field_default(f) for f in dataclasses.fields(TrainConfig)}


def config_fingerprint(cfg: TrainConfig | dict[str, Any]) -> str:
    """A hash of everything in a run's config that changes its result."""
    values = dataclasses.asdict(cfg) if not isinstance(cfg, dict) else cfg
    stable = {k: v for k, v in sorted(values.items())
              if k not in _VOLATILE and not (k in _DEFAULTS and v == _DEFAULTS[k])}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_fingerprint(cfg: TrainConfig | dict[str, Any], depends: dict[str, str] | None = None) -> str:
    """:func:`config_fingerprint` of a run, with the fingerprints of the runs it starts from
    (``depends``: key -> fingerprint), so that a run whose base run changed is redone too."""
    own = config_fingerprint(cfg)
    if not depends:
        return own
    return hashlib.sha256(json.dumps([own, sorted(depends.items())]).encode()).hexdigest()[:12]


def _as_list(value: Any, name: str, where: str) -> list:
    if value is None:
        return []
    if isinstance(value, (str, int, float)):
        return [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {name} must be a list, got {value!r}")
    return value


def load_experiment(path: str | Path, out: str | Path | None = None) -> Experiment:
    """Read and check an experiment YAML (``out`` overrides its ``out``)."""
    path = Path(path)
    raw = load_yaml(path)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {with_suggestions(unknown, _TOP_KEYS)}; valid: {sorted(_TOP_KEYS)}")
    if not raw.get("grids"):
        raise ConfigError(f"{path}: no grids; add e.g. grids: [{{name: main, tasks: [rotten_tomatoes], methods: [prompt-tuning]}}]")
    grids = []
    for i, g in enumerate(raw["grids"]):
        where = f"{path}: grids[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{where} must be a mapping")
        g = {str(k).replace("-", "_"): v for k, v in g.items()}
        grid_keys = {f.name for f in dataclasses.fields(Grid)}
        extra = sorted(set(g) - grid_keys)
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {with_suggestions(extra, grid_keys)}; "
                              f"put run options under 'options:'")
        name = str(g.get("name") or f"grid{i}")
        tasks, methods = _as_list(g.get("tasks"), "tasks", where), _as_list(g.get("methods"), "methods", where)
        if not tasks or not methods:
            raise ConfigError(f"{where} ({name}) needs tasks and methods")
        grids.append(Grid(name=name, tasks=[str(t) for t in tasks], methods=[str(m) for m in methods],
                          prompt_length=[int(x) for x in _as_list(g.get("prompt_length"), "prompt_length", where)] or None,
                          init=[str(x) for x in _as_list(g.get("init"), "init", where)] or None,
                          seeds=[int(x) for x in _as_list(g.get("seeds", [0]), "seeds", where)] or [0],
                          options=_norm(g.get("options") or {}, f"{where} ({name}).options"),
                          base=_base(g.get("base"), f"{where} ({name})", [x.name for x in grids]),
                          vary=_vary(g.get("vary"), f"{where} ({name})", [str(t) for t in tasks])))
    if len({g.name for g in grids}) != len(grids):
        raise ConfigError(f"{path}: grid names must be unique, got {[g.name for g in grids]}")
    default_out = Path("experiments") / "results" / str(raw.get("name") or path.stem)
    inspect = raw.get("inspect")
    exp = Experiment(
        name=str(raw.get("name") or path.stem), out=Path(out or raw.get("out") or default_out), path=path,
        defaults=_norm(raw.get("defaults") or {}, f"{path}: defaults"),
        tasks={str(k): _norm(v or {}, f"{path}: tasks.{k}") for k, v in (raw.get("tasks") or {}).items()},
        methods={str(k): _norm(v or {}, f"{path}: methods.{k}") for k, v in (raw.get("methods") or {}).items()},
        grids=grids, ensembles=list(raw.get("ensembles") or []), transfer=list(raw.get("transfer") or []),
        inspect=({} if inspect is True else dict(inspect)) if inspect else None,
        description=str(raw.get("description") or ""),
        report=_report_options(raw.get("report"), f"{path}: report", grids),
    )
    expand(exp)  # every run's config is checked now, before hours of training
    return exp


_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
_FIXED_AXES = {"task", "method", "prompt_length", "init", "seed"}


def _vary(raw: Any, where: str, tasks: list[str]) -> dict[str, dict[str | None, list[tuple[str, dict[str, Any]]]]]:
    """Parse a grid's ``vary:``. Each axis is one of

    * a list of values of the option of the axis's name (``shots: [1, 5, 10]``, value names ``1``, ...);
    * a mapping value name -> a bundle of options (``verbalizer: {manual: {label_words: ...}, ...}``)
      or -> one value of the option of the axis's name (``template: {t0: "...", t1: "..."}``);
    * ``{per_task: {TASK: <a list or mapping as above>, ...}}``: each task of the grid its own values.

    Every option is checked against ``softprompt train``'s now, naming grid, axis and value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: vary must map an axis name to its values, got {raw!r}")
    out: dict[str, dict[str | None, list[tuple[str, dict[str, Any]]]]] = {}
    for axis, spec in raw.items():
        axis = str(axis).replace("-", "_")
        at = f"{where}: vary.{axis}"
        if axis in _FIXED_AXES:
            raise ConfigError(f"{at}: {axis} is a grid axis already; give it as the grid's {axis}: [...]")
        if isinstance(spec, dict) and set(spec) == {"per_task"}:
            per = spec["per_task"]
            if not isinstance(per, dict):
                raise ConfigError(f"{at}.per_task must map each task to its values, got {per!r}")
            missing, extra = sorted(set(tasks) - set(map(str, per))), sorted(set(map(str, per)) - set(tasks))
            if missing or extra:
                raise ConfigError(f"{at}.per_task: give values for exactly the grid's tasks {tasks}"
                                  + (f"; missing {missing}" if missing else "") + (f"; not in the grid {extra}" if extra else ""))
            out[axis] = {str(t): _axis_values(axis, v, f"{at}.per_task.{t}") for t, v in per.items()}
        else:
            out[axis] = {None: _axis_values(axis, spec, at)}
    return out


def _axis_values(axis: str, spec: Any, at: str) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(spec, list):
        items = [(_value_name(v), v) for v in spec]
    elif isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        raise ConfigError(f"{at}: expected a list of {axis} values or a mapping NAME: {{OPTION: VALUE, ...}}, got {spec!r}")
    if not items:
        raise ConfigError(f"{at}: no values")
    values = []
    for name, v in items:
        if isinstance(v, dict):
            bundle = _norm(v, f"{at}.{name}")  # refuses an option softprompt train lacks
        elif axis in _FIELDS:
            bundle = {axis: v}
        else:
            raise ConfigError(f"{at}.{name}: {axis} is not an option of softprompt train, so each value must be "
                              f"a mapping of options, e.g. {name}: {{label_words: ...}}")
        if _slug(name) != name or not name:
            raise ConfigError(f"{at}: value name {name!r} is used in run folders; use letters, digits, '-', '_' or '.'")
        values.append((name, bundle))
    names = [n for n, _ in values]
    if len(set(names)) != len(names):
        raise ConfigError(f"{at}: value names must be unique, got {names}")
    return values


def _base(raw: Any, where: str, earlier: list[str]) -> dict[str, str] | None:
    """A grid's ``base: {grid: G, task: T, method: M}`` (``task`` and ``method`` optional): G must
    be an earlier grid of the file."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "grid" not in raw or set(raw) - {"grid", "task", "method"}:
        raise ConfigError(f"{where}: base must be {{grid: GRID, task: TASK, method: METHOD}} (task and method "
                          f"optional), naming the runs this grid's runs start from; got {raw!r}")
    if str(raw["grid"]) not in earlier:
        raise ConfigError(f"{where}: base names grid {raw['grid']!r}, which is not a grid before this one; "
                          f"grids before it: {earlier}")
    return {str(k): str(v) for k, v in raw.items()}


def _value_name(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _report_options(rep: Any, where: str, grids: list[Grid]) -> dict[str, Any]:
    """``report:`` of an experiment file.

    * ``labels`` renames axis values in tables and plots (a long ``pretrained:PATH`` init becomes ``PPT``);
    * each ``compare`` entry adds a table of paired differences between one column of a grid and
      each of its other columns;
    * each ``tables`` entry ``{grid: G, rows: AXIS, over: [AXIS, ...], spread: AXIS}`` adds a table of
      grid G: one row per value of ``rows``, one column per task, each cell mean ± std over the
      runs of that row and task (the axes named in ``over``, e.g. templates and seeds); with
      ``spread``, a column per task giving the standard deviation of the per-``spread``-value
      means, and a breakdown table by that axis;
    * each ``curves`` entry ``{grid: G, x: AXIS, series: AXIS}`` adds, per task, a table and a PNG
      of the metric against ``x`` (numeric values), one line per value of ``series``, mean ± std
      over the other axes (seeds);
    * ``budget: true`` states each grid's compute in the header: training steps, batch size, and
      the run time of all runs (sum and per run);
    * each ``per_task`` entry ``{grids: [G, ...], metric: M, title: TEXT}`` (metric and title
      optional) adds a table over single- and multi-task runs alike: one row per grid and method
      (and further axes, seeds pooled), one column per task, the cell mean ± std over seeds of
      the task's metric ``M`` (default: each task's primary metric) on its final split, a
      multi-task run's read from its per-task results; then the mean over the row's tasks (each
      seed's mean, then mean ± std over seeds) and what the method trains: a task's own part and
      the run's total per task (``results.json`` ``parameters``). A row's name is
      ``GRID/METHOD[/VALUE...]`` (the values of the axes that vary among that method's runs of the
      grid, but for task and seed), renamed by ``labels``;
    * each ``gap`` entry ``{upper: [G, ...], lower: [G, ...], metric, title, reference}`` adds the
      gap between two methods across model sizes (:mod:`softprompt.experiments.gap`): upper
      minus lower per model, task and seed, a table and a plot against the model's parameters,
      with ``reference: {label, points: [[PARAMETERS, GAP_POINTS], ...]}`` drawn beside it.
    """
    names = {g.name: g for g in grids}
    if not rep:
        return {"labels": {}, "compare": []}
    keys = {"labels", "compare", "tables", "curves", "budget", "per_task", "gap"}
    if not isinstance(rep, dict) or set(rep) - keys:
        raise ConfigError(f"{where}: expected {{labels: {{VALUE: NAME}}, compare: [{{grid: GRID, column: NAME}}], "
                          f"tables: [{{grid, rows, over, spread}}], curves: [{{grid, x, series}}], budget: BOOL, "
                          f"per_task: [{{grids, metric, title}}], gap: [{{upper, lower, metric, title, reference}}]}}, "
                          f"got {rep!r}")
    labels = rep.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: labels must map an axis value to the name shown, got {labels!r}")
    compare = []
    for c in _as_list(rep.get("compare"), "compare", where):
        if not isinstance(c, dict) or set(c) != {"grid", "column"}:
            raise ConfigError(f"{where}: each compare entry is {{grid: GRID, column: NAME}}, got {c!r}")
        if str(c["grid"]) not in names:
            raise ConfigError(f"{where}: compare names grid {c['grid']!r}; grids: {sorted(names)}")
        compare.append({"grid": str(c["grid"]), "column": str(c["column"])})
    out: dict[str, Any] = {"labels": {str(k): str(v) for k, v in labels.items()}, "compare": compare}
    for kind, required, optional in (("tables", {"grid", "rows"}, {"over", "spread"}), ("curves", {"grid", "x", "series"}, set())):
        entries = []
        for i, t in enumerate(_as_list(rep.get(kind), kind, where)):
            at = f"{where}: {kind}[{i}]"
            if not isinstance(t, dict) or not required <= set(t) or set(t) - required - optional:
                raise ConfigError(f"{at}: expected keys {sorted(required)} (optional {sorted(optional)}), got {t!r}")
            grid = names.get(str(t["grid"]))
            if grid is None:
                raise ConfigError(f"{at}: no grid named {t['grid']!r}; grids: {sorted(names)}")
            axes = ["method", "prompt_length", "init", "seed", *grid.vary]
            entry = {"grid": grid.name}
            for key in sorted(set(t) - {"grid"}):
                value = [str(v) for v in _as_list(t[key], key, at)] if key == "over" else str(t[key])
                for axis in (value if isinstance(value, list) else [value]):
                    if axis not in axes:
                        raise ConfigError(f"{at}: {key} names axis {axis!r}, which grid {grid.name!r} does not have; "
                                          f"its axes: {axes} (tasks are the columns)")
                entry[key] = value
            entries.append(entry)
        if entries:
            out[kind] = entries
    if rep.get("budget"):
        out["budget"] = True
    per_task = []
    for i, t in enumerate(_as_list(rep.get("per_task"), "per_task", where)):
        at = f"{where}: per_task[{i}]"
        if not isinstance(t, dict) or "grids" not in t or set(t) - {"grids", "metric", "title"}:
            raise ConfigError(f"{at}: expected {{grids: [GRID, ...], metric: METRIC, title: TEXT}} (metric and title "
                              f"optional), got {t!r}")
        listed = [str(g) for g in _as_list(t["grids"], "grids", at)]
        unknown = [g for g in listed if g not in names]
        if not listed or unknown:
            raise ConfigError(f"{at}: grids {unknown or listed} are not grids of the file; grids: {sorted(names)}")
        per_task.append({"grids": listed, **{k: str(t[k]) for k in ("metric", "title") if t.get(k)}})
    if per_task:
        out["per_task"] = per_task
    gaps = [_gap_entry(g, f"{where}: gap[{i}]", names) for i, g in enumerate(_as_list(rep.get("gap"), "gap", where))]
    if gaps:
        out["gap"] = gaps
    return out


def _gap_entry(g: Any, at: str, names: dict[str, Any]) -> dict[str, Any]:
    """A checked ``report: gap:`` entry (:mod:`softprompt.experiments.gap`)."""
    if not isinstance(g, dict) or not {"upper", "lower"} <= set(g) or set(g) - {"upper", "lower", "metric", "title",
                                                                               "reference"}:
        raise ConfigError(f"{at}: expected {{upper: [GRID, ...], lower: [GRID, ...], metric: METRIC, title: TEXT, "
                          f"reference: {{label: TEXT, points: [[PARAMETERS, GAP_POINTS], ...]}}}} (metric, title and "
                          f"reference optional), got {g!r}")
    entry: dict[str, Any] = {}
    for side in ("upper", "lower"):
        listed = [str(x) for x in _as_list(g[side], side, at)]
        unknown = [x for x in listed if x not in names]
        if not listed or unknown:
            raise ConfigError(f"{at}: {side} grids {unknown or listed} are not grids of the file; grids: {sorted(names)}")
        entry[side] = listed
    entry.update({k: str(g[k]) for k in ("metric", "title") if g.get(k)})
    ref = g.get("reference")
    if ref is not None:
        points = ref.get("points") if isinstance(ref, dict) else None
        ok = isinstance(ref, dict) and set(ref) == {"label", "points"} and isinstance(points, list) and points and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in p) and p[0] > 0 for p in points)
        if not ok:
            raise ConfigError(f"{at}: reference must be {{label: TEXT, points: [[PARAMETERS, GAP_POINTS], ...]}} with "
                              f"PARAMETERS > 0 (e.g. [[6.0e7, 10.0], [2.2e8, 8.0]]), got {ref!r}")
        entry["reference"] = {"label": str(ref["label"]), "points": [[float(x), float(y)] for x, y in points]}
    return entry


def _norm(d: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """``d``'s keys with ``-`` read as ``_``; with ``where`` (the place in the file, for the
    message), a key that is not an option of ``softprompt train`` is refused, with the nearest."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where + ': ' if where else ''}expected a mapping of options, got {d!r}")
    out = {str(k).replace("-", "_"): v for k, v in d.items()}
    unknown = sorted(set(out) - _FIELDS) if where else []
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {with_suggestions(unknown, _FIELDS)}; see `softprompt train --help`")
    return out


def _method_fields(method: str) -> set[str]:
    config_cls, _ = get_method(method)
    return {f.name for f in dataclasses.fields(config_cls)}


def method_is_seeded(method: str) -> bool:
    """Whether a method's result depends on the seed (a manual prompt's does not)."""
    _, cls = get_method(method)
    return bool(getattr(cls, "seeded", True))


def expand(exp: Experiment) -> list[RunSpec]:
    """Every distinct run of every grid, in grid order; checks each config."""
    runs: dict[str, RunSpec] = {}
    for grid in exp.grids:
        for task in grid.tasks:
            for method in grid.methods:
                fields = _method_fields(method)
                lengths = grid.prompt_length if grid.prompt_length and "prompt_length" in fields else [None]
                inits = grid.init if grid.init and "init" in fields else [None]
                seeds = grid.seeds if method_is_seeded(method) else grid.seeds[:1]
                axes = [a for a in grid.vary if not _collapses(grid, a, fields)]
                combos = list(itertools.product(*(grid.axis_values(a, task) for a in axes)))
                for length in lengths:
                    for init in inits:
                        for combo in combos:
                            for seed in seeds:
                                base = _base_run(grid, method, seed, fields, runs) if grid.base else None
                                spec = _spec(exp, grid, task, method, length, init, seed, fields, dict(zip(axes, combo)),
                                             base)
                                old = runs.get(spec.key)
                                if old is None:
                                    runs[spec.key] = spec
                                elif old.fingerprint != spec.fingerprint:
                                    raise ConfigError(
                                        f"run {spec.key} is asked for by grids {old.grids} and {grid.name!r} with different "
                                        f"options; give one of them other axes or the same options")
                                elif grid.name not in old.grids:
                                    old.grids.append(grid.name)
    return list(runs.values())


def _base_run(grid: Grid, method: str, seed: int, fields: set[str], runs: dict[str, RunSpec]) -> RunSpec:
    """The run of ``grid.base`` (a grid expanded before) that the ``seed`` run of ``grid`` starts
    from: the one with that seed (and the task and method ``base`` names). :class:`ConfigError`
    when ``method`` cannot start from a saved run, or when not exactly one run matches."""
    b = grid.base
    if "base" not in fields:
        raise ConfigError(f"grid {grid.name!r}: base starts each run from a saved run, which method {method!r} "
                          "cannot (it has no base setting); use a method that has one (hyperformer)")
    found = [s for s in runs.values() if b["grid"] in s.grids and s.axes["seed"] == seed
             and s.axes["task"] == b.get("task", s.axes["task"]) and s.axes["method"] == b.get("method", s.axes["method"])]
    if len(found) != 1:
        raise ConfigError(f"grid {grid.name!r}: base {b} matches {len(found)} runs of seed {seed} "
                          f"({[s.key for s in found]}); name the task and method so that it matches one")
    return found[0]


def _collapses(grid: Grid, axis: str, fields: set[str]) -> bool:
    """A ``vary`` axis collapses for a method that reads none of its options: every option it sets
    belongs to some method's own config (e.g. ``prompt_length``) but not to this one's. A general
    option that shares a name with a method's own setting (``shots``) never collapses."""
    method_read = {"prompt_length", "init"} | (set().union(*(_method_fields(m) for m in METHODS)) - _FIELDS)
    options = {k for values in grid.vary[axis].values() for _, bundle in values for k in bundle}
    return options <= method_read and not options & fields


def _spec(exp: Experiment, grid: Grid, task: str, method: str, length, init, seed: int, fields: set[str],
          vary: dict[str, tuple[str, dict[str, Any]]] | None = None, base: RunSpec | None = None) -> RunSpec:
    vary = vary or {}
    try:
        return _spec_checked(exp, grid, task, method, length, init, seed, fields, vary, base)
    except ConfigError as e:
        if not vary:
            raise
        named = ", ".join(f"{a}={name}" for a, (name, _) in vary.items())
        raise ConfigError(f"grid {grid.name!r}, task {task}, method {method}, vary {named}: {e}") from e


def _spec_checked(exp: Experiment, grid: Grid, task: str, method: str, length, init, seed: int, fields: set[str],
                  vary: dict[str, tuple[str, dict[str, Any]]], base: RunSpec | None = None) -> RunSpec:
    values: dict[str, Any] = {}
    values.update(exp.defaults)
    values.update(exp.task_options(task))
    values.update(exp.methods.get(method) or {})
    values.update(grid.options)
    values.update(task=task, method=method, seed=seed)
    if length is not None:
        values["prompt_length"] = length
    if init is not None:
        values["init"] = init
    for _, bundle in vary.values():
        values.update(bundle)
    if base is not None:
        values["method_options"] = _with_base(values.get("method_options"), base.out / "best", grid.name)
    if "prompt_length" not in fields:  # collapsed axes take the defaults, so equal runs are equal
        values.pop("prompt_length", None)
        values.pop("init", None)
    axes: dict[str, Any] = {"task": task, "method": method}
    parts = [task.replace(",", "+"), method]  # a multi-task run's folder: rte+mrpc+cb (a path in method_options has no comma)
    cfg0 = build(TrainConfig, {k: v for k, v in values.items() if k not in _VOLATILE})
    if "prompt_length" in fields:
        axes.update(prompt_length=cfg0.prompt_length, init=cfg0.init)
        parts.append(f"len{cfg0.prompt_length}-{_slug(cfg0.init)}")
    for axis, (name, _) in vary.items():  # grids without vary keep their keys
        axes[axis] = name
        parts.append(f"{axis}-{name}")
    axes["seed"] = seed
    parts.append(f"seed{seed}")
    key = "/".join(parts)
    values.update(out=str(exp.out / "runs" / key), progress=False)
    cfg = with_method_defaults(build(TrainConfig, values))  # as train() will resolve them
    _check_task(cfg, grid.name)
    depends = {base.key: base.fingerprint} if base is not None else {}
    return RunSpec(key=key, grids=[grid.name], config=cfg, axes=axes, depends=depends)


def _check_task(cfg: TrainConfig, grid: str) -> None:
    """Refuse a run whose task (each task of a multi-task run) is neither built in nor given a
    template and label words, when the file is read rather than when its turn comes, hours in."""
    from ..tasks.registry import is_builtin_task, unknown_task

    if not cfg.task or (cfg.template and cfg.label_words):
        return
    for name in task_names(cfg.task) or (cfg.task,):
        if not is_builtin_task(name):
            raise ConfigError(f"grid {grid!r}: {unknown_task(name)}; or define the task under tasks: with "
                              "template and label_words")


def _with_base(method_options: Any, path: Path, grid: str) -> str:
    """``method_options`` (a ``k=v,...`` string or None) with ``base=path`` added."""
    if isinstance(method_options, dict):
        method_options = ",".join(f"{k}={v}" for k, v in method_options.items())
    given = str(method_options or "")
    if any(part.split("=", 1)[0].strip() == "base" for part in given.split(",")):
        raise ConfigError(f"grid {grid!r}: method_options already sets base, and the grid's base: sets it too; "
                          "keep one of them")
    if "," in str(path):
        raise ConfigError(f"grid {grid!r}: the base run's folder {path} holds a comma, which --method-options "
                          "cannot carry; choose an experiment out folder without one")
    return ",".join(p for p in (given, f"base={path}") if p)


def _slug(text: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)
    return out.strip("-")[:40] or "x"


def command_line(cfg: TrainConfig) -> str:
    """The ``softprompt train`` command that makes the same run as ``cfg``."""
    import shlex

    parts = ["softprompt", "train", "--task", cfg.task, "--method", cfg.method]
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if value == _DEFAULTS[f.name] or f.name in ("task", "method", "resume", "overwrite", "progress"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif value is None:
            continue
        else:  # a line break is written \n, which the CLI reads back as one (one line per command)
            parts += [flag, str(value).replace("\n", "\\n")]
    return " ".join(shlex.quote(p) for p in parts)
