"""``softprompt serve`` serves any restorable method's output (issue 15, item 4): a prefix-tuning
and an in-context output beside a prompt, mixed in one batch, each answering as
``softprompt predict`` / :class:`~softprompt.api.PromptedModel` answers for it alone."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from softprompt.api import PromptedModel  # noqa: E402
from softprompt.conditioning import PerRow  # noqa: E402
from softprompt.cli import main  # noqa: E402
from softprompt.serving.app import ServeConfig, build_engine, create_app  # noqa: E402
from softprompt.training import train  # noqa: E402

TEXTS = ["great fun", "i hate this film", "a dull and boring plot", "smart and funny"]
METHODS = {"prompt": ("prompt-tuning", {"optimizer": "adam", "lr": 0.05}),
           "prefix": ("prefix-tuning", {"optimizer": "adam", "lr": 0.01, "method_options": "hidden=8"}),
           "demos": ("in-context", {"method_options": "shots=2"})}


@pytest.fixture(scope="module")
def served(tiny_model_dirs, tmp_path_factory):
    """A prompts directory holding one trained output of each method (tiny causal model)."""
    from conftest import write_toy_data

    tmp = tmp_path_factory.mktemp("any_method")
    data = write_toy_data(tmp / "data", "rotten_tomatoes")
    root = tmp / "prompts"
    for name, (method, extra) in METHODS.items():
        train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), method=method,
              prompt_length=3, init="vocab", batch_size=4, max_steps=2, eval_every=2, out=str(tmp / name),
              progress=False, zero_shot_baseline=False, test_split="", **extra)
        shutil.copytree(tmp / name / "best", root / name)
    return root


def test_prefix_and_in_context_outputs_are_served_beside_a_prompt_as_predict_scores_them(served, tiny_model_dirs,
                                                                                         capsys, monkeypatch):
    engine = build_engine(ServeConfig(prompts=str(served), model=str(tiny_model_dirs["causal"])))
    assert engine.refused == {}
    tasks = {t["name"]: t for t in engine.tasks()}
    assert {n: tasks[n]["method"] for n in METHODS} == {n: m for n, (m, _) in METHODS.items()}
    assert {n: tasks[n]["kind"] for n in METHODS} == {n: m for n, (m, _) in METHODS.items()}  # the saved method's name

    calls = []  # what each forward pass carried before the text, per row
    real = engine.backbone.word_scores
    monkeypatch.setattr(engine.backbone, "word_scores", lambda p, b, *a: calls.append(p) or real(p, b, *a))
    names = list(METHODS)
    mixed = engine.classify([t for t in TEXTS for _ in names], [n for _ in TEXTS for n in names])
    assert len(calls) == 1 and isinstance(calls[0], PerRow) and len(calls[0]) == len(TEXTS) * len(names)  # one batch
    kinds = [c.kinds for c in calls[0].items]  # all three kinds in it: prompt and demonstrations as vectors, the prefix as keys/values
    assert kinds.count(frozenset({"layer_kv"})) == len(TEXTS) and kinds.count(frozenset({"input_vectors"})) == 2 * len(TEXTS)
    monkeypatch.undo()

    with TestClient(create_app(engine, ServeConfig(max_wait_ms=2))) as client:
        for name in names:
            body = client.post("/v1/classify", json={"task": name, "inputs": TEXTS}).json()
            capsys.readouterr()
            assert main(["predict", "--prompt", str(served / name), "--json", *TEXTS]) == 0
            predicted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
            alone = PromptedModel.from_saved(served / name).classify(TEXTS)
            for got, cli, api, one in zip(body["results"], predicted, alone, mixed[names.index(name)::len(names)]):
                assert got["label"] == cli["label"] == api.label == one.label
                assert got["scores"] == pytest.approx(cli["scores"], abs=1e-5)
                assert one.scores == pytest.approx(api.scores, abs=1e-5)


def test_a_fully_tuned_model_is_refused_and_the_rest_still_served(served, tiny_model_dirs, tmp_path):
    root = tmp_path / "prompts"
    shutil.copytree(served / "prefix", root / "prefix")
    train(task="rotten_tomatoes", data_dir=str(served.parent / "data"), model=str(tiny_model_dirs["causal"]),
          method="full-tuning", batch_size=4, max_steps=1, eval_every=1, out=str(tmp_path / "full"), progress=False,
          zero_shot_baseline=False, test_split="", optimizer="adam", lr=1e-3)
    shutil.copytree(tmp_path / "full" / "best", root / "full")
    engine = build_engine(ServeConfig(prompts=str(root), model=str(tiny_model_dirs["causal"])))
    assert [t["name"] for t in engine.tasks()] == ["prefix"]
    assert "changes the model's own weights" in engine.refused["full"]
    before = PromptedModel.from_saved(served / "prefix").classify(TEXTS)
    assert [a.label for a in engine.classify(TEXTS, ["prefix"] * len(TEXTS))] == [b.label for b in before]


def test_the_model_to_serve_is_read_from_any_methods_output(served, tiny_model_dirs, tmp_path):
    from softprompt.serving.app import model_from_prompts

    root = tmp_path / "prompts"
    shutil.copytree(served / "demos", root / "demos")  # softprompt.json alone, no tensor file
    assert model_from_prompts(root, allowed=str(tiny_model_dirs["causal"])) == str(tiny_model_dirs["causal"])
