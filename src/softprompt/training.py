"""The training loop, readable top to bottom: :func:`train`.

One run writes into ``out/``:

* ``best/``       the prompt with the best dev metric so far (a saved prompt, atomic);
* ``last/``       the prompt after the final step;
* ``checkpoint/`` what ``--resume`` needs: prompt, optimizer, scheduler, RNG and data-order state.
  Like ``best/`` and ``last/`` it is written whole into a temporary folder and swapped in
  (:func:`~softprompt.atomic.atomic_dir`), so a crash at any moment leaves the old or the new
  one, never a mix; what a killed save left is cleared when the next run starts;
* ``metrics.jsonl`` one JSON object per logged step / evaluation;
* ``results.json``  final dev/test metrics and the zero-shot baseline;
* ``.softprompt.lock`` held while a run writes here: a second run into the same folder is refused.

A resumed run replays the same batches in the same order from the saved position, so it ends
with the same prompt as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import time
import typing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .atomic import atomic_dir, atomic_write_text, clean_stale
from .batching import training_batches
from .config import TrainConfig, given_options, mark_given, resumed_config
from .encoding import encode
from .errors import ArtifactError, ConfigError
from .interrupts import StopRequests, TrainingInterrupted
from .methods import embedding_rms, with_method_defaults
from .methods.base import task_names
from .methods.configs import method_config_from, parse_method_options  # noqa: F401  (built beside the registry)
from .modeling import check_device, default_device, load_model
from .multitask import MEAN, TaskSampler, evaluate_runs, sampled_batches, task_runs
from .outdir import RUN_FILES, check_out_dir, out_lock, output_errors
from .scoring import EvalResult, evaluate, predict, score_predictions
from .splits import final_rows
from .value_types import KINDS, describe, fits

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    last_dev: dict[str, Any] = field(default_factory=dict)  # the latest dev metrics (metrics.jsonl has each)
    best_dev: dict[str, Any] = field(default_factory=dict)  # the dev metrics of the state kept in best/, for results.json
    task_batches: dict[str, int] = field(default_factory=dict)  # a multi-task run: batches drawn from each task
    # wall-clock seconds the run has taken up to this checkpoint, over every session (--resume adds the next one's)
    seconds: float = field(default=0.0, metadata={"min": 0})
    # what the method counted in its training steps, summed over processes (Method.take_counts), e.g.
    # KnowPrompt's rows_without_knowledge_term
    method_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train` returns: where the prompts are and the final numbers."""

    out: Path
    best_prompt: Path | None
    state: TrainState
    dev: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] | None = None
    zero_shot_test: dict[str, Any] | None = None
    test_split: str | None = None
    seconds: float = 0.0  # wall-clock seconds of the whole run: every session of a resumed one
    parameters: dict[str, int] | None = None  # what the method trained (parameter_counts)
    # the RMS of the frozen model's embedding entries as loaded (embedding_rms): with the config's
    # lr, results.json tells an lr that followed the model from one given (experiments' run_done)
    embedding_rms: float | None = None


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adafactor as in the paper (no relative step, no parameter scaling), or AdamW."""
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, weight_decay=weight_decay, scale_parameter=False, relative_step=False,
                         warmup_init=False)
    if name == "adam":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose adafactor or adam")


def _prompt_metadata(cfg: TrainConfig, backbone, task, extra: dict[str, Any]) -> dict[str, Any]:
    import transformers

    return {
        "method": cfg.method,
        "model_id": backbone.model_id,
        "model_fingerprint": backbone.fingerprint,
        "model_family": backbone.family,
        **({"model_weights": backbone.weights} if backbone.weights else {}),
        "init": cfg.init,
        "task": task.to_dict(),
        "training": dataclasses.asdict(cfg),
        "versions": {"softprompt": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        **extra,
    }


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(out: Path, method, optimizer, scheduler, state: TrainState, meta: dict[str, Any]) -> None:
    """Write ``out/checkpoint/`` (atomically, replacing the last one): the method's state, the
    optimizer's and scheduler's, the random generators' and ``state``, all a resumed run needs."""
    with atomic_dir(out / "checkpoint") as tmp:
        method.save(tmp / "prompt", meta)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state()}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({"state": dataclasses.asdict(state),
                                                    "python_rng": repr(random.getstate())}), encoding="utf-8")


