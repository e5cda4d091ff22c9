"""Serving a multi-task run: mixed batches of all its tasks against one-task batches (issue 19 item 5).

A small Hyperformer++ run is trained for ``--steps`` steps on three tasks of ``../shared/data``
(Rotten Tomatoes, MRPC, the QQP sample: two labels each, one token per label word, so the run's
tasks can share a pass) on SmolLM2-135M and served by :class:`MultiPromptModel` (each task as
``RUN.TASK``). The same requests, ``--rows`` validation rows per task, are then classified

* **mixed**: shuffled across tasks, ``--batch-size`` at a time, every row with its own task's
  generated adapters in one forward pass (per-row layer hooks);
* **mixed, split by task**: the same batches, but the backbone runs one pass per task inside each
  batch (what it did before per-row hooks; ``row_hooks`` switched off for the call);
* **one-task batches**: each task's rows alone, ``--batch-size`` at a time.

Reported per configuration: rows/s (the median over ``--rounds`` interleaved rounds), the ratio to
one-task batches, and whether every row's label agrees with its one-task answer.

    nice -n 19 python benchmarks/serve_multitask.py                   # a few minutes on 2 cores
    nice -n 19 python benchmarks/serve_multitask.py --steps 2 --rows 16 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import softprompt.backbones.base as backbone_base
from softprompt.modeling import DEFAULT_MODEL, load_model
from softprompt.serving import MultiPromptModel
from softprompt.tasks.registry import get_task, load_split
from softprompt.training import train

TASKS = ("rotten_tomatoes", "mrpc", "qqp_sample")


def train_run(out: Path, data_dir: str, model: str, steps: int) -> Path:
    """A Hyperformer++ run of :data:`TASKS` (defaults but the bottleneck, 24) trained ``steps`` steps; its best/."""
    train(task=",".join(TASKS), data_dir=data_dir, model=model, method="hyperformer", batch_size=4, max_steps=steps,
          eval_every=steps, eval_limit=8, max_length=256, out=str(out), progress=False, zero_shot_baseline=False,
          test_split="", seed=0)
    return out / "best"


@contextmanager
def split_by_task():
    """Per-row hooks off: a batch whose rows have other adapters runs one pass per task (the path before them)."""
    real = backbone_base.row_hooks
    backbone_base.row_hooks = lambda items: None
    try:
        yield
    finally:
        backbone_base.row_hooks = real


def run(engine: MultiPromptModel, requests: list[tuple[dict, str]], batch_size: int) -> tuple[float, list[str]]:
    """Classify ``requests`` ``batch_size`` at a time; (seconds, labels in order)."""
    labels = []
    start = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        chunk = requests[i: i + batch_size]
        labels += [r.label for r in engine.classify([x for x, _ in chunk], [t for _, t in chunk], batch_size=batch_size)]
    return time.perf_counter() - start, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=3, help="training steps of the Hyperformer run")
    ap.add_argument("--rows", type=int, default=32, help="validation rows per task")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="serve_mt_"))
    try:
        t0 = time.perf_counter()
        best = train_run(tmp / "run", args.data_dir, args.model, args.steps)
        trained_s = time.perf_counter() - t0
        (tmp / "prompts").mkdir()
        shutil.copytree(best, tmp / "prompts" / "mt")
        backbone = load_model(args.model, device="cpu")
        engine = MultiPromptModel.from_dir(backbone, tmp / "prompts")
        assert not engine.refused, engine.refused
        requests = []
        for name in TASKS:
            task = get_task(name)
            for row in load_split(task, "validation", args.data_dir, limit=args.rows):
                requests.append(({f: row[f] for f in task.template.fields}, f"mt.{name}"))
        mixed = requests[:]
        random.Random(0).shuffle(mixed)
        one_task = sorted(requests, key=lambda r: r[1])  # the order _one_task answers in
        configs = {"mixed": lambda: run(engine, mixed, args.batch_size),
                   "mixed, split by task": lambda: _split(engine, mixed, args.batch_size),
                   "one-task batches": lambda: _one_task(engine, requests, args.batch_size)}
        for fn in configs.values():  # warm-up: caches, first-call costs
            fn()
        times = {k: [] for k in configs}
        labels = {}
        for _ in range(args.rounds):
            for k, fn in configs.items():
                s, got = fn()
                times[k].append(s)
                labels[k] = got
        truth = dict(zip(map(_key, one_task), labels["one-task batches"]))
        n = len(requests)
        out = {"model": args.model, "tasks": list(TASKS), "rows": n, "batch_size": args.batch_size, "rounds": args.rounds,
               "train_steps": args.steps, "train_s": round(trained_s, 1), "configs": {}}
        base = n / statistics.median(times["one-task batches"])
        for k in configs:
            order = mixed if k.startswith("mixed") else one_task
            agree = sum(truth[_key(r)] == got for r, got in zip(order, labels[k]))
            rate = n / statistics.median(times[k])
            out["configs"][k] = {"rows_per_s": round(rate, 2), "ratio_to_one_task": round(rate / base, 3),
                                 "seconds": [round(s, 2) for s in times[k]], "labels_agree": f"{agree}/{n}"}
        print(json.dumps(out, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _key(request: tuple[dict, str]) -> str:
    return json.dumps(request, sort_keys=True)


def _split(engine, requests, batch_size):
    with split_by_task():
        return run(engine, requests, batch_size)


def _one_task(engine, requests, batch_size):
    """Each task's rows alone, ``batch_size`` at a time; labels in task order."""
    seconds, labels = 0.0, []
    for name in sorted({t for _, t in requests}):
        s, got = run(engine, [r for r in requests if r[1] == name], batch_size)
        seconds += s
        labels += got
    return seconds, labels


if __name__ == "__main__":
    main()
