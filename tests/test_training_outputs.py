"""Training outputs are consistent and exclusive; operator errors come before work (issue 14,
items 6 and 7): :mod:`softprompt.outdir`, :func:`softprompt.atomic.atomic_dir` and the
checkpoint/output parts of :func:`softprompt.training.train`."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import softprompt.atomic as atomic
from conftest import hold_out_lock
import softprompt.training as training
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.errors import ArtifactError, ConfigError
from softprompt.outdir import LOCK_FILE
from softprompt.prompt import PROMPT_FILE, SoftPrompt



def _cfg(tiny_model_dirs, toy_data, tmp_path, **kw):
    base = dict(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]), prompt_length=4,
                init="vocab", batch_size=4, max_steps=3, eval_every=3, out=str(tmp_path / "run"), progress=False,
                zero_shot_baseline=False, test_split="")
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def no_model(monkeypatch):
    """Make loading a model fail loudly: what is refused must be refused before any model loads."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(training, "load_model", refuse)


# ----------------------------------------------------------------------------- one run per folder
def test_a_second_run_into_the_same_out_is_refused_until_the_first_dies(tiny_model_dirs, toy_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = hold_out_lock(out)
    try:
        with pytest.raises(ConfigError, match=rf"--out {out} is in use by another run \(pid {holder.pid} on"):
            training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))
        assert not (out / "metrics.jsonl").exists()  # refused before writing anything
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # a kill -9 leaves the lock file, but the kernel drops the lock
        holder.wait()
    result = training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))
    assert result.state.step == 3 and (out / LOCK_FILE).exists()


