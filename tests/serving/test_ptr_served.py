"""A trained PTR run (rule verbalizer, three answer slots) through the CLI: predict names the rule
that fired, and ``softprompt serve`` serves it as predict scores it (issue 17)."""

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

RULES = "relation\thead\tlink\ttail\nLove(e1,e2)\tpeople\tlove\ttime\nLove(e2,e1)\ttime\tlove\tpeople\n" \
        "Hate(e1,e2)\tpeople\thate\ttime\nOther\tone\tnot very\ttwo\n"
TEMPLATE = "{text} . the {mask:head} {e1} {mask:link} the {mask:tail} {e2} ."
ROWS = [("i love this movie", "i", "movie", "Love(e1,e2)"), ("the movie is what i love", "movie", "i", "Love(e2,e1)"),
        ("they hate the long film", "they", "film", "Hate(e1,e2)"), ("one and two", "one", "two", "Other")]
INPUT = {"text": "we love the story", "e1": "we", "e2": "story"}


@pytest.fixture(scope="module")
def ptr_run(tiny_model_dirs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ptr")
    (tmp / "rules.tsv").write_text(RULES)
    data = "".join(json.dumps({"text": t, "e1": a, "e2": b, "label": y}) + "\n" for t, a, b, y in ROWS * 2)
    (tmp / "train.jsonl").write_text(data)
    train(model=str(tiny_model_dirs["causal"]), train_file=str(tmp / "train.jsonl"), validation_file=str(tmp / "train.jsonl"), task="rel",
          template=TEMPLATE, label_words=f"rules:{tmp / 'rules.tsv'}", method="prompt-tuning", prompt_length=2,
          init="vocab", optimizer="adam", lr=0.05, batch_size=4, max_steps=2, eval_every=2, out=str(tmp / "run"),
          progress=False, zero_shot_baseline=False, test_split="")
    root = tmp / "prompts"
    shutil.copytree(tmp / "run" / "best", root / "rel")
    return root


def test_predict_answers_the_relation_and_the_rule_that_fired(ptr_run, capsys):
    assert main(["predict", "--prompt", str(ptr_run / "rel"), "--json", json.dumps(INPUT)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rules = {line.split("\t")[0]: line.split("\t")[1:] for line in RULES.splitlines()[1:]}
    assert out["label"] in rules and set(out["scores"]) == set(rules)
    assert out["slots"] == dict(zip(("head", "link", "tail"), rules[out["label"]]))


def test_serve_serves_a_ptr_run_as_predict_scores_it(ptr_run, tiny_model_dirs):
    engine = build_engine(ServeConfig(prompts=str(ptr_run), model=str(tiny_model_dirs["causal"])))
    assert engine.refused == {}
    want = PromptedModel.from_saved(ptr_run / "rel", model=str(tiny_model_dirs["causal"])).classify([INPUT])[0]
    with TestClient(create_app(engine, ServeConfig())) as client:
        r = client.post("/v1/classify", json={"task": "rel", "inputs": [INPUT]})
    assert r.status_code == 200, r.text
    got = r.json()["results"][0]
    assert got["label"] == want.label and got["scores"] == pytest.approx(want.scores, abs=1e-5)
