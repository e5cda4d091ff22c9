"""Every saved artifact is validated before use (issue 14, item 1) and every file it opens is
contained (item 3, loading part): :func:`softprompt.artifacts.load_artifact` and its callers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_backbone
from softprompt.artifacts import MIN_TEXT_TOKENS, load_artifact
from softprompt.api import PromptedModel
from softprompt.errors import ArtifactError, ModelMismatchError, PromptFileError
from softprompt.methods.loading import read_saved_metadata, restore
from softprompt.prompt import META_FILE, PROMPT_FILE, SoftPrompt
from softprompt.serving import MultiPromptModel

from serving import SENTIMENT, save_prompt


@pytest.fixture(scope="module")
def backbone():
    return make_backbone("causal")


def write_prompt(folder: Path, weight: torch.Tensor, meta) -> Path:
    """A ``prompt.safetensors`` holding ``weight`` and ``meta`` (any JSON, even not an object) as written."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt": weight.contiguous()}, str(folder / PROMPT_FILE), metadata={"softprompt": json.dumps(meta)})
    return folder


def good_meta(backbone, **extra):
    return {"model_id": backbone.model_id, "model_fingerprint": backbone.fingerprint, "task": SENTIMENT.to_dict(),
            **extra}


@pytest.mark.parametrize("meta, kind", [([1, 2], "list"), (None, "NoneType"), ("a prompt", "str")])
def test_metadata_that_is_not_an_object_is_refused_naming_the_file(tmp_path, meta, kind):
    folder = write_prompt(tmp_path / "p", torch.zeros(3, 32), meta)
    with pytest.raises(ArtifactError, match=rf"{PROMPT_FILE}: the metadata must be a JSON object, got {kind}"):
        SoftPrompt.load(folder)


