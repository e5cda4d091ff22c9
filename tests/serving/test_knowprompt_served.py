"""A trained KnowPrompt run through the CLI (issue 18): ``softprompt serve`` serves it as predict
and :class:`~softprompt.api.PromptedModel` score it, and ``softprompt inspect`` reads its answer
and type words before and after training."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from softprompt.api import PromptedModel  # noqa: E402
from softprompt.cli import main  # noqa: E402
from softprompt.serving.app import ServeConfig, build_engine, create_app  # noqa: E402
from softprompt.training import train  # noqa: E402

TEMPLATE = "{text} . the {soft:sub} {e1} {soft:sub} and {soft:obj} {e2} {soft:obj} is"
LABELS = "Love(e1,e2)=love;Love(e2,e1)=like;Hate(e1,e2)=hate;Other=one"
ROWS = [("i love this movie", "i", "movie", "Love(e1,e2)"), ("the movie is what i love", "movie", "i", "Love(e2,e1)"),
        ("they hate the long film", "they", "film", "Hate(e1,e2)"), ("one and two", "one", "two", "Other")]
INPUTS = [{"text": "we love the story", "e1": "we", "e2": "story"},
          {"text": "they hate the film", "e1": "they", "e2": "film"}]


@pytest.fixture(scope="module")
def knowprompt_run(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("knowprompt")
    data = "".join(json.dumps({"text": t, "e1": a, "e2": b, "label": y}) + "\n" for t, a, b, y in ROWS * 2)
    (tmp / "train.jsonl").write_text(data)
    train(model=str(tiny_model_dirs["causal"]), train_file=str(tmp / "train.jsonl"),
          validation_file=str(tmp / "train.jsonl"), task="rel", template=TEMPLATE, label_words=LABELS,
          method="knowprompt", method_options="prompt_vectors=2,type_words=people time,lam=0.5", optimizer="adam",
          lr=0.05, batch_size=4, max_steps=3, eval_every=3, out=str(tmp / "run"), progress=False,
          zero_shot_baseline=False, test_split="")
    root = tmp / "prompts"
    shutil.copytree(tmp / "run" / "best", root / "rel")
    return root


def test_serve_serves_a_knowprompt_run_as_predict_scores_it(knowprompt_run, tiny_model_dirs, capsys):
    engine = build_engine(ServeConfig(prompts=str(knowprompt_run), model=str(tiny_model_dirs["causal"])))
    assert engine.refused == {}
    assert {t["name"]: (t["kind"], t["method"]) for t in engine.tasks()} == {"rel": ("knowprompt", "knowprompt")}
    want = PromptedModel.from_saved(knowprompt_run / "rel", model=str(tiny_model_dirs["causal"])).classify(INPUTS)
    capsys.readouterr()
    assert main(["predict", "--prompt", str(knowprompt_run / "rel"), "--json", *map(json.dumps, INPUTS)]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    with TestClient(create_app(engine, ServeConfig())) as client:
        r = client.post("/v1/classify", json={"task": "rel", "inputs": INPUTS})
    assert r.status_code == 200, r.text
    for got, cli, api in zip(r.json()["results"], predicted, want):
        assert got["label"] == cli["label"] == api.label
        assert set(got["scores"]) == {"Love(e1,e2)", "Love(e2,e1)", "Hate(e1,e2)", "Other"}
        assert got["scores"] == pytest.approx(api.scores, abs=1e-5) and cli["scores"] == pytest.approx(api.scores, abs=1e-5)


def test_inspect_shows_answer_and_type_words_before_and_after_training(knowprompt_run, capsys):
    capsys.readouterr()
    assert main(["inspect", str(knowprompt_run / "rel"), "--k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    by = {}
    for r in rows:
        by.setdefault(r["tensor"], []).append(r)
    assert set(by) == {"init.answer_words", "answer_words", "init.virtual.sub", "virtual.sub", "init.virtual.obj",
                       "virtual.obj", "prompt"}
    assert [r["row"] for r in by["answer_words"]] == ["Love(e1,e2)", "Love(e2,e1)", "Hate(e1,e2)", "Other"]
    # at the start "Love" reads as its name's word; after 3 steps at lr 0.05 the vectors moved
    assert " love" in by["init.answer_words"][0]["tokens"] or "love" in by["init.answer_words"][0]["tokens"]
    assert by["init.answer_words"][0]["similarities"] != by["answer_words"][0]["similarities"]
    assert main(["inspect", str(knowprompt_run / "rel"), "--k", "1"]) == 0
    text = capsys.readouterr().out
    assert "init.answer_words (at the start):" in text and "\nanswer_words:" in text and "Love(e2,e1)" in text
