"""What the validating loader (:func:`softprompt.artifacts.load_artifact`) refuses beside types
and NaN: a prompt or prefix of no vectors, and saved scoring settings of the wrong type or range
(findings 2 and 3). Each refusal names the file and holds on every path: predict, eval, the
server, export-peft, ``--init file:``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_backbone
from softprompt.api import ScoringSettings
from softprompt.artifacts import load_artifact
from softprompt.cli import main
from softprompt.errors import ArtifactError, ModelMismatchError, PromptFileError
from softprompt.prompt import META_FILE, PROMPT_FILE, SoftPrompt
from softprompt.serving import MultiPromptModel

from serving import SENTIMENT, save_prompt


@pytest.fixture(scope="module")
def backbone():
    return make_backbone("causal")


def write_prompt(folder: Path, weight: torch.Tensor, meta: dict) -> Path:
    """``folder/prompt.safetensors`` (and ``softprompt.json``) holding ``weight`` and ``meta`` as given."""
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta)
    save_file({"prompt": weight.contiguous()}, str(folder / PROMPT_FILE), metadata={"softprompt": text})
    (folder / META_FILE).write_text(text)
    return folder


def meta_for(model_id: str, backbone, **extra) -> dict:
    return {"model_id": model_id, "model_fingerprint": backbone.fingerprint, "model_family": "causal",
            "task": SENTIMENT.to_dict(), **extra}


# ----------------------------------------------------------------------------- finding 2: no vectors
@pytest.fixture
def len0(tmp_path, backbone, tiny_model_dirs) -> Path:
    """A prompt ``[0, 32]`` with metadata ``length: 0`` for the tiny causal model."""
    return write_prompt(tmp_path / "len0", torch.zeros(0, backbone.dim),
                        meta_for(str(tiny_model_dirs["causal"]), backbone, length=0, dim=backbone.dim))


def test_a_prompt_of_no_vectors_is_refused_naming_the_file(len0):
    with pytest.raises(ArtifactError, match=rf"len0/{PROMPT_FILE}: the prompt has no vectors \(shape \(0, 32\)\)"):
        SoftPrompt.load(len0)


@pytest.mark.parametrize("argv", [
    ["predict", "great fun", "--prompt", "{p}"],
    ["eval", "--prompt", "{p}", "--split", "validation"],
    ["export-peft", "{p}", "--out", "{out}"],
    ["inspect", "{p}"],
])
def test_every_command_refuses_a_prompt_of_no_vectors_with_exit_2(len0, tmp_path, capsys, argv):
    argv = [a.format(p=len0, out=tmp_path / "adapter") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{len0 / PROMPT_FILE}: the prompt has no vectors" in err and "Traceback" not in err
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()


def test_the_server_lists_a_prompt_of_no_vectors_as_refused(tmp_path, backbone):
    root = tmp_path / "prompts"
    save_prompt(root, "good", backbone, SENTIMENT)
    write_prompt(root / "len0", torch.zeros(0, backbone.dim), meta_for(backbone.model_id, backbone, length=0))
    engine = MultiPromptModel.from_dir(backbone, root)
    assert [t["name"] for t in engine.tasks()] == ["good"]
    assert list(engine.refused) == ["len0"] and "the prompt has no vectors" in engine.refused["len0"]
    with pytest.raises(PromptFileError, match="the prompt has no vectors"):  # admin add: a 422, not a 201
        engine.add("again", "len0")


def test_a_prefix_of_no_positions_is_refused(tmp_path):
    folder = tmp_path / "prefix"
    folder.mkdir()
    meta = json.dumps({"method": "prefix-tuning", "length": 0, "layers": 1})
    save_file({"key.0": torch.zeros(2, 0, 8), "value.0": torch.zeros(2, 0, 8), "base": torch.zeros(0, 32),
               "kv": torch.zeros(0, 32)}, str(folder / "prefix.safetensors"), metadata={"softprompt": meta})
    with pytest.raises(ArtifactError, match=r"prefix.safetensors: the prefix has no positions \(length 0, key.0 of "
                                            r"shape \(2, 0, 8\)\)"):
        load_artifact(folder)


def test_in_context_outputs_of_no_demonstrations_keep_loading(tmp_path):
    (tmp_path / "ic").mkdir()
    meta = {"method": "in-context", "length": 0, "demonstrations": [], "text": "", "token_ids": []}
    (tmp_path / "ic" / META_FILE).write_text(json.dumps(meta))
    art = load_artifact(tmp_path / "ic")
    assert art.kind == "in-context" and art.metadata["length"] == 0


def _train_argv(tiny_model_dirs, toy_data, tmp_path, init: str) -> list[str]:
    return ["train", "--task", "rotten_tomatoes", "--data-dir", str(toy_data), "--model", str(tiny_model_dirs["causal"]),
            "--init", init, "--prompt-length", "4", "--max-steps", "1", "--out", str(tmp_path / "run"), "--no-progress"]


def test_init_file_of_no_vectors_never_advises_prompt_length_0(len0, tiny_model_dirs, toy_data, tmp_path, capsys):
    assert main(_train_argv(tiny_model_dirs, toy_data, tmp_path, f"file:{len0}")) == 2
    err = capsys.readouterr().err
    assert "the prompt has no vectors" in err and "--prompt-length 0" not in err
    assert main(["train", "--prompt-length", "0"]) == 2  # the value the old advice named is refused
    assert "--prompt-length must be at least 1" in capsys.readouterr().err


def test_init_file_advice_names_the_files_length_or_its_model(backbone, tiny_model_dirs, toy_data, tmp_path, capsys):
    model = str(tiny_model_dirs["causal"])
    SoftPrompt(torch.randn(3, backbone.dim), meta_for(model, backbone)).save(tmp_path / "three")
    assert main(_train_argv(tiny_model_dirs, toy_data, tmp_path, f"file:{tmp_path / 'three'}")) == 2
    assert "(3, 32) but (4, 32) was asked for: pass --prompt-length 3" in capsys.readouterr().err
    SoftPrompt(torch.randn(4, 16), {"model_id": "other-model"}).save(tmp_path / "narrow")
    with pytest.raises(ModelMismatchError, match="has dimension 16 .*'other-model'.* embeddings have 32: pass --model"):
        from softprompt.config import TrainConfig
        from softprompt.training import train

        train(TrainConfig(task="rotten_tomatoes", data_dir=str(toy_data), model=model, init=f"file:{tmp_path / 'narrow'}",
                          prompt_length=4, max_steps=1, out=str(tmp_path / "run2"), progress=False))


# ----------------------------------------------------------------------------- finding 3: saved settings
BAD_SETTINGS = [
    ("max_length", "abc", "'training.max_length' must be a whole number >= 1 (tokens), got str \"abc\""),
    ("max_length", -3, "'training.max_length' must be a whole number >= 1 (tokens), got int -3"),
    ("max_length", 0, "'training.max_length' must be a whole number >= 1 (tokens), got int 0"),
    ("max_length", True, "'training.max_length' must be a whole number >= 1 (tokens), got bool true"),
    ("scoring", "bogus", "'training.scoring' must be one of ['rank', 'generate'], got str \"bogus\""),
    ("length_normalize", "yes", "'training.length_normalize' must be true or false, got str \"yes\""),
    ("length_normalize", 1, "'training.length_normalize' must be true or false, got int 1"),
]


@pytest.fixture
def bad_prompt(request, tmp_path, backbone, tiny_model_dirs):
    field, value, message = request.param
    training = {"scoring": "rank", "length_normalize": False, "max_length": 64, field: value}
    folder = write_prompt(tmp_path / "bad", torch.randn(4, backbone.dim),
                          meta_for(str(tiny_model_dirs["causal"]), backbone, training=training))
    return folder, message


@pytest.mark.parametrize("bad_prompt", BAD_SETTINGS, indirect=True, ids=[f"{f}={v!r}" for f, v, _ in BAD_SETTINGS])
def test_saved_scoring_settings_are_checked_on_load_naming_the_field(bad_prompt):
    folder, message = bad_prompt
    with pytest.raises(ArtifactError, match=rf"bad/{PROMPT_FILE}: metadata field " + _re(message)):
        SoftPrompt.load(folder)


@pytest.mark.parametrize("bad_prompt", BAD_SETTINGS[:1] + BAD_SETTINGS[4:6], indirect=True)
@pytest.mark.parametrize("command", [["predict", "great fun", "--prompt"], ["eval", "--split", "validation", "--prompt"]])
def test_predict_and_eval_refuse_bad_saved_settings_with_exit_2(bad_prompt, command, capsys):
    folder, message = bad_prompt
    assert main(command + [str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("bad_prompt", BAD_SETTINGS[1:2] + BAD_SETTINGS[4:6], indirect=True)
def test_the_server_lists_bad_saved_settings_under_refused(bad_prompt, backbone, tmp_path):
    folder, message = bad_prompt
    root = folder.parent
    save_prompt(root, "good", backbone, SENTIMENT)
    meta = json.loads((folder / META_FILE).read_text())
    write_prompt(folder, torch.randn(4, backbone.dim), {**meta, "model_id": backbone.model_id})
    engine = MultiPromptModel.from_dir(backbone, root)
    assert [t["name"] for t in engine.tasks()] == ["good"]
    assert list(engine.refused) == ["bad"] and message in engine.refused["bad"]


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(ScoringSettings)])
def test_every_setting_scoring_settings_reads_is_checked(name, tmp_path, backbone):
    """Whatever field ScoringSettings takes from ``training`` is checked, in a file and in code."""
    with pytest.raises(ArtifactError, match=rf"metadata field 'training.{name}' must be .*got list \[1\]"):
        SoftPrompt.load(write_prompt(tmp_path / "p", torch.randn(4, backbone.dim),
                                     meta_for(backbone.model_id, backbone, training={name: [1]})))
    with pytest.raises(ArtifactError, match=rf"'training.{name}' must be"):
        ScoringSettings.from_metadata({"training": {name: [1]}})


def test_other_saved_outputs_check_their_settings_too(tmp_path):
    (tmp_path / "ic").mkdir()
    meta = {"method": "in-context", "length": 0, "demonstrations": [], "text": "", "token_ids": [],
            "training": {"scoring": "bogus"}}
    (tmp_path / "ic" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=rf"ic/{META_FILE}: metadata field 'training.scoring' must be one of"):
        load_artifact(tmp_path / "ic")


def test_good_and_null_saved_settings_load_and_apply(tmp_path, backbone):
    meta = meta_for(backbone.model_id, backbone,
                    training={"scoring": "generate", "length_normalize": None, "max_length": 32, "lr": "anything"})
    prompt = SoftPrompt.load(write_prompt(tmp_path / "p", torch.randn(4, backbone.dim), meta))
    assert ScoringSettings.from_metadata(prompt.metadata) == ScoringSettings("generate", False, 32)


def _re(text: str) -> str:
    import re

    return re.escape(text)