@pytest.mark.parametrize("field, value, expected", [
    ("task", 5, "'task' must be a JSON object, got int 5"),
    ("task", None, "'task' must be a JSON object, got NoneType null"),
    ("model_id", 7, "'model_id' must be a string, got int 7"),
    ("init", ["vocab"], "'init' must be a string, got list"),
    ("length", True, "'length' must be a whole number, got bool"),
    ("model_fingerprint", 12, "'model_fingerprint' must be a string"),
])
def test_a_field_of_the_wrong_type_is_refused_naming_it(tmp_path, backbone, field, value, expected):
    folder = write_prompt(tmp_path / "p", torch.zeros(3, 32), good_meta(backbone, **{field: value}))
    with pytest.raises(ArtifactError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        SoftPrompt.load(folder)


def test_a_task_that_does_not_rebuild_is_refused(tmp_path, backbone):
    folder = write_prompt(tmp_path / "p", torch.zeros(3, 32), good_meta(backbone, task={"name": "x", "labels": 5}))
    with pytest.raises(ArtifactError, match="'task' does not describe a task"):
        SoftPrompt.load(folder)


@pytest.mark.parametrize("bad, count", [(float("nan"), 1), (float("inf"), 1), (float("-inf"), 1)])
def test_a_prompt_with_nan_or_inf_is_refused(tmp_path, backbone, bad, count):
    weight = torch.zeros(3, 32)
    weight[1, 4] = bad
    folder = write_prompt(tmp_path / "p", weight, good_meta(backbone))
    with pytest.raises(ArtifactError, match=f"tensor 'prompt' holds {count} NaN or infinite"):
        SoftPrompt.load(folder)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
def test_an_integer_or_boolean_prompt_is_refused_not_cast(tmp_path, backbone, dtype):
    folder = write_prompt(tmp_path / "p", torch.ones(3, 32, dtype=dtype), good_meta(backbone))
    with pytest.raises(ArtifactError, match=f"is {dtype}, not floating point"):
        SoftPrompt.load(folder)


def test_a_half_precision_prompt_is_accepted_as_float32(tmp_path, backbone):
    weight = torch.randn(3, 32).half()
    loaded = SoftPrompt.load(write_prompt(tmp_path / "p", weight, good_meta(backbone)))
    assert loaded.weight.dtype == torch.float32 and torch.equal(loaded.weight, weight.float())


def test_a_prompt_of_another_rank_or_dim_is_refused(tmp_path, backbone):
    with pytest.raises(ArtifactError, match=r"shape \(96,\), expected 2-D"):
        SoftPrompt.load(write_prompt(tmp_path / "a", torch.zeros(96), good_meta(backbone)))
    with pytest.raises(ModelMismatchError, match=r"has dimension 16 \(trained for model .*\) but the model's embeddings have 32: pass --model"):
        SoftPrompt.load(write_prompt(tmp_path / "b", torch.zeros(3, 16), good_meta(backbone)), backbone=backbone)


def test_a_prompt_longer_than_the_models_context_is_refused(tmp_path, backbone):
    room = backbone.max_length - backbone.n_special
    fits = write_prompt(tmp_path / "fits", torch.zeros(room - MIN_TEXT_TOKENS, 32), good_meta(backbone))
    assert SoftPrompt.load(fits, backbone=backbone).length == room - MIN_TEXT_TOKENS
    long = write_prompt(tmp_path / "long", torch.zeros(room - MIN_TEXT_TOKENS + 1, 32), good_meta(backbone))
    with pytest.raises(ArtifactError, match=f"has {room - MIN_TEXT_TOKENS + 1} vectors but the model's context holds {room}"):
        SoftPrompt.load(long, backbone=backbone)
    with pytest.raises(ArtifactError, match="leaving under 8 for text"):  # where the backbone is known later
        from softprompt.api import PromptedModel

        PromptedModel(backbone, SoftPrompt.load(long), SENTIMENT)


# ----------------------------------------------------------------------------- containment
def test_a_prompt_file_linking_outside_the_root_is_refused(tmp_path, backbone):
    outside = save_prompt(tmp_path / "elsewhere", "p", backbone, SENTIMENT)
    root = tmp_path / "prompts"
    (root / "linked").mkdir(parents=True)
    (root / "linked" / PROMPT_FILE).symlink_to(outside / PROMPT_FILE)
    assert SoftPrompt.load(root / "linked").length == 4  # no root given: the caller chose the path
    with pytest.raises(ArtifactError, match=f"resolves to {outside / PROMPT_FILE}, outside {root}"):
        SoftPrompt.load(root / "linked", root=root)
    inside = save_prompt(root, "real", backbone, SENTIMENT)
    (root / "alias").mkdir()
    (root / "alias" / PROMPT_FILE).symlink_to(inside / PROMPT_FILE)
    assert SoftPrompt.load(root / "alias", root=root).length == 4  # a link that stays inside is fine


def test_a_link_to_a_system_file_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    root = tmp_path / "prompts"
    (root / "evil").mkdir(parents=True)
    (root / "evil" / PROMPT_FILE).symlink_to("/etc/passwd")
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    with pytest.raises(ArtifactError, match="outside"):
        SoftPrompt.load(root / "evil", root=root)
    assert "/etc/passwd" not in opened


def test_a_device_or_missing_target_is_refused(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / PROMPT_FILE).symlink_to("/dev/zero")
    with pytest.raises(ArtifactError, match="not a regular file"):
        SoftPrompt.load(tmp_path / "dev")
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / PROMPT_FILE).symlink_to(tmp_path / "nowhere")
    with pytest.raises(ArtifactError, match="cannot be opened"):
        SoftPrompt.load(tmp_path / "dangling")


def test_metadata_json_linking_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "prompts"
    (root / "demo").mkdir(parents=True)
    (tmp_path / "secret.json").write_text('{"method": "in-context"}')
    (root / "demo" / META_FILE).symlink_to(tmp_path / "secret.json")
    with pytest.raises(ArtifactError, match="outside"):
        read_saved_metadata(root / "demo", root=root)
    with pytest.raises(ArtifactError, match="outside"):
        load_artifact(root / "demo", root=root)


