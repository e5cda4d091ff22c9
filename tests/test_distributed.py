"""Two processes (gloo, CPU) end where one process ends, for the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TOLERANCE = 1e-4  # relative difference of the learned weights: only the order of float sums differs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(nproc: int, out, tiny_model_dirs, toy_data, method: str, extra=()) -> subprocess.CompletedProcess:
    args = ["train", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]), "--method", method,
            "--prompt-length", "3", "--init", "vocab", "--batch-size", "4", "--max-steps", "6", "--eval-every", "3",
            "--out", str(out), "--no-progress", "--optimizer", "adam", "--lr", "0.01", *extra]
    return _run(nproc, args)


def _run(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    """``softprompt ARGS`` in one process, or under torchrun in ``nproc``; must succeed."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "softprompt.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "softprompt.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _weights(folder, method: str) -> dict[str, torch.Tensor]:
    name = "prompt.safetensors" if method == "prompt-tuning" else "model.safetensors"
    return load_file(str(folder / name))


@pytest.mark.parametrize("method", ["prompt-tuning", "full-tuning"])
def test_two_processes_match_one(method, tiny_model_dirs, toy_data, tmp_path):
    _train(1, tmp_path / "one", tiny_model_dirs, toy_data, method)
    _train(2, tmp_path / "two", tiny_model_dirs, toy_data, method)
    one, two = _weights(tmp_path / "one" / "last", method), _weights(tmp_path / "two" / "last", method)
    assert one.keys() == two.keys()
    for key in one:
        diff = float((one[key] - two[key]).norm() / one[key].norm().clamp(min=1e-12))
        assert diff < TOLERANCE, (key, diff)
    if method == "full-tuning":  # the weights did move, so agreeing means something
        original = load_file(str(tiny_model_dirs["causal"] / "model.safetensors"))
        assert any(not torch.equal(original[k], one[k]) for k in original if k in one)
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r2["processes"] == 2 and r1["processes"] == 1
    assert r1["dev"]["accuracy"] == r2["dev"]["accuracy"]  # evaluation gathered over both ranks
    assert r1["test"]["n"] == r2["test"]["n"] == 16
    log = [json.loads(ln) for ln in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in log if "loss" in ln] == list(range(1, 7))  # written once, by rank 0


def test_resume_under_two_processes(tiny_model_dirs, toy_data, tmp_path):
    _train(2, tmp_path / "r", tiny_model_dirs, toy_data, "prompt-tuning", ["--max-steps", "3"])
    _train(2, tmp_path / "r", tiny_model_dirs, toy_data, "prompt-tuning", ["--resume"])
    _train(1, tmp_path / "straight", tiny_model_dirs, toy_data, "prompt-tuning")
    a = _weights(tmp_path / "r" / "last", "prompt-tuning")["prompt"]
    b = _weights(tmp_path / "straight" / "last", "prompt-tuning")["prompt"]
    assert float((a - b).norm() / b.norm()) < TOLERANCE


@pytest.mark.parametrize("method, options", [("multitask-prompt-tuning", []),
                                             ("hyperformer", ["--method-options", "bottleneck=4,task_embedding_dim=6"])])
def test_a_multitask_run_under_two_processes_matches_one(method, options, tiny_model_dirs, tmp_path):
    """Each drawn batch (one task's) is split over the ranks: the same tasks in the same order, the
    same learnt weights, per-task dev metrics gathered over both ranks."""
    from conftest import write_boolq, write_toy_data

    data = write_boolq(write_toy_data(tmp_path / "data", "rotten_tomatoes"))
    for nproc in (1, 2):
        _run(nproc, ["train", "--task", "rotten_tomatoes,boolq", "--data-dir", str(data), "--model",
                     str(tiny_model_dirs["causal"]), "--method", method, *options, "--prompt-length", "3", "--init",
                     "vocab", "--batch-size", "4", "--max-steps", "6", "--eval-every", "3", "--dev-from-train", "4",
                     "--task-sampling", "systematic", "--optimizer", "adam", "--lr", "0.01", "--out",
                     str(tmp_path / f"p{nproc}"), "--no-progress"])
    one, two = (load_file(str(tmp_path / f"p{n}" / "last" / "tensors.safetensors")) for n in (1, 2))
    assert one.keys() == two.keys() and one
    for key in one:
        diff = float((one[key] - two[key]).norm() / one[key].norm().clamp(min=1e-12))
        assert diff < TOLERANCE, (key, diff)
    r1, r2 = (json.loads((tmp_path / f"p{n}" / "results.json").read_text()) for n in (1, 2))
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r1["task_batches"] == r2["task_batches"] and sum(r2["task_batches"].values()) == 6
    for name in ("rotten_tomatoes", "boolq"):
        assert r1["dev"][name] == r2["dev"][name] and r1["test"][name]["n"] == r2["test"][name]["n"]
    logs = [[json.loads(ln) for ln in (tmp_path / f"p{n}" / "metrics.jsonl").read_text().splitlines()] for n in (1, 2)]
    assert [ln["task"] for ln in logs[0] if "loss" in ln] == [ln["task"] for ln in logs[1] if "loss" in ln]


