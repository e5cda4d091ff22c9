import json

import pytest
import torch

import softprompt
from conftest import make_backbone
from softprompt.cli import main
from softprompt.errors import ConfigError, ModelMismatchError, PromptFileError
from softprompt.modeling import load_model
from softprompt.ppt import PretrainConfig, pretrain_prompt
from softprompt.ppt.corpus import file_sha256
from softprompt.prompt import SoftPrompt
from softprompt.tasks.data import read_examples
from softprompt.tasks.registry import BUILTIN_TASKS


def _cfg(corpus_file, tiny_model_dirs, tmp_path, **kw):
    base = dict(corpus=str(corpus_file), model=str(tiny_model_dirs["causal"]), prompt_length=4, batch_size=4,
                max_steps=3, eval_every=3, examples=16, dev_examples=6, out=str(tmp_path / "ppt"), progress=False,
                optimizer="adam", lr=0.01)
    base.update(kw)
    return PretrainConfig(**base)


@pytest.mark.parametrize("fmt, verbalizer", [("unified", "choice"), ("pair", "fixed")])
def test_pretrain_writes_data_and_a_prompt_that_initialises_training(fmt, verbalizer, corpus_file, tiny_model_dirs,
                                                                     toy_data, tmp_path, capsys):
    result = pretrain_prompt(_cfg(corpus_file, tiny_model_dirs, tmp_path, format=fmt))
    out = tmp_path / "ppt"
    train_rows = read_examples(out / "data" / "train.jsonl")
    dev_rows = read_examples(out / "data" / "validation.jsonl")
    assert len(train_rows) == 16 and len(dev_rows) == 6
    assert not {r["doc"] for r in train_rows} & {r["doc"] for r in dev_rows}  # dev documents are held out
    assert result.best_prompt == out / "best" and result.state.step == 3
    assert f"ppt_{fmt}" not in BUILTIN_TASKS  # the task came from options, not from the registry

    best = SoftPrompt.load(out / "best")
    ppt = best.metadata["ppt"]
    assert ppt["format"] == fmt and ppt["corpus_sha256"] == file_sha256(corpus_file)
    assert ppt["corpus"] == str(corpus_file.resolve()) and ppt["examples"] == {"train": 16, "validation": 6}
    assert ppt["template"] == best.metadata["task"]["template"]["text"]
    assert best.metadata["task"]["verbalizer"]["type"] == verbalizer
    assert json.loads((out / "ppt.json").read_text())["format"] == fmt
    assert SoftPrompt.load(out / "last").metadata["ppt"]["format"] == fmt
    results = json.loads((out / "results.json").read_text())
    assert results["test"] is None and results["zero_shot_test"] is None
    # the saved prompt carries its task: `softprompt eval` re-scores the dev file without any registry
    assert main(["eval", "--prompt", str(out / "best"), "--file", str(out / "data" / "validation.jsonl"),
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 6

    # the prompt initialises ordinary prompt tuning on a downstream task
    init = f"pretrained:{out / 'best'}"
    bb = load_model(str(tiny_model_dirs["causal"]))
    assert torch.equal(SoftPrompt.initialize(4, bb.dim, init, bb.init_context()).weight, best.weight)
    down = softprompt.train(task="rotten_tomatoes", data_dir=str(toy_data), model=str(tiny_model_dirs["causal"]),
                            prompt_length=4, init=init, batch_size=4, max_steps=1, eval_every=1,
                            out=str(tmp_path / "down"), progress=False, zero_shot_baseline=False)
    assert down.state.step == 1 and SoftPrompt.load(tmp_path / "down" / "best").metadata["init"] == init
    with pytest.raises(PromptFileError, match="pass --prompt-length 4"):
        SoftPrompt.initialize(5, bb.dim, init, bb.init_context())
    other = make_backbone("causal", seed=1)
    with pytest.raises(ModelMismatchError, match="trained for model"):
        SoftPrompt.initialize(4, other.dim, init, other.init_context())


def test_an_existing_run_needs_resume_with_the_same_data_or_overwrite(corpus_file, tiny_model_dirs, tmp_path):
    cfg = _cfg(corpus_file, tiny_model_dirs, tmp_path, format="single", max_steps=2, eval_every=2)
    with pytest.raises(ConfigError, match="holds no PPT pre-training run"):
        pretrain_prompt(cfg, resume=True)
    pretrain_prompt(cfg)
    with pytest.raises(ConfigError, match="already holds a PPT pre-training run"):
        pretrain_prompt(cfg)
    with pytest.raises(ConfigError) as err:
        pretrain_prompt(cfg, resume=True, seed=1, max_steps=4)
    assert str(err.value) == (f"--resume continues the run in {cfg.out} as it was started, so --seed (the run's: 0, "
                              "given: 1) cannot change: give the run's corpus and options, or start a new run with "
                              "another --out (or --overwrite to replace this one)")
    result = pretrain_prompt(cfg, resume=True, max_steps=4)
    assert result.state.step == 4
    assert pretrain_prompt(cfg, overwrite=True, seed=2).state.step == 2
    assert json.loads((tmp_path / "ppt" / "ppt.json").read_text())["seed"] == 2


def test_a_missing_corpus_fails_before_any_work(tiny_model_dirs, tmp_path):
    from softprompt.errors import DataError

    with pytest.raises(DataError, match="corpus file not found"):
        pretrain_prompt(_cfg(tmp_path / "nope.txt", tiny_model_dirs, tmp_path))
    assert not (tmp_path / "ppt").exists()
