"""Serving benchmark: many prompts on one SmolLM2-135M, softprompt's mixed batches against PEFT.

1. **Mixed-task classification**, for 1, 10 and 100 tasks (random prompts of length 100 saved
   with the right metadata: speed does not depend on what a prompt learned). The same requests
   (Rotten Tomatoes test snippets, each given a task at random) go, ``--batch-size`` at a time,
   through :meth:`MultiPromptModel.classify` (one forward per batch, every row with its own
   prompt's cached keys/values) and through PEFT (``PeftModel`` with one prompt-tuning adapter
   per task: each batch is split by task, ``set_adapter`` per group, one forward per group).
   Reported: throughput (inputs/s) and p50/p99 latency of one batch, and how often both agree.
2. **Saturation**: ``softprompt serve`` in a subprocess on 127.0.0.1 and a load generator in a
   second process keeping ``--concurrency`` requests in flight for ``--seconds`` seconds; it counts
   accepted, answered, 503-rejected and every other status (accepted and answered must be equal).
   With ``--heavy-fraction F``, a fraction F of the requests carry ``--heavy-inputs`` long inputs
   (most of the server's token budget per request); the latency of answered light and heavy
   requests is reported apart.

    python benchmarks/serve.py                                  # everything (a few minutes on 2 cores)
    python benchmarks/serve.py --tasks 1 10 --requests 64 --seconds 10   # a quick look
    python benchmarks/serve.py --only-saturation --seconds 20 --heavy-fraction 0.05   # the serving bounds

Only loopback traffic; every loop is bounded by a count or a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from softprompt.encoding import encode
from softprompt.modeling import DEFAULT_MODEL, load_model
from softprompt.prompt import SoftPrompt
from softprompt.serving import MultiPromptModel
from softprompt.tasks.registry import get_task, load_split


def make_prompts(backbone, root: Path, n: int, length: int) -> list[str]:
    """``n`` random prompts for Rotten Tomatoes in ``root/t000`` ... with the model's metadata."""
    task = get_task("rotten_tomatoes")
    names = []
    for i in range(n):
        weight = torch.randn(length, backbone.dim, generator=torch.Generator().manual_seed(i)) * 0.1
        meta = {"model_id": backbone.model_id, "model_fingerprint": backbone.fingerprint, "dim": backbone.dim,
                "task": task.to_dict(), "model_family": "causal"}
        SoftPrompt(weight, meta).save(root / f"t{i:03d}")
        names.append(f"t{i:03d}")
    return names


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summary(times: list[float], n_inputs: int) -> dict[str, float]:
    return {"inputs_per_s": round(n_inputs / sum(times), 2), "p50_ms": round(1000 * percentile(times, 50), 1),
            "p99_ms": round(1000 * percentile(times, 99), 1)}


def bench_softprompt(engine: MultiPromptModel, batches, names: list[str]) -> tuple[dict, list[str]]:
    engine.classify([batches[0][0][0]] * len(names), names)  # warm-up: every prompt's keys/values cached, as in serving
    engine.classify(*batches[0])
    times, labels = [], []
    for texts, tasks in batches:
        start = time.perf_counter()
        out = engine.classify(texts, tasks)
        times.append(time.perf_counter() - start)
        labels += [r.label for r in out]
    return summary(times, sum(len(t) for t, _ in batches)), labels


class PeftBaseline:
    """PEFT prompt tuning: one adapter per task, a batch split by task, ``set_adapter`` per group."""

    def __init__(self, backbone, prompts_root: Path, names: list[str]):
        from peft import PeftModel

        from softprompt.peft_compat import export_peft

        self.backbone = backbone
        self.task = get_task("rotten_tomatoes")
        adapters = prompts_root.parent / (prompts_root.name + "-peft")
        for name in names:
            export_peft(SoftPrompt.load(prompts_root / name), adapters / name, backbone)
        self.model = PeftModel.from_pretrained(backbone.model, adapters / names[0], adapter_name=names[0])
        for name in names[1:]:
            self.model.load_adapter(adapters / name, adapter_name=name)
        self.model.eval()
        self.length = SoftPrompt.load(prompts_root / names[0]).length
        self.word_ids = None

    @torch.no_grad()
    def classify(self, texts: list[str], tasks: list[str]) -> list[str]:
        labels: list[str | None] = [None] * len(texts)
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(tasks):
            groups.setdefault(t, []).append(i)
        for task, rows in groups.items():
            self.model.set_adapter(task)
            batch = encode(self.backbone, self.task, [{"text": texts[i]} for i in rows], self.length, with_labels=False)
            ids, mask = self.backbone._pad(batch.context)
            last = mask.sum(1) - 1 + self.length  # PEFT puts the virtual tokens first
            keep = sorted(set(last.tolist()))
            out = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=torch.tensor(keep))
            col = torch.tensor([keep.index(x) for x in last.tolist()])
            word_ids = [w[0] for w in batch.words[0]]
            scores = out.logits[torch.arange(len(rows)), col][:, word_ids]
            for j, i in enumerate(rows):
                labels[i] = batch.label_names[0][int(scores[j].argmax())]
        return labels


