"""Cost of the named models on this machine: load time, memory, one training step, one eval batch.

    python benchmarks/models.py [--models smollm2-135m,gemma-3-270m] [--tasks rotten_tomatoes,boolq]
                                [--steps 3] [--data-dir ../shared/data] [--json models.json]

Each model runs in its own process (so its peak memory is its own): the model is loaded (from the
converted cache: run any command on it once before, the first conversion is timed apart), then per
task a 20-vector prompt-tuning method takes ``--steps`` training steps of batch 8 (forward, backward,
Adafactor step) and two evaluation batches of 32 dev rows are scored, at ``max_length`` 256.
Medians are printed. ``--paired`` instead loads every model in one process and takes one step of
each method (prompt tuning 100, full tuning, prefix tuning 20) per model in turn on Rotten
Tomatoes, so that all see the same load on a shared machine. Not run by the tests or CI; used to
size experiments/scale.yaml.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def one_model(name: str, tasks: list[str], steps: int, data_dir: str) -> dict:
    import torch

    from softprompt.encoding import encode
    from softprompt.methods import PromptTuning, PromptTuningConfig
    from softprompt.modeling import load_model
    from softprompt.scoring import label_scores
    from softprompt.tasks import get_task, load_split
    from softprompt.training import make_optimizer

    torch.manual_seed(0)
    started = time.perf_counter()
    bb = load_model(name, max_length=256)
    out = {"model": name, "load_s": round(time.perf_counter() - started, 1),
           "rss_after_load_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "tasks": {}}
    for task_name in tasks:
        task = get_task(task_name)
        method = PromptTuning(PromptTuningConfig(prompt_length=20), bb, task)
        opt = make_optimizer("adafactor", method.trainable_parameters(), 0.01, 1e-5)
        rows = load_split(task, "train", data_dir=data_dir, limit=8 * steps)
        train_s = []
        for i in range(steps):
            batch = encode(bb, task, rows[8 * i: 8 * i + 8], prompt_length=20)
            t = time.perf_counter()
            method(bb, task, batch).backward()
            opt.step()
            opt.zero_grad()
            train_s.append(time.perf_counter() - t)
        dev = load_split(task, "validation", data_dir=data_dir, limit=32)
        eval_s = []
        for _ in range(2):
            batch = encode(bb, task, dev, prompt_length=20)
            t = time.perf_counter()
            with torch.no_grad():
                label_scores(bb, task, batch, method.inference_conditioning())
            eval_s.append(time.perf_counter() - t)
        out["tasks"][task_name] = {"train_step_s": round(statistics.median(train_s), 2),
                                   "eval_batch_s": round(statistics.median(eval_s), 2)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def paired(names: list[str], steps: int, data_dir: str) -> dict:
    """Seconds of each (model, method) training step, taken in turn: ``{"model method": [s, ...]}``."""
    from softprompt.encoding import encode
    from softprompt.methods import get_method
    from softprompt.modeling import load_model
    from softprompt.tasks import get_task, load_split
    from softprompt.training import make_optimizer

    task = get_task("rotten_tomatoes")
    rows = load_split(task, "train", data_dir=data_dir, limit=8 * steps)
    setups = {}
    for name in names:
        bb = load_model(name, max_length=256)
        for method, options, optimizer, lr in [("prompt-tuning", {"prompt_length": 100}, "adafactor", 0.01),
                                               ("full-tuning", {}, "adam", 2e-5),
                                               ("prefix-tuning", {"prompt_length": 20}, "adam", 1e-3)]:
            config_cls, method_cls = get_method(method)
            m = method_cls(config_cls(**options), bb, task)
            setups[f"{name} {method}"] = (bb, m, make_optimizer(optimizer, m.trainable_parameters(), lr, 0.0))
    out: dict[str, list[float]] = {}
    for i in range(steps):
        for key, (bb, m, opt) in setups.items():
            batch = encode(bb, task, rows[8 * i: 8 * i + 8], prompt_length=m.prompt_length)
            t = time.perf_counter()
            m(bb, task, batch).backward()
            opt.step()
            opt.zero_grad()
            out.setdefault(key, []).append(round(time.perf_counter() - t, 2))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="smollm2-135m,gemma-3-270m")
    p.add_argument("--tasks", default="rotten_tomatoes,boolq")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--paired", action="store_true", help="one step per model and method in turn, one process")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's model
    a = p.parse_args()
    tasks = a.tasks.split(",")
    if a.paired:
        print(json.dumps(paired(a.models.split(","), a.steps, a.data_dir)))
        return
    if a.one:
        print(json.dumps(one_model(a.one, tasks, a.steps, a.data_dir)))
        return
    results = []
    for name in a.models.split(","):
        child = subprocess.run([sys.executable, __file__, "--one", name, "--tasks", a.tasks, "--steps", str(a.steps),
                                "--data-dir", a.data_dir], capture_output=True, text=True, check=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
