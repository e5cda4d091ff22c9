"""A damaged ``checkpoint/state.json`` on ``--resume`` is refused as the project's error, naming
the file, the field and ``--overwrite``, before any model loads (finding 9):
the checkpoint reading of :func:`softprompt.training.train`."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

import softprompt.training as training
from conftest import write_toy_data
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.errors import ArtifactError


@pytest.fixture(scope="module")
def finished_run(tiny_model_dirs, tmp_path_factory):
    """A tiny 3-step run (its checkpoint whole) and the options that made it."""
    root = tmp_path_factory.mktemp("ckpt")
    data = write_toy_data(root / "data", "rotten_tomatoes")
    options = dict(task="rotten_tomatoes", data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=4,
                   init="vocab", batch_size=4, max_steps=3, eval_every=3, out=str(root / "run"), progress=False,
                   zero_shot_baseline=False, test_split="")
    training.train(TrainConfig(**options))
    return root / "run", options


@pytest.fixture
def run(finished_run, tmp_path, monkeypatch):
    """A copy of the finished run to damage, its options pointing at it; loading a model fails the test."""
    src, options = finished_run
    shutil.copytree(src, tmp_path / "run")
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("the model loaded before the check"))
    return tmp_path / "run", {**options, "out": str(tmp_path / "run")}


def _damage(run_dir, **state):
    file = run_dir / "checkpoint" / "state.json"
    saved = json.loads(file.read_text())
    saved["state"].update(state)
    file.write_text(json.dumps(saved))
    return file


WRONG = [(f.name, "x") for f in dataclasses.fields(training.TrainState)] + [
    ("step", -1), ("step", 2.5), ("step", True), ("best_step", "3"), ("stopped_early", 1), ("last_dev", [1]),
    ("best_metric", "0.9"), ("task_batches", {"rte": -1}), ("task_batches", {"rte": 1.5}), ("seconds", -0.5),
    ("seconds", True), ("method_counts", {"rows_without_knowledge_term": -1}), ("method_counts", [1]),
]


@pytest.mark.parametrize("name, value", WRONG, ids=[f"{n}={v!r}" for n, v in WRONG])
def test_a_state_field_of_the_wrong_type_is_refused_naming_file_field_and_fix(run, name, value):
    run_dir, options = run
    file = _damage(run_dir, **{name: value})
    with pytest.raises(ArtifactError, match=rf"{file}: field 'state.{name}' must be .*got .*--overwrite"):
        training.train(TrainConfig(**options, resume=True))


def test_the_cli_answers_exit_2_for_step_x(run, capsys):
    run_dir, options = run
    file = _damage(run_dir, step="x")
    argv = ["train", "--task", "rotten_tomatoes", "--data-dir", options["data_dir"], "--model", options["model"],
            "--prompt-length", "4", "--out", str(run_dir), "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{file}: field 'state.step' must be a whole number >= 0, got str \"x\"" in err
    assert "--overwrite" in err and "Traceback" not in err


@pytest.mark.parametrize("edit, message", [
    (lambda s: {**s, "state": "x"}, "field 'state' must be a JSON object, got str"),
    (lambda s: {**s, "state": {**s["state"], "steps": 3}}, "field 'state' holds unknown fields ['steps']"),
    (lambda s: {k: v for k, v in s.items() if k != "state"}, "is damaged (KeyError"),
    (lambda s: {**s, "python_rng": "(1, 2)"}, "is damaged ("),
    (lambda s: [1], "is damaged (TypeError"),
])
def test_a_damaged_state_json_is_refused(run, edit, message):
    run_dir, options = run
    file = run_dir / "checkpoint" / "state.json"
    file.write_text(json.dumps(edit(json.loads(file.read_text()))))
    with pytest.raises(ArtifactError) as info:
        training.train(TrainConfig(**options, resume=True))
    assert str(file) in str(info.value) and message in str(info.value) and "--overwrite" in str(info.value)


def test_a_whole_checkpoint_still_resumes(finished_run, tmp_path):
    src, options = finished_run
    shutil.copytree(src, tmp_path / "run")
    result = training.train(TrainConfig(**{**options, "out": str(tmp_path / "run"), "max_steps": 4}, resume=True))
    assert result.state.step == 4
