import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from softprompt.serving.app import ServeConfig, create_app, main  # noqa: E402
from softprompt.serving.batcher import Batcher, QueueFullError  # noqa: E402

from . import SENTIMENT, metric, save_prompt  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture
def client(engine):
    cfg = ServeConfig(max_inputs=8, max_input_chars=2000, max_body_bytes=20_000, max_wait_ms=2)
    with TestClient(create_app(engine, cfg, admin_token=TOKEN)) as c:
        yield c


def test_classify_matches_the_engine_and_reports_votes(client, engine):
    r = client.post("/v1/classify", json={"task": "a", "inputs": ["great fun", {"text": "i hate this film"}]})
    assert r.status_code == 200
    body = r.json()
    want = engine.classify(["great fun", "i hate this film"], ["a", "a"])
    assert [x["label"] for x in body["results"]] == [w.label for w in want]
    assert body["results"][0]["scores"] == pytest.approx(want[0].scores)
    assert body["truncated"] == 0 and body["results"][0]["votes"] is None
    r = client.post("/v1/classify", json={"task": "trio", "inputs": ["great fun"]})
    assert set(r.json()["results"][0]["votes"]) == {"a", "b", "c"}
    r = client.post("/v1/classify", json={"task": "a", "inputs": [" ".join(["dull"] * 300)]})
    assert r.json()["truncated"] == 1 and r.json()["results"][0]["truncated"] is True


