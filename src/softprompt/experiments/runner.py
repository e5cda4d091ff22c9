"""Running an experiment: every run, then the analyses that read the runs' outputs.

Each finished run leaves ``out/runs/<key>/results.json`` (written atomically by
:func:`softprompt.training.train`); a run whose ``results.json`` holds the same config is
skipped, an interrupted one (checkpoint, no results) resumes, and a run whose options changed
is redone; a run that starts from another (a grid's ``base:``) runs after it, and is redone
when that run's options change. Analyses store ``out/analyses/<kind>/<name>.json`` the same way,
with the fingerprints of the runs they read: one whose runs were redone is redone. So an interrupted
or repeated ``softprompt experiment`` only does what is missing.

Under ``accelerate launch`` / ``torchrun`` every process walks the grid in the same order and
each run is a distributed :func:`~softprompt.training.train`; analyses run on the main process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_text
from ..config import TrainConfig
from ..errors import ConfigError
from ..methods import get_method, lr_following_model
from .config import Experiment, RunSpec, expand, load_experiment, run_fingerprint

log = logging.getLogger(__name__)


def run_done(spec: RunSpec) -> dict[str, Any] | None:
    """The stored results of ``spec`` if it finished with the same config, else None."""
    path = spec.out / "results.json"
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if run_fingerprint(stored.get("config", {}), stored.get("depends")) != _fingerprint_as_run(spec, stored):
        return None
    return stored


def _fingerprint_as_run(spec: RunSpec, stored: dict[str, Any]) -> str:
    """``spec``'s fingerprint with an lr left to follow the model (prompt tuning's default, None
    until the model is loaded) as the run resolved it: the method's factor times the
    ``embedding_rms`` its results.json records. A results file without that figure cannot tell,
    and the run is redone."""
    cfg = spec.config
    rms = stored.get("embedding_rms")
    if cfg.lr is None and isinstance(rms, (int, float)):
        cls = get_method(cfg.method)[1]
        if cls.lr_per_embedding_rms is not None:
            cfg = dataclasses.replace(cfg, lr=lr_following_model(cls, rms))
    return run_fingerprint(cfg, spec.depends)


def _has_checkpoint(out: Path) -> bool:
    return any((out / name / "state.json").exists() for name in ("checkpoint", "checkpoint.old"))


def run_one(spec: RunSpec) -> None:
    """Train (or evaluate) one run, resuming it if it was interrupted; the main process writes
    its ``results.json``."""
    from ..training import train

    stale = (spec.out / "results.json").exists()  # finished, but with other options: redo
    resume = _has_checkpoint(spec.out) and not stale
    train(dataclasses.replace(spec.config, resume=resume, overwrite=not resume))


def _record_axes(spec: RunSpec) -> None:
    """Write the run's grid axes (task, method, ..., each ``vary`` axis's value name) into its
    ``results.json``, so a results file says which cell of the grid it is, and the runs it
    started from (``depends``: key -> fingerprint, which :func:`run_done` compares)."""
    path = spec.out / "results.json"
    if path.exists():
        stored = json.loads(path.read_text())
        stored["axes"] = spec.axes
        if spec.depends:
            stored["depends"] = spec.depends
        atomic_write_text(path, json.dumps(stored, indent=2))  # as train() writes it


def _in_order(specs: list[RunSpec], chosen: list[RunSpec]) -> list[RunSpec]:
    """``chosen`` with the runs they start from (``depends``, from ``specs``) added, seed by seed
    (stable within a seed), a run after those it starts from."""
    by_key = {s.key: s for s in specs}
    todo: dict[str, RunSpec] = {}

    def add(s: RunSpec) -> None:
        for key in s.depends:
            add(by_key[key])
        todo.setdefault(s.key, s)

    for s in chosen:
        add(s)
    depth: dict[str, int] = {}

    def level(s: RunSpec) -> int:
        if s.key not in depth:
            depth[s.key] = 1 + max((level(by_key[k]) for k in s.depends), default=-1)
        return depth[s.key]

    return sorted(todo.values(), key=lambda s: (s.axes.get("seed", 0), level(s)))


# --------------------------------------------------------------------------- analyses
@dataclasses.dataclass
class Analysis:
    """One analysis to run: its kind, name (file stem) and what it needs."""

    kind: str
    name: str
    params: dict[str, Any]

    def path(self, out: Path) -> Path:
        return out / "analyses" / self.kind / f"{self.name}.json"

    def inputs(self, by_key: dict[str, RunSpec]) -> dict[str, Any]:
        """What the analysis's result depends on, stored in its file: its parameters and the
        fingerprint of each run it reads (an ensemble's members, a transfer's or inspection's run)."""
        runs = self.params.get("members") or ([self.params["run"]] if self.params.get("run") else [])
        return {"params": json.loads(json.dumps(self.params, default=str)),
                "runs": {key: by_key[key].fingerprint for key in runs}}

    def done(self, out: Path, by_key: dict[str, RunSpec]) -> bool:
        """Whether its file exists and was made from the same runs, with the same parameters: an
        analysis of runs that were since redone (other options) is redone too."""
        try:
            stored = json.loads(self.path(out).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return isinstance(stored, dict) and stored.get("inputs") == self.inputs(by_key)


def plan_analyses(exp: Experiment, specs: list[RunSpec]) -> list[Analysis]:
    """Ensembles, transfer evaluations and prompt inspections the experiment asks for."""
    out: list[Analysis] = []
    by_grid = lambda g: [s for s in specs if g in s.grids]  # noqa: E731
    for i, e in enumerate(exp.ensembles):
        grid = e.get("grid") or exp.grids[0].name
        groups: dict[tuple, list[RunSpec]] = {}
        for s in by_grid(grid):
            if s.axes["task"] != e.get("task", s.axes["task"]) or s.axes["method"] != e.get("method", "prompt-tuning"):
                continue
            key = tuple((k, v) for k, v in s.axes.items() if k != "seed")
            groups.setdefault(key, []).append(s)
        if not groups:
            raise ConfigError(f"ensembles[{i}]: no runs of grid {grid!r} match {e}")
        for key, members in groups.items():
            if len(members) < 2:
                raise ConfigError(f"ensembles[{i}]: {members[0].key} has one seed; an ensemble needs at least two")
            name = members[0].key.rsplit("/", 1)[0].replace("/", "__")
            out.append(Analysis("ensemble", name, {"members": [m.key for m in members]}))
    for i, t in enumerate(exp.transfer):
        grid = t.get("grid") or exp.grids[0].name
        targets = t.get("eval") or []
        targets = [targets] if isinstance(targets, str) else list(targets)
        methods = t.get("methods") or ["prompt-tuning"]
        runs = [s for s in by_grid(grid) if s.axes["task"] == t.get("train") and s.axes["method"] in methods]
        if not runs or not targets:
            raise ConfigError(f"transfer[{i}]: needs train (a task of grid {grid!r}) and eval; got {t}")
        for target in targets:
            out.append(Analysis("transfer", f"zero-shot__{target}", {"run": None, "target": target,
                                                                     "model": runs[0].config.model}))
            for s in runs:
                out.append(Analysis("transfer", f"{s.key.replace('/', '__')}__{target}", {"run": s.key, "target": target}))
    if exp.inspect is not None:
        grid = exp.inspect.get("grid") or exp.grids[0].name
        for s in by_grid(grid):
            if s.axes["method"] == "prompt-tuning" and s.axes.get("init") == "class-labels":
                out.append(Analysis("inspect", s.key.replace("/", "__"), {"run": s.key, "k": int(exp.inspect.get("k", 5))}))
    return out


class _Models:
    """Frozen backbones shared by the analyses (one per model name), loaded on first use."""

    def __init__(self):
        self._cache: dict[tuple, Any] = {}

    def get(self, cfg: TrainConfig, fresh: bool = False):
        from ..modeling import default_device, load_model

        key = (cfg.model, cfg.dtype, cfg.device, cfg.max_length)
        if fresh or key not in self._cache:
            backbone = load_model(cfg.model, dtype=getattr(torch, cfg.dtype), device=default_device(cfg.device),
                                  max_length=cfg.max_length)
            if fresh:
                return backbone
            self._cache[key] = backbone
        return self._cache[key]


def _final_rows(cfg: TrainConfig):
    """The task and the rows of the final evaluation of a run with ``cfg`` (as train() chose them)."""
    from ..splits import final_rows, run_data
    from ..tasks.from_config import task_from_config

    task = task_from_config(cfg)
    final = final_rows(task, cfg, run_data(task, cfg))
    if not final or not final[1]:
        raise ConfigError(f"{cfg.task}: no final evaluation split (set test_split, or dev_from_train for tasks without a test split)")
    return task, final[0], final[1]


def _ensemble(exp: Experiment, specs: dict[str, RunSpec], a: Analysis, models: _Models) -> dict[str, Any]:
    """Majority vote of the members' best prompts, all scored in one batch per chunk of rows."""
    from ..serving.engine import MultiPromptModel
    from ..tasks.metrics import compute_metrics

    members = [specs[k] for k in a.params["members"]]
    cfg = members[0].config
    task, split, rows = _final_rows(cfg)
    backbone = models.get(cfg)
    engine = MultiPromptModel(backbone)
    names = []
    for m in members:
        name = f"seed{m.axes['seed']}"
        engine.add(name, m.out / "best")
        names.append(name)
    engine.add_ensemble("ensemble", names)
    inputs = [{f: r[f] for f in task.template.fields} for r in rows]
    answers = engine.classify(inputs, ["ensemble"] * len(rows), batch_size=cfg.eval_batch_size * len(names))
    golds = [str(r["label"]) for r in rows]
    labels = task.verbalizer.labels

    def metrics(pred: list[str]) -> dict[str, float]:
        return compute_metrics(task.metrics, pred, golds, labels, task.positive_label)

    single = {n: metrics([ans.votes[n] for ans in answers]) for n in names}
    primary = task.primary_metric()
    values = [single[n][primary] for n in names]
    agree = sum(len(set(ans.votes.values())) == 1 for ans in answers) / len(answers)
    return {"task": task.name, "split": split, "n": len(rows), "metric": primary, "members": a.params["members"],
            "member_metrics": single, "ensemble": metrics([ans.label for ans in answers]),
            "mean": sum(values) / len(values), "best": max(values), "all_agree": agree}


def _transfer(exp: Experiment, specs: dict[str, RunSpec], a: Analysis, models: _Models) -> dict[str, Any]:
    """A run's best prompt (or model) evaluated on another task with the same kind of labels."""
    from ..scoring import evaluate

    target = a.params["target"]
    source = specs[a.params["run"]] if a.params["run"] else None
    base = source.config if source else next(iter(specs.values())).config
    tcfg = dataclasses.replace(TrainConfig(**{**exp.defaults, **exp.task_options(target)}), task=target,
                               model=base.model, seed=base.seed)
    task, split, rows = _final_rows(tcfg)
    full = source is not None and source.axes["method"] == "full-tuning"
    backbone = models.get(tcfg, fresh=full)  # full tuning overwrites the weights: a private copy
    prompt = None
    if source is not None:  # restored without training rows: an in-context source brings its saved demonstrations
        from ..methods.loading import restore

        prompt = restore(source.out / "best", backbone).inference_conditioning()
    result = evaluate(backbone, task, rows, prompt, tcfg.eval_batch_size, tcfg.scoring, tcfg.length_normalize,
                      word_scoring=tcfg.word_scoring)
    in_domain = json.loads((source.out / "results.json").read_text()).get("test") if source else None
    return {"source": a.params["run"], "source_task": source.axes["task"] if source else None,
            "method": source.axes["method"] if source else "manual", "target": target, "split": split,
            "metric": task.primary_metric(), "target_metrics": result.summary(), "in_domain": in_domain}


def _inspect(exp: Experiment, specs: dict[str, RunSpec], a: Analysis, models: _Models) -> dict[str, Any]:
    """Nearest vocabulary tokens of a class-label-initialised prompt, and whether it keeps its label words."""
    from ..interpret import label_words_kept, nearest_tokens
    from ..prompt import SoftPrompt
    from ..tasks.task import Task

    spec = specs[a.params["run"]]
    prompt = SoftPrompt.load(spec.out / "best")
    backbone = models.get(spec.config)
    task = Task.from_dict(prompt.metadata["task"])
    words = [[task.verbalizer.prefix + w for w in ws] for ws in task.verbalizer.candidates()]
    k = a.params["k"]
    shown = min(prompt.weight.shape[0], max(len(words), 5))
    neighbours = nearest_tokens(backbone, prompt.weight, k)[:shown]
    kept = label_words_kept(backbone, prompt.weight, words, k)
    return {"run": spec.key, "labels": task.verbalizer.label_names(), "label_words": words, "k": k,
            "kept": kept, "neighbours": [{"position": n.position, "tokens": n.tokens, "similarities": n.similarities}
                                         for n in neighbours]}


ANALYSES = {"ensemble": _ensemble, "transfer": _transfer, "inspect": _inspect}


# --------------------------------------------------------------------------- the grid
def run_experiment(experiment: str | Path | Experiment, out: str | Path | None = None, only: list[str] | None = None,
                   tasks: list[str] | None = None, dry_run: bool = False, report: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run every missing run and analysis of ``experiment``, then write its report.

    ``only``: restrict to these grid names; ``tasks``: to these tasks' runs (either skips analyses).
    ``dry_run``: print what would run and return. Returns a summary dict.
    """
    from accelerate import PartialState

    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment, out)
    specs = everything = expand(exp)
    if only:
        unknown = sorted(set(only) - {g.name for g in exp.grids})
        if unknown:
            raise ConfigError(f"--only: no grid named {unknown}; grids: {[g.name for g in exp.grids]}")
        specs = [s for s in specs if set(s.grids) & set(only)]
    if tasks:
        known = {s.config.task for s in specs}
        unknown = sorted(set(tasks) - known)
        if unknown:
            raise ConfigError(f"--tasks: no runs of {unknown}; tasks: {sorted(known)}")
        specs = [s for s in specs if s.config.task in tasks]
    analyses = plan_analyses(exp, specs) if not (only or tasks) else []
    from ..modeling import default_device

    # the same process state train() will use (it is shared): on CPU, gloo across processes
    state = PartialState(cpu=default_device(specs[0].config.device if specs else None) == "cpu")
    # seed by seed (stable within a seed): an experiment stopped part-way has every column of its
    # first seeds, which the report can compare paired, rather than all seeds of a few columns;
    # a run that starts from another (a grid's base:) after it, which --only/--tasks bring along
    ordered = _in_order(everything, specs)
    specs = ordered if any(s.depends for s in specs) else specs
    todo = [s for s in ordered if run_done(s) is None]
    by_key = {s.key: s for s in everything}
    todo_a = [a for a in analyses if not a.done(exp.out, by_key)]
    if dry_run:
        for s in specs:
            after = f"  (after {', '.join(s.depends)})" if s.depends else ""
            print(("run   " if s in todo else "done  ") + s.key + after)
        for a in analyses:
            print(("run   " if a in todo_a else "done  ") + f"{a.kind}: {a.name}")
        return {"runs": len(specs), "todo": len(todo), "analyses": len(analyses), "analyses_todo": len(todo_a)}
    exp.out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar for the grid, not one per model load
    bar = None
    total = len(specs) + len(analyses)
    if progress and state.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - len(todo) - len(todo_a), desc=f"experiment {exp.name}",
                   unit="run", dynamic_ncols=True)
    started = time.time()
    for i, s in enumerate(todo, start=total - len(todo) - len(todo_a) + 1):
        if bar is not None:
            bar.set_postfix_str(s.key)
        log.info("[%d/%d] %s: %s", i, total, s.key, "resumed" if _has_checkpoint(s.out) else "started")
        t0 = time.time()
        run_one(s)
        state.wait_for_everyone()  # results.json is written by the main process after train()'s last barrier
        if state.is_main_process:
            _record_axes(s)
        log.info("[%d/%d] %s: finished in %.0f s", i, total, s.key, time.time() - t0)
        if bar is not None:
            bar.update(1)
    models = _Models()
    for a in todo_a:
        if bar is not None:
            bar.set_postfix_str(f"{a.kind} {a.name}")
        if state.is_main_process:
            t0 = time.time()
            record = ANALYSES[a.kind](exp, by_key, a, models)
            record["seconds"] = round(time.time() - t0, 1)
            record["inputs"] = a.inputs(by_key)
            path = a.path(exp.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
        state.wait_for_everyone()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    summary = {"runs": len(specs), "ran": len(todo), "analyses": len(analyses), "analysed": len(todo_a),
               "seconds": round(time.time() - started, 1), "out": str(exp.out)}
    if report and state.is_main_process:
        from .report import write_report

        summary["report"] = str(write_report(exp))
    return summary

