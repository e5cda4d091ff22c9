"""Issue 14, serving: client errors are 4xx naming the field, bad prompts are refused (not served,
not fatal), anonymous clients see names not paths, metadata cannot pick an arbitrary model, and
/metrics counts every answer."""

import json
import os

import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from conftest import make_backbone  # noqa: E402
from softprompt.errors import ConfigError, PromptFileError  # noqa: E402
from softprompt.prompt import PROMPT_FILE  # noqa: E402
from softprompt.serving import MultiPromptModel  # noqa: E402
from softprompt.serving.app import ServeConfig, create_app, model_from_prompts  # noqa: E402

from . import CHOICE, SENTIMENT, metric, prompts_dir, save_prompt, soft_prompt  # noqa: E402

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def root(backbone, tmp_path):
    root = prompts_dir(tmp_path / "prompts", backbone)
    save_prompt(root, "choice", backbone, CHOICE, seed=3)
    return root


@pytest.fixture
def engine(backbone, root):
    return MultiPromptModel.from_dir(backbone, root)


@pytest.fixture
def client(engine):
    with TestClient(create_app(engine, ServeConfig(max_wait_ms=1), admin_token=TOKEN), raise_server_exceptions=False) as c:
        yield c


def write_raw_prompt(folder, weight: torch.Tensor, meta) -> None:
    """A prompt file written without SoftPrompt.save (which may refuse bad values)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt": weight}, str(folder / PROMPT_FILE), metadata={"softprompt": json.dumps(meta)})


def good_meta(backbone, task=SENTIMENT, **extra):
    meta = dict(soft_prompt(backbone, task).metadata, length=4, dim=backbone.dim)
    return {**meta, **extra}


# ------------------------------------------------------------------ 2. client errors are 4xx
def test_a_text_that_looks_like_json_is_a_text_even_when_deeply_nested(client, engine):
    deep = '{"text": ' + "[" * 5000 + "}"  # a 500 (RecursionError) when strings were parsed as JSON
    r = client.post("/v1/classify", json={"task": "a", "inputs": [deep]})
    assert r.status_code == 200
    assert r.json()["results"][0]["label"] == engine.classify([deep], ["a"])[0].label
    looks = '{"text": "great fun"}'  # classified as these 21 characters, not as the object
    r = client.post("/v1/classify", json={"task": "a", "inputs": [looks]})
    assert r.json()["results"][0]["scores"] == pytest.approx(engine.classify([looks], ["a"])[0].scores)
    assert r.json()["results"][0]["scores"] != pytest.approx(engine.classify(["great fun"], ["a"])[0].scores)


@pytest.mark.parametrize("inputs, where", [
    ([5], "inputs"), ([True], "inputs"), ([None], "inputs"), ([["x"]], "inputs"),
    ([{"text": 5}], "text"), ([{"text": True}], "text"), ([{"text": {"a": "b"}}], "text"),
    ([{"text": ["great", "fun"]}], "text"),
])
def test_a_field_value_of_the_wrong_type_is_a_422_naming_it(client, inputs, where):
    r = client.post("/v1/classify", json={"task": "a", "inputs": inputs})
    assert r.status_code == 422
    detail = r.json()["detail"]
    text = json.dumps(detail)
    assert where in text and "input" in text


def test_a_choices_field_must_be_a_list_of_texts(client):
    good = {"premise": "the movie was long", "question": "effect", "choices": ["i was bored", "i had fun"]}
    assert client.post("/v1/classify", json={"task": "choice", "inputs": [good]}).status_code == 200
    r = client.post("/v1/classify", json={"task": "choice", "inputs": [dict(good, choices="i was bored")]})
    assert r.status_code == 422 and "'choices' must be a list of texts" in r.json()["detail"]


@pytest.mark.parametrize("path, body, field", [
    ("/v1/generate", {"task": "a", "inputs": ["x"], "max_new_tokens": "5"}, "max_new_tokens"),
    ("/v1/generate", {"task": "a", "inputs": ["x"], "max_new_tokens": 2.0}, "max_new_tokens"),
    ("/v1/generate", {"task": "a", "inputs": ["x"], "max_new_tokens": True}, "max_new_tokens"),
    ("/v1/classify", {"task": 5, "inputs": ["x"]}, "task"),
    ("/v1/classify", {"task": "a", "inputs": ["x"], "input": ["typo"]}, "input"),
    ("/v1/admin/prompts", {"name": "z", "path": "a", "replace": "yes"}, "replace"),
    ("/v1/admin/prompts", {"name": "z", "path": "a", "replace": 1}, "replace"),
])
def test_strings_are_not_coerced_into_numbers_or_booleans(client, path, body, field):
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", field]


def test_a_lone_surrogate_is_a_422(client):
    r = client.post("/v1/classify", content=b'{"task": "a", "inputs": ["fun \\ud800"]}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid Unicode" in r.json()["detail"]


def test_a_nul_byte_in_an_admin_path_is_a_422(client):
    r = client.post("/v1/admin/prompts", json={"name": "z", "path": "a\x00b"}, headers=AUTH)
    assert r.status_code == 422 and "NUL" in r.json()["detail"]
    assert client.delete("/v1/admin/prompts/a%00b", headers=AUTH).status_code == 404


def test_a_deeply_nested_body_is_a_400(client):
    body = b'{"task": "a", "inputs": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    r = client.post("/v1/classify", content=body[:19_000], headers={"content-type": "application/json"})
    assert r.status_code in (400, 422)
    r = client.post("/v1/classify", content=b"[" * 10_000 + b"]" * 10_000, headers={"content-type": "application/json"})
    assert r.status_code == 400


# ------------------------------------------------------------------ 1. bad prompts are refused
@pytest.fixture
def bad_prompts(root, backbone, tmp_path):
    """Prompts that must not be served: NaN, Inf, metadata of the wrong shape,
    a truncated file, and a prompt.safetensors linking to a file outside the prompts directory."""
    weight = torch.randn(4, backbone.dim)
    write_raw_prompt(root / "nan", weight.clone().index_fill_(0, torch.tensor([1]), float("nan")), good_meta(backbone))
    write_raw_prompt(root / "inf", weight.clone().index_fill_(0, torch.tensor([2]), float("inf")), good_meta(backbone))
    write_raw_prompt(root / "listmeta", weight, [1, 2, 3])
    write_raw_prompt(root / "taskfive", weight, good_meta(backbone, task=SENTIMENT) | {"task": 5})
    save_prompt(root, "truncated", backbone, SENTIMENT)
    data = (root / "truncated" / PROMPT_FILE).read_bytes()
    (root / "truncated" / PROMPT_FILE).write_bytes(data[: len(data) // 2])
    outside = save_prompt(tmp_path / "elsewhere", "real", backbone, SENTIMENT)
    (root / "linked").mkdir()
    os.symlink(outside / PROMPT_FILE, root / "linked" / PROMPT_FILE)
    return ["nan", "inf", "listmeta", "taskfive", "truncated", "linked"]


def test_bad_prompts_are_refused_at_startup_and_the_others_served(backbone, root, bad_prompts, tmp_path):
    engine = MultiPromptModel.from_dir(backbone, root)
    assert set(engine.refused) == set(bad_prompts)
    assert all("NaN or infinite" in engine.refused[k] for k in ("nan", "inf"))
    assert "outside the prompts directory" in engine.refused["linked"]
    with TestClient(create_app(engine)) as c:
        listed = c.get("/v1/tasks").json()
        assert {t["name"] for t in listed["tasks"]} == {"a", "b", "c", "yesno", "choice", "trio"}
        assert set(listed["refused"]) == set(bad_prompts)
        for name in bad_prompts:
            assert c.post("/v1/classify", json={"task": name, "inputs": ["fun"]}).status_code == 404
        assert c.post("/v1/classify", json={"task": "a", "inputs": ["fun"]}).status_code == 200


def test_an_admin_add_of_a_bad_prompt_is_a_422_with_the_reason(client, bad_prompts):
    for name in bad_prompts:
        r = client.post("/v1/admin/prompts", json={"name": f"new-{name}", "path": name}, headers=AUTH)
        assert r.status_code == 422, (name, r.text)
        assert name in r.json()["detail"] or "outside" in r.json()["detail"], r.text
    tasks = {t["name"] for t in client.get("/v1/tasks").json()["tasks"]}
    assert not any(t.startswith("new-") for t in tasks)


def test_a_prompt_with_nan_given_as_an_object_is_refused(backbone):
    engine = MultiPromptModel(backbone)
    prompt = soft_prompt(backbone, SENTIMENT)
    prompt.weight.data[0, 0] = float("nan")
    with pytest.raises(PromptFileError, match="NaN"):
        engine.add("nan", prompt)
    assert "nan" not in engine


# ------------------------------------------------------------------ 3. names, not paths
def test_anonymous_clients_see_names_not_server_paths(backbone, root, bad_prompts, tmp_path):
    engine = MultiPromptModel.from_dir(backbone, root)
    engine.backbone = make_backbone("causal")
    engine.backbone.model_id = str(tmp_path / "models" / "my-model")
    with TestClient(create_app(engine)) as c:
        refused = c.get("/v1/tasks").text
        assert str(tmp_path) not in refused and "/tmp" not in refused
        assert "truncated/prompt.safetensors" in c.get("/v1/tasks").json()["refused"]["truncated"]
        health = c.get("/health").json()
        assert health["model"] == "my-model"


def test_prompt_metadata_picks_only_an_embedded_or_allowed_model(backbone, tmp_path):
    root = tmp_path / "p"
    save_prompt(root, "a", backbone, SENTIMENT)  # names "tiny-causal"
    with pytest.raises(ConfigError, match="--model 'tiny-causal'"):
        model_from_prompts(root)
    assert model_from_prompts(root, allowed="other, tiny-causal") == "tiny-causal"
    prompt = soft_prompt(backbone, SENTIMENT)
    prompt.metadata["model_id"] = "smollm2-135m"
    prompt.save(root / "a")
    assert model_from_prompts(root) == "smollm2-135m"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert model_from_prompts(empty) == "smollm2-135m"


def test_serve_without_model_refuses_a_directory_named_in_metadata_before_loading(backbone, tmp_path, tiny_model_dirs,
                                                                                   monkeypatch, capsys):
    import softprompt.cli as cli
    import softprompt.modeling

    prompt = soft_prompt(backbone, SENTIMENT)
    prompt.metadata["model_id"] = str(tiny_model_dirs["causal"])
    prompt.save(tmp_path / "p" / "a")
    monkeypatch.setattr(softprompt.modeling, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(["serve", "--prompts", str(tmp_path / "p")]) == 2
    assert "--allowed-models" in capsys.readouterr().err


# ------------------------------------------------------------------ 4. metrics count everything
def test_a_500_is_answered_counted_and_logged(client, engine, monkeypatch, caplog):
    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "tasks", broken)
    r = client.get("/v1/tasks")
    assert r.status_code == 500 and r.json() == {"detail": "internal error; the server logged it"}
    assert "a bug" in caplog.text
    monkeypatch.undo()
    text = client.get("/metrics").text
    assert metric(text, "softprompt_requests_total", method="GET", route="/v1/tasks", status="500") == 1


def test_metric_labels_are_bounded(client):
    for method in ("BREW", "PROPFIND", "X" * 50):
        assert client.request(method, "/v1/classify").status_code == 405
    for i in range(5):
        assert client.get(f"/no/such/path/{i}").status_code == 404
    client.delete("/v1/admin/prompts/a-name", headers=AUTH)
    text = client.get("/metrics").text
    assert metric(text, "softprompt_requests_total", method="other", route="/v1/classify", status="405") == 3
    assert metric(text, "softprompt_requests_total", method="GET", route="other", status="404") == 5
    assert metric(text, "softprompt_requests_total", method="DELETE", route="/v1/admin/prompts/{name}", status="404") == 1
    assert "BREW" not in text and "/no/such" not in text and "a-name" not in text
    assert text.startswith("# HELP") and "# TYPE softprompt_requests_total counter" in text