def test_knowprompt_counts_are_summed_over_processes(tiny_model_dirs, tmp_path):
    """KnowPrompt counts the training rows truncation leaves out of its knowledge term (all of
    them at --max-length 11): two processes, each seeing half of every batch, report the sum,
    the count one process reports (3 steps of 4 rows)."""
    from methods.test_knowprompt import LABELS, ROWS, TEMPLATES, TYPES

    data = tmp_path / "rel.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    counts = {}
    for nproc in (1, 2):
        out = tmp_path / f"p{nproc}"
        _run(nproc, ["train", "--model", str(tiny_model_dirs["causal"]), "--train-file", str(data),
                     "--validation-file", str(data), "--task", "rel", "--template", TEMPLATES["causal"],
                     "--label-words", ";".join(f"{k}={v}" for k, v in LABELS.items()), "--method", "knowprompt",
                     "--method-options", f"type_words={TYPES},lam=0.5", "--optimizer", "adam", "--lr", "0.05",
                     "--batch-size", "4", "--max-steps", "3", "--eval-every", "2", "--max-length", "11",
                     "--test-split", "", "--out", str(out), "--no-progress"])
        counts[nproc] = json.loads((out / "results.json").read_text())["method_counts"]
    assert counts[1] == counts[2] == {"rows_without_knowledge_term": 12}


