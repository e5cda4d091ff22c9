"""The runner's transfer analysis restores its source run through the one restore path
(:func:`softprompt.methods.loading.restore`): an in-context or prefix-tuning source needs no
training rows (the source is rebuilt from its saved output alone; the runner's old copy built an
in-context method without rows and failed), and scores as evaluating the source's saved output would."""

import json

import pytest
import yaml

from softprompt.api import PromptedModel
from softprompt.experiments import run_experiment
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import Verbalizer


def test_in_context_and_prefix_sources_transfer_without_training_rows(tmp_path, tiny_model_dirs, toy_data):
    from conftest import write_toy_data

    target = write_toy_data(toy_data, "toy_transfer") / "toy_transfer"
    spec = {
        "name": "tiny", "out": str(tmp_path / "results"),
        "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "batch_size": 4,
                     "max_steps": 2, "eval_every": 2, "lr": 0.01, "optimizer": "adam", "zero_shot_baseline": False},
        "tasks": {"toy_transfer": {"template": "Review: {text}\nSentiment:",
                                   "label_words": "positive=positive;negative=negative"}},
        "methods": {"in-context": {"method_options": "shots=2"}, "prefix-tuning": {"method_options": "hidden=8"}},
        "grids": [{"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["in-context", "prefix-tuning"],
                   "prompt_length": [3], "init": ["vocab"], "seeds": [0]}],
        "transfer": [{"grid": "main", "train": "rotten_tomatoes", "eval": ["toy_transfer"],
                      "methods": ["in-context", "prefix-tuning"]}],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_experiment(path, progress=False, report=False)
    out = tmp_path / "results"
    rows = [json.loads(line) for line in (target / "test.jsonl").read_text().splitlines()]
    for method, key in (("in-context", "rotten_tomatoes__in-context__seed0"),
                        ("prefix-tuning", "rotten_tomatoes__prefix-tuning__len3-vocab__seed0")):
        record = json.loads((out / f"analyses/transfer/{key}__toy_transfer.json").read_text())
        assert record["method"] == method and record["target_metrics"]["n"] == len(rows)
        best = next((out / "runs/rotten_tomatoes" / method).rglob("best"))
        pm = PromptedModel.from_saved(best)
        pm.task = Task("toy_transfer", Template("Review: {text}\nSentiment:"),
                       Verbalizer({"positive": "positive", "negative": "negative"}))  # the target's format
        want = pm.evaluate(rows).summary()
        assert record["target_metrics"]["accuracy"] == pytest.approx(want["accuracy"])
