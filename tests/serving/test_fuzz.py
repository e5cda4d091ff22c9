"""Issue 14: a fixed corpus of malformed requests, sent over real sockets to a live server, gets
no 500, and the server answers normally afterwards.

The corpus is built here, deterministically: wrong types, deep nesting, NUL bytes, huge strings,
bad unicode, wrong methods, bad paths, bad content types, truncated and lying bodies, broken
request lines and headers, and admin requests with hostile paths and bad prompts.
"""

import json
import os
import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import torch  # noqa: E402

from conftest import make_backbone  # noqa: E402
from softprompt.prompt import PROMPT_FILE  # noqa: E402
from softprompt.serving import MultiPromptModel  # noqa: E402
from softprompt.serving.app import ServeConfig, create_app, timed_protocol  # noqa: E402

from . import CHOICE, SENTIMENT, metric, prompts_dir, save_prompt  # noqa: E402
from .test_hardening import good_meta, write_raw_prompt  # noqa: E402

TOKEN = "fuzz-token"
READ_TIMEOUT = 0.5


def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def request(method: str, path: str, body: bytes = b"", headers: dict | None = None, length: int | None = None,
            auth: bool = False) -> bytes:
    """Raw HTTP/1.1 bytes; ``length`` overrides Content-Length (a lying or truncated body)."""
    head = {"Host": "fuzz", "Content-Type": "application/json"}
    if auth:
        head["Authorization"] = f"Bearer {TOKEN}"
    head.update(headers or {})
    if body or length is not None:
        head.setdefault("Content-Length", str(len(body) if length is None else length))
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in head.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def corpus() -> list[tuple[str, bytes]]:
    """(name, raw request) pairs: every one must be answered with a status that is not 500."""
    c = []

    def add(name, *args, **kwargs):
        c.append((name, request(*args, **kwargs)))

    classify = "/v1/classify"
    # wrong types, at every level
    for i, body in enumerate([
        {"task": 5, "inputs": ["x"]}, {"task": None, "inputs": ["x"]}, {"task": ["a"], "inputs": ["x"]},
        {"task": "a", "inputs": {}}, {"task": "a", "inputs": "x"}, {"task": "a", "inputs": [None]},
        {"task": "a", "inputs": [True]}, {"task": "a", "inputs": [1.5]}, {"task": "a", "inputs": [[]]},
        {"task": "a", "inputs": [{"text": 5}]}, {"task": "a", "inputs": [{"text": None}]},
        {"task": "a", "inputs": [{"text": {"a": "b"}}]}, {"task": "a", "inputs": [{"text": ["a"]}]},
        {"task": "a", "inputs": [{}]}, {"task": "a", "inputs": [{"nope": "x"}]}, {"task": "a", "inputs": []},
        {"task": "a", "inputs": ["x"], "extra": 1}, {"task": "a", "inputs": [""]}, {"task": "a", "inputs": ["   "]},
        {"task": "choice", "inputs": ["just text"]}, {"task": "choice", "inputs": [{"premise": "x", "question": "y"}]},
        {"task": "choice", "inputs": [{"premise": "x", "question": "y", "choices": [1, 2]}]},
        {"task": "choice", "inputs": [{"premise": "x", "question": "y", "choices": []}]},
        {"task": "nope", "inputs": ["x"]}, {"task": "", "inputs": ["x"]},
    ]):
        add(f"types-{i}", "POST", classify, _json(body))
    for i, mnt in enumerate(["5", -1, 0, 10 ** 9, 2 ** 70, True, None, 1.5, [], {}]):
        add(f"max_new_tokens-{i}", "POST", "/v1/generate", _json({"task": "a", "inputs": ["x"], "max_new_tokens": mnt}))
    for i, body in enumerate([b"[]", b'"x"', b"5", b"null", b"true", b"{}", b"", b"{", b"}", b"\x00", b"{\"task\": \"a\",}"]):
        add(f"top-{i}", "POST", classify, body)
    # deep nesting: in the body, and inside a string
    add("deep-list", "POST", classify, b"[" * 50_000 + b"]" * 50_000)
    add("deep-object", "POST", classify, b'{"a":' * 20_000 + b"1" + b"}" * 20_000)
    add("deep-inputs", "POST", classify, b'{"task": "a", "inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}")
    add("deep-in-string", "POST", classify, _json({"task": "a", "inputs": ['{"text": ' + "[" * 6000 + "}"]}))
    add("json-in-string", "POST", classify, _json({"task": "a", "inputs": ['{"text": 5}']}))
    add("huge-int", "POST", "/v1/generate", b'{"task": "a", "inputs": ["x"], "max_new_tokens": ' + b"9" * 5000 + b"}")
    add("nan-literal", "POST", "/v1/generate", b'{"task": "a", "inputs": ["x"], "max_new_tokens": NaN}')
    # NUL bytes
    add("nul-task", "POST", classify, _json({"task": "a\x00", "inputs": ["x"]}))
    add("nul-input", "POST", classify, _json({"task": "a", "inputs": ["great\x00fun"]}))
    add("nul-field", "POST", classify, _json({"task": "a", "inputs": [{"te\x00xt": "x"}]}))
    add("nul-path", "GET", "/v1/tasks%00")
    add("nul-admin-path", "POST", "/v1/admin/prompts", _json({"name": "n", "path": "a\x00/../x"}), auth=True)
    add("nul-admin-name", "DELETE", "/v1/admin/prompts/a%00b", auth=True)
    # huge strings and counts
    add("huge-input", "POST", classify, _json({"task": "a", "inputs": ["x" * 9000]}))
    add("many-inputs", "POST", classify, _json({"task": "a", "inputs": ["x"] * 65}))
    add("many-tokens", "POST", classify, _json({"task": "a", "inputs": ["fun " * 1900] * 8}))
    add("huge-task", "POST", classify, _json({"task": "a" * 100_000, "inputs": ["x"]}))
    add("huge-key", "POST", classify, _json({"task": "a", "inputs": [{"k" * 50_000: "x"}]}))
    add("over-body-limit", "POST", classify, b" " * 200_001)
    add("over-body-by-header", "POST", classify, b"{}", length=10 ** 12)
    # bad unicode
    add("bad-utf8", "POST", classify, b'{"task": "a", "inputs": ["\xff\xfe"]}')
    add("overlong-utf8", "POST", classify, b'{"task": "a", "inputs": ["\xc0\xaf"]}')
    add("lone-surrogate", "POST", classify, b'{"task": "a", "inputs": ["\\ud800"]}')
    add("reversed-surrogates", "POST", classify, b'{"task": "a", "inputs": [{"text": "\\udfff\\ud800"}]}')
    add("surrogate-task", "POST", classify, b'{"task": "\\udc80", "inputs": ["x"]}')
    add("bom", "POST", classify, b"\xef\xbb\xbf" + _json({"task": "a", "inputs": ["x"]}))
    add("utf16", "POST", classify, _json({"task": "a", "inputs": ["x"]}).decode().encode("utf-16"))
    add("rtl-and-emoji", "POST", classify, _json({"task": "a", "inputs": ["\u202e\U0001f600\u0301" * 50]}))
    # wrong methods
    for method, path in [("GET", classify), ("PUT", classify), ("DELETE", classify), ("PATCH", "/v1/tasks"),
                         ("BREW", "/"), ("OPTIONS", classify), ("HEAD", classify), ("TRACE", "/health"),
                         ("POST", "/health"), ("POST", "/metrics"), ("GET", "/v1/admin/prompts"), ("CONNECT", "/")]:
        add(f"method-{method}-{path}", method, path)
    # bad paths
    for path in ["/v1/classify/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/v1/admin/prompts/..%2f..%2fetc",
                 "/" + "a" * 8000, "/v1/tasks?x=%zz", "/v1/tasks?" + "&".join(["a=1"] * 2000), "//v1//classify",
                 "/v1/classify%20", "/%ff%fe", "/v1/admin/prompts/" + "%2e" * 10, "/docs/../openapi.json"]:
        add(f"path-{path[:30]}", "GET", path)
    add("no-leading-slash", "GET", "v1/tasks")
    add("absolute-uri", "GET", "http://evil.example/v1/tasks")
    # bad content types
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "multipart/form-data", "application/json; charset=latin-1", "application/xml", None, "", "*/*",
                  "application/json" + "; x=y" * 500]:
        add(f"ctype-{ctype!s:.30}", "POST", classify, _json({"task": "a", "inputs": ["x"]}), headers={"Content-Type": ctype})
    add("form-body", "POST", classify, b"task=a&inputs=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    # truncated and lying bodies
    add("truncated", "POST", classify, b'{"task": "a", "inp', length=100)
    add("empty-with-length", "POST", classify, b"", length=50)
    add("bad-length", "POST", classify, b"{}", headers={"Content-Length": "abc"})
    add("negative-length", "POST", classify, b"{}", headers={"Content-Length": "-1"})
    add("two-lengths", "POST", classify, b"{}", headers={"Content-Length": "2, 3"})
    add("chunked-truncated", "POST", classify, b"10\r\n{\"task\": \"a\"",
        headers={"Transfer-Encoding": "chunked", "Content-Length": None})
    add("chunked-bad", "POST", classify, b"zz\r\n{}\r\n0\r\n\r\n", headers={"Transfer-Encoding": "chunked", "Content-Length": None})
    add("expect-continue", "POST", classify, _json({"task": "a", "inputs": ["x"]}), headers={"Expect": "100-continue"})
    # admin: auth and hostile or damaged prompts
    add("admin-no-auth", "POST", "/v1/admin/prompts", _json({"name": "n", "path": "a"}))
    add("admin-basic", "POST", "/v1/admin/prompts", _json({"name": "n", "path": "a"}), headers={"Authorization": "Basic eA=="})
    add("admin-empty-bearer", "POST", "/v1/admin/prompts", _json({"name": "n", "path": "a"}), headers={"Authorization": "Bearer "})
    for i, body in enumerate([
        {"name": "n", "path": "/etc"}, {"name": "n", "path": "../x"}, {"name": "n", "path": "linked"},
        {"name": "n", "path": "nan"}, {"name": "n", "path": "listmeta"}, {"name": "n", "path": "truncated"},
        {"name": "n", "path": "ensembles.json"}, {"name": "n", "path": ""}, {"name": "n", "path": "."},
        {"name": "../n", "path": "a"}, {"name": "", "path": "a"}, {"name": "n", "path": "a", "replace": "yes"},
        {"name": 5, "path": "a"}, {"name": "n", "path": ["a"]}, {"name": "n", "path": "a" * 5000},
        {"name": "a", "path": "b"}, {"name": "n", "path": "nope"},
    ]):
        add(f"admin-{i}", "POST", "/v1/admin/prompts", _json(body), auth=True)
    add("admin-delete-used", "DELETE", "/v1/admin/prompts/a", auth=True)
    return c


def broken_requests() -> list[tuple[str, bytes]]:
    """Requests that are not quite HTTP: the server may answer (400 mostly) or close, but never 500."""
    return [("garbage", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n"),
            ("no-version", b"GET /health\r\n\r\n"), ("bad-version", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n"),
            ("space-in-header", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
            ("nul-in-header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
            ("high-bytes-path", b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("huge-header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 200_000 + b"\r\n\r\n"),
            ("no-host", b"GET /health HTTP/1.1\r\n\r\n"), ("bare-lf", b"GET /health HTTP/1.1\nHost: x\n\n")]


def send(port: int, raw: bytes, timeout: float = 10) -> int | None:
    """Send ``raw`` on a fresh connection; the status code answered, or None if the server closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            return None
    if not data.startswith(b"HTTP/1.1 "):
        return None
    return int(data.split()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live uvicorn server on loopback, with good and bad prompts and admin on."""
    tmp = tmp_path_factory.mktemp("fuzz")
    backbone = make_backbone("causal")
    root = prompts_dir(tmp / "prompts", backbone)
    save_prompt(root, "choice", backbone, CHOICE, seed=3)
    write_raw_prompt(root / "nan", torch.full((4, backbone.dim), float("nan")), good_meta(backbone))
    write_raw_prompt(root / "listmeta", torch.randn(4, backbone.dim), [1, 2])
    save_prompt(root, "truncated", backbone, SENTIMENT)
    (root / "truncated" / PROMPT_FILE).write_bytes((root / "truncated" / PROMPT_FILE).read_bytes()[:40])
    outside = save_prompt(tmp / "outside", "o", backbone, SENTIMENT)
    (root / "linked").mkdir()
    os.symlink(outside / PROMPT_FILE, root / "linked" / PROMPT_FILE)
    engine = MultiPromptModel.from_dir(backbone, root)
    config = ServeConfig(max_body_bytes=200_000, max_request_tokens=1000, read_timeout_s=READ_TIMEOUT, max_wait_ms=1)
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(engine, config, admin_token=TOKEN), host="127.0.0.1", port=port,
                                        log_level="critical", http=timed_protocol(READ_TIMEOUT)))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(15)


def test_the_malformed_corpus_gets_no_500_and_the_server_lives(server):
    port = server
    statuses = {name: send(port, raw) for name, raw in corpus()}
    assert len(statuses) == len(corpus()) > 130  # names are unique
    assert not [n for n, s in statuses.items() if s is None], "every request of the corpus gets an HTTP answer"
    assert not [n for n, s in statuses.items() if s >= 500], statuses
    # spot checks: the right 4xx for each kind
    assert statuses["types-0"] == statuses["types-9"] == 422 and statuses["types-23"] == 404
    assert statuses["deep-list"] == statuses["deep-object"] == 400 and statuses["deep-in-string"] == 200
    assert statuses["nul-admin-path"] == 422 and statuses["huge-input"] == statuses["many-tokens"] == 413
    assert statuses["over-body-by-header"] == 413 and statuses["truncated"] == 408
    assert statuses["lone-surrogate"] == 422 and statuses["method-BREW-/"] == 405
    assert statuses["admin-2"] == statuses["admin-3"] == statuses["admin-4"] == statuses["admin-5"] == 422
    assert statuses["admin-no-auth"] == 401 and statuses["admin-delete-used"] == 409
    for name, raw in broken_requests():
        status = send(port, raw)
        assert status is None or status < 500, (name, status)
    # alive, and still right
    assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] in ("ok", "busy")
    r = httpx.post(f"http://127.0.0.1:{port}/v1/classify", json={"task": "trio", "inputs": ["great fun"]})
    assert r.status_code == 200 and set(r.json()["results"][0]["votes"]) == {"a", "b", "c"}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert metric(text, "softprompt_requests_total", status="500") == 0
    assert metric(text, "softprompt_requests_total", method="POST", route="/v1/classify", status="422") >= 20


def test_a_500_keeps_the_connection_open(server, monkeypatch):
    """An unexpected error is a 500 on a connection that then serves the next request."""
    from softprompt.serving.engine import MultiPromptModel as Engine

    monkeypatch.setattr(Engine, "tasks", lambda self: (_ for _ in ()).throw(RuntimeError("a bug")))
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        replies = []
        for path in ("/v1/tasks", "/openapi.json"):
            s.sendall(request("GET", path))
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
            body = b""
            while len(body) < length:
                body += s.recv(length - len(body))
            replies.append(int(head.split()[1]))
    assert replies == [500, 200]
