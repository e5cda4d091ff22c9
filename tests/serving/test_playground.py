"""The playground page in a real (headless) browser: it loads the tasks, classifies, shows the answer."""

import html
import os
import re
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from conftest import make_backbone  # noqa: E402
from softprompt.serving import MultiPromptModel  # noqa: E402
from softprompt.serving.app import create_app  # noqa: E402

from . import prompts_dir  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def test_the_page_is_served(tmp_path):
    from fastapi.testclient import TestClient

    backbone = make_backbone("causal")
    app = create_app(MultiPromptModel.from_dir(backbone, prompts_dir(tmp_path, backbone)))
    with TestClient(app) as c:
        r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/v1/classify" in r.text and "/v1/tasks" in r.text
    assert "/" not in app.openapi()["paths"]


@pytest.fixture
def server(tmp_path):
    backbone = make_backbone("causal")
    engine = MultiPromptModel.from_dir(backbone, prompts_dir(tmp_path / "prompts", backbone))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield engine, f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _dump_dom(url: str, profile) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=5000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(profile)}).stdout


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_playground_shows_label_scores_and_votes_in_a_browser(server, tmp_path):
    engine, base = server
    text = "a witty and beautiful film"
    want = engine.classify([text], ["trio"])[0]
    dom = _dump_dom(f"{base}/?" + urllib.parse.urlencode({"task": "trio", "text": text}), tmp_path / "profile")
    assert 'data-state="done"' in dom, dom[-2000:]
    label = re.search(r'<span id="label">([^<]*)</span>', dom).group(1)
    assert label == want.label
    votes = re.findall(r"<li>([^<]*)</li>", dom)
    assert sorted(html.unescape(v) for v in votes) == sorted(f"{m}: {v}" for m, v in want.votes.items())
    for name, p in want.scores.items():
        assert f"<td>{name}</td><td>{p:.3f}</td>" in dom
    assert '<option value="yesno">yesno</option>' in dom


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium at /usr/bin/chromium (apt-get install -y chromium)")
def test_playground_shows_errors(server, tmp_path):
    _, base = server
    dom = _dump_dom(f"{base}/?task=nope&text=fun", tmp_path / "profile")
    assert "Unknown task: nope" in dom
