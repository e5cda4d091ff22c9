"""Cost of PTR's rules against one word per class on SemEval (docs/relations.md, "Cost").

Scores 8 test rows and takes one training step of batch 8 with a 20-vector soft prompt on
SmolLM2-135M, float32, 2 CPU threads. Run from the repository root with the shared data beside it:
``PYTHONPATH=src python benchmarks/ptr_cost.py``.
"""

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

torch.set_num_threads(2)
backbone = load_model(max_length=256)
ptr = get_task("semeval2010_task8")
rows = load_split(ptr, "test", data_dir="../shared/data", limit=8)
arm = yaml.safe_load(open("experiments/relations.yaml"))["tasks"]["oneword_k8"]
oneword = dataclasses.replace(ptr, template=Template(arm["template"]), verbalizer=verbalizer_from_spec(arm["label_words"]))
config_cls, method_cls = get_method("prompt-tuning")
for name, task in (("PTR", ptr), ("one-word", oneword)):
    method = method_cls(config_cls(prompt_length=20), backbone, task)
    batch = encode(backbone, task, rows, prompt_length=20)
    with torch.no_grad():
        start = time.time()
        label_scores(backbone, task, batch, method.inference_conditioning())
        per_row = (time.time() - start) / len(rows)
    start = time.time()
    method(backbone, task, batch).backward()
    print(f"{name}: scoring {per_row:.2f} s/row (19 classes); training step, batch {len(rows)}: {time.time() - start:.1f} s")