def bench_peft(baseline: PeftBaseline, batches) -> tuple[dict, list[str]]:
    baseline.classify(*batches[0])  # warm-up
    times, labels = [], []
    for texts, tasks in batches:
        start = time.perf_counter()
        labels += baseline.classify(texts, tasks)
        times.append(time.perf_counter() - start)
    return summary(times, sum(len(t) for t, _ in batches)), labels


# ------------------------------------------------------------------ saturation
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def heavy_inputs(texts: list[str], n: int, chars: int) -> list[str]:
    """``n`` inputs of about ``chars`` characters each, made by joining test snippets."""
    out, pool = [], iter(texts * 100)
    for _ in range(n):
        text = ""
        while len(text) < chars:
            text += " " + next(pool)
        out.append(text[:chars])
    return out


async def load_client(url: str, tasks: list[str], texts: list[str], seconds: float, concurrency: int,
                      heavy_fraction: float = 0.0, heavy: list[str] | None = None) -> dict:
    """Keep ``concurrency`` requests in flight for ``seconds``; count every outcome by status."""
    import httpx

    counts = {"sent": 0, "answered": 0, "rejected_503": 0, "other_status": 0, "transport_errors": 0, "heavy_sent": 0}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    heavy_latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    rng = random.Random(0)

    async def worker(client):
        while time.perf_counter() < deadline:
            is_heavy = heavy is not None and rng.random() < heavy_fraction
            body = {"task": rng.choice(tasks), "inputs": heavy if is_heavy else [rng.choice(texts)]}
            counts["sent"] += 1
            counts["heavy_sent"] += is_heavy
            start = time.perf_counter()
            try:
                r = await client.post(f"{url}/v1/classify", json=body)
            except httpx.HTTPError:
                counts["transport_errors"] += 1
                continue
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            if r.status_code == 200:
                counts["answered"] += 1
                (heavy_latencies if is_heavy else latencies).append(time.perf_counter() - start)
            elif r.status_code == 503:
                counts["rejected_503"] += 1
                await asyncio.sleep(0.05)  # a polite client backs off a little (bounded spin)
            else:
                counts["other_status"] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
    counts["accepted"] = counts["sent"] - counts["rejected_503"] - counts["transport_errors"] - counts["other_status"]
    counts["answered_per_s"] = round(counts["answered"] / seconds, 2)
    counts["statuses"] = statuses
    if latencies:
        counts["p50_ms"] = round(1000 * percentile(latencies, 50), 1)
        counts["p99_ms"] = round(1000 * percentile(latencies, 99), 1)
        counts["max_ms"] = round(1000 * max(latencies), 1)
    if heavy_latencies:
        counts["heavy_answered"] = len(heavy_latencies)
        counts["heavy_p50_ms"] = round(1000 * percentile(heavy_latencies, 50), 1)
        counts["heavy_p99_ms"] = round(1000 * percentile(heavy_latencies, 99), 1)
    return counts


