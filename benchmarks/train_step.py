"""Training-step benchmark: softprompt against PEFT's prompt tuning, side by side in one run.

Same model (the embedded SmolLM2-135M), same real batches (Rotten Tomatoes snippets and BoolQ
passages+questions), same classification loss (cross-entropy over the label words' logits at the
answer position), same optimizer. For each prompt length it prints:

* step time of softprompt and of PEFT, and their ratio (PEFT / softprompt: above 1 = we are faster);
* peak memory of one step above the resting process (VmHWM after resetting it), and the ratio;
* the ratio of each to the floor: forward + backward over the texts alone, no prompt.

Then, for several seeds, it trains both for the same number of steps from the same initial prompt
on the same batches and prints their dev accuracy (mean, spread, paired difference).

    python benchmarks/train_step.py                   # the full table (about 15 minutes on 2 cores)
    python benchmarks/train_step.py --lengths 1 20 --steps 2 --acc-steps 0   # a quick look
    python benchmarks/train_step.py --skip-timing                            # only the accuracy part

Ratios, not seconds, are the point: both sides run in this one process on the same machine.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from softprompt.encoding import encode
from softprompt.modeling import load_model
from softprompt.prompt import SoftPrompt
from softprompt.scoring import classification_loss, evaluate
from softprompt.tasks.registry import get_task, load_split
from softprompt.training import make_optimizer

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SOFTPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))


# --------------------------------------------------------------------------- memory
def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _settle() -> int:
    """Free what can be freed, reset the peak-RSS mark, return the resting RSS (bytes)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def measure(step, repeats: int) -> tuple[float, float]:
    """Median seconds of ``step()`` over ``repeats`` runs after one warm-up, and the peak memory
    (bytes above the resting RSS) of one step."""
    step()  # warm-up
    rest = _settle()
    step()
    peak = _status("VmHWM") - rest
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times), peak


