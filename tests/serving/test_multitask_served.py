"""``softprompt serve`` serves every task of a multi-task run (issue 19 item 5): each task listed
as ``RUN.TASK`` with its own template and verbalizer, its conditioning computed once, and rows
of all the run's tasks scored in one mixed batch exactly as each task's model scores them alone."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import write_boolq, write_toy_data
from softprompt.conditioning import PerRow
from softprompt.serving import MultiPromptModel
from softprompt.serving.engine import TaskConflictError
from softprompt.training import train

TEXTS = ["great fun", "i hate this film", "a dull and boring plot", "smart and funny"]
QUESTIONS = [{"passage": "the film was awful", "question": "was it good"},
             {"passage": "a witty story", "question": "was it witty"},
             {"passage": "so much fun", "question": "was it fun"}]
RUNS = {"hyper": ("hyperformer", {"method_options": "bottleneck=4,task_embedding_dim=6,hidden=8,projected_dim=5",
                                  "lr": 0.05}),
        "mtpt": ("multitask-prompt-tuning", {"prompt_length": 3, "init": "vocab", "lr": 0.05}),
        "shared": ("adapter", {"method_options": "bottleneck=4", "lr": 0.05})}


@pytest.fixture(scope="module")
def runs(tiny_model_dirs, tmp_path_factory):
    """A prompts directory holding a two-task run (rotten_tomatoes, boolq) of each method in :data:`RUNS`."""
    tmp = tmp_path_factory.mktemp("mt_served")
    data = write_boolq(write_toy_data(tmp / "data", "rotten_tomatoes"))
    root = tmp / "prompts"
    for name, (method, extra) in RUNS.items():
        train(task="rotten_tomatoes,boolq", data_dir=str(data), model=str(tiny_model_dirs["causal"]), method=method,
              batch_size=4, max_steps=4, eval_every=4, out=str(tmp / name), progress=False, optimizer="adam",
              zero_shot_baseline=False, test_split="", **extra)
        shutil.copytree(tmp / name / "best", root / name)
    return root


@pytest.fixture(scope="module")
def engine(runs, tiny_model_dirs):
    from softprompt.modeling import load_model

    return MultiPromptModel.from_dir(load_model(str(tiny_model_dirs["causal"]), device="cpu"), runs)


def test_every_task_of_a_run_is_listed_under_the_runs_name_with_its_own_template_and_labels(engine):
    assert engine.refused == {}
    tasks = {t["name"]: t for t in engine.tasks()}
    for run, (method, _) in RUNS.items():
        assert tasks[run]["task"] == "rotten_tomatoes" and "run" not in tasks[run]  # the run's name: its first task, as before
        assert tasks[f"{run}.rotten_tomatoes"] == {**tasks[run], "name": f"{run}.rotten_tomatoes", "run": run}
        boolq = tasks[f"{run}.boolq"]
        assert (boolq["task"], boolq["labels"], boolq["fields"], boolq["method"], boolq["run"]) == \
            ("boolq", ["no", "yes"], ["passage", "question"], method, run)
        # the kind is the saved method's registered name (hyperformer, adapter, ...), not "prompt"
        assert tasks[run]["kind"] == boolq["kind"] == method


def test_a_mixed_batch_of_all_tasks_scores_each_row_as_its_task_alone_in_one_pass(engine, monkeypatch):
    inputs = TEXTS + QUESTIONS
    for run in RUNS:
        names = [f"{run}.rotten_tomatoes"] * len(TEXTS) + [f"{run}.boolq"] * len(QUESTIONS)
        alone = [engine.model(n).classify([x])[0] for x, n in zip(inputs, names)]  # PromptedModel, one row each
        calls = []
        real = engine.backbone.word_scores
        monkeypatch.setattr(engine.backbone, "word_scores", lambda p, b, *a: calls.append(p) or real(p, b, *a))
        mixed = engine.classify(inputs, names)
        monkeypatch.undo()
        assert len(calls) == 1 and isinstance(calls[0], PerRow) and len(calls[0]) == len(inputs)  # one batch
        for got, want in zip(mixed, alone):
            assert got.label == want.label and got.scores == pytest.approx(want.scores, abs=1e-5)
        assert {got.task for got in mixed} == set(names)
        assert set(mixed[-1].scores) == {"no", "yes"} and set(mixed[0].scores) == {"negative", "positive"}


def test_each_tasks_conditioning_is_computed_once_and_tasks_differ(engine):
    for run in ("hyper", "mtpt"):
        a, b = (engine.model(f"{run}.{t}") for t in ("rotten_tomatoes", "boolq"))
        assert a.method is b.method  # one restored method for the run
        assert a.conditioning is a.conditioning and b.conditioning is b.conditioning  # cached, not recomputed per request
        assert a.conditioning is not b.conditioning
    hyper = engine.model("hyper.boolq")
    up = hyper.conditioning.layer_hooks[0].tensors[2]
    assert not torch.allclose(up, engine.model("hyper.rotten_tomatoes").conditioning.layer_hooks[0].tensors[2])
    before = hyper.conditioning
    with torch.no_grad():
        hyper.method.task_embeddings[1].add_(1.0)  # the method's tensors change: its cache is recomputed
    assert hyper.conditioning is not before
    with torch.no_grad():
        hyper.method.task_embeddings[1].sub_(1.0)
    shared = [engine.model(f"shared.{t}").conditioning for t in ("rotten_tomatoes", "boolq")]
    assert shared[0] is shared[1]  # one adapter set serves both of the shared run's tasks


def test_removing_a_run_removes_its_tasks_and_a_taken_name_is_refused(runs, tiny_model_dirs):
    from softprompt.modeling import load_model

    engine = MultiPromptModel(load_model(str(tiny_model_dirs["causal"]), device="cpu"), runs)
    engine.add("hyper", "hyper")
    assert {"hyper", "hyper.rotten_tomatoes", "hyper.boolq"} <= {t["name"] for t in engine.tasks()}
    engine.add("hyper", "hyper", replace=True)  # its tasks are replaced with it
    with pytest.raises(TaskConflictError, match="hyper.boolq"):
        engine.add("hyper.boolq", "mtpt")
    engine.remove("hyper")
    assert engine.tasks() == []


def test_generation_for_a_mixed_request_of_a_runs_tasks_equals_each_task_alone(engine):
    names = ["hyper.rotten_tomatoes", "hyper.boolq", "hyper.rotten_tomatoes"]
    inputs = [TEXTS[0], QUESTIONS[0], TEXTS[1]]
    mixed = engine.generate(inputs, names, max_new_tokens=3)
    alone = [engine.generate([x], [n], max_new_tokens=3)[0] for x, n in zip(inputs, names)]
    assert [g.text for g in mixed] == [g.text for g in alone]


PAIRS = [{"premise": "the film was great fun", "hypothesis": "it was fun", "label": "entailment"},
         {"premise": "the film was awful", "hypothesis": "it was good", "label": "contradiction"},
         {"premise": "a witty story", "hypothesis": "it was long", "label": "neutral"}] * 3


@pytest.mark.parametrize("family", ["causal", "masked"])
def test_tasks_with_other_numbers_of_labels_share_the_mixed_pass(family, tiny_model_dirs, tmp_path, monkeypatch):
    """Rotten Tomatoes' two labels beside CB's three (one token each): one ``word_scores`` call, a
    CB row scored over its three words, a Rotten Tomatoes row over its two, each as its task alone."""
    import json

    from softprompt.modeling import load_model

    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    (data / "cb").mkdir()
    for split in ("train", "validation", "test"):
        (data / "cb" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    method, extra = RUNS["hyper"]
    train(task="rotten_tomatoes,cb", data_dir=str(data), model=str(tiny_model_dirs[family]), method=method,
          batch_size=4, max_steps=4, eval_every=4, out=str(tmp_path / "run"), progress=False, optimizer="adam",
          zero_shot_baseline=False, test_split="", **extra)
    shutil.copytree(tmp_path / "run" / "best", tmp_path / "prompts" / "mt")
    engine = MultiPromptModel.from_dir(load_model(str(tiny_model_dirs[family]), device="cpu"), tmp_path / "prompts")
    inputs = [TEXTS[0], PAIRS[0], TEXTS[1], PAIRS[1], PAIRS[2]]
    names = ["mt.rotten_tomatoes", "mt.cb", "mt.rotten_tomatoes", "mt.cb", "mt.cb"]
    alone = [engine.model(n).classify([x])[0] for x, n in zip(inputs, names)]
    calls = []
    real = engine.backbone.word_scores
    monkeypatch.setattr(engine.backbone, "word_scores", lambda p, b, *a: calls.append(p) or real(p, b, *a))
    mixed = engine.classify(inputs, names)
    monkeypatch.undo()
    assert len(calls) == 1 and len(calls[0]) == len(inputs)  # one batch, though the tasks' label counts differ
    for got, want in zip(mixed, alone):
        assert got.label == want.label and got.scores == pytest.approx(want.scores, abs=1e-5)
    assert set(mixed[1].scores) == {"entailment", "contradiction", "neutral"} and len(mixed[0].scores) == 2