def saturation(prompts_root: Path, model: str, tasks: list[str], texts: list[str], args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "softprompt.serving.app", "--prompts", str(prompts_root), "--model", model,
         "--port", str(port), "--max-batch-size", str(args.batch_size), "--max-queue", str(args.max_queue),
         "--deadline-s", str(args.deadline_s), "--max-request-tokens", str(args.max_request_tokens),
         "--max-batch-tokens", str(args.max_batch_tokens)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **({"OMP_NUM_THREADS": str(args.server_threads)} if args.server_threads else {})})
    try:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            if server.poll() is not None:
                raise RuntimeError(f"the server exited: {server.stderr.read()}")
        client_cmd = [sys.executable, __file__, "--load-client", url, "--seconds", str(args.seconds),
                      "--concurrency", str(args.concurrency), "--client-tasks", ",".join(tasks),
                      "--heavy-fraction", str(args.heavy_fraction), "--heavy-inputs", str(args.heavy_inputs),
                      "--heavy-chars", str(args.heavy_chars)]
        out = subprocess.run(client_cmd, capture_output=True, text=True, timeout=args.seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        counts = json.loads(out.stdout.strip().splitlines()[-1])
        metrics = httpx.get(f"{url}/metrics").text
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(metrics):
            for sample in family.samples:
                if sample.name in ("softprompt_rejections_total", "softprompt_dropped_jobs_total"):
                    counts[f"server_{sample.name[11:-6]}_{sample.labels['reason']}"] = int(sample.value)
        return counts
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def rt_texts(limit: int) -> list[str]:
    return [row["text"] for row in load_split("rotten_tomatoes", "test", limit=limit)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--tasks", type=int, nargs="+", default=[1, 10, 100], help="numbers of tasks mixed")
    p.add_argument("--prompt-length", type=int, default=100)
    p.add_argument("--requests", type=int, default=256, help="inputs per configuration")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-peft", action="store_true", help="skip the PEFT baseline")
    p.add_argument("--seconds", type=float, default=60, help="saturation run length (0: skip it)")
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight during saturation")
    p.add_argument("--max-queue", type=int, default=32, help="the server's queue bound during saturation")
    p.add_argument("--saturation-tasks", type=int, default=10)
    p.add_argument("--only-saturation", action="store_true", help="skip the mixed-task comparison")
    p.add_argument("--server-threads", type=int, default=None,
                   help="torch threads of the saturation server (default: torch's); 1 on a CPU shared with other work")
    p.add_argument("--deadline-s", type=float, default=30.0, help="the server's per-request deadline during saturation")
    p.add_argument("--max-request-tokens", type=int, default=2048, help="the server's token budget per request")
    p.add_argument("--max-batch-tokens", type=int, default=4096, help="the server's token budget per batch")
    p.add_argument("--heavy-fraction", type=float, default=0.0, help="share of saturation requests that are heavy")
    p.add_argument("--heavy-inputs", type=int, default=8, help="inputs in a heavy request")
    p.add_argument("--heavy-chars", type=int, default=1500, help="characters per input of a heavy request")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--load-client", help=argparse.SUPPRESS)
    p.add_argument("--client-tasks", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load_client:  # the second process of the saturation run
        texts = rt_texts(200)
        heavy = heavy_inputs(texts, args.heavy_inputs, args.heavy_chars) if args.heavy_fraction > 0 else None
        print(json.dumps(asyncio.run(load_client(args.load_client, args.client_tasks.split(","), texts, args.seconds,
                                                 args.concurrency, args.heavy_fraction, heavy))))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = random.Random(0)
    texts = rt_texts(args.requests)
    backbone = load_model(args.model)
    results = {"model": args.model, "prompt_length": args.prompt_length, "batch_size": args.batch_size,
               "torch_threads": torch.get_num_threads(), "configs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [] if args.only_saturation else args.tasks:
            root = Path(tmp) / f"prompts-{n}"
            names = make_prompts(backbone, root, n, args.prompt_length)
            assigned = [rng.choice(names) for _ in texts]
            batches = [(texts[i: i + args.batch_size], assigned[i: i + args.batch_size])
                       for i in range(0, len(texts), args.batch_size)]
            engine = MultiPromptModel.from_dir(backbone, root)
            row = {"tasks": n}
            row["softprompt"], ours = bench_softprompt(engine, batches, names)
            if not args.no_peft:
                baseline = PeftBaseline(load_model(args.model), root, names)  # PEFT wraps its own copy
                row["peft"], theirs = bench_peft(baseline, batches)
                row["agreement"] = round(sum(a == b for a, b in zip(ours, theirs)) / len(ours), 4)
                row["speedup"] = round(row["softprompt"]["inputs_per_s"] / row["peft"]["inputs_per_s"], 2)
                del baseline
            results["configs"].append(row)
            print(json.dumps(row), flush=True)
            del engine  # its prompts' cached keys/values go with their tensors (the cache drops an entry whose source dies)
        if args.seconds > 0:
            root = Path(tmp) / "prompts-saturation"
            names = make_prompts(backbone, root, args.saturation_tasks, args.prompt_length)
            results["saturation"] = {"tasks": args.saturation_tasks, "seconds": args.seconds,
                                     "concurrency": args.concurrency, "max_queue": args.max_queue,
                                     **saturation(root, args.model, names, texts, args)}
            print(json.dumps(results["saturation"]), flush=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