# --------------------------------------------------------------------------- the three steps
def softprompt_step(backbone, task, batch, prompt, opt):
    def step():
        loss = classification_loss(backbone, task, batch, prompt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def _peft_label_scores(peft_model, batch, n_virtual: int, label_ids: torch.Tensor) -> torch.Tensor:
    """PEFT's logits of the label words at each row's answer position: ``[batch, n_labels]``."""
    width = max(len(c) for c in batch.context)
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, c in enumerate(batch.context):
        ids[i, : len(c)] = torch.tensor(c)
        mask[i, : len(c)] = 1
    logits = peft_model(input_ids=ids, attention_mask=mask).logits  # [batch, virtual + width, vocab]
    return logits[torch.arange(len(batch)), mask.sum(1) - 1 + n_virtual][:, label_ids].float()


def _peft_loss(peft_model, batch, n_virtual: int, label_ids: torch.Tensor) -> torch.Tensor:
    scores = _peft_label_scores(peft_model, batch, n_virtual, label_ids)
    return torch.nn.functional.cross_entropy(scores, torch.tensor(batch.gold))


def peft_step(peft_model, batch, n_virtual, label_ids, opt):
    def step():
        loss = _peft_loss(peft_model, batch, n_virtual, label_ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def floor_step(backbone, batch, label_ids):
    """Forward + backward over the texts alone (gradient to the input embeddings), no prompt."""
    ids, mask = backbone._pad(batch.context)

    def step():
        emb = backbone.embed(ids).detach().requires_grad_(True)
        hidden = backbone.model.base_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
        h = hidden[torch.arange(len(batch)), mask.sum(1) - 1]
        loss = torch.nn.functional.cross_entropy(backbone._head(h, label_ids), torch.tensor(batch.gold))
        loss.backward()
        return loss.item()
    return step


def make_peft(base, length: int, init: torch.Tensor):
    from peft import PromptTuningConfig, get_peft_model

    cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length)
    model = get_peft_model(base, cfg)
    emb = model.prompt_encoder["default"].embedding
    with torch.no_grad():
        emb.weight.copy_(init)
    model.eval()
    return model, [emb.weight]


def peft_accuracy(peft_model, task, backbone, rows, n_virtual, label_ids, batch_size=16) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            batch = encode(backbone, task, rows[i: i + batch_size], prompt_length=n_virtual)
            scores = _peft_label_scores(peft_model, batch, n_virtual, label_ids)
            correct += int((scores.argmax(-1) == torch.tensor(batch.gold)).sum())
    return correct / len(rows)


def accuracy_comparison(backbone, peft_base, args) -> dict:
    """Train softprompt and PEFT from the same initial prompt on the same batches, for several seeds.

    The two compute the same function (their losses and gradients agree to about 1e-5 at the
    first step), but prompt tuning at a high learning rate is chaotic: float-rounding differences
    roughly double every step, so after a few dozen steps the two runs of one seed are different
    samples of the same process. "Equal within noise" is therefore judged over seeds.
    """
    import random

    task = get_task("rotten_tomatoes")
    pool = load_rows("rotten_tomatoes", "train", 4000)
    dev_rows = load_rows("rotten_tomatoes", "validation", args.acc_dev)
    label_ids = torch.tensor([backbone.tokenize(" " + ws[0])[0] for ws in task.verbalizer.candidates()])
    words = [[" " + w for w in ws] for ws in task.verbalizer.candidates()]
    per_seed, t_sp, t_pf = [], 0.0, 0.0
    for seed in range(args.acc_seeds):
        rows = random.Random(seed).sample(pool, args.acc_steps * args.batch_size)
        init = SoftPrompt.initialize(args.acc_length, backbone.dim, "class-labels",
                                     backbone.init_context(words, seed=seed)).weight.detach()
        sp_prompt = torch.nn.Parameter(init.clone())
        sp_opt = make_optimizer("adafactor", [sp_prompt], args.lr, 1e-5)
        peft_model, params = make_peft(peft_base, args.acc_length, init)
        pf_opt = make_optimizer("adafactor", params, args.lr, 1e-5)
        for s in range(args.acc_steps):
            batch = encode(backbone, task, rows[s * args.batch_size:(s + 1) * args.batch_size],
                           prompt_length=args.acc_length)
            t = time.perf_counter()
            softprompt_step(backbone, task, batch, sp_prompt, sp_opt)()
            t_sp += time.perf_counter() - t
            t = time.perf_counter()
            peft_step(peft_model, batch, args.acc_length, label_ids, pf_opt)()
            t_pf += time.perf_counter() - t
        sp_acc = evaluate(backbone, task, dev_rows, sp_prompt.detach(), batch_size=16).metrics["accuracy"]
        pf_acc = peft_accuracy(peft_model, task, backbone, dev_rows, args.acc_length, label_ids)
        per_seed.append({"seed": seed, "softprompt": sp_acc, "peft": pf_acc})
        print(f"seed {seed}: dev accuracy softprompt {sp_acc:.4f}, PEFT {pf_acc:.4f}", flush=True)
        peft_base = peft_model.unload() if hasattr(peft_model, "unload") else peft_model.get_base_model()
    sp = [r["softprompt"] for r in per_seed]
    pf = [r["peft"] for r in per_seed]
    diffs = [a - b for a, b in zip(sp, pf)]
    sd = statistics.stdev if len(sp) > 1 else (lambda xs: 0.0)
    summary = {"length": args.acc_length, "steps": args.acc_steps, "lr": args.lr, "dev_rows": len(dev_rows),
               "per_seed": per_seed, "softprompt_mean": statistics.mean(sp), "softprompt_std": sd(sp),
               "peft_mean": statistics.mean(pf), "peft_std": sd(pf), "paired_difference_mean": statistics.mean(diffs),
               "paired_difference_std": sd(diffs), "softprompt_train_s": t_sp, "peft_train_s": t_pf}
    print(f"\naccuracy after {args.acc_steps} steps (prompt length {args.acc_length}, lr {args.lr}, {len(dev_rows)} dev "
          f"rows, {len(sp)} seeds): softprompt {summary['softprompt_mean']:.4f} ± {summary['softprompt_std']:.4f}, "
          f"PEFT {summary['peft_mean']:.4f} ± {summary['peft_std']:.4f}; paired difference "
          f"{summary['paired_difference_mean']:+.4f} ± {summary['paired_difference_std']:.4f}; training time "
          f"{t_sp:.0f} s vs {t_pf:.0f} s")
    return summary


def load_rows(name: str, split: str, limit: int) -> list[dict]:
    data_dir = str(SHARED) if (SHARED / name).exists() else None
    return load_split(name, split, data_dir=data_dir, limit=limit)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1, 20, 100, 150])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    ap.add_argument("--max-length", type=int, default=256, help="BoolQ rows are truncated to this (prompt included)")
    ap.add_argument("--acc-length", type=int, default=100)
    ap.add_argument("--acc-steps", type=int, default=30, help="training steps for the accuracy comparison (0: skip)")
    ap.add_argument("--acc-dev", type=int, default=200)
    ap.add_argument("--acc-seeds", type=int, default=3, help="seeds for the accuracy comparison")
    ap.add_argument("--skip-timing", action="store_true", help="only the accuracy comparison")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)

    backbone = load_model(max_length=args.max_length)
    from transformers import AutoModelForCausalLM

    from softprompt.modeling import resolve_model_path

    peft_base = AutoModelForCausalLM.from_pretrained(resolve_model_path("smollm2-135m"), dtype=torch.float32)
    for p in peft_base.parameters():
        p.requires_grad_(False)
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, model {backbone.model_id}, "
          f"batch {args.batch_size}")

    sets = {}
    for name in ("rotten_tomatoes", "boolq"):
        task = get_task(name)
        rows = load_rows(name, "train", 400)
        sets[name] = (task, rows[: args.batch_size])
    results = []
    header = (f"{'data':16s} {'len':>4s} {'softprompt s':>12s} {'peft s':>8s} {'speedup':>8s} {'floor s':>8s} "
              f"{'sp/floor':>8s} {'peft/floor':>10s} {'sp MB':>8s} {'peft MB':>8s} {'mem ratio':>9s}")
    print(header)
    for name, (task, rows) in ({} if args.skip_timing else sets).items():
        label_ids = torch.tensor([backbone.tokenize(task.verbalizer.prefix + ws[0])[0] for ws in task.verbalizer.candidates()])
        floor_batch = encode(backbone, task, rows, prompt_length=max(args.lengths))
        floor_t, floor_m = measure(floor_step(backbone, floor_batch, label_ids), args.steps)
        for length in args.lengths:
            batch = encode(backbone, task, rows, prompt_length=max(args.lengths))  # same texts for every length
            init = SoftPrompt.initialize(length, backbone.dim, "class-labels", backbone.init_context(
                [[task.verbalizer.prefix + w for w in ws] for ws in task.verbalizer.candidates()])).weight.detach()
            sp_prompt = torch.nn.Parameter(init.clone())
            sp_t, sp_m = measure(softprompt_step(backbone, task, batch, sp_prompt,
                                                 make_optimizer("adafactor", [sp_prompt], args.lr, 1e-5)), args.steps)
            peft_model, params = make_peft(peft_base, length, init)
            pf_t, pf_m = measure(peft_step(peft_model, batch, length, label_ids,
                                           make_optimizer("adafactor", params, args.lr, 1e-5)), args.steps)
            peft_base = peft_model.unload() if hasattr(peft_model, "unload") else peft_model.get_base_model()
            del peft_model
            row = {"data": name, "length": length, "softprompt_s": sp_t, "peft_s": pf_t, "speedup": pf_t / sp_t,
                   "floor_s": floor_t, "softprompt_over_floor": sp_t / floor_t, "peft_over_floor": pf_t / floor_t,
                   "softprompt_peak_mb": sp_m / 2**20, "peft_peak_mb": pf_m / 2**20,
                   "memory_ratio": pf_m / max(sp_m, 1), "floor_peak_mb": floor_m / 2**20}
            results.append(row)
            print(f"{name:16s} {length:4d} {sp_t:12.3f} {pf_t:8.3f} {pf_t / sp_t:7.2f}x {floor_t:8.3f} "
                  f"{sp_t / floor_t:8.2f} {pf_t / floor_t:10.2f} {sp_m / 2**20:8.0f} {pf_m / 2**20:8.0f} "
                  f"{pf_m / max(sp_m, 1):8.2f}x", flush=True)

    acc = None
    if args.acc_steps:
        acc = accuracy_comparison(backbone, peft_base, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": results, "accuracy": acc}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
