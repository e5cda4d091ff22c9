"""The HTTP server: ``softprompt serve --model M --prompts DIR`` (FastAPI + uvicorn).

Endpoints: ``POST /v1/classify``, ``POST /v1/generate``, ``GET /v1/tasks``, ``GET /health``,
``GET /metrics`` (Prometheus text), ``GET /`` (the playground), and, when an admin token was
given at start-up, ``POST /v1/admin/prompts`` and ``DELETE /v1/admin/prompts/{name}``.

Status codes: unknown task 404; malformed body 422 (naming the field); body, number of inputs or
input length over the limits 413; queue full 503 with ``Retry-After``; admin without a token 401,
with a wrong one 403, and 404 when admin is disabled. Prompts are read from safetensors only.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import sys
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import opt
from ..errors import RequestTooLargeError, SoftPromptError
from .batcher import Batcher, QueueFullError
from .engine import MultiPromptModel, TaskConflictError, UnknownTaskError

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Options of ``softprompt serve``."""

    prompts: str = opt("", "directory of saved prompts, one subdirectory each (and an optional ensembles.json)")
    model: str | None = opt(None, "model to serve (default: the model the first prompt names, else the embedded default)")
    device: str | None = opt(None, "device for the model, e.g. cuda (default: CPU)")
    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(8000, "port to listen on")
    admin_token_env: str = opt("SOFTPROMPT_ADMIN_TOKEN", "environment variable holding the admin bearer token (admin is off if unset)")
    max_batch_size: int = opt(32, "most inputs in one engine call")
    max_wait_ms: float = opt(5.0, "how long the batcher waits for more requests after the first")
    max_queue: int = opt(256, "most requests waiting; beyond it the server answers 503")
    max_inputs: int = opt(64, "most inputs in one request (413 beyond)")
    max_input_chars: int = opt(8000, "longest input in characters (413 beyond)")
    max_body_bytes: int = opt(1_000_000, "largest request body in bytes (413 beyond)")
    max_new_tokens: int = opt(64, "largest max_new_tokens a generate request may ask for")
    max_length: int | None = opt(None, "longest input in tokens, prompt included (default: the model's)")


# ------------------------------------------------------------------------- schemas
Input = str | dict[str, Any]


class ClassifyRequest(BaseModel):
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
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="the task name the prompt will answer to")
    path: str = Field(description="the saved prompt's directory, relative to the prompts directory")
    replace: bool = False


class ErrorResponse(BaseModel):
    detail: Any


