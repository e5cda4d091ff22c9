"""Labels and wording a server's operator and clients read: units, the reason a model is refused,
the route a rejection is counted under, why a task is not served."""

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import torch  # noqa: E402

from softprompt.cli import main  # noqa: E402
from softprompt.errors import ConfigError, ModelMismatchError  # noqa: E402
from softprompt.serving import MultiPromptModel  # noqa: E402
from softprompt.serving.app import ServeConfig, create_app  # noqa: E402

from . import SENTIMENT, metric, save_prompt, soft_prompt  # noqa: E402


def test_max_wait_ms_is_named_in_milliseconds_and_the_timeouts_in_seconds(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--max-wait-ms must be a number of milliseconds of at least 0, got -1$"):
        ServeConfig(max_wait_ms=-1)
    with pytest.raises(ConfigError, match=r"^--deadline-s must be a number of seconds above 0, got 0$"):
        ServeConfig(deadline_s=0)
    (tmp_path / "p").mkdir()
    assert main(["serve", "--prompts", str(tmp_path / "p"), "--max-wait-ms", "-1"]) == 2
    assert "--max-wait-ms must be a number of milliseconds" in capsys.readouterr().err


def test_a_fingerprint_mismatch_under_the_same_model_name_says_the_weights_differ(backbone):
    prompt = soft_prompt(backbone, SENTIMENT, fingerprint="0" * 16)
    with pytest.raises(ModelMismatchError) as err:
        prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)
    message = str(err.value)
    assert message.startswith(f"this prompt was trained for model {backbone.model_id!r} with other weights: the model "
                              f"loaded under that name has embedding fingerprint {backbone.fingerprint}, the prompt's "
                              f"has {'0' * 16}")
    assert "--model" not in message  # the same --model would change nothing


def test_a_fingerprint_mismatch_with_another_model_still_advises_its_model(backbone):
    prompt = soft_prompt(backbone, SENTIMENT, fingerprint="0" * 16)
    prompt.metadata["model_id"] = "other-model"
    with pytest.raises(ModelMismatchError, match="use --model 'other-model'"):
        prompt.check_model(backbone.model_id, backbone.fingerprint, backbone.dim)


@pytest.fixture
def served(backbone, tmp_path):
    root = tmp_path / "prompts"
    save_prompt(root, "good", backbone, SENTIMENT)
    bad = soft_prompt(backbone, SENTIMENT)
    with torch.no_grad():
        bad.weight.fill_(float("nan"))
    bad.save(root / "nan")
    engine = MultiPromptModel.from_dir(backbone, root)
    with TestClient(create_app(engine, ServeConfig(max_body_bytes=1_000, max_wait_ms=2))) as c:
        yield c, engine


def test_a_413_by_content_length_is_counted_under_its_route(served):
    client, _ = served
    r = client.post("/v1/classify", content=b"x" * 2_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    r = client.post("/nowhere", content=b"x" * 2_000)
    assert r.status_code == 413
    text = client.get("/metrics").text
    assert metric(text, "softprompt_requests_total", method="POST", route="/v1/classify", status="413") == 1
    assert metric(text, "softprompt_requests_total", method="POST", route="other", status="413") == 1  # no route


def test_a_task_refused_at_start_up_is_404_saying_it_was_refused_and_why(served):
    client, engine = served
    assert "nan" in engine.refused
    r = client.post("/v1/classify", json={"task": "nan", "inputs": ["fine"]})
    assert r.status_code == 404
    assert r.json()["detail"].startswith("task 'nan' is not served: it was refused when the server loaded it "
                                         f"({engine.refused['nan']})")
    assert "the training diverged or the file is damaged" in r.json()["detail"]
    r = client.post("/v1/classify", json={"task": "nosuch", "inputs": ["fine"]})
    assert r.status_code == 404 and r.json()["detail"].startswith("no task named 'nosuch'")
