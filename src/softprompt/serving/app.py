"""The HTTP server: ``softprompt serve --model M --prompts DIR`` (FastAPI + uvicorn).

Endpoints: ``POST /v1/classify``, ``POST /v1/generate``, ``GET /v1/tasks``, ``GET /health``
(liveness), ``GET /ready`` (readiness: 503 while the queue is full or the server stops),
``GET /metrics`` (Prometheus, by ``prometheus_client``), ``GET /`` (the playground), and, when
an admin token was given at start-up, ``POST /v1/admin/prompts`` and ``DELETE /v1/admin/prompts/{name}``.

Status codes: unknown task 404; malformed body 422 (naming the field; values are typed strictly,
nothing is converted); unreadable body 400; body, number of inputs, input length or request
tokens over the limits 413; request not sent within ``--read-timeout-s`` 408; queue full 503 with
``Retry-After``; not answered within ``--deadline-s`` 504; admin without a token 401, with a wrong
one 403, and 404 when admin is disabled. A client error is never a 500: an unexpected error is
logged, answered 500 and counted, and the connection stays open. Prompts are read from
safetensors only.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import sys
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..arguments import add_options, config_from_args
from ..config import COMMAND_HELP, ServeConfig
from ..errors import ConfigError, RequestTooLargeError, SoftPromptError
from .batcher import Batcher, DeadlineExceededError, QueueFullError
from .engine import MultiPromptModel, TaskConflictError, UnknownTaskError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------- schemas
Input = StrictStr | dict[StrictStr, StrictStr | list[StrictStr]]
"""A text, or an object of texts (a multiple-choice task's choices: a list of texts)."""

STRICT = ConfigDict(strict=True, extra="forbid")  # "5" is not 5, "yes" is not true, unknown keys are errors


class ClassifyRequest(BaseModel):
    model_config = STRICT

    task: str = Field(description="a prompt or ensemble name from GET /v1/tasks")
    inputs: list[Input] = Field(min_length=1, description="texts, or objects with the task's fields")


class GenerateRequest(ClassifyRequest):
    max_new_tokens: int = Field(16, ge=1, description="tokens to generate per input")


class LabelResult(BaseModel):
    label: str | None
    scores: dict[str, float] = Field(description="probability of each label (mean over members for an ensemble)")
    truncated: bool = Field(description="the input was longer than the context and lost tokens")
    votes: dict[str, str] | None = Field(None, description="each ensemble member's label")


class ClassifyResponse(BaseModel):
    task: str
    results: list[LabelResult]
    truncated: int = Field(description="how many inputs were truncated")


class GenerationResult(BaseModel):
    text: str
    label: str | None
    truncated: bool
    votes: dict[str, str | None] | None = None
    texts: dict[str, str] | None = None


class GenerateResponse(BaseModel):
    task: str
    results: list[GenerationResult]
    truncated: int


class AddPromptRequest(BaseModel):
    model_config = STRICT

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the task name the prompt will answer to")
    path: str = Field(description="the saved prompt's directory, relative to the prompts directory")
    replace: bool = False


class ErrorResponse(BaseModel):
    detail: Any


# ------------------------------------------------------------------------- metrics
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REJECTIONS = ("queue_full", "too_large", "deadline", "read_timeout", "client_gone")
DROPS = ("deadline", "client_gone")


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (one per app).

    Labels are bounded: ``method`` is one of :data:`METHODS` or ``other``, ``route`` a route's
    template (``/v1/admin/prompts/{name}``) or ``other``, ``status`` an HTTP status code.
    """

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("softprompt_requests", "HTTP requests by method, route and status (every answer, 5xx included).",
                                ["method", "route", "status"], registry=r)
        self.rejections = Counter("softprompt_rejections", "Requests refused or given up, by reason.", ["reason"], registry=r)
        self.dropped = Counter("softprompt_dropped_jobs", "Queued work dropped without being computed, by reason.",
                               ["reason"], registry=r)
        for reason in REJECTIONS:
            self.rejections.labels(reason)
        for reason in DROPS:
            self.dropped.labels(reason)
        self.latency = Histogram("softprompt_request_latency_seconds", "Latency of answered (200) classify and generate requests.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("softprompt_batch_size", "Inputs per engine call.", buckets=BATCH_BUCKETS, registry=r)
        self.queue = Gauge("softprompt_queue_depth", "Requests waiting for a batch.", registry=r)
        self.tasks = Gauge("softprompt_tasks", "Servable tasks (prompts and ensembles).", registry=r)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def observe(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method if method in METHODS else "other", route, str(status)).inc()

    def render(self) -> bytes:
        """The standard text exposition of every metric."""
        return generate_latest(self.registry)


# ------------------------------------------------------------------------- the app
class _Observe:
    """ASGI middleware, outermost: counts every response by method, route and status, times the
    answered classify and generate requests, and turns an unexpected error into a logged 500 that
    is counted too (the connection stays open)."""

    def __init__(self, app, metrics: Metrics, routes=lambda: ()):
        self.app, self.metrics, self.routes = app, metrics, routes

    def route(self, scope) -> str:
        """The template of the route ``scope`` was (or would have been) answered by, else ``other``:
        an answer given before routing (a 413 by Content-Length) still counts under its route."""
        from starlette.routing import Match

        routed = getattr(scope.get("route"), "path", None)
        if routed:
            return routed
        for route in self.routes():
            if route.matches(scope)[0] != Match.NONE:
                return route.path
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), None

        async def observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception:  # noqa: BLE001 - answered and logged, not raised into the server
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if status is None:
                status = 500
                await JSONResponse({"detail": "internal error; the server logged it"}, status_code=500)(scope, receive, send)
        finally:
            route = self.route(scope)
            self.metrics.observe(scope.get("method", ""), route, status or 500)
            if route in ("/v1/classify", "/v1/generate") and status == 200:
                self.metrics.latency.observe(time.perf_counter() - start)


class _BodyGuard:
    """ASGI middleware: 413 for a body over ``limit`` bytes (by Content-Length or as it streams in);
    408 when a part of the body takes more than ``read_timeout`` seconds to arrive."""

    def __init__(self, app, limit: int, read_timeout: float, metrics: Metrics):
        self.app, self.limit, self.read_timeout, self.metrics = app, limit, read_timeout, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            self.metrics.reject("too_large")
            response = JSONResponse({"detail": f"request body over {self.limit} bytes (this server's limit)"}, status_code=413,
                                    headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen, complete = 0, False

        async def guarded():
            nonlocal seen, complete
            if complete:  # after the body only a disconnect can come: wait for it as long as it takes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except asyncio.TimeoutError:
                self.metrics.reject("read_timeout")
                raise StarletteHTTPException(408, f"the request body did not arrive within {self.read_timeout:g} s "
                                                  f"(this server's limit)", headers={"Connection": "close"}) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                self.metrics.reject("too_large")
                raise StarletteHTTPException(413, f"request body over {self.limit} bytes (this server's limit)",
                                             headers={"Connection": "close"})
            return message

        await self.app(scope, guarded, send)


async def _disconnected(receive) -> None:
    """Return once the client has gone (call after the request body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def create_app(engine: MultiPromptModel, config: ServeConfig | None = None, admin_token: str | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` under ``config``'s limits; admin needs ``admin_token``."""
    config = config or ServeConfig()
    metrics = Metrics()

    def run(key, items):
        inputs = [x for x, _ in items]
        tasks = [t for _, t in items]
        if key == "classify":
            return engine.classify(inputs, tasks, batch_size=config.max_batch_size)
        return engine.generate(inputs, tasks, max_new_tokens=key[1], batch_size=config.max_batch_size)

    batcher = Batcher(run, config.max_batch_size, config.max_wait_ms, config.max_queue, on_batch=metrics.batch.observe,
                      max_batch_tokens=config.max_batch_tokens, on_drop=lambda reason: metrics.dropped.labels(reason).inc())
    metrics.queue.set_function(lambda: batcher.depth)
    metrics.tasks.set_function(lambda: len(engine.tasks()))
    last_full = [float("-inf")]  # when the queue last refused a request

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop(timeout=config.shutdown_timeout_s)

    app = FastAPI(title="softprompt", version=_version(), lifespan=lifespan,
                  description="Many soft prompts on one frozen language model, batched across tasks.")
    app.state.engine, app.state.batcher, app.state.metrics = engine, batcher, metrics
    app.add_middleware(_BodyGuard, limit=config.max_body_bytes, read_timeout=config.read_timeout_s, metrics=metrics)
    app.add_middleware(_Observe, metrics=metrics, routes=lambda: app.routes)  # added last: outermost

    def error(status: int, exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": engine.public(str(exc))}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req, exc):  # the field and the problem; the value is not echoed (it may be NaN, or huge)
        detail = [{"type": e.get("type"), "loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(UnknownTaskError)
    async def _unknown(_req, exc):
        return error(404, exc)

    @app.exception_handler(RequestTooLargeError)
    async def _too_large(_req, exc):
        metrics.reject("too_large")
        return error(413, exc)

    @app.exception_handler(QueueFullError)
    async def _full(_req, exc):
        metrics.reject("queue_full")
        last_full[0] = time.monotonic()
        return error(503, exc, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(DeadlineExceededError)
    async def _late(_req, exc):
        metrics.reject("deadline")
        return error(504, exc)

    @app.exception_handler(TaskConflictError)
    async def _conflict(_req, exc):
        return error(409, exc)

    @app.exception_handler(SoftPromptError)
    async def _bad(_req, exc):  # bad inputs (missing field, empty text), bad prompt files
        return error(422, exc)

    def check_limits(req: ClassifyRequest, new_tokens: int = 0) -> int:
        """The request's cost in tokens, or the error that refuses it (413, 404, 422)."""
        if len(req.inputs) > config.max_inputs:
            raise RequestTooLargeError(f"{len(req.inputs)} inputs; at most {config.max_inputs} per request (this server's limit)")
        for i, item in enumerate(req.inputs):
            size = len(item) if isinstance(item, str) else sum(len(v) if isinstance(v, str) else sum(map(len, v))
                                                               for v in item.values())
            if size > config.max_input_chars:
                raise RequestTooLargeError(f"input {i} has {size} characters; at most {config.max_input_chars} (this server's limit)")
        tokens = engine.check(req.inputs, req.task) + new_tokens * len(req.inputs)
        if tokens > config.max_request_tokens:
            raise RequestTooLargeError(
                f"the request runs {tokens} tokens (its inputs after truncation, once per ensemble member, plus the "
                f"tokens to generate); at most {config.max_request_tokens} per request (this server's limit): "
                f"send fewer or shorter inputs")
        return tokens

    async def answer(request: Request, key, req: ClassifyRequest, tokens: int):
        """The engine's results for ``req``, or None if the client went away first (its queued work is dropped)."""
        job = asyncio.ensure_future(batcher.submit(key, [(x, req.task) for x in req.inputs], cost=tokens,
                                                   timeout=config.deadline_s))
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if job.done():
            return job.result()
        job.cancel()
        metrics.reject("client_gone")
        return None

    errors = {404: {"model": ErrorResponse}, 408: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
              503: {"model": ErrorResponse}, 504: {"model": ErrorResponse}}
    gone_response = Response(status_code=499)  # nginx's "client closed request": nobody reads it

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors)
    async def classify(req: ClassifyRequest, request: Request) -> ClassifyResponse:
        """Label each input with the task's prompt (or the majority vote of an ensemble)."""
        tokens = await asyncio.to_thread(check_limits, req)
        results = await answer(request, "classify", req, tokens)
        if results is None:
            return gone_response
        return ClassifyResponse(task=req.task, truncated=sum(r.truncated for r in results),
                                results=[LabelResult(label=r.label, scores=r.scores, truncated=r.truncated, votes=r.votes)
                                         for r in results])

    @app.post("/v1/generate", response_model=GenerateResponse, responses=errors)
    async def generate(req: GenerateRequest, request: Request) -> GenerateResponse:
        """Greedy continuation of each input under the task's prompt, mapped back to a label."""
        if req.max_new_tokens > config.max_new_tokens:
            raise RequestTooLargeError(f"max_new_tokens {req.max_new_tokens}; at most {config.max_new_tokens} (this server's limit)")
        tokens = await asyncio.to_thread(check_limits, req, req.max_new_tokens)
        results = await answer(request, ("generate", req.max_new_tokens), req, tokens)
        if results is None:
            return gone_response
        return GenerateResponse(task=req.task, truncated=sum(r.truncated for r in results),
                                results=[GenerationResult(text=r.text, label=r.label, truncated=r.truncated,
                                                          votes=r.votes, texts=r.texts) for r in results])

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        """The servable tasks (prompts and ensembles) and prompts refused at loading, with reasons
        (files named relative to the prompts directory)."""
        return {"tasks": engine.tasks(), "refused": dict(engine.refused)}

    def readiness() -> str:
        if batcher.closing:
            return "stopping"
        if not batcher.accepting or batcher.backlog_s >= config.deadline_s or time.monotonic() - last_full[0] < 1.0:
            return "busy"  # the queue is full (or its work outlasts the deadline), or was a moment ago: new requests get 503
        return "ok"

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness (always 200 while the process serves): ``status`` is ``ok``, ``busy`` (the queue
        is full, its work would outlast the deadline, or it refused a request within the last
        second) or ``stopping``."""
        return {"status": readiness(), "model": engine.public(engine.backbone.model_id), "tasks": len(engine.tasks()),
                "queue": batcher.depth, "max_queue": config.max_queue}

    @app.get("/ready", responses={503: {"model": ErrorResponse}})
    async def ready() -> JSONResponse:
        """Readiness: 200 when a request would be queued now; 503 (with ``Retry-After``) while busy or stopping."""
        status = readiness()
        if status == "ok":
            return JSONResponse({"ready": True, "status": status, "queue": batcher.depth})
        return JSONResponse({"ready": False, "status": status, "queue": batcher.depth}, status_code=503,
                            headers={"Retry-After": "1" if status == "busy" else "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8"))

    bearer = HTTPBearer(auto_error=False)

    def admin(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not admin_token:
            raise HTTPException(404, "admin endpoints are off: start the server with an admin token to use them")
        if credentials is None:
            raise HTTPException(401, "admin endpoints need 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), admin_token.encode()):
            raise HTTPException(403, "wrong admin token")

    @app.post("/v1/admin/prompts", dependencies=[Depends(admin)], status_code=201)
    async def add_prompt(req: AddPromptRequest) -> dict[str, Any]:
        """Load a saved prompt from inside the prompts directory under ``name``."""
        await asyncio.to_thread(engine.add, req.name, req.path, req.replace)  # bad path, other model: 422
        return {"added": req.name, "tasks": [t["name"] for t in engine.tasks()]}

    @app.delete("/v1/admin/prompts/{name}", dependencies=[Depends(admin)])
    async def remove_prompt(name: str) -> dict[str, Any]:
        """Forget a prompt or an ensemble."""
        engine.remove(name)
        return {"removed": name}

    return app


def _version() -> str:
    from ..version import __version__

    return __version__


# ---------------------------------------------------------------------------- CLI
def model_from_prompts(root, allowed: str | None = None) -> str:
    """The model to serve when ``--model`` is absent: the one the first readable prompt of ``root``
    names, if it is an embedded model or listed in ``allowed`` (comma-separated); the embedded
    default if no prompt names one. Metadata never picks another directory or hub id
    (:class:`ConfigError`, naming the options that would)."""
    from pathlib import Path

    from ..modeling import _EMBEDDED, DEFAULT_MODEL
    from ..artifacts import SAVED_OUTPUT_FILES, load_artifact

    for sub in sorted(Path(root).iterdir()):
        if not any((sub / f).is_file() for f in SAVED_OUTPUT_FILES):  # any method's output
            continue
        try:
            model = load_artifact(sub, root=root).metadata.get("model_id")
        except Exception:  # noqa: BLE001 - a damaged prompt is refused later, with its reason
            continue
        if not isinstance(model, str) or not model:
            continue
        permitted = set(_EMBEDDED) | {m.strip() for m in (allowed or "").split(",") if m.strip()}
        if model not in permitted:
            raise ConfigError(f"prompt {sub.name!r} was trained for model {model!r}, which is not an embedded model; "
                              f"pass --model {model!r} (or list it in --allowed-models) to serve it")
        return model
    return DEFAULT_MODEL


def build_engine(config: ServeConfig) -> MultiPromptModel:
    """Load the model and every prompt of ``config.prompts``."""
    from pathlib import Path

    from ..modeling import default_device, load_model

    if not config.prompts:
        raise SoftPromptError("give --prompts DIR: a directory of saved prompts, one subdirectory each")
    root = Path(config.prompts)
    if not root.is_dir():
        raise SoftPromptError(f"prompts directory {root} does not exist")
    model = config.model or model_from_prompts(root, config.allowed_models)
    backbone = load_model(model, device=default_device(config.device), max_length=config.max_length)
    return MultiPromptModel.from_dir(backbone, root)


def listen_socket(host: str, port: int):
    """A TCP socket bound to ``host``:``port`` (not yet listening), so that an address that cannot
    be used is refused before the model loads. Raises :class:`ConfigError` naming the address."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({getattr(exc, 'strerror', None) or exc}); "
                          f"give an address such as 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed server's port is reusable at once
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                          f"(or --host), or stop the program that holds it") from None
    return sock


def serve(config: ServeConfig) -> int:
    """Bind ``--host``/``--port``, load the model and prompts, then serve until stopped. Returns the
    exit status: 0, or 3 when uvicorn fails to start; raises :class:`ConfigError` for an address
    that cannot be used (before the model loads)."""
    import uvicorn

    sock = listen_socket(config.host, config.port)
    try:
        engine = build_engine(config)
    except BaseException:
        sock.close()
        raise
    token = os.environ.get(config.admin_token_env) or None
    app = create_app(engine, config, admin_token=token)
    port = sock.getsockname()[1]  # --port 0: the port the system chose
    refused = f", {len(engine.refused)} refused: the warnings above say why (also GET /v1/tasks)" if engine.refused else ""
    print(f"softprompt serve: {len(engine.tasks())} task(s) on http://{config.host}:{port}/ "
          f"(admin {'on' if token else 'off'}{refused})", file=sys.stderr)  # each refusal was logged once, as loaded
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=port, log_level="warning",
                                           http=timed_protocol(config.read_timeout_s),
                                           timeout_graceful_shutdown=config.shutdown_timeout_s))
    server.run(sockets=[sock])
    return 0 if server.started else 3


def timed_protocol(read_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all
    arrived ``read_timeout`` seconds after it opened or after its last answer (a slow or silent
    client); the body's own timeout is :class:`_BodyGuard`'s."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._expect_headers()

        def on_response_complete(self):
            super().on_response_complete()
            self._expect_headers()

        def _expect_headers(self):
            cycle = self.cycle  # a new request's headers replace it

            def expire():
                if self.cycle is cycle and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(read_timeout, expire)

    return TimedH11Protocol


def main(argv: list[str] | None = None) -> int:
    """``python -m softprompt.serving.app --prompts DIR [--model M]``: ``softprompt serve``, its options
    generated from :class:`~softprompt.config.ServeConfig` as the ``softprompt`` command's are."""
    parser = argparse.ArgumentParser(prog="softprompt serve", description=ServeConfig.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    add_options(parser, ServeConfig, helps=COMMAND_HELP["serve"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        from ..modeling import progress_bars

        config = config_from_args(ServeConfig, args)
        with progress_bars(config.progress):  # as `softprompt serve --no-progress`: the model-loading bars
            return serve(config)
    except SoftPromptError as exc:
        print(f"softprompt serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