def test_a_model_sharded_with_device_map_trains_the_same_prompt(tiny_model_dirs, toy_data, tmp_path):
    """One decoder layer offloaded to disk (as for a model too big for the device): same prompt."""
    from softprompt.training import train

    common = dict(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]),
                  prompt_length=3, init="vocab", batch_size=4, max_steps=3, eval_every=3, progress=False,
                  optimizer="adam", lr=0.01, test_split="")
    train(out=str(tmp_path / "plain"), **common)
    dm = json.dumps({"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                     "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"})
    train(out=str(tmp_path / "sharded"), device_map=dm, offload_folder=str(tmp_path / "offload"), **common)
    a = _weights(tmp_path / "plain" / "last", "prompt-tuning")["prompt"]
    b = _weights(tmp_path / "sharded" / "last", "prompt-tuning")["prompt"]
    assert float((a - b).norm() / a.norm()) < TOLERANCE
    from softprompt.modeling import load_model

    bb = load_model(str(tiny_model_dirs["causal"]), device_map=json.loads(dm), offload_folder=str(tmp_path / "offload"))
    assert bb.model.hf_device_map["model.layers.1"] == "disk"  # the layer really is off the device
    assert bb.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"


def test_an_experiment_runs_unchanged_under_two_processes(tiny_model_dirs, toy_data, tmp_path):
    """`softprompt experiment` under torchrun: each run is distributed, analyses and report on rank 0."""
    import yaml

    spec = {"name": "ddp", "out": str(tmp_path / "exp"),
            "defaults": {"model": str(tiny_model_dirs["causal"]), "data_dir": str(toy_data), "batch_size": 4,
                         "max_steps": 3, "eval_every": 3, "optimizer": "adam", "lr": 0.01, "init": "vocab"},
            "grids": [{"name": "main", "tasks": ["rotten_tomatoes"], "methods": ["manual", "prompt-tuning"],
                       "prompt_length": [3], "seeds": [0, 1]}],
            "ensembles": [{"grid": "main", "task": "rotten_tomatoes", "method": "prompt-tuning"}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "softprompt.cli", "experiment", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "exp"
    for key in ("rotten_tomatoes/manual/seed0", "rotten_tomatoes/prompt-tuning/len3-vocab/seed0",
                "rotten_tomatoes/prompt-tuning/len3-vocab/seed1"):
        assert json.loads((out / "runs" / key / "results.json").read_text())["processes"] == 2
    assert (out / "analyses" / "ensemble" / "rotten_tomatoes__prompt-tuning__len3-vocab.json").exists()
    assert "## Prompt ensembles" in (out / "report.md").read_text()
    # the same prompt as one process would learn
    _train(1, tmp_path / "one", tiny_model_dirs, toy_data, "prompt-tuning", ["--max-steps", "3", "--seed", "1"])
    a = _weights(out / "runs/rotten_tomatoes/prompt-tuning/len3-vocab/seed1/last", "prompt-tuning")["prompt"]
    b = _weights(tmp_path / "one" / "last", "prompt-tuning")["prompt"]
    assert float((a - b).norm() / b.norm()) < TOLERANCE


def test_pretrain_prompt_runs_unchanged_under_two_processes(tiny_model_dirs, tmp_path):
    """`softprompt pretrain-prompt` under torchrun: the same pre-trained prompt as one process."""
    from softprompt.prompt import SoftPrompt
    from ppt.conftest import corpus_texts

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(corpus_texts()) + "\n", encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    outs = {}
    for nproc in (1, 2):
        out = tmp_path / f"ppt{nproc}"
        args = ["pretrain-prompt", "--corpus", str(corpus), "--format", "unified", "--model",
                str(tiny_model_dirs["causal"]), "--prompt-length", "3", "--batch-size", "4", "--max-steps", "3",
                "--eval-every", "3", "--examples", "16", "--dev-examples", "6", "--optimizer", "adam", "--lr", "0.01",
                "--out", str(out), "--no-progress"]
        launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                                          "--master_addr=127.0.0.1", f"--master_port={_free_port()}"]
        cmd = [sys.executable, *launcher, "-m", "softprompt.cli", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[nproc] = out
    assert json.loads((outs[2] / "results.json").read_text())["processes"] == 2
    a, b = SoftPrompt.load(outs[1] / "last"), SoftPrompt.load(outs[2] / "last")
    assert b.metadata["ppt"]["format"] == "unified"
    wa, wb = a.weight.detach(), b.weight.detach()
    assert float((wa - wb).norm() / wa.norm()) < TOLERANCE


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    if not os.path.exists(path):
        pytest.skip("needs Linux's /proc/PID/task/PID/children to find torchrun's workers")
    with open(path) as fh:
        return [int(p) for p in fh.read().split()]


def test_a_signal_to_one_process_stops_both_after_the_same_step_and_the_run_resumes(tiny_model_dirs, toy_data, tmp_path):
    """SIGTERM to one worker of two: both finish the step they are in, the checkpoint holds it,
    and a resumed run under two processes ends where one uninterrupted process does."""
    import signal
    import time

    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "softprompt.cli", "train", "--data-dir", str(toy_data), "--model",
           str(tiny_model_dirs["causal"]), "--prompt-length", "3", "--init", "vocab", "--batch-size", "4",
           "--max-steps", "100000", "--eval-every", "100000", "--optimizer", "adam", "--lr", "0.01",
           "--test-split", "", "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = out / "metrics.jsonl"
    deadline = time.time() + 200
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGTERM)
    _, err = proc.communicate(timeout=200)
    assert proc.returncode != 0 and err.count("SIGTERM: stopped after step") == 2, err[-3000:]
    step = json.loads((out / "checkpoint" / "state.json").read_text())["state"]["step"]
    assert f"SIGTERM: stopped after step {step} of 100000" in err  # the step of both processes, and saved
    assert [r["step"] for r in map(json.loads, log.read_text().splitlines()) if "loss" in r] == list(range(1, step + 1))

    _train(2, out, tiny_model_dirs, toy_data, "prompt-tuning", ["--resume", "--max-steps", str(step + 2),
                                                                  "--eval-every", "100000", "--test-split", ""])
    _train(1, tmp_path / "straight", tiny_model_dirs, toy_data, "prompt-tuning", ["--max-steps", str(step + 2),
                                                                                  "--test-split", ""])
    a = _weights(out / "last", "prompt-tuning")["prompt"]
    b = _weights(tmp_path / "straight" / "last", "prompt-tuning")["prompt"]
    assert float((a - b).norm() / b.norm()) < TOLERANCE
