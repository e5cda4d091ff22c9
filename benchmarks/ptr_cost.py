"""Cost of PTR's rules against one word per class on SemEval (docs/relations.md, "Cost").

Scores ``--rows`` test rows (8) and takes one training step of that batch with a 20-vector soft
prompt on SmolLM2-135M, 2 CPU threads, float32 (``--bf16``: under bf16 autocast, as the
experiment's ``mixed_precision: bf16``). Besides the seconds, it prints the tokens the model reads
per row (every position of every forward, padding included, counted by a hook on the decoder), the
figure the speed follows when the machine is shared. ``--template`` swaps PTR's template (e.g. a
causal-friendly one, docs/relations.md). Run from the repository root with the shared data beside it:
``PYTHONPATH=src python benchmarks/ptr_cost.py [--rows 8] [--template T] [--bf16]``.
"""

import argparse
import contextlib
import dataclasses
import time

import torch
import yaml

from softprompt.encoding import encode
from softprompt.methods import get_method
from softprompt.modeling import load_model
from softprompt.scoring import label_scores
from softprompt.tasks import Template, get_task, load_split
from softprompt.tasks.from_config import verbalizer_from_spec

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--rows", type=int, default=8)
parser.add_argument("--template", default=None, help="PTR's template instead of the built-in task's")
parser.add_argument("--bf16", action="store_true", help="under torch.autocast(bfloat16)")
parser.add_argument("--only", choices=["PTR", "one-word"], default=None)
args = parser.parse_args()

torch.set_num_threads(2)
backbone = load_model(max_length=256)
ptr = get_task("semeval2010_task8")
if args.template:
    ptr = dataclasses.replace(ptr, template=Template(args.template))
rows = load_split(ptr, "test", data_dir="../shared/data", limit=args.rows)
arm = yaml.safe_load(open("experiments/relations.yaml"))["tasks"]["oneword_k8"]
oneword = dataclasses.replace(ptr, template=Template(arm["template"]), verbalizer=verbalizer_from_spec(arm["label_words"]))
read = [0]
backbone.model.base_model.register_forward_pre_hook(
    lambda module, a, kw: read.__setitem__(0, read[0] + kw["inputs_embeds"].shape[0] * kw["inputs_embeds"].shape[1]),
    with_kwargs=True)
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
config_cls, method_cls = get_method("prompt-tuning")
for name, task in (("PTR", ptr), ("one-word", oneword)):
    if args.only and name != args.only:
        continue
    method = method_cls(config_cls(prompt_length=20), backbone, task)
    batch = encode(backbone, task, rows, prompt_length=20)
    with torch.no_grad(), autocast():
        read[0], start = 0, time.time()
        label_scores(backbone, task, batch, method.inference_conditioning())
        per_row, score_tokens = (time.time() - start) / len(rows), read[0] / len(rows)
    read[0], start = 0, time.time()
    with autocast():
        loss = method(backbone, task, batch)
    loss.backward()
    print(f"{name}: scoring {per_row:.2f} s/row (19 classes), {score_tokens:.0f} tokens read/row; training step, "
          f"batch {len(rows)}: {time.time() - start:.1f} s, {read[0] / len(rows):.0f} tokens read/row", flush=True)