# ----------------------------------------------------------------------------- other methods' outputs
@pytest.mark.parametrize("meta, match", [
    ([], "must be a JSON object, got list"),
    ({"method": "in-context", "demonstrations": [5], "text": "", "token_ids": []}, "'demonstrations' item 0"),
    ({"method": "in-context", "demonstrations": [], "text": "", "token_ids": ["a"]}, "'token_ids' must list whole"),
    ({"method": "in-context", "shots": "four", "demonstrations": []}, "'shots' must be a whole number"),
])
def test_malformed_softprompt_json_is_refused(tmp_path, meta, match):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=match):
        load_artifact(tmp_path / "out")


def test_a_prefix_with_nan_is_refused(tmp_path, backbone):
    from softprompt.methods.prefix_tuning import PREFIX_FILE, PrefixTuning, PrefixTuningConfig

    method = PrefixTuning(PrefixTuningConfig(prompt_length=3, init="random-uniform", hidden=8), backbone, SENTIMENT)
    method.save(tmp_path / "p", good_meta(backbone))
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "p" / PREFIX_FILE))
    tensors["value.1"][0, 0, 0] = float("nan")
    save_file(tensors, str(tmp_path / "p" / PREFIX_FILE), metadata={"softprompt": json.dumps(good_meta(backbone))})
    with pytest.raises(ArtifactError, match="tensor 'value.1' holds 1 NaN"):
        method.load_state(tmp_path / "p")


def test_a_fully_tuned_model_with_inf_is_refused(tmp_path, backbone):
    from softprompt.methods.full_tuning import MODEL_FILE, FullTuning, FullTuningConfig

    bb = make_backbone("causal")
    method = FullTuning(FullTuningConfig(), bb, SENTIMENT)
    with torch.no_grad():
        bb.model.lm_head.weight[0, 0] = float("inf")
    method.save(tmp_path / "m", good_meta(bb, method="full-tuning"))
    with pytest.raises(ArtifactError, match=f"{MODEL_FILE}: tensor 'lm_head.weight' holds 1 NaN or infinite"):
        FullTuning(FullTuningConfig(), make_backbone("causal"), SENTIMENT).load_state(tmp_path / "m")


def test_restore_refuses_training_options_that_do_not_build_the_method(tmp_path, backbone):
    (tmp_path / "out").mkdir()
    meta = {"method": "in-context", "training": {"method_options": "shots=many"}, "demonstrations": [], "text": "",
            "token_ids": []}
    (tmp_path / "out" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="metadata field 'training' holds options that do not build a in-context"):
        restore(tmp_path / "out", backbone, SENTIMENT)


# ----------------------------------------------------------------------------- the server
def test_one_bad_prompt_is_refused_and_the_others_are_served(tmp_path, backbone):
    root = tmp_path / "prompts"
    save_prompt(root, "good", backbone, SENTIMENT)
    write_prompt(root / "listmeta", torch.zeros(3, 32), [1, 2])
    write_prompt(root / "badtask", torch.zeros(3, 32), good_meta(backbone, task=5))
    nan = torch.zeros(3, 32)
    nan[0, 0] = float("nan")
    write_prompt(root / "nan", nan, good_meta(backbone))
    write_prompt(root / "ints", torch.ones(3, 32, dtype=torch.int32), good_meta(backbone))
    write_prompt(root / "long", torch.zeros(backbone.max_length, 32), good_meta(backbone))
    engine = MultiPromptModel.from_dir(backbone, root)
    assert [t["name"] for t in engine.tasks()] == ["good"]
    assert sorted(engine.refused) == ["badtask", "ints", "listmeta", "long", "nan"]
    assert "NaN or infinite" in engine.refused["nan"] and "JSON object" in engine.refused["listmeta"]
    assert engine.classify(["great fun"], ["good"])[0].label in ("negative", "positive")
    with pytest.raises(PromptFileError, match="'task' must be a JSON object"):  # admin add: a 422, not a 500
        engine.add("again", "badtask")


