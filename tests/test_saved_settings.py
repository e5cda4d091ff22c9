"""A saved run's settings are the defaults wherever it is used: label order as given, and the
scoring it was trained with in ``eval``, ``predict``, :class:`PromptedModel` and the server."""

import json

import pytest
import torch

from conftest import make_backbone, write_toy_data
from softprompt.api import PromptedModel, ScoringSettings
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.prompt import SoftPrompt
from softprompt.serving.engine import MultiPromptModel
from softprompt.tasks.task import Task
from softprompt.tasks.verbalizer import Verbalizer
from softprompt.training import train

POSITIVE_FIRST = "positive=great;negative=terrible"  # not alphabetical: sorting would swap them


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_toy_data(tmp_path_factory.mktemp("data"), "rotten_tomatoes")


@pytest.fixture(scope="module")
def generate_run(tiny_model_dirs, data, tmp_path_factory):
    """A prompt trained and selected with generation scoring, length normalisation and 48 tokens."""
    out = tmp_path_factory.mktemp("gen") / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=2,
          init="vocab", batch_size=4, max_steps=2, eval_every=2, out=str(out), progress=False, scoring="generate",
          length_normalize=True, max_length=48, label_words=POSITIVE_FIRST, zero_shot_baseline=False)
    return out


@pytest.mark.parametrize("method, extra", [("prompt-tuning", {}), ("prefix-tuning", {"optimizer": "adam"}),
                                           ("in-context", {"method_options": "shots=2"}),
                                           ("full-tuning", {"optimizer": "adam", "lr": 1e-4})])
def test_every_writer_keeps_label_order_and_key_order(method, extra, tiny_model_dirs, data, tmp_path):
    out = tmp_path / "run"
    train(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), method=method,
          prompt_length=2, init="vocab", batch_size=4, max_steps=1, eval_every=1, out=str(out), progress=False,
          test_split="", label_words=POSITIVE_FIRST, **extra)
    meta = json.loads((out / "best" / "softprompt.json").read_text())
    assert list(meta["task"]["verbalizer"]["label_words"]) == ["positive", "negative"]
    assert list(meta["training"]) == list(TrainConfig.__dataclass_fields__)  # as written, not sorted
    assert PromptedModel.from_saved(out / "best").task.verbalizer.labels == ["positive", "negative"]


def test_old_sorted_files_still_load(tmp_path):
    task = Task("t", "Review: {text}\nSentiment:", Verbalizer({"positive": "great", "negative": "terrible"}))
    meta = {"task": task.to_dict(), "init": "vocab"}
    text = json.dumps(meta, sort_keys=True)  # how earlier versions wrote it
    from safetensors.torch import save_file

    tmp_path.mkdir(exist_ok=True)
    save_file({"prompt": torch.zeros(2, 4)}, str(tmp_path / "prompt.safetensors"), metadata={"softprompt": text})
    loaded = SoftPrompt.load(tmp_path)
    assert loaded.metadata["task"]["verbalizer"]["label_words"] == {"negative": ["terrible"], "positive": ["great"]}
    assert ScoringSettings.from_metadata(loaded.metadata) == ScoringSettings("rank", False, 512)


def test_inspect_reports_class_label_positions_kept_in_the_given_order(tiny_model_dirs, data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--model", str(tiny_model_dirs["causal"]), "--prompt-length", "3",
                 "--max-steps", "1", "--eval-every", "1", "--out", str(out), "--no-progress", "--test-split", "",
                 "--lr", "1e-9", "--optimizer", "adam", "--label-words", POSITIVE_FIRST]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out / "best"), "--k", "2"]) == 0
    assert "2/2 (positive=True, negative=True)" in capsys.readouterr().out


def test_prompted_model_defaults_to_the_training_settings(generate_run):
    pm = PromptedModel.from_saved(generate_run / "best")
    assert pm.settings == ScoringSettings("generate", True, 48)
    assert pm.backbone.max_length == 48
    pred = pm.classify(["great fun"])[0]
    assert pred.generated is not None and pred.scores == {}  # generated, as trained
    ranked = pm.classify(["great fun"], scoring="rank")[0]
    assert ranked.generated is None and set(ranked.scores) == {"positive", "negative"}
    told = PromptedModel.from_saved(generate_run / "best", scoring="rank", max_length=40, length_normalize=False)
    assert told.settings == ScoringSettings("rank", False, 40) and told.backbone.max_length == 40


def test_eval_scores_as_training_did_unless_told(generate_run, data, capsys):
    results = json.loads((generate_run / "results.json").read_text())
    argv = ["eval", "--prompt", str(generate_run / "best"), "--data-dir", str(data), "--no-progress"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (got["scoring"], got["length_normalize"]) == ("generate", True)
    assert got["accuracy"] == pytest.approx(results["test"]["accuracy"]) and got["invalid"] == results["test"]["invalid"]
    assert main([*argv, "--scoring", "rank", "--no-length-normalize"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (got["scoring"], got["length_normalize"], got["invalid"]) == ("rank", False, 0)


def test_predict_scores_as_training_did_unless_told(generate_run, capsys):
    argv = ["predict", "--prompt", str(generate_run / "best"), "--json", "great fun"]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["generated"] is not None and line["scores"] == {}
    assert main([*argv, "--scoring", "rank"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["generated"] is None and list(line["scores"]) == ["positive", "negative"]


def test_every_scoring_option_exists_on_eval_and_predict():
    from cli_help import option_flags

    for command in ("eval", "predict"):
        flags = option_flags(command)
        assert {"--scoring", "--length-normalize", "--max-length", "--template", "--label-words"} <= flags


def test_server_scores_each_prompt_with_its_own_length_normalisation():
    bb = make_backbone("causal")
    task = Task("t", "Review: {text}\nSentiment:", Verbalizer({"positive": "really good", "negative": "bad"}))  # 2 tokens against 1
    weight = torch.randn(2, bb.dim, generator=torch.Generator().manual_seed(0))
    engine = MultiPromptModel(bb)
    for name, normalize in (("plain", False), ("normalized", True)):
        meta = {"task": task.to_dict(), "model_fingerprint": bb.fingerprint, "training": {"length_normalize": normalize}}
        engine.add(name, SoftPrompt(weight, meta))
    served = {name: engine.classify(["great fun"], [name])[0].scores for name in ("plain", "normalized")}
    for name, normalize in (("plain", False), ("normalized", True)):
        direct = PromptedModel(bb, SoftPrompt(weight), task).classify(["great fun"], length_normalize=normalize)[0]
        assert served[name] == pytest.approx(direct.scores, abs=1e-5)
    assert served["plain"]["positive"] != pytest.approx(served["normalized"]["positive"], abs=1e-4)
