import dataclasses
import json

import pytest
import torch

import softprompt.training as training
from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.prompt import SoftPrompt


def _cfg(tiny_model_dirs, toy_data, tmp_path, **kw):
    base = dict(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]), prompt_length=4,
                init="vocab", batch_size=4, max_steps=6, eval_every=3, out=str(tmp_path / "run"), progress=False,
                zero_shot_baseline=True)
    base.update(kw)
    return TrainConfig(**base)


def test_a_prompt_learns_a_fixed_batch(causal_backbone):
    """Only the prompt is trained, and it fits: the loss on a batch falls steeply."""
    from softprompt.encoding import encode
    from softprompt.scoring import classification_loss
    from softprompt.tasks.registry import get_task
    from conftest import TOY_NEG, TOY_POS

    bb = causal_backbone
    task = get_task("rotten_tomatoes")
    rows = [{"text": t, "label": "positive"} for t in TOY_POS[:4]] + [{"text": t, "label": "negative"} for t in TOY_NEG[:4]]
    batch = encode(bb, task, rows, prompt_length=4)
    prompt = torch.nn.Parameter(torch.randn(4, bb.dim) * 0.1)
    opt = torch.optim.Adam([prompt], lr=0.1)
    first = None
    for _ in range(60):
        loss = classification_loss(bb, task, batch, prompt)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < 0.5 * first
    assert all(p.grad is None for p in bb.model.parameters())  # the model stayed frozen


def test_train_writes_best_last_log_and_results(tiny_model_dirs, toy_data, tmp_path):
    result = training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))
    out = tmp_path / "run"
    for name in ("best", "last", "checkpoint"):
        assert (out / name).exists(), name
    best = SoftPrompt.load(out / "best")
    assert best.weight.shape[0] == 4 and best.metadata["model_fingerprint"]
    assert best.metadata["task"]["name"] == "rotten_tomatoes"
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines if "loss" in ln] == list(range(1, 7))
    assert sum(1 for ln in lines if ln.get("split") == "validation") == 2
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["n"] == 16 and res["zero_shot_test"]["n"] == 16
    assert result.state.step == 6


def test_resume_ends_with_the_same_prompt_as_an_uninterrupted_run(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path, max_steps=9, eval_every=3, batch_size=3, optimizer="adafactor", lr=0.3)
    training.train(cfg, out=str(tmp_path / "straight"))
    straight = SoftPrompt.load(tmp_path / "straight" / "last").weight

    from softprompt.methods import PromptTuning

    from conftest import crash_at_call

    restore = crash_at_call(monkeypatch, PromptTuning, 5)  # dies in step 5, after the step-3 checkpoint
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg, out=str(tmp_path / "cut"))
    restore()
    with pytest.raises(ConfigError, match="--resume"):
        training.train(cfg, out=str(tmp_path / "cut"))
    training.train(cfg, out=str(tmp_path / "cut"), resume=True)
    resumed = SoftPrompt.load(tmp_path / "cut" / "last").weight
    assert torch.equal(resumed, straight)
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]
    assert steps == list(range(1, 10))  # no duplicated lines from the interrupted attempt


def test_an_interrupted_checkpoint_swap_falls_back_to_the_old_one(tiny_model_dirs, toy_data, tmp_path):
    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path, max_steps=3)
    training.train(cfg)
    out = tmp_path / "run"
    (out / "checkpoint").rename(out / "checkpoint.old")  # as if killed between the two renames
    assert training.find_checkpoint(out) == out / "checkpoint.old"
    training.train(cfg, resume=True, max_steps=6)
    assert json.loads((out / "results.json").read_text())["steps"] == 6
    with pytest.raises(ConfigError, match=r"so --prompt-length \(the run's: 4, given: 100\) cannot change"):
        training.train(cfg, resume=True, prompt_length=100)  # a keyword at its default is given all the same


def test_early_stopping(tiny_model_dirs, toy_data, tmp_path):
    result = training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, max_steps=60, eval_every=1, patience=2, lr=1e-9,
                                 optimizer="adam", test_split=""))
    assert result.state.stopped_early and result.state.step < 60


@pytest.mark.parametrize("family", ["seq2seq", "masked"])
def test_other_families_train_end_to_end(family, tiny_model_dirs, toy_data, tmp_path):
    result = training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, model=str(tiny_model_dirs[family]), max_steps=2,
                                 eval_every=2))
    assert result.test is not None and 0 <= result.test["accuracy"] <= 1


def test_bad_options_are_refused(tiny_model_dirs, toy_data, tmp_path):
    with pytest.raises(ConfigError, match="prompt-length"):
        _cfg(tiny_model_dirs, toy_data, tmp_path, prompt_length=0)
    with pytest.raises(ConfigError, match="optimizer"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, optimizer="sgd"))
    with pytest.raises(ConfigError, match="init"):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, init="zeros", out=str(tmp_path / "r2")))


@pytest.mark.parametrize("method", ["prompt-tuning", "full-tuning"])
def test_mixed_precision_runs_the_model_in_bf16_and_keeps_float32_state(method, tiny_model_dirs, toy_data, tmp_path,
                                                                          monkeypatch):
    """--mixed-precision bf16: the model's linear layers compute in bf16 (training and evaluation),
    while the weights and what is learned stay float32, so full tuning's small updates are not lost."""
    seen, loaded = [], []
    real = training.load_model

    def spy(*args, **kwargs):
        bb = real(*args, **kwargs)
        linear = next(m for m in bb.model.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        loaded.append((bb, {k: v.clone() for k, v in bb.model.state_dict().items()}))
        return bb

    monkeypatch.setattr(training, "load_model", spy)
    result = training.train(_cfg(tiny_model_dirs, toy_data, tmp_path, method=method, mixed_precision="bf16",
                                 max_steps=2, eval_every=2, optimizer="adam", lr=1e-3, zero_shot_baseline=False))
    assert seen and set(seen) == {torch.bfloat16}
    assert result.test is not None and json.loads((tmp_path / "run/results.json").read_text())["config"]["mixed_precision"] == "bf16"
    bb, before = loaded[0]
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())
    moved = [k for k, v in bb.model.state_dict().items() if not torch.equal(v, before[k])]
    if method == "prompt-tuning":
        assert not moved and SoftPrompt.load(tmp_path / "run/best").weight.dtype == torch.float32
    else:
        assert moved  # lr 1e-3 updates survive: the master weights are float32