# ------------------------------------------------------------------------- metrics
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Counters and histograms in Prometheus' text format (no client library needed)."""

    def __init__(self):
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.rejections: dict[str, int] = defaultdict(int)
        self.latency = _Histogram(LATENCY_BUCKETS)
        self.batch = _Histogram(BATCH_BUCKETS)

    def render(self, gauges: dict[str, float]) -> str:
        lines = ["# HELP softprompt_requests_total HTTP requests by route and status.",
                 "# TYPE softprompt_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(f'softprompt_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
        lines += ["# HELP softprompt_rejections_total Requests refused before running, by reason.",
                  "# TYPE softprompt_rejections_total counter"]
        for reason in ("queue_full", "too_large"):
            lines.append(f'softprompt_rejections_total{{reason="{reason}"}} {self.rejections[reason]}')
        lines += self.latency.render("softprompt_request_latency_seconds", "Latency of classify and generate requests.")
        lines += self.batch.render("softprompt_batch_size", "Inputs per engine call.")
        for name, value in gauges.items():
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.n += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1

    def render(self, name: str, help_text: str) -> list[str]:
        out = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        out += [f'{name}_bucket{{le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.sum}", f"{name}_count {self.n}"]
        return out


# ------------------------------------------------------------------------- the app
class _BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, by Content-Length or as it streams in."""

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            self.metrics.rejections["too_large"] += 1
            response = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                self.metrics.rejections["too_large"] += 1
                raise StarletteHTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


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

    batcher = Batcher(run, config.max_batch_size, config.max_wait_ms, config.max_queue, on_batch=metrics.batch.observe)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="softprompt", version=_version(), lifespan=lifespan,
                  description="Many soft prompts on one frozen language model, batched across tasks.")
    app.state.engine, app.state.batcher, app.state.metrics = engine, batcher, metrics
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes, metrics=metrics)

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")
        metrics.requests[(request.method, route, response.status_code)] += 1
        if route in ("/v1/classify", "/v1/generate") and response.status_code == 200:
            metrics.latency.observe(time.perf_counter() - start)
        return response

    def error(status: int, exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    @app.exception_handler(UnknownTaskError)
    async def _unknown(_req, exc):
        return error(404, exc)

    @app.exception_handler(RequestTooLargeError)
    async def _too_large(_req, exc):
        metrics.rejections["too_large"] += 1
        return error(413, exc)

    @app.exception_handler(QueueFullError)
    async def _full(_req, exc):
        metrics.rejections["queue_full"] += 1
        return error(503, exc, {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(TaskConflictError)
    async def _conflict(_req, exc):
        return error(409, exc)

    @app.exception_handler(SoftPromptError)
    async def _bad(_req, exc):  # bad inputs (missing field, empty text), bad prompt files
        return error(422, exc)

    def check_limits(req: ClassifyRequest) -> None:
        if len(req.inputs) > config.max_inputs:
            raise RequestTooLargeError(f"{len(req.inputs)} inputs; at most {config.max_inputs} per request")
        for i, item in enumerate(req.inputs):
            size = len(item) if isinstance(item, str) else sum(len(str(v)) for v in item.values())
            if size > config.max_input_chars:
                raise RequestTooLargeError(f"input {i} has {size} characters; at most {config.max_input_chars}")
        engine.check(req.inputs, req.task)

    errors = {404: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors)
    async def classify(req: ClassifyRequest) -> ClassifyResponse:
        """Label each input with the task's prompt (or the majority vote of an ensemble)."""
        check_limits(req)
        results = await batcher.submit("classify", [(x, req.task) for x in req.inputs])
        return ClassifyResponse(task=req.task, truncated=sum(r.truncated for r in results),
                                results=[LabelResult(label=r.label, scores=r.scores, truncated=r.truncated, votes=r.votes)
                                         for r in results])

    @app.post("/v1/generate", response_model=GenerateResponse, responses=errors)
    async def generate(req: GenerateRequest) -> GenerateResponse:
        """Greedy continuation of each input under the task's prompt, mapped back to a label."""
        if req.max_new_tokens > config.max_new_tokens:
            raise RequestTooLargeError(f"max_new_tokens {req.max_new_tokens}; at most {config.max_new_tokens}")
        check_limits(req)
        results = await batcher.submit(("generate", req.max_new_tokens), [(x, req.task) for x in req.inputs])
        return GenerateResponse(task=req.task, truncated=sum(r.truncated for r in results),
                                results=[GenerationResult(text=r.text, label=r.label, truncated=r.truncated,
                                                          votes=r.votes, texts=r.texts) for r in results])

    @app.get("/v1/tasks")
    async def tasks() -> dict[str, Any]:
        """The servable tasks (prompts and ensembles) and prompts refused at loading, with reasons."""
        return {"tasks": engine.tasks(), "refused": dict(engine.refused)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.backbone.model_id, "tasks": len(engine.tasks()), "queue": batcher.depth}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        text = metrics.render({"softprompt_queue_depth": batcher.depth, "softprompt_tasks": len(engine.tasks())})
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

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
    from .. import __version__

    return __version__


# ---------------------------------------------------------------------------- CLI
def build_engine(config: ServeConfig) -> MultiPromptModel:
    """Load the model and every prompt of ``config.prompts``."""
    from pathlib import Path

    from ..modeling import DEFAULT_MODEL, load_model
    from ..prompt import PROMPT_FILE, SoftPrompt

    if not config.prompts:
        raise SoftPromptError("give --prompts DIR: a directory of saved prompts, one subdirectory each")
    root = Path(config.prompts)
    if not root.is_dir():
        raise SoftPromptError(f"prompts directory {root} does not exist")
    model = config.model
    if model is None:
        for d in (d for d in sorted(root.iterdir()) if (d / PROMPT_FILE).is_file()):
            try:  # the first prompt that loads names the model; a bad one is refused by from_dir below
                model = SoftPrompt.load(d, root=root).metadata.get("model_id")
                break
            except SoftPromptError:
                continue
    backbone = load_model(model or DEFAULT_MODEL, device=config.device)
    if config.max_length:
        backbone.max_length = min(backbone.max_length, config.max_length)
    return MultiPromptModel.from_dir(backbone, root)


def serve(config: ServeConfig) -> int:
    import uvicorn

    engine = build_engine(config)
    for name, reason in engine.refused.items():
        print(f"softprompt serve: refused {name}: {reason}", file=sys.stderr)
    token = os.environ.get(config.admin_token_env) or None
    app = create_app(engine, config, admin_token=token)
    print(f"softprompt serve: {len(engine.tasks())} task(s) on http://{config.host}:{config.port}/ "
          f"(admin {'on' if token else 'off'})", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    return 0


def _cli(args: argparse.Namespace) -> int:
    from ..cli import config_from_args

    return serve(config_from_args(ServeConfig, args))


def _add_options(parser: argparse.ArgumentParser) -> None:
    from ..cli import add_dataclass_options

    parser.add_argument("--config", help="YAML file of options (command-line options override it)")
    add_dataclass_options(parser, ServeConfig)
    parser.set_defaults(handler=_cli)


def add_cli(sub) -> None:
    """Add ``serve`` to the CLI's subcommands."""
    _add_options(sub.add_parser("serve", help="serve many saved prompts over HTTP", description=ServeConfig.__doc__))


def main(argv: list[str] | None = None) -> int:
    """``python -m softprompt.serving.app --prompts DIR [--model M]``."""
    parser = argparse.ArgumentParser(prog="softprompt serve", description=ServeConfig.__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    _add_options(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return _cli(args)
    except SoftPromptError as exc:
        print(f"softprompt serve: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
