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


def test_a_run_on_your_own_columns_reads_them_in_eval_predict_and_serve_without_the_field_map(tiny_model_dirs, tmp_path,
                                                                                              capsys, caplog):
    """--field-map is saved with the run's task: eval of a file in the training format, predict of
    inputs keyed by its columns and the server read them without --field-map (inputs keyed by the
    template's own fields still work); a --field-map given to eval replaces it and says so under -v."""
    import logging

    from conftest import TOY_NEG, TOY_POS

    rows = [{"sentence": t, "mood": "good" if i < 8 else "bad"} for i, t in enumerate(TOY_POS + TOY_NEG)]
    for split in ("train", "test"):
        (tmp_path / f"reviews_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dirs["causal"]), "--train-file", str(tmp_path / "reviews_train.jsonl"),
                 "--validation-file", str(tmp_path / "reviews_train.jsonl"), "--template", "{text} it was",
                 "--label-words", "good=good;bad=bad", "--field-map", "text=sentence,label=mood", "--prompt-length", "2",
                 "--max-steps", "2", "--eval-every", "2", "--out", str(out), "--no-progress", "--test-split", ""]) == 0
    best = out / "best"
    assert json.loads((best / "softprompt.json").read_text())["task"]["field_map"] == {"text": "sentence", "label": "mood"}

    capsys.readouterr()
    test = str(tmp_path / "reviews_test.jsonl")
    assert main(["eval", "--prompt", str(best), "--file", test, "--no-progress"]) == 0
    saved_map = json.loads(capsys.readouterr().out)
    assert main(["eval", "--prompt", str(best), "--file", test, "--field-map", "text=sentence,label=mood",
                 "--no-progress"]) == 0
    given_map = json.loads(capsys.readouterr().out)
    assert saved_map["n"] == 16 and saved_map == given_map

    pm = PromptedModel.from_saved(best)
    want = pm.classify(["great fun", "awful"])
    assert main(["predict", "--prompt", str(best), "--json", '{"sentence": "great fun"}', '{"text": "awful"}']) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [p["label"] for p in predicted] == [w.label for w in want]
    for p, w in zip(predicted, want):
        assert p["scores"] == pytest.approx(w.scores, abs=1e-6)
    assert [p.label for p in pm.classify([{"sentence": "great fun"}, {"text": "awful"}])] == [w.label for w in want]

    served = tmp_path / "served"
    served.mkdir()
    import shutil

    shutil.copytree(best, served / "mine")
    engine = MultiPromptModel.from_dir(pm.backbone, served)
    assert [t["field_map"] for t in engine.tasks()] == [{"text": "sentence", "label": "mood"}]
    got = engine.classify([{"sentence": "great fun"}, {"text": "awful"}], ["mine", "mine"])
    for g, w in zip(got, want):
        assert g.label == w.label and g.scores == pytest.approx(w.scores, abs=1e-5)

    other = tmp_path / "other.jsonl"  # another file's columns: --field-map replaces the saved map
    other.write_text("".join(json.dumps({"review": r["sentence"], "verdict": r["mood"]}) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="softprompt"):
        assert main(["-v", "eval", "--prompt", str(best), "--file", str(other), "--field-map", "text=review,label=verdict",
                     "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == saved_map["accuracy"]
    assert f"--field-map text=review,label=verdict replaces the field map {best} was trained with " \
           "(text=sentence,label=mood)" in caplog.text
