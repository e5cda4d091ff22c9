"""What a server client reads: advice it can act on (what to send), never a command-line option,
and always which input is at fault."""

import re

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from softprompt.serving import MultiPromptModel  # noqa: E402
from softprompt.serving.app import ServeConfig, create_app  # noqa: E402

from . import CHOICE, SENTIMENT, save_prompt  # noqa: E402

OPTION = re.compile(r"(?<![\w-])--[a-z]")


@pytest.fixture
def client(backbone, tmp_path):
    root = tmp_path / "prompts"
    save_prompt(root, "good", backbone, SENTIMENT)
    save_prompt(root, "choice", backbone, CHOICE)
    engine = MultiPromptModel.from_dir(backbone, root)
    cfg = ServeConfig(max_inputs=4, max_input_chars=50, max_body_bytes=2_000, max_wait_ms=2, max_new_tokens=4,
                      max_request_tokens=50)
    with TestClient(create_app(engine, cfg)) as c:
        yield c


@pytest.mark.parametrize("body, status, says", [
    ({"task": "good", "inputs": [{"txt": "a"}]}, 422,
     "input 0: task 'sentiment' reads fields ['text'], and the object lacks 'text'; send an object with them, "
     'e.g. {"text": "..."}'),
    ({"task": "good", "inputs": ["fine", {"text": "ok", "other": "x"}, {"body": "b"}]}, 422, "input 2: task 'sentiment'"),
    ({"task": "choice", "inputs": [{"premise": "rain", "question": "cause"}]}, 422,
     "input 0: task 'choice' reads fields ['premise', 'question', 'choices'], and the object lacks 'choices'"),
    ({"task": "choice", "inputs": ["just a text"]}, 422, "input 0: task 'choice' reads fields"),
    ({"task": "good", "inputs": ["a", ""]}, 422, "input 1: empty text; send a text with some words in it"),
    ({"task": "good", "inputs": ["a", "   "]}, 422, "input 1: empty text"),
    ({"task": "good", "inputs": [{"text": "a"}, {"text": " "}]}, 422, "input 1: empty text in field 'text'"),
    ({"task": "good", "inputs": ["a"] * 5}, 413, "5 inputs; at most 4 per request (this server's limit)"),
    ({"task": "good", "inputs": ["a" * 51]}, 413, "input 0 has 51 characters; at most 50 (this server's limit)"),
    ({"task": "good", "inputs": ["a " * 24, "a " * 24]}, 413, "at most 50 per request (this server's limit)"),
])
def test_a_refused_request_names_the_input_and_no_command_line_option(client, body, status, says):
    r = client.post("/v1/classify", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert says in detail
    assert not OPTION.search(detail), detail


def test_generate_and_body_limits_name_no_option(client):
    r = client.post("/v1/generate", json={"task": "good", "inputs": ["a"], "max_new_tokens": 9})
    assert r.status_code == 413 and "at most 4 (this server's limit)" in r.json()["detail"]
    r = client.post("/v1/classify", content=b'{"task": "good", "inputs": ["' + b"a" * 3000 + b'"]}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == "request body over 2000 bytes (this server's limit)"