def _clean_outputs(out: Path) -> None:
    """Clear what a killed run left half-written in ``out`` (call with the folder's lock held):
    temporary folders of ``best/``, ``last/`` and ``checkpoint/``, and the ``checkpoint.tmp/`` of
    earlier versions (whose ``checkpoint.old/`` is put back when the swap was cut)."""
    for name in ("best", "last", "checkpoint"):
        clean_stale(out / name)
    shutil.rmtree(out / "checkpoint.tmp", ignore_errors=True)
    if (out / "checkpoint.old").exists():
        if (out / "checkpoint" / "state.json").exists():
            shutil.rmtree(out / "checkpoint.old", ignore_errors=True)
        else:
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            os.replace(out / "checkpoint.old", out / "checkpoint")


def _check_fresh_out(out: Path, overwrite: bool) -> None:
    """Refuse to start a run in ``out`` over a finished run (its ``results.json``, ``best/`` or
    ``last/``, kept after its checkpoint was deleted) unless ``overwrite``, or among files that
    are not a run's (say a folder of data files), which no option replaces. Folders are left
    alone: an experiment nests runs in runs' folders. Raises :class:`ConfigError`."""
    if not out.is_dir():
        return
    finished = [name for name in ("results.json", "best", "last") if (out / name).exists()]
    if finished and not overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(finished)}): pass --overwrite to replace it, or "
                          "choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.name not in RUN_FILES)
    if foreign:
        raise ConfigError(f"--out {out} holds files that are not a run's ({', '.join(foreign[:3])}"
                          f"{', ...' if len(foreign) > 3 else ''}): a run writes best/, last/, checkpoint/, "
                          "metrics.jsonl and results.json there; choose a new or empty --out")


def find_checkpoint(out: Path) -> Path | None:
    """The checkpoint a ``--resume`` of the run in ``out`` continues from: ``out/checkpoint``, else
    the ``checkpoint.old`` an interrupted swap left; None when there is neither."""
    for name in ("checkpoint", "checkpoint.old"):
        if (out / name / "state.json").exists():
            return out / name
    return None