def test_serve_starts_past_a_bad_first_prompt_and_admin_add_answers_422(tmp_path, tiny_model_dirs):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from softprompt.serving.app import ServeConfig, build_engine, create_app

    backbone = make_backbone("causal")  # the same weights as tiny_model_dirs["causal"]
    root = tmp_path / "prompts"
    write_prompt(root / "a-bad", torch.zeros(3, 32), [1, 2])  # sorted first: it used to name the model
    from softprompt.prompt import SoftPrompt as SP

    SP(torch.randn(4, 32), {**good_meta(backbone), "model_id": str(tiny_model_dirs["causal"])}).save(root / "good")
    # a model directory named by metadata is served only when the operator allows it (--allowed-models)
    engine = build_engine(ServeConfig(prompts=str(root), device="cpu", allowed_models=str(tiny_model_dirs["causal"])))
    assert [t["name"] for t in engine.tasks()] == ["good"] and list(engine.refused) == ["a-bad"]
    write_prompt(root / "nan", torch.full((3, 32), float("nan")), good_meta(backbone))
    with TestClient(create_app(engine, ServeConfig(), admin_token="t")) as client:
        answer = client.post("/v1/admin/prompts", json={"name": "x", "path": "nan"},
                             headers={"Authorization": "Bearer t"})
        assert answer.status_code == 422 and "NaN or infinite" in answer.json()["detail"]
        assert client.get("/v1/tasks").json()["refused"] == {"a-bad": engine.refused["a-bad"]}


# ----------------------------------------------------------------------------- older files
def test_a_prompt_saved_in_the_format_before_save_artifact_still_loads_restores_and_serves(tmp_path):
    """``prompt.safetensors`` + ``softprompt.json`` as SoftPrompt.save wrote them before issue 15
    (no ``method`` field), read by every consumer; and the writer still writes that layout."""
    from softprompt.methods import PromptTuning

    backbone = make_backbone("causal")  # its own: from_saved applies the saved max length to it

    weight = torch.randn(4, backbone.dim, generator=torch.Generator().manual_seed(3))
    meta = {"init": "vocab", **good_meta(backbone), "training": {"lr": 0.3, "max_length": 64, "prompt_length": 4},
            "format_version": 1, "length": 4, "dim": backbone.dim}
    old = tmp_path / "prompts" / "old"
    old.mkdir(parents=True)
    text = json.dumps(meta, indent=2, default=str)
    (old / META_FILE).write_text(text + "\n", encoding="utf-8")
    save_file({"prompt": weight.contiguous()}, str(old / PROMPT_FILE), metadata={"softprompt": text})

    assert torch.equal(SoftPrompt.load(old).weight, weight)
    method = restore(old, backbone)
    assert isinstance(method, PromptTuning) and torch.equal(method.inference_conditioning().input_vectors, weight)
    pm = PromptedModel.from_saved(old, backbone=backbone)
    assert pm.method.name == "prompt-tuning" and pm.settings.max_length == 64
    want = PromptedModel(backbone, SoftPrompt(weight, meta), SENTIMENT).classify(["great fun"])[0]
    assert pm.classify(["great fun"])[0].scores == want.scores
    engine = MultiPromptModel.from_dir(backbone, tmp_path / "prompts")
    assert engine.refused == {} and engine.classify(["great fun"], ["old"])[0].scores == pytest.approx(want.scores, abs=1e-6)

    SoftPrompt(weight, meta).save(tmp_path / "new")  # today's writer: the same files, the same tensor
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [PROMPT_FILE, META_FILE]
    tensors, header = load_artifact(tmp_path / "new").tensors, json.loads((tmp_path / "new" / META_FILE).read_text())
    assert list(tensors) == ["prompt"] and torch.equal(tensors["prompt"], weight)
    assert {k: header[k] for k in meta} == meta and header["method"] == "prompt-tuning"


def test_a_path_that_does_not_exist_is_named_itself_not_its_folder(tmp_path):
    with pytest.raises(ArtifactError, match=rf"^{tmp_path / 'nope'} does not exist: pass a run's best/"):
        load_artifact(tmp_path / "nope")
    with pytest.raises(ArtifactError, match=rf"^{tmp_path / 'gone' / 'best'} does not exist"):
        load_artifact(tmp_path / "gone" / "best")
