"""The experiment file and its expansion into runs.

An experiment YAML holds::

    name: quick
    out: docs/results/quick          # runs/, analyses/, report.md and plots go here
    defaults: {max_steps: 50, ...}   # TrainConfig options of every run
    tasks:   {rotten_tomatoes: {test_limit: 300}, ...}     # per-task options
    methods: {full-tuning: {optimizer: adam, lr: 1e-5}, ...} # per-method options
    grids:                           # each a cross product; runs shared by grids run once
      - {name: main, tasks: [...], methods: [...], prompt_length: [20], init: [class-labels], seeds: [0, 1, 2]}
      - {name: scale, models: [smollm2-135m, gemma-3-270m], ...}   # a model axis: keys start with the model
    ensembles: [{grid: main, task: rotten_tomatoes, method: prompt-tuning}]
    transfer:  [{grid: main, train: qqp_sample, eval: [mrpc], methods: [prompt-tuning, full-tuning]}]
    inspect:   {grid: main, k: 5}

Options are applied in that order (defaults, task, method, grid ``options``, then the grid's
axes). Axes a method does not read (``prompt_length`` for full tuning) collapse, and a method
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
from ..errors import ConfigError
from ..methods import get_method, with_method_defaults

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
    models: list[str] | None = None
    """Models as an axis (``--model`` values); a run's key then starts with its model's name."""


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
    report: dict[str, Any] = field(default_factory=dict)  # {labels: {value: shown}, compare: [{grid, column}]}

    def task_options(self, task: str) -> dict[str, Any]:
        return dict(self.tasks.get(task) or {})


@dataclass
class RunSpec:
    """One run: its key (also its folder under ``out/runs``), the grids that asked for it, its config."""

    key: str
    grids: list[str]
    config: TrainConfig
    axes: dict[str, Any]

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def fingerprint(self) -> str:
        return config_fingerprint(self.config)


# An option left at its default is left out of the hash, so that a run stored before an option
# existed still matches the same run now (and a changed default does change the hash).
_DEFAULTS = {f.name: field_default(f) for f in dataclasses.fields(TrainConfig)}


def config_fingerprint(cfg: TrainConfig | dict[str, Any]) -> str:
    """A hash of everything in a run's config that changes its result."""
    values = dataclasses.asdict(cfg) if not isinstance(cfg, dict) else cfg
    stable = {k: v for k, v in sorted(values.items())
              if k not in _VOLATILE and not (k in _DEFAULTS and v == _DEFAULTS[k])}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:12]


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
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid: {sorted(_TOP_KEYS)}")
    if not raw.get("grids"):
        raise ConfigError(f"{path}: no grids; add e.g. grids: [{{name: main, tasks: [rotten_tomatoes], methods: [prompt-tuning]}}]")
    grids = []
    for i, g in enumerate(raw["grids"]):
        where = f"{path}: grids[{i}]"
        if not isinstance(g, dict):
            raise ConfigError(f"{where} must be a mapping")
        g = {str(k).replace("-", "_"): v for k, v in g.items()}
        extra = sorted(set(g) - {f.name for f in dataclasses.fields(Grid)})
        if extra:
            raise ConfigError(f"{where}: unknown key(s) {extra}; put run options under 'options:'")
        name = str(g.get("name") or f"grid{i}")
        tasks, methods = _as_list(g.get("tasks"), "tasks", where), _as_list(g.get("methods"), "methods", where)
        if not tasks or not methods:
            raise ConfigError(f"{where} ({name}) needs tasks and methods")
        grids.append(Grid(name=name, tasks=[str(t) for t in tasks], methods=[str(m) for m in methods],
                          prompt_length=[int(x) for x in _as_list(g.get("prompt_length"), "prompt_length", where)] or None,
                          init=[str(x) for x in _as_list(g.get("init"), "init", where)] or None,
                          seeds=[int(x) for x in _as_list(g.get("seeds", [0]), "seeds", where)] or [0],
                          options=_norm(g.get("options") or {}),
                          models=[str(x) for x in _as_list(g.get("models"), "models", where)] or None))
    if len({g.name for g in grids}) != len(grids):
        raise ConfigError(f"{path}: grid names must be unique, got {[g.name for g in grids]}")
    default_out = Path("experiments") / "results" / str(raw.get("name") or path.stem)
    inspect = raw.get("inspect")
    exp = Experiment(
        name=str(raw.get("name") or path.stem), out=Path(out or raw.get("out") or default_out), path=path,
        defaults=_norm(raw.get("defaults") or {}),
        tasks={str(k): _norm(v or {}) for k, v in (raw.get("tasks") or {}).items()},
        methods={str(k): _norm(v or {}) for k, v in (raw.get("methods") or {}).items()},
        grids=grids, ensembles=list(raw.get("ensembles") or []), transfer=list(raw.get("transfer") or []),
        inspect=({} if inspect is True else dict(inspect)) if inspect else None,
        description=str(raw.get("description") or ""),
        report=_report_options(raw.get("report"), f"{path}: report", {g.name for g in grids}),
    )
    expand(exp)  # every run's config is checked now, before hours of training
    return exp


