"""Multi-task methods' training step and trainable parameters, against prompt tuning, in one run.

Same model (the embedded SmolLM2-135M, float32), the same real batch of 8 RTE rows
(../shared/data, or the built-in source), the same classification loss and the same optimizer
(Adam); each method is built for the three tasks rte, mrpc, cb (those that condition tasks alike
ignore the list). For each method it prints the median time of a training step (forward,
backward, optimizer step) over ``--steps`` steps after a warm-up step, the rounds interleaved
across methods so that a slow spell of a shared machine falls on all of them, and the numbers it
trains: in all, and per task (for a method with a part per task, that part; for one shared by all
tasks, all it trains, the cost of a single-task run of it).

    python benchmarks/multitask_step.py                 # about 5 minutes on 2 cores
    python benchmarks/multitask_step.py --steps 2       # a quick look

Ratios to prompt tuning, not seconds, are the point: every method runs in this one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from softprompt.encoding import encode
from softprompt.methods.configs import method_config
from softprompt.modeling import load_model
from softprompt.tasks.registry import get_task, load_split

TASKS = "rte,mrpc,cb"
METHODS = {
    "prompt-tuning": {"prompt_length": 100, "init": "vocab"},
    "multitask-prompt-tuning": {"prompt_length": 100, "init": "vocab"},
    "adapter": {},
    "hyperformer": {},
    "hyperformer (per layer)": {"per_layer": True},
}


def per_task(method) -> tuple[int, int]:
    """``(trained in all, trained per task)`` numbers of ``method``."""
    return sum(p.numel() for p in method.trainable_parameters()), method.trained_per_task()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", help="write the table here too")
    parser.add_argument("--data-dir", default="../shared/data", help="folder holding rte/train.jsonl")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_model("smollm2-135m")
    task = get_task("rte")
    rows = load_split(task, "train", data_dir=args.data_dir, limit=8)
    batch = encode(backbone, task, rows, prompt_length=100)
    methods = {}
    for label, options in METHODS.items():
        name = label.split(" (")[0]
        config, cls = method_config(name, {"task": TASKS, **options} if name != "prompt-tuning" else options)
        method = cls(config, backbone, task, seed=0)
        methods[label] = (method, torch.optim.Adam(method.trainable_parameters(), lr=1e-4),
                          encode(backbone, task, rows, prompt_length=method.prompt_length))
    del batch

    def step(label):
        method, opt, b = methods[label]
        t = time.perf_counter()
        method(backbone, task, b).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    for label in methods:  # warm-up
        step(label)
    times = {label: [] for label in methods}
    for _ in range(args.steps):
        for label in methods:
            times[label].append(step(label))
    base = statistics.median(times["prompt-tuning"])
    table = []
    print(f"SmolLM2-135M float32, batch 8 RTE rows, Adam, {args.steps} steps each, torch threads {torch.get_num_threads()}")
    print("| method | s/step (median) | / prompt tuning | trained in all | trained per task | per task, % of the model |")
    print("|---|---|---|---|---|---|")
    model_size = sum(p.numel() for p in backbone.model.parameters())
    for label, (method, _, _) in methods.items():
        med = statistics.median(times[label])
        total, own = per_task(method)
        table.append({"method": label, "seconds": med, "ratio": med / base, "trained": total, "per_task": own})
        print(f"| {label} | {med:.3f} | {med / base:.2f} | {total:,} | {own:,} | {100 * own / model_size:.3f} % |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"model_parameters": model_size, "steps": args.steps, "rows": table}, fh, indent=2)


if __name__ == "__main__":
    main()
