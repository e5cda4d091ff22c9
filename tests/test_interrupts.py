"""SIGINT/SIGTERM during training: the step ends, its checkpoint is saved, the run stops, and
``--resume`` ends where an uninterrupted run ends."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import softprompt.training as training
from softprompt.config import TrainConfig
from softprompt.interrupts import TrainingInterrupted
from softprompt.methods import PromptTuning
from softprompt.prompt import SoftPrompt


def _cfg(tiny_model_dirs, toy_data, tmp_path, **kw):
    return TrainConfig(**{**dict(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]),
                                 prompt_length=4, init="vocab", batch_size=3, max_steps=9, eval_every=3,
                                 optimizer="adafactor", lr=0.3, progress=False, out=str(tmp_path / "run")), **kw})


def _signal_in_step(monkeypatch, step: int, *signals: int):
    """Send ``signals`` to this process during the ``step``-th training step's forward pass."""
    real_forward = PromptTuning.forward
    calls = {"n": 0}

    def forward(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == step and self.training:
            for sig in signals:
                os.kill(os.getpid(), sig)
        return real_forward(self, *a, **k)

    monkeypatch.setattr(PromptTuning, "forward", forward)
    return lambda: monkeypatch.setattr(PromptTuning, "forward", real_forward)


def _checkpoint_step(out) -> int:
    return json.loads((out / "checkpoint" / "state.json").read_text())["state"]["step"]


def _loss_steps(out) -> list[int]:
    return [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_between_checkpoints_saves_its_step_and_resume_loses_nothing(sig, tiny_model_dirs, toy_data, tmp_path,
                                                                              monkeypatch):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg, out=str(tmp_path / "straight"))
    straight = SoftPrompt.load(tmp_path / "straight" / "last").weight
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    restore = _signal_in_step(monkeypatch, 5, sig)  # step 5: two steps after the step-3 checkpoint
    with pytest.raises(TrainingInterrupted) as got:
        training.train(cfg)
    restore()
    assert (got.value.signum, got.value.step) == (sig, 5)
    assert f"stopped after step 5 of 9, saved in {tmp_path / 'run' / 'checkpoint'}" in str(got.value)
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # put back once the steps are over
    out = tmp_path / "run"
    assert _checkpoint_step(out) == 5 and _loss_steps(out) == [1, 2, 3, 4, 5]
    assert not (out / "results.json").exists()

    result = training.train(cfg, resume=True)
    assert result.state.step == 9 and _loss_steps(out) == list(range(1, 10))
    assert torch.equal(SoftPrompt.load(out / "last").weight, straight)


def test_a_signal_in_an_evaluation_step_stops_after_its_checkpoint(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    _signal_in_step(monkeypatch, 3, signal.SIGINT)  # the step whose evaluation and checkpoint follow
    with pytest.raises(TrainingInterrupted, match="after step 3 of 9"):
        training.train(cfg)
    out = tmp_path / "run"
    assert _checkpoint_step(out) == 3 and (out / "best").is_dir()
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if r.get("split") == "validation"] == [3]


def test_a_second_ctrl_c_stops_at_once_from_the_last_checkpoint(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    _signal_in_step(monkeypatch, 5, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as got:
        training.train(cfg)
    assert not isinstance(got.value, TrainingInterrupted)
    assert _checkpoint_step(tmp_path / "run") == 3  # step 5 was not finished, nor saved


def _wait_for(predicate, proc, seconds=120.0):
    deadline = time.time() + seconds
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_softprompt_train_stopped_by_sigterm_exits_143_and_resumes(tiny_model_dirs, toy_data, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "softprompt.cli", "train", "--data-dir", str(toy_data), "--model",
            str(tiny_model_dirs["causal"]), "--prompt-length", "3", "--init", "vocab", "--batch-size", "2",
            "--eval-every", "100000", "--out", str(out), "--no-progress", "--test-split", ""]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([*args, "--max-steps", "100000"], stderr=subprocess.PIPE, text=True, env=env)
    log = out / "metrics.jsonl"
    _wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = _checkpoint_step(out)
    assert step >= 3 and _loss_steps(out) == list(range(1, step + 1))
    assert f"SIGTERM: stopped after step {step} of 100000" in err
    assert "continues with the same command and --resume" in err

    done = subprocess.run([*args, "--resume", "--max-steps", str(step + 2)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["steps"] == step + 2


@pytest.mark.parametrize("command, args, hint", [
    ("tasks", [], ""),
    ("train", ["--task", "rte"], "; a training run continues with the same command and --resume (from its last checkpoint)"),
])
def test_ctrl_c_outside_the_steps_exits_130_with_a_hint_only_where_a_run_resumes(command, args, hint, monkeypatch, capsys):
    from softprompt import cli

    def stopped(config):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, command, cli.COMMANDS[command]._replace(handler=stopped))
    assert cli.main([command, *args]) == 130
    assert capsys.readouterr().err == f"softprompt: interrupted{hint}\n"