def _report_options(rep: Any, where: str, grid_names: set[str]) -> dict[str, Any]:
    """``report:`` of an experiment file: ``labels`` renames axis values in tables and plots (a long
    ``pretrained:PATH`` init becomes ``PPT``); each ``compare`` entry adds a table of paired
    differences between one column of a grid and each of its other columns."""
    if not rep:
        return {"labels": {}, "compare": []}
    if not isinstance(rep, dict) or set(rep) - {"labels", "compare"}:
        raise ConfigError(f"{where}: expected {{labels: {{VALUE: NAME}}, compare: [{{grid: GRID, column: NAME}}]}}, got {rep!r}")
    labels = rep.get("labels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}: labels must map an axis value to the name shown, got {labels!r}")
    compare = []
    for c in _as_list(rep.get("compare"), "compare", where):
        if not isinstance(c, dict) or set(c) != {"grid", "column"}:
            raise ConfigError(f"{where}: each compare entry is {{grid: GRID, column: NAME}}, got {c!r}")
        if str(c["grid"]) not in grid_names:
            raise ConfigError(f"{where}: compare names grid {c['grid']!r}; grids: {sorted(grid_names)}")
        compare.append({"grid": str(c["grid"]), "column": str(c["column"])})
    return {"labels": {str(k): str(v) for k, v in labels.items()}, "compare": compare}


def _norm(d: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping of options, got {d!r}")
    return {str(k).replace("-", "_"): v for k, v in d.items()}


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
                for model, length, init, seed in itertools.product(grid.models or [None], lengths, inits, seeds):
                    spec = _spec(exp, grid, task, method, length, init, seed, fields, model)
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


def _spec(exp: Experiment, grid: Grid, task: str, method: str, length, init, seed: int, fields: set[str],
          model: str | None = None) -> RunSpec:
    values: dict[str, Any] = {}
    values.update(exp.defaults)
    values.update(exp.task_options(task))
    values.update(exp.methods.get(method) or {})
    values.update(grid.options)
    values.update(task=task, method=method, seed=seed)
    if model is not None:
        values["model"] = model
    if length is not None:
        values["prompt_length"] = length
    if init is not None:
        values["init"] = init
    if "prompt_length" not in fields:  # collapsed axes take the defaults, so equal runs are equal
        values.pop("prompt_length", None)
        values.pop("init", None)
    axes: dict[str, Any] = {"task": task, "method": method}
    parts = [task, method]
    if model is not None:
        axes["model"] = model
        parts.insert(0, _slug(model))
    cfg0 = build(TrainConfig, {k: v for k, v in values.items() if k not in _VOLATILE})
    if "prompt_length" in fields:
        axes.update(prompt_length=cfg0.prompt_length, init=cfg0.init)
        parts.append(f"len{cfg0.prompt_length}-{_slug(cfg0.init)}")
    axes["seed"] = seed
    parts.append(f"seed{seed}")
    key = "/".join(parts)
    values.update(out=str(exp.out / "runs" / key), progress=False)
    cfg = with_method_defaults(build(TrainConfig, values))  # as train() will resolve them
    return RunSpec(key=key, grids=[grid.name], config=cfg, axes=axes)


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