def _read_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer state, saved state)`` of a checkpoint, checked before any model is loaded.

    ``trainer.pt`` is read with ``torch.load(weights_only=True)``: tensors and plain containers
    only, never arbitrary pickled objects. Raises :class:`ArtifactError` saying how to go on."""
    again = "start the run afresh with --overwrite, or pass another --out"
    try:
        blob = torch.load(ckpt / "trainer.pt", weights_only=True)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{ckpt} lacks trainer.pt (the checkpoint is incomplete): {again}") from exc
    except Exception as exc:  # noqa: BLE001  UnpicklingError for objects, RuntimeError/EOFError for damage
        raise ArtifactError(f"{ckpt / 'trainer.pt'} cannot be loaded safely ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}): it holds objects other than tensors "
                            f"(written by another program or an old softprompt) or is damaged: {again}") from exc
    if not (isinstance(blob, dict) and {"optimizer", "scheduler", "torch_rng"} <= set(blob)):
        raise ArtifactError(f"{ckpt / 'trainer.pt'} is not a softprompt checkpoint (keys "
                            f"{sorted(blob) if isinstance(blob, dict) else type(blob).__name__}): {again}")
    file = ckpt / "state.json"
    try:
        saved = json.loads(file.read_text(encoding="utf-8"))
        import ast

        saved["python_rng"] = ast.literal_eval(saved["python_rng"])
        random.Random().setstate(saved["python_rng"])  # the shape random.setstate needs, tried on a spare
        state = saved["state"]
    except (OSError, ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{file} is damaged ({type(exc).__name__}: {exc}): {again}") from exc
    _check_state(state, file, again)
    return blob, saved


_STATE_KINDS = {**KINDS, int: "a whole number >= 0"}  # steps, epochs and counts are never negative


def _check_state(state: Any, file: Path, again: str) -> None:
    """``state.json``'s ``state``: an object of :class:`TrainState` fields, each of its type
    (its type hint, counts never negative), else :class:`ArtifactError` naming the file, the field and ``again``."""
    if not isinstance(state, dict):
        raise ArtifactError(f"{file}: field 'state' must be a JSON object, got {type(state).__name__}: {again}")
    hints = typing.get_type_hints(TrainState)
    lowest = {f.name: f.metadata["min"] for f in dataclasses.fields(TrainState) if "min" in f.metadata}
    unknown = sorted(set(state) - set(hints))
    if unknown:
        raise ArtifactError(f"{file}: field 'state' holds unknown fields {unknown}: {again}")
    for name, value in state.items():
        hint = hints[name]
        if hint == dict[str, int]:  # counts by name (tasks, the method's): names -> whole numbers >= 0
            if not isinstance(value, dict) or not all(isinstance(k, str) and fits(v, int) and v >= 0
                                                      for k, v in value.items()):
                raise ArtifactError(f"{file}: field 'state.{name}' must be an object of names to whole numbers "
                                    f">= 0, got {type(value).__name__} {json.dumps(value)[:40]}: {again}")
            continue
        count = int in (typing.get_args(hint) or (hint,))
        least = 0 if count else lowest.get(name)
        if not fits(value, hint) or (least is not None and value is not None and value < least):
            want = describe(hint, _STATE_KINDS) + (f" >= {least}" if least is not None and not count else "")
            raise ArtifactError(f"{file}: field 'state.{name}' must be {want}, got "
                                f"{type(value).__name__} {json.dumps(value)[:40]}: {again}")


def _load_checkpoint(ckpt: Path, method, optimizer, scheduler, read=None) -> TrainState:
    blob, saved = read or _read_checkpoint(ckpt)
    method.load_state(ckpt / "prompt")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["torch_rng"])
    random.setstate(saved["python_rng"])
    return TrainState(**saved["state"])


def _trim_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    keep = []
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(ln)
        except json.JSONDecodeError:  # the partial last line of a killed run
            log.warning("%s: dropping an unreadable line (%d characters)", path, len(ln))
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            keep.append(ln)
    atomic_write_text(path, "".join(ln + "\n" for ln in keep))


# ----------------------------------------------------------------------------- several processes
def evaluate_sharded(acc, backbone, task, rows, prompt, cfg, progress: bool = False) -> EvalResult:
    """Evaluate with every process scoring its share of ``rows``; all processes get the same result.

    Runs in bf16/fp16 when the run asked for ``--mixed-precision``."""
    with mixed_precision(cfg, backbone.device):
        return _evaluate_sharded(acc, backbone, task, rows, prompt, cfg, progress)


def _evaluate_sharded(acc, backbone, task, rows, prompt, cfg, progress: bool) -> EvalResult:
    if acc.num_processes == 1:
        return evaluate(backbone, task, rows, prompt, cfg.eval_batch_size, cfg.scoring, cfg.length_normalize, progress,
                        word_scoring=cfg.word_scoring)
    from accelerate.utils import gather_object

    mine = list(range(acc.process_index, len(rows), acc.num_processes))
    preds, truncated = predict(backbone, task, [rows[i] for i in mine], prompt, cfg.eval_batch_size, cfg.scoring,
                               cfg.length_normalize, with_labels=True, word_scoring=cfg.word_scoring)
    gathered = gather_object([(i, p) for i, p in zip(mine, preds)] + [(-1, truncated)])
    ordered = [None] * len(rows)
    total_truncated = 0
    for i, p in gathered:
        if i < 0:
            total_truncated += p
        else:
            ordered[i] = p
    return score_predictions(task, rows, ordered, total_truncated)


def mixed_precision(cfg, device: torch.device):
    """``torch.autocast`` in ``cfg.mixed_precision`` (bf16/fp16), or a no-op for "no".

    torch's own, not the ``Accelerator``'s: accelerate fixes the precision once per process, and a
    process may run several trainings (an experiment, the Python API, the tests) that differ."""
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    return torch.autocast(device.type, dtype=half, enabled=half is not None)


def _shard(indices: list[int], rank: int, world: int) -> list[int]:
    """This process's contiguous share of a global batch (sizes differ by at most one)."""
    base, extra = divmod(len(indices), world)
    start = rank * base + min(rank, extra)
    return indices[start: start + base + (rank < extra)]


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig | None = None, **overrides: Any) -> TrainResult:
    """Train a prompt as ``config`` (or keyword options of :class:`TrainConfig`) says.

    Returns a :class:`TrainResult`; the best prompt is in ``out/best``. ``out`` is checked
    writable before any work and locked for the run (rank 0 under several processes): a second
    run into it raises :class:`ConfigError`, as does a full disk.
    """
    cfg = dataclasses.replace(config, **overrides) if config else TrainConfig(**overrides)
    # what --resume may take from the run: the options neither set in config nor passed here
    mark_given(cfg, (given_options(config) if config else frozenset()) | set(overrides))
    main = os.environ.get("RANK", "0") == "0"  # accelerate and torchrun set RANK: rank 0 alone checks and locks
    if main:
        check_out_dir(cfg.out)
    with out_lock(cfg.out, enabled=main), output_errors(cfg.out):
        if main:
            _clean_outputs(Path(cfg.out))
        return _train(cfg)


