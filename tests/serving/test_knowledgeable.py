"""``softprompt serve`` serves a knowledgeable run (issue 16 item 4) as predict scores it."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from softprompt.api import PromptedModel  # noqa: E402
from softprompt.serving.app import ServeConfig, build_engine, create_app  # noqa: E402
from softprompt.training import train  # noqa: E402

TEXTS = ["great fun", "i hate this film", "a dull and boring plot", "smart and funny"]


def test_a_knowledgeable_run_is_served_with_its_refined_words_and_prior(tiny_model_dirs, tmp_path):
    from conftest import write_toy_data

    data = write_toy_data(tmp_path / "data", "rotten_tomatoes")
    words = tmp_path / "words.txt"
    words.write_text("negative,bad,awful,dull,boring,hate\npositive,good,great,fun,witty,love\n")
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=2,
          batch_size=4, max_steps=2, eval_every=2, out=str(tmp_path / "run"), progress=False, optimizer="adam",
          lr=0.05, zero_shot_baseline=False, test_split="", verbalizer="knowledgeable",
          label_words_file=str(words), learn_word_weights=True, support_size=8, frequency_cutoff=0.3)
    shutil.copytree(tmp_path / "run" / "best", tmp_path / "prompts" / "kpt")
    engine = build_engine(ServeConfig(prompts=str(tmp_path / "prompts"), model=str(tiny_model_dirs["causal"])))
    assert engine.refused == {}
    alone = PromptedModel.from_saved(tmp_path / "prompts" / "kpt")
    verb = alone.task.verbalizer
    assert verb.type_name == "knowledgeable" and verb.record["stages"][1]["stage"] == "frequency"
    assert sum(len(ws) for ws in verb.candidates()) < 12  # refined: fewer than the 12 words given
    expected = alone.classify(TEXTS)
    with TestClient(create_app(engine, ServeConfig(max_wait_ms=2))) as client:
        body = client.post("/v1/classify", json={"task": "kpt", "inputs": TEXTS}).json()
    for got, want in zip(body["results"], expected):
        assert got["label"] == want.label
        assert got["scores"] == pytest.approx(want.scores, abs=1e-5)