def test_the_lock_is_held_for_the_run_and_released_after(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    seen = []
    real = training.save_checkpoint

    def probe(*a, **k):  # during the run, another opener cannot take the lock
        fd = os.open(out / LOCK_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            seen.append(True)
        finally:
            os.close(fd)
        return real(*a, **k)

    monkeypatch.setattr(training, "save_checkpoint", probe)
    training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))
    assert seen == [True]
    fd = os.open(out / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once train() returned
    os.close(fd)


# ----------------------------------------------------------------------------- whole directories
def _prompt(step: int) -> SoftPrompt:
    return SoftPrompt(torch.full((2, 4), float(step)), {"step": step})


def _check_consistent(folder: Path, step: int) -> None:
    loaded = SoftPrompt.load(folder)
    assert loaded.metadata["step"] == step and torch.equal(loaded.weight, torch.full((2, 4), float(step)))
    assert json.loads((folder / "softprompt.json").read_text())["step"] == step


def test_a_kill_between_the_two_renames_leaves_the_old_prompt_whole(tmp_path, monkeypatch):
    best = tmp_path / "best"
    _prompt(10).save(best)
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a system without renameat2
    real_replace, calls = os.replace, []

    def killed_at_the_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies between moving best/ aside and moving the new one in
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        _prompt(20).save(best)
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not best.exists() and sorted(p.name[:10] for p in tmp_path.iterdir()) == [".best.old-"]
    atomic.clean_stale(best)  # what the next save or resume does first
    _check_consistent(best, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    _prompt(20).save(best)
    _check_consistent(best, 20)


def test_a_save_that_fails_midway_leaves_the_old_prompt_and_no_temp_files(tmp_path, monkeypatch):
    best = tmp_path / "best"
    _prompt(10).save(best)
    import softprompt.artifacts as artifacts_module  # the one writer of saved outputs

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(artifacts_module, "save_file", disk_full)  # metadata written, tensor not
    with pytest.raises(OSError):
        _prompt(20).save(best)
    _check_consistent(best, 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_saving_over_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"holds other files \(notes.txt\)"):
        _prompt(1).save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_resume_clears_stale_temp_files_of_a_killed_run(tiny_model_dirs, toy_data, tmp_path):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    out = tmp_path / "run"
    stale = [out / ".best.tmp-x1", out / ".checkpoint.tmp-x2", out / "checkpoint.tmp"]
    for d in stale:
        d.mkdir()
        (d / PROMPT_FILE).write_bytes(b"half")
    (out / "best" / f".{PROMPT_FILE}.abc.tmp").write_bytes(b"half")  # left by the old file-by-file save
    training.train(cfg, resume=True, max_steps=6, eval_every=3)
    assert not any(d.exists() for d in stale)
    assert sorted(p.name for p in (out / "best").iterdir()) == [PROMPT_FILE, "softprompt.json"]


def test_an_old_checkpoint_swap_cut_midway_is_put_back(tiny_model_dirs, toy_data, tmp_path):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    out = tmp_path / "run"
    (out / "checkpoint").rename(out / "checkpoint.old")  # left by an earlier softprompt killed mid-swap
    training.train(cfg, resume=True, max_steps=6)
    assert (out / "checkpoint" / "state.json").exists() and not (out / "checkpoint.old").exists()
    assert json.loads((out / "results.json").read_text())["steps"] == 6


# ----------------------------------------------------------------------------- resuming
def test_a_partial_last_metrics_line_does_not_block_resume(tiny_model_dirs, toy_data, tmp_path):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    log = tmp_path / "run" / "metrics.jsonl"
    with open(log, "a") as fh:
        fh.write('{"step": 4, "loss": 0.6')  # killed while writing step 4's line
    training.train(cfg, resume=True, max_steps=6)
    lines = [json.loads(ln) for ln in log.read_text().splitlines()]
    assert [ln["step"] for ln in lines if "loss" in ln] == [1, 2, 3, 4, 5, 6]


def test_resuming_from_the_final_checkpoint_keeps_the_last_dev_metrics(tiny_model_dirs, toy_data, tmp_path):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    first = json.loads((tmp_path / "run" / "results.json").read_text())["dev"]
    assert "accuracy" in first and first["n"] == 16
    training.train(cfg, resume=True)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["dev"] == first


class Gadget:
    """An object a pickle would run code to rebuild."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_trainer_pt_is_refused_before_the_model_loads(tiny_model_dirs, toy_data, tmp_path, monkeypatch,
                                                                 capsys):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": Gadget(marker), "scheduler": {}, "torch_rng": torch.get_rng_state()},
               tmp_path / "run" / "checkpoint" / "trainer.pt")
    monkeypatch.setattr(training, "load_model", lambda *a, **k: pytest.fail("model loaded first"))
    with pytest.raises(ArtifactError, match=r"trainer.pt cannot be loaded safely .*--overwrite"):
        training.train(cfg, resume=True)
    assert not marker.exists()
    argv = ["train", "--task", "rotten_tomatoes", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]),
            "--out", str(tmp_path / "run"), "--resume", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "softprompt: error:" in err and "cannot be loaded safely" in err and "Traceback" not in err
    assert not marker.exists()


def test_a_damaged_trainer_pt_is_refused(tiny_model_dirs, toy_data, tmp_path, no_model):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path, out=str(tmp_path / "run"))
    out = tmp_path / "run" / "checkpoint"
    out.mkdir(parents=True)
    (out / "state.json").write_text(json.dumps({"state": {"step": 3}, "python_rng": "(3, (1, 2), None)"}))
    (out / "trainer.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="trainer.pt cannot be loaded safely"):
        training.train(cfg, resume=True)


# ----------------------------------------------------------------------------- the output folder
def test_an_unwritable_out_is_refused_before_the_model_loads(tiny_model_dirs, toy_data, tmp_path, no_model, capsys):
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "run"
    with pytest.raises(ConfigError, match=f"--out {bad} is not writable .*choose another --out"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, out=str(bad)))
    argv = ["train", "--task", "rotten_tomatoes", "--data-dir", str(toy_data), "--out", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not writable" in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=f"--out {tmp_path / 'a-file'} is a file, not a folder"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, out=str(tmp_path / "a-file")))


def test_a_run_refused_before_writing_leaves_no_folder_it_made(tiny_model_dirs, toy_data, tmp_path, no_model):
    made = tmp_path / "new" / "run"  # two levels made by the command
    with pytest.raises(ConfigError, match=r"has no setting\(s\) 'botleneck' \(did you mean 'bottleneck'\?\)"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, out=str(made), method="hyperformer",
                            method_options="botleneck=3"))
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"  # a folder the user made is left, even empty
    mine.mkdir()
    with pytest.raises(ConfigError):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, out=str(mine), method_options="nope=1"))
    assert mine.is_dir()


def test_a_run_that_fails_after_writing_keeps_its_folder(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise RuntimeError("stopped")

    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path, out=str(tmp_path / "made"))
    monkeypatch.setattr(training, "atomic_write_text", fail)  # results.json: after metrics and prompts are written
    with pytest.raises(RuntimeError):
        training.train(cfg)
    assert (tmp_path / "made").is_dir() and {p.name for p in (tmp_path / "made").iterdir()} - {LOCK_FILE}


def test_a_full_out_is_refused_before_the_model_loads(tiny_model_dirs, toy_data, tmp_path, no_model, monkeypatch):
    import softprompt.outdir as outdir

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(outdir.shutil, "disk_usage", lambda p: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"has 1.0 MiB free, under the 64 MiB a run needs"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))


def test_a_disk_that_fills_during_the_run_is_a_message(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    def full(out, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "checkpoint"))

    monkeypatch.setattr(training, "save_checkpoint", full)
    with pytest.raises(ConfigError, match="is full .*continue the run with --resume"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))


def test_pretrain_checks_its_out_before_any_work(tiny_model_dirs, tmp_path, monkeypatch):
    import softprompt.ppt.pretrain as pretrain

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("one document here.\n\nanother document there.\n")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(pretrain, "build_examples", lambda *a, **k: pytest.fail("examples built first"))
    with pytest.raises(ConfigError, match="is not writable"):
        pretrain.pretrain_prompt(corpus=str(corpus), model=str(tiny_model_dirs["causal"]),
                                 out=str(tmp_path / "a-file" / "ppt"))


def test_a_rerun_with_another_method_replaces_the_old_files(tmp_path):
    from softprompt.methods.loading import read_saved_metadata

    _prompt(1).save(tmp_path / "best")
    from conftest import make_backbone
    from softprompt.methods.in_context import InContext, InContextConfig
    from softprompt.tasks.registry import get_task

    method = InContext.empty(InContextConfig(), make_backbone("causal"), get_task("rotten_tomatoes"))
    method.save(tmp_path / "best", {"step": 0})
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["softprompt.json"]  # no stale prompt left
    assert read_saved_metadata(tmp_path / "best")["method"] == "in-context"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_saved_files_and_folders_take_the_umask_like_any_new_file(tmp_path, mask):
    """Not mkstemp's 0600 / mkdtemp's 0700: a run's outputs are readable by a service or another
    user exactly when a file made with open() would be."""
    old = os.umask(mask)
    try:
        atomic.atomic_write_text(tmp_path / "results.json", "{}")
        with atomic.atomic_dir(tmp_path / "best") as d:
            (d / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "best").stat().st_mode & 0o777 == 0o777 & ~mask
