"""A PTR run (rule verbalizer) saves, reloads and predicts the same; predict names the rule (issue 17)."""

import json

import pytest
import torch

from softprompt.api import PromptedModel
from softprompt.encoding import encode
from softprompt.methods import get_method
from softprompt.artifacts import load_artifact
from softprompt.methods.loading import restore, saved_task
from softprompt.tasks.rules import RuleVerbalizer, parse_rules
from softprompt.tasks.task import Task
from softprompt.tasks.template import Template

from conftest import make_backbone

TSV = "relation\thead\tlink\ttail\nLove(e1,e2)\tpeople\tlove\ttime\nLove(e2,e1)\ttime\tlove\tpeople\n" \
      "Hate(e1,e2)\tpeople\thate\ttime\nOther\tone\tnot very\ttwo\n"
ROWS = [{"text": "i love this movie", "e1": "i", "e2": "movie", "label": "Love(e1,e2)"},
        {"text": "they hate the long film", "e1": "they", "e2": "film", "label": "Other"}]


def rule_task():
    slots, rules = parse_rules(TSV)
    return Task(name="rel", template=Template("{text} . the {mask:head} {e1} {mask:link} the {mask:tail} {e2} ."),
                verbalizer=RuleVerbalizer(rules, slots), metrics=("semeval_f1", "accuracy"))


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_a_saved_ptr_run_reloads_and_predicts_the_same(family, tmp_path):
    bb = make_backbone(family)
    task = rule_task()
    config_cls, method_cls = get_method("prompt-tuning")
    method = method_cls(config_cls(prompt_length=3, init="random-uniform"), bb, task)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        method(bb, task, encode(bb, task, ROWS, prompt_length=3)).backward()
        opt.step()
    method.save(tmp_path / "run", {"model_id": bb.model_id, "model_fingerprint": bb.fingerprint,
                                   "model_family": bb.family, "task": task.to_dict()})
    saved = json.loads((tmp_path / "run" / "softprompt.json").read_text())
    assert saved["task"]["verbalizer"]["type"] == "rules"
    back = restore(tmp_path / "run", bb)
    inputs = [{k: r[k] for k in ("text", "e1", "e2")} for r in ROWS]
    reloaded_task = saved_task(load_artifact(tmp_path / "run"))
    assert isinstance(reloaded_task.verbalizer, RuleVerbalizer) and reloaded_task.verbalizer.rules == task.verbalizer.rules
    got = PromptedModel(bb, None, reloaded_task, method=back).classify(inputs)
    want = PromptedModel(bb, None, task, method=method).classify(inputs)
    assert [g.label for g in got] == [w.label for w in want]
    for g, w in zip(got, want):
        assert g.scores == pytest.approx(w.scores, abs=1e-6)