def test_generate_tasks_health_and_openapi(client):
    r = client.post("/v1/generate", json={"task": "yesno", "inputs": ["is it fun"], "max_new_tokens": 2})
    assert r.status_code == 200 and isinstance(r.json()["results"][0]["text"], str)
    tasks = {t["name"]: t for t in client.get("/v1/tasks").json()["tasks"]}
    assert tasks["trio"]["members"] == ["a", "b", "c"] and tasks["a"]["labels"] == ["negative", "positive"]
    assert client.get("/health").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/generate", "/v1/tasks", "/health", "/v1/admin/prompts",
            "/v1/admin/prompts/{name}"} <= set(schema["paths"])
    props = schema["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert {"task", "inputs"} <= set(props)
    assert "413" in schema["paths"]["/v1/classify"]["post"]["responses"]


def test_errors_use_the_right_status_codes(client):
    assert client.post("/v1/classify", json={"task": "nope", "inputs": ["x"]}).status_code == 404
    r = client.post("/v1/classify", json={"task": "a"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inputs"]
    r = client.post("/v1/classify", json={"task": "a", "inputs": "not a list"})
    assert r.status_code == 422 and "inputs" in r.json()["detail"][0]["loc"]
    r = client.post("/v1/classify", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.post("/v1/classify", json={"task": "a", "inputs": ["x"] * 9}).status_code == 413
    assert client.post("/v1/classify", json={"task": "a", "inputs": ["x" * 2001]}).status_code == 413
    assert client.post("/v1/classify", json={"task": "a", "inputs": ["x" * 400] * 60}).status_code == 413  # body
    r = client.post("/v1/classify", json={"task": "a", "inputs": [""]})
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = client.post("/v1/generate", json={"task": "a", "inputs": ["x"], "max_new_tokens": 1000})
    assert r.status_code == 413


def test_streamed_body_over_the_limit_is_refused(client):
    def chunks():
        for _ in range(30):
            yield b" " * 1000

    r = client.post("/v1/classify", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_metrics_count_requests_rejections_batches_and_latency(client):
    client.post("/v1/classify", json={"task": "a", "inputs": ["great fun", "awful"]})
    client.post("/v1/classify", json={"task": "a", "inputs": ["x"] * 9})
    text = client.get("/metrics").text
    assert metric(text, "softprompt_requests_total", method="POST", route="/v1/classify", status="200") == 1
    assert metric(text, "softprompt_requests_total", method="POST", route="/v1/classify", status="413") == 1
    assert metric(text, "softprompt_rejections_total", reason="too_large") == 1
    assert metric(text, "softprompt_batch_size_bucket", le="2.0") == 1
    assert metric(text, "softprompt_batch_size_bucket", le="1.0") == 0
    assert metric(text, "softprompt_request_latency_seconds_count") == 1


def test_admin_needs_the_token(client, engine, backbone, tmp_path):
    save_prompt(tmp_path / "prompts", "newer", backbone, SENTIMENT, seed=9)
    body = {"name": "fresh", "path": "newer"}
    assert client.post("/v1/admin/prompts", json=body).status_code == 401
    assert client.post("/v1/admin/prompts", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 403
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/admin/prompts", json=body, headers=auth).status_code == 201
    assert client.post("/v1/classify", json={"task": "fresh", "inputs": ["fun"]}).status_code == 200
    for bad, code in [({"name": "x", "path": "../prompts/newer"}, 422), ({"name": "x", "path": "/etc"}, 422),
                      ({"name": "../x", "path": "newer"}, 422), ({"name": "fresh", "path": "newer"}, 409)]:
        assert client.post("/v1/admin/prompts", json=bad, headers=auth).status_code == code, bad
    assert client.delete("/v1/admin/prompts/a", headers=auth).status_code == 409  # the ensemble uses it
    assert client.delete("/v1/admin/prompts/fresh").status_code == 401
    assert client.delete("/v1/admin/prompts/fresh", headers=auth).status_code == 200
    assert client.post("/v1/classify", json={"task": "fresh", "inputs": ["fun"]}).status_code == 404
    assert client.delete("/v1/admin/prompts/fresh", headers=auth).status_code == 404


def test_admin_is_off_without_a_token(engine):
    with TestClient(create_app(engine)) as c:
        r = c.post("/v1/admin/prompts", json={"name": "x", "path": "a"}, headers={"Authorization": "Bearer x"})
        assert r.status_code == 404 and "off" in r.json()["detail"]


def test_concurrent_requests_are_batched_and_every_accepted_one_is_answered(engine):
    """200 requests at once on a queue of 16: each is answered (200) or refused (503 + Retry-After)."""
    cfg = ServeConfig(max_batch_size=8, max_wait_ms=20, max_queue=16)
    app = create_app(engine, cfg)
    texts = ["great fun", "awful", "i love this movie", "dull"]
    tasks = ["a", "b", "trio", "yesno"]
    want = {(t, k): engine.classify([t], [k])[0].label for t in texts for k in tasks}

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                jobs = [(texts[i % 4], tasks[(i // 4) % 4]) for i in range(200)]
                replies = await asyncio.gather(*[c.post("/v1/classify", json={"task": k, "inputs": [t]}) for t, k in jobs])
                metrics = (await c.get("/metrics")).text
        return jobs, replies, metrics

    jobs, replies, metrics = asyncio.run(go())
    codes = [r.status_code for r in replies]
    assert set(codes) <= {200, 503} and codes.count(200) >= 16 and codes.count(503) > 0
    for (t, k), r in zip(jobs, replies):
        if r.status_code == 200:
            assert r.json()["results"][0]["label"] == want[(t, k)]
        else:
            assert r.headers["Retry-After"] == "1"
    assert metric(metrics, "softprompt_rejections_total", reason="queue_full") == codes.count(503)
    batches = metric(metrics, "softprompt_batch_size_count")
    assert batches < codes.count(200)  # requests were batched together
    assert metric(metrics, "softprompt_batch_size_sum") == codes.count(200)  # and none was run twice or lost


def test_batcher_answers_every_accepted_job_and_isolates_failures():
    calls = []

    def run(key, items):
        calls.append(len(items))
        time.sleep(0.002)
        if "bad" in items:
            raise ValueError("bad item")
        return [x.upper() for x in items]

    async def go():
        b = Batcher(run, max_batch_size=4, max_wait_ms=5, max_queue=8)
        await b.start()
        accepted = []
        for i in range(40):
            items = ["bad"] if i == 3 else [f"x{i}", f"y{i}"] if i % 5 == 0 else [f"x{i}"]
            accepted.append((items, asyncio.ensure_future(b.submit("k", items))))
            if i % 10 == 9:
                await asyncio.sleep(0.05)
        results = await asyncio.gather(*[f for _, f in accepted], return_exceptions=True)
        await b.stop()
        return accepted, results

    accepted, results = asyncio.run(go())
    answered = full = 0
    for (items, _), res in zip(accepted, results):
        if isinstance(res, QueueFullError):
            full += 1
        elif items == ["bad"]:
            assert isinstance(res, ValueError)
        else:
            assert res == [x.upper() for x in items]
            answered += 1
    assert answered + full == 39 and answered >= 8
    assert max(calls) <= 4 and len(calls) < answered


def test_batcher_stop_waits_for_accepted_jobs():
    def run(key, items):
        time.sleep(0.05)
        return items

    async def go():
        b = Batcher(run, max_batch_size=2, max_wait_ms=1, max_queue=10)
        await b.start()
        futures = [asyncio.ensure_future(b.submit("k", [i])) for i in range(6)]
        await asyncio.sleep(0)
        await b.stop()
        with pytest.raises(QueueFullError):
            await b.submit("k", [99])
        return [f.result() for f in futures]

    assert asyncio.run(go()) == [[i] for i in range(6)]


def test_cli_main_serves_over_http(tmp_path, tiny_model_dirs, monkeypatch):
    """``python -m softprompt.serving.app`` loads the model and prompts and answers over loopback."""
    import socket

    import uvicorn

    from softprompt.modeling import load_model

    backbone = load_model(str(tiny_model_dirs["causal"]))
    save_prompt(tmp_path, "s", backbone, SENTIMENT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = []
    real_init = uvicorn.Server.__init__

    def keep(self, config):
        real_init(self, config)
        servers.append(self)

    monkeypatch.setattr(uvicorn.Server, "__init__", keep)
    monkeypatch.setenv("SOFTPROMPT_ADMIN_TOKEN", TOKEN)
    args = ["--prompts", str(tmp_path), "--model", str(tiny_model_dirs["causal"]), "--port", str(port)]
    thread = threading.Thread(target=main, args=(args,), daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"task": "s", "inputs": ["fun"]})
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["results"][0]["label"] in ("negative", "positive")
        r = httpx.delete(f"http://127.0.0.1:{port}/v1/admin/prompts/s", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
    finally:
        servers[0].should_exit = True
        thread.join(10)
    assert not thread.is_alive()


def test_serve_is_a_softprompt_command(capsys):
    """`softprompt serve`: options from ServeConfig, errors as exit 2."""
    import softprompt.cli as cli

    assert cli.main(["serve", "--prompts", "/no/such/dir", "--port", "9"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "--max-batch-size" in out and "--admin-token-env" in out
