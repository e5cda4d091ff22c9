"""Does a KnowPrompt run train? Its loss over whole splits, at the start and after training
(docs/knowprompt.md, "A short real run").

Rebuilds the method of ``RUN/last`` as it started (same options and seed) and as it ended, and
prints, for each split file given, the mean cross-entropy and the mean knowledge constraint over
every row (batches of 8, no gradient, negatives drawn with a fixed seed), and the accuracy. Run
from the repository root: ``PYTHONPATH=src python benchmarks/knowprompt_trains.py RUN FILE.jsonl [...]``.
"""

import argparse
import json

import torch

from softprompt.artifacts import load_artifact
from softprompt.encoding import encode
from softprompt.methods.configs import method_config
from softprompt.methods.loading import restore_artifact, saved_task
from softprompt.modeling import load_model

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("run", help="a knowprompt run's --out folder (its last/ is read)")
parser.add_argument("files", nargs="+", help="JSONL files of relation rows")
args = parser.parse_args()

art = load_artifact(f"{args.run}/last")
training = art.metadata["training"]
backbone = load_model(art.metadata["model_id"])
task = saved_task(art)
config, cls = method_config("knowprompt", training)
methods = {"start": cls(config, backbone, task, seed=training.get("seed", 0)), "end": restore_artifact(art, backbone, task)}


@torch.no_grad()
def losses(method, rows):
    ce = ke = right = 0.0
    lam = method.config.lam
    method.generator.manual_seed(0)
    for i in range(0, len(rows), 8):
        batch = encode(backbone, task, rows[i: i + 8], prompt_length=method.prompt_length)
        method.config.lam = 0.0
        c = float(method(backbone, task, batch))
        method.config.lam = 1.0
        k = float(method(backbone, task, batch)) - c
        scores = backbone.word_scores(method.inference_conditioning(), batch)
        right += float((scores.argmax(-1) == torch.tensor(batch.gold)).sum())
        ce += c * len(batch)
        ke += k * len(batch)
    method.config.lam = lam
    return ce / len(rows), ke / len(rows), right / len(rows)


for path in args.files:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    for name, method in methods.items():
        ce, ke, acc = losses(method, rows)
        print(json.dumps({"file": path, "rows": len(rows), "when": name, "cross_entropy": round(ce, 4),
                          "knowledge": round(ke, 4), "accuracy": round(acc, 4)}))