def _resumed(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` as it continues the run in ``out`` when ``--resume`` finds its checkpoint: options
    left out take the run's values, one the run cannot change given anew is refused
    (:func:`~softprompt.config.resumed_config`). A checkpoint whose options cannot be read is
    left to :func:`_read_checkpoint` to report."""
    from .artifacts import META_FILE, read_metadata_file

    ckpt = find_checkpoint(Path(cfg.out)) if cfg.resume else None
    file = ckpt / "prompt" / META_FILE if ckpt else None
    try:
        saved = read_metadata_file(file).get("training") if file else None
    except (ArtifactError, OSError):
        saved = None
    if not isinstance(saved, dict):
        return cfg
    cfg, taken = resumed_config(cfg, saved, file)
    if taken:
        log.info("--resume: options left out take the run's values: %s",
                 ", ".join(f"--{k.replace('_', '-')} {v!r}" for k, v in taken.items()))
    return cfg


def _train(cfg: TrainConfig) -> TrainResult:
    """:func:`train` once ``out`` is checked and locked."""
    cfg = _resumed(cfg)  # before the method's defaults: an option left unset is the run's
    cfg = with_method_defaults(cfg)  # --optimizer / --lr left unset: the method's own
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    started = time.time()
    check_device(cfg.device)  # a --device this machine lacks is refused, not silently replaced by the CPU
    method_config_from(cfg)  # a misspelt or refused --method-options setting: before data and model load
    # one process, or one per rank under accelerate/torchrun; a multi-task step trains the drawn task's own
    # part (its prompt) and leaves the other tasks' without gradient, which DDP must be told to expect
    ddp = DistributedDataParallelKwargs(find_unused_parameters=len(task_names(cfg.task)) > 1)
    wanted = torch.device(default_device(cfg.device))
    acc = Accelerator(cpu=wanted.type == "cpu", kwargs_handlers=[ddp])
    world, rank, is_main = acc.num_processes, acc.process_index, acc.is_main_process
    if wanted.index is not None and wanted.index != (acc.device.index or 0):
        raise ConfigError(f"--device {cfg.device}: train places each process on its device through accelerate "
                          f"(here {acc.device}); pick the GPU with CUDA_VISIBLE_DEVICES={wanted.index} and --device cuda")
    out = Path(cfg.out)
    ckpt = find_checkpoint(out)
    if ckpt and cfg.overwrite and not cfg.resume:
        acc.wait_for_everyone()
        if is_main:
            for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
                shutil.rmtree(out / name, ignore_errors=True)
        ckpt = None
    if ckpt and not cfg.resume:
        raise ConfigError(f"{out} already holds a run (checkpoint found): pass --resume to continue it, --overwrite to start afresh, or choose another --out")
    if cfg.resume and not ckpt:
        raise ConfigError(f"--resume: no checkpoint in {out}; start without --resume")
    if not cfg.resume:
        _check_fresh_out(out, cfg.overwrite)
        if cfg.overwrite and is_main:  # the replaced run's results go now: a run under way holds no results.json,
            (out / "results.json").unlink(missing_ok=True)  # so an interrupted redo resumes, never reads as finished
    if cfg.batch_size < world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is the global batch: it must be at least the {world} processes")
    checkpoint = _read_checkpoint(ckpt) if cfg.resume else None  # a damaged or unsafe one refused before work
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    runs = task_runs(cfg)  # one task, or each of a multi-task run's (softprompt.multitask)
    multi = len(runs) > 1
    task, data = runs[0].task, runs[0].data
    train_rows, dev_rows = data.train, data.dev
    for run in runs:  # PTR's rules: every relation of the data has one, and no other
        run.task.verbalizer.check_rows(run.data.train, "the training rows")
    dtype = getattr(torch, cfg.dtype)
    device_map = cfg.device_map
    if device_map and device_map.strip().startswith("{"):
        device_map = json.loads(device_map)
    if device_map and world > 1:
        raise ConfigError("--device-map shards one model within a process; with several processes use FSDP through "
                          "`accelerate launch --config_file` instead (docs/distributed.md)")
    backbone = load_model(cfg.model, dtype=dtype, device=str(acc.device), device_map=device_map,
                          offload_folder=cfg.offload_folder, max_length=cfg.max_length)
    backbone.fingerprint  # noqa: B018  the frozen weights' fingerprint, taken before full tuning moves them
    emb_rms = embedding_rms(backbone)  # likewise
    cfg = with_method_defaults(cfg, backbone)  # an lr that follows the model (prompt tuning) needs it loaded

    if cfg.verbalizer == "knowledgeable":  # KPT: the words refined and calibrated once, with the frozen model
        from .refinement import describe, knowledgeable_from_config

        task.verbalizer = knowledgeable_from_config(cfg, backbone, task, out=out if is_main else None)
        if is_main:
            log.info("%s", describe(task.verbalizer))
    method_config, method_cls = method_config_from(cfg)
    method = method_cls(method_config, backbone, task, seed=cfg.seed, train_rows=train_rows).to(backbone.device)
    if not method_cls.trains:  # a baseline with nothing to learn (manual prompt, in-context): evaluate it
        if multi:
            raise ConfigError(f"method {cfg.method!r} learns nothing, so a multi-task run has nothing to share: "
                              "evaluate each task alone (--task NAME)")
        return _evaluate_only(acc, cfg, backbone, task, method, data, started, emb_rms)
    params = method.trainable_parameters()
    trained = parameter_counts(backbone, method)
    if cfg.optimizer == "adafactor" and cfg.lr > 2 * emb_rms and is_main:
        log.warning("Adafactor moves each prompt entry by about lr=%g per step, but this model's embedding entries "
                    "have RMS %.3g (the paper's 0.3 suits T5's much larger embeddings): if the dev metric falls, "
                    "try --lr %.2g", cfg.lr, emb_rms, (method_cls.lr_per_embedding_rms or 0.1) * emb_rms)
    optimizer = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)

    state = TrainState()
    log_path = out / "metrics.jsonl"
    if cfg.resume:
        state = _load_checkpoint(ckpt, method, optimizer, scheduler, checkpoint)
        started -= state.seconds  # the earlier sessions' time up to the checkpoint counts (0 for checkpoints before it)
        if is_main:
            _trim_log(log_path, state.step)
        log.info("resumed from %s at step %d (%.1f s of training before)", ckpt, state.step, state.seconds)
    elif log_path.exists() and is_main:
        log_path.unlink()
    # Under several processes this wraps the method in DistributedDataParallel: calling it runs the
    # loss, and backward() all-reduces the gradients of what is trained (prompt, prefix or weights).
    trainer = acc.prepare_model(method) if world > 1 else method

    meta_extra = {"task_name": task.name, "processes": world}
    primary = task.primary_metric()
    if multi:  # every task saved with the run; the first is its default (eval --task NAME picks another)
        meta_extra = {"task_name": cfg.task, "processes": world, "tasks": [r.task.to_dict() for r in runs]}
        primary = MEAN
        sampler = TaskSampler([len(r.data.train) for r in runs], cfg.task_temperature, cfg.seed, cfg.task_sampling)
        source = sampled_batches(state, runs, sampler, cfg.batch_size, cfg.seed, min_rows=world)
    else:
        source = ((0, rows) for rows in _epoch_batches(state, runs[0].lengths, cfg, world))
    bar = None
    if cfg.progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=state.step, desc=f"train {','.join(r.task.name for r in runs)}",
                   dynamic_ncols=True)  # what the run trains: every task of a multi-task run

    def log_line(record: dict[str, Any]) -> None:
        if is_main:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")

    def checkpoint() -> None:
        state.seconds = time.time() - started
        if is_main:
            save_checkpoint(out, method, optimizer, scheduler, state,
                            _prompt_metadata(cfg, backbone, task, {**meta_extra, "step": state.step}))
        acc.wait_for_everyone()

    # SIGINT/SIGTERM while the steps run: the step ends, a checkpoint is saved, TrainingInterrupted
    with StopRequests() as stop:
        for ti, rows in source if state.step < cfg.max_steps and not state.stopped_early else ():
            run = runs[ti]
            method.use_task(run.task.name)
            mine = _shard(rows, rank, world)
            batch = encode(backbone, run.task, [run.data.train[i] for i in mine], prompt_length=method.prompt_length)
            # scaled so that the mean of the processes' gradients is the global batch's mean gradient
            with mixed_precision(cfg, backbone.device):
                loss = trainer(backbone, run.task, batch, cfg.loss, cfg.length_normalize, cfg.word_scoring) * (len(mine) * world / len(rows))
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            loss_value = float(acc.reduce(loss.detach(), reduction="mean")) if world > 1 else loss.item()
            log_line({"step": state.step, "loss": loss_value, "lr": scheduler.get_last_lr()[0], "epoch": state.epoch,
                      **({"task": run.task.name} if multi else {})})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", **({f"dev_{primary}": f"{state.best_metric:.4f}"} if state.best_metric is not None else {}))
            evaluated = state.step % cfg.eval_every == 0 or state.step == cfg.max_steps
            if evaluated:
                if multi:
                    state.last_dev, value = evaluate_runs(runs, method, lambda r: evaluate_sharded(
                        acc, backbone, r.task, r.data.dev, method.inference_conditioning(), cfg))
                else:
                    result = evaluate_sharded(acc, backbone, task, dev_rows, method.inference_conditioning(), cfg)
                    state.last_dev = result.summary()
                    value = result.metrics[primary]
                counts = _method_counts(acc, method, state)
                log_line({"step": state.step, "split": "validation", **state.last_dev,
                          **({"method_counts": counts} if counts else {})})
                if state.best_metric is None or value > state.best_metric:
                    state.best_metric, state.best_step, state.evals_since_best = value, state.step, 0
                    state.best_dev = dict(state.last_dev)
                    if is_main:
                        method.save(out / "best", _prompt_metadata(cfg, backbone, task, {
                            **meta_extra, "step": state.step, "metrics": {"validation": state.last_dev}}))
                else:
                    state.evals_since_best += 1
                    if cfg.patience and state.evals_since_best >= cfg.patience:
                        state.stopped_early = True
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.4f}", **{f"dev_{primary}": f"{value:.4f}"})
            asked = stop.any(acc)  # a SIGINT/SIGTERM in any process: a checkpoint of this step, then stop
            if evaluated or asked is not None:
                if not evaluated:
                    _method_counts(acc, method, state)  # the counts since the last evaluation, kept in the state
                checkpoint()
            if asked is not None:
                if bar is not None:
                    bar.close()
                raise TrainingInterrupted(f"{signal.Signals(asked).name}: stopped after step {state.step} of "
                                          f"{cfg.max_steps}, saved in {out / 'checkpoint'}", asked, state.step)
            if state.step >= cfg.max_steps or state.stopped_early:
                break
    if bar is not None:
        bar.close()
    if is_main:
        method.save(out / "last", _prompt_metadata(cfg, backbone, task, {**meta_extra, "step": state.step}))
    acc.wait_for_everyone()

    result = TrainResult(out=out, best_prompt=out / "best" if (out / "best").exists() else None, state=state,
                         dev={"best_" + primary: state.best_metric, "best_step": state.best_step,
                              **(state.best_dev or state.last_dev)},  # best/'s metrics (a checkpoint from before best_dev: the last)
                         parameters=trained, embedding_rms=emb_rms)
    if multi:
        return _finish_multitask(acc, cfg, backbone, runs, method, result, started)
    return _finish(acc, cfg, backbone, task, method, data, result, started)


def _method_counts(acc, method, state: TrainState) -> dict[str, int]:
    """What ``method`` counted in its training steps since the last evaluation
    (:meth:`~softprompt.methods.base.Method.take_counts`), summed over the processes, added to
    ``state.method_counts`` and, where the method has advice for them, logged once as a warning
    by the main process. Returns the counts of this interval (empty when there are none)."""
    counts = Counter(method.take_counts())
    if acc.num_processes > 1:
        from accelerate.utils import gather_object

        counts = sum(map(Counter, gather_object([counts])), Counter())
    counts = {name: n for name, n in counts.items() if n}
    state.method_counts = dict(Counter(state.method_counts) + Counter(counts))
    advice = method.counts_warning(counts) if counts else None
    if advice and acc.is_main_process:
        log.warning("step %d: %s", state.step, advice)
    return counts


def parameter_counts(backbone, method) -> dict[str, int]:
    """What a run trains, for its ``results.json``: ``trained``, the numbers the optimizer updates;
    ``per_task``, a task's own part (:meth:`~softprompt.methods.base.Method.trained_per_task`: all
    of it for a method every task shares); ``model``, the frozen model's size."""
    return {"trained": sum(p.numel() for p in method.trainable_parameters()), "per_task": method.trained_per_task(),
            "model": sum(p.numel() for p in backbone.model.parameters())}


def _epoch_batches(state: TrainState, lengths: list[int], cfg: TrainConfig, world: int):
    """The training batches (row indices) of one task from where ``state`` stands, endlessly:
    epoch after epoch of :func:`~softprompt.batching.training_batches`, ``state.epoch`` and
    ``state.batch_in_epoch`` kept up to date; a tail too small to give every process a row is passed over."""
    while True:
        batches = training_batches(lengths, cfg.batch_size, cfg.seed, state.epoch)
        for bi in range(state.batch_in_epoch, len(batches)):
            state.batch_in_epoch = bi + 1
            if len(batches[bi]) >= world:
                yield batches[bi]
        state.epoch += 1
        state.batch_in_epoch = 0


def _evaluate_only(acc, cfg: TrainConfig, backbone, task, method, data, started: float,
                   emb_rms: float) -> TrainResult:
    """The run of a method that learns nothing: its dev and final metrics, and what it used
    (e.g. the in-context demonstrations) saved as ``best/`` where the method can save."""
    out = Path(cfg.out)
    dev = evaluate_sharded(acc, backbone, task, data.dev, method.inference_conditioning(), cfg).summary()
    primary = task.primary_metric()
    best = None
    if acc.is_main_process:
        try:
            best = method.save(out / "best", _prompt_metadata(cfg, backbone, task, {
                "task_name": task.name, "step": 0, "metrics": {"validation": dev}}))
        except NotImplementedError:
            best = None
    acc.wait_for_everyone()
    result = TrainResult(out=out, best_prompt=None, state=TrainState(), dev={"best_" + primary: dev[primary], **dev},
                         embedding_rms=emb_rms)
    result.best_prompt = Path(best) if best else None
    return _finish(acc, cfg, backbone, task, method, data, result, started, reload_best=False)


def _finish_multitask(acc, cfg: TrainConfig, backbone, runs, method, result: TrainResult, started: float) -> TrainResult:
    """:func:`_finish` of a multi-task run: the best state evaluated on each task's final split
    (and the zero-shot baseline), per task and their mean (:func:`~softprompt.multitask.evaluate_runs`)."""
    out = Path(cfg.out)
    finals = {r.task.name: final_rows(r.task, r.cfg, r.data) for r in runs}
    if result.best_prompt is not None:
        method.load_state(result.best_prompt)
    splits = sorted({f[0] for f in finals.values() if f and f[1]})
    if splits:
        result.test_split = ",".join(splits)

        def final(run, cond):
            got = finals[run.task.name]
            if not got or not got[1]:
                return None
            return evaluate_sharded(acc, backbone, run.task, got[1], method.inference_conditioning() if cond else None, cfg)

        result.test = evaluate_runs(runs, method, lambda r: final(r, True), "final")[0]
        if cfg.zero_shot_baseline and all(zero_shot_applies(r.task, method) for r in runs):
            result.zero_shot_test = evaluate_runs(runs, method, lambda r: final(r, False), "final")[0]
    result.seconds = time.time() - started
    if acc.is_main_process:
        atomic_write_text(out / "results.json", json.dumps({
            "task": ",".join(r.task.name for r in runs), "tasks": [r.task.name for r in runs], "model": cfg.model,
            "model_weights": backbone.weights, "method": cfg.method, "dev": result.dev, "test": result.test,
            "test_split": result.test_split, "train_rows": {r.task.name: len(r.data.train) for r in runs},
            "dev_rows": {r.task.name: len(r.data.dev) for r in runs}, "zero_shot_test": result.zero_shot_test,
            "steps": result.state.step, "task_batches": result.state.task_batches, "parameters": result.parameters,
            "stopped_early": result.state.stopped_early, "seconds": round(result.seconds, 1),
            **({"method_counts": result.state.method_counts} if result.state.method_counts else {}),
            "processes": acc.num_processes, "embedding_rms": result.embedding_rms, "config": dataclasses.asdict(cfg)},
            indent=2))
    return result


def zero_shot_applies(task, method) -> bool:
    """Whether the zero-shot baseline (the same template and verbalizer, nothing learnt) means
    anything for ``method`` on ``task``: the method adds something to the model, and neither the
    template's virtual tokens nor the verbalizer's answer vectors are learnt parts the baseline
    would have to leave out (without them the template cannot be read, or the labels' names would
    be scored in place of their vectors)."""
    return bool(method.conditioning().kinds) and not task.template.virtual_tokens \
        and not task.verbalizer.conditioning().kinds


def _finish(acc, cfg: TrainConfig, backbone, task, method, data, result: TrainResult, started: float,
            reload_best: bool = True) -> TrainResult:
    """Evaluate the best state on the final split (and the zero-shot baseline), write results.json."""
    out = Path(cfg.out)
    final = final_rows(task, cfg, data)
    if final:
        result.test_split, test_rows = final
        if test_rows:
            if reload_best and result.best_prompt is not None:
                method.load_state(result.best_prompt)
            progress = cfg.progress and acc.is_main_process
            result.test = evaluate_sharded(acc, backbone, task, test_rows, method.inference_conditioning(), cfg,
                                           progress).summary()
            if cfg.zero_shot_baseline and zero_shot_applies(task, method):
                result.zero_shot_test = evaluate_sharded(acc, backbone, task, test_rows, None, cfg, progress).summary()
    result.seconds = time.time() - started
    if not acc.is_main_process:
        return result
    state = result.state
    atomic_write_text(out / "results.json", json.dumps({
        "task": task.name, "model": cfg.model, "model_weights": backbone.weights, "method": cfg.method,
        "dev": result.dev, "test": result.test,
        "test_split": result.test_split, "train_rows": len(data.train), "dev_rows": len(data.dev),
        "zero_shot_test": result.zero_shot_test, "steps": state.step, "parameters": result.parameters,
        "stopped_early": state.stopped_early,
        "seconds": round(result.seconds, 1), **({"method_counts": state.method_counts} if state.method_counts else {}),
        "processes": acc.num_processes, "embedding_rms": result.embedding_rms, "config": dataclasses.asdict(cfg)},
        indent=2))
    return result