def test_train_lets_every_verbalizer_check_the_training_rows(tiny_model_dirs, toy_data, tmp_path, monkeypatch):
    """train hands the training rows to the verbalizer's check_rows whatever its kind (a no-op for
    a fixed label set, PTR's rule coverage for rules), before the model loads."""
    from softprompt.tasks.verbalizer import Verbalizer

    class ModelLoading(Exception):
        pass

    def load_model(*args, **kwargs):
        raise ModelLoading

    seen = []
    monkeypatch.setattr(Verbalizer, "check_rows", lambda self, rows, where="the data": seen.append((type(self), len(rows), where)))
    monkeypatch.setattr(training, "load_model", load_model)
    with pytest.raises(ModelLoading):
        training.train(_cfg(tiny_model_dirs, toy_data, tmp_path))
    assert seen == [(Verbalizer, 16, "the training rows")]


def test_a_resumed_run_counts_the_seconds_of_every_session(tiny_model_dirs, toy_data, tmp_path):
    """results.json's ``seconds`` is the whole run's wall time: the checkpoint carries the seconds
    spent up to it (``TrainState.seconds``) and a resumed session adds its own; a checkpoint
    written before that field existed still resumes, counting its own session alone."""
    import time

    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path, max_steps=3, eval_every=3, zero_shot_baseline=False, test_split="")
    out = tmp_path / "run"
    state_file, results = out / "checkpoint" / "state.json", out / "results.json"
    began = time.time()
    training.train(cfg)
    first = time.time() - began
    saved = json.loads(state_file.read_text())
    assert 0 < saved["state"]["seconds"] <= first
    assert json.loads(results.read_text())["seconds"] == pytest.approx(saved["state"]["seconds"], abs=0.5)

    saved["state"]["seconds"] = 1000.0  # as if the first part had run for 1000 s
    state_file.write_text(json.dumps(saved))
    began = time.time()
    result = training.train(cfg, resume=True, max_steps=6)
    second = time.time() - began
    reported = json.loads(results.read_text())["seconds"]
    assert 1000 < reported <= 1000 + second + 0.05 and result.seconds == pytest.approx(reported, abs=0.05)
    assert reported > second  # more than its second part alone
    assert json.loads(state_file.read_text())["state"]["seconds"] > 1000  # the next checkpoint carries it on

    old = json.loads(state_file.read_text())
    del old["state"]["seconds"]  # a checkpoint from before the field
    state_file.write_text(json.dumps(old))
    began = time.time()
    training.train(cfg, resume=True, max_steps=9)
    third = time.time() - began
    assert 0 < json.loads(results.read_text())["seconds"] <= third + 0.05


def test_the_progress_bar_names_what_the_run_trains(tiny_model_dirs, tmp_path, capsys):
    """A multi-task run's bar names every task it trains, not its first; a one-task run's its task."""
    from conftest import write_boolq, write_toy_data

    data = write_boolq(write_toy_data(tmp_path / "data", "rotten_tomatoes"))
    common = dict(data_dir=str(data), model=str(tiny_model_dirs["causal"]), prompt_length=2, init="vocab", batch_size=4,
                  max_steps=2, eval_every=2, progress=True, optimizer="adam", lr=0.05, zero_shot_baseline=False,
                  test_split="")
    training.train(task="rotten_tomatoes,boolq", method="multitask-prompt-tuning", out=str(tmp_path / "mt"), **common)
    err = capsys.readouterr().err
    assert "train rotten_tomatoes,boolq:" in err and "train rotten_tomatoes:" not in err
    training.train(task="boolq", out=str(tmp_path / "one"), **common)
    assert "train boolq:" in capsys.readouterr().err


def test_a_finished_run_or_a_folder_of_other_files_is_not_trained_over(tiny_model_dirs, toy_data, tmp_path):
    """A finished run whose checkpoint was deleted (to save space) is kept unless --overwrite; a
    folder holding files that are not a run's (say the user's data) is refused either way."""
    import shutil

    cfg = _cfg(tiny_model_dirs, toy_data, tmp_path)
    training.train(cfg)
    out = tmp_path / "run"
    shutil.rmtree(out / "checkpoint")
    before = (out / "best" / "prompt.safetensors").read_bytes()
    with pytest.raises(ConfigError, match=r"already holds a run \(results.json, best, last\): pass --overwrite"):
        training.train(cfg)
    assert (out / "best" / "prompt.safetensors").read_bytes() == before
    training.train(dataclasses.replace(cfg, overwrite=True, seed=1))
    assert (out / "best" / "prompt.safetensors").read_bytes() != before
    data = tmp_path / "mydata"
    data.mkdir()
    (data / "train.csv").write_text("text,label\nfine,positive\n")
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"holds files that are not a run's \(train.csv\).*new or empty --out"):
            training.train(dataclasses.replace(cfg, out=str(data), overwrite=overwrite))
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == ["train.csv"]
