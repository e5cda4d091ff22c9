"""Helpers for the serving tests: tasks and saved prompts for the tiny models of ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import torch

from softprompt.prompt import SoftPrompt
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template
from softprompt.tasks.verbalizer import ChoiceVerbalizer, Verbalizer

SENTIMENT = Task("sentiment", Template("Review: {text}\nSentiment:"), Verbalizer({"negative": "negative", "positive": "positive"}))
SAME_WORDS = Task("sentiment2", Template("the movie: {text} review:"), Verbalizer({"negative": "negative", "positive": "positive"}))
YES_NO = Task("yesno", Template("question: {text} ? answer:"), Verbalizer({"no": "no", "yes": "yes"}))
MULTI_WORD = Task("multi", Template("{text} . it was"), Verbalizer({"bad": ["bad", "very bad"], "good": ["good", "really good"]}))
CHOICE = Task("choice", Template("{premise} what was the {question} ? answer:"), ChoiceVerbalizer())


def soft_prompt(backbone, task: Task, length: int = 4, seed: int = 0, fingerprint: str | None = None) -> SoftPrompt:
    """A random prompt ``[length, dim]`` for ``backbone`` carrying ``task`` in its metadata."""
    weight = torch.randn(length, backbone.dim, generator=torch.Generator().manual_seed(seed)) * 0.5
    meta = {"model_id": backbone.model_id, "model_fingerprint": fingerprint or backbone.fingerprint,
            "task": task.to_dict(), "dim": backbone.dim}
    return SoftPrompt(weight, meta)


def save_prompt(root: Path, name: str, backbone, task: Task, seed: int = 0, **kwargs) -> Path:
    return soft_prompt(backbone, task, seed=seed, **kwargs).save(Path(root) / name)


def prompts_dir(root: Path, backbone) -> Path:
    """``root`` with prompts a, b, c (sentiment, for an ensemble ``trio``) and yesno."""
    for i, name in enumerate("abc"):
        save_prompt(root, name, backbone, SENTIMENT, seed=i)
    save_prompt(root, "yesno", backbone, YES_NO, seed=7)
    (root / "ensembles.json").write_text('{"trio": ["a", "b", "c"]}')
    return root


def metric(text: str, name: str, **labels) -> float:
    """The value of sample ``name`` with ``labels`` in a Prometheus exposition (0.0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0
