"""`mtbert serve`: a trained model behind an HTTP JSON API (FastAPI on uvicorn), concurrent requests batched.

    POST /sentiment   {"texts": ["a gorgeous film", ...]}           -> {"results": [{"label", "name", "probabilities"}]}
    POST /paraphrase  {"pairs": [["how do I ...", "what is ..."]]}  -> {"results": [{"probability", "label"}]}
    POST /similarity  {"pairs": [["a man plays", "a man is playing"]]} -> {"results": [{"similarity"}]}
    POST /tasks/NAME  a task declared in a --tasks file: {"texts"} or {"pairs"} -> {"results": [...]}
    GET  /            a page to try the model by hand (its own HTML, CSS and script)
    GET  /health      the model's tasks and device, its dev metrics, the batches served
    GET  /docs        the OpenAPI documentation, Swagger UI served from its bundled assets (the schema at
                      /openapi.json): it works offline

Only the model's tasks have routes. Input beyond a limit is refused with a message naming it: a body larger than
`max_body_bytes` or more than `max_texts` texts 413, a text longer than `max_chars` characters (or empty) 422;
malformed JSON 422. Load is shed: a request that would make more than `max_queue` texts wait answers 503 at once
(with Retry-After), one not served within `request_timeout` seconds 504; a request given up, or whose client
disconnected, is dropped before inference. An error while predicting answers 500 and the server serves on.
"""

# no `from __future__ import annotations`: FastAPI reads the request models of the routes from their annotations
import asyncio
import dataclasses
import functools
import json
import math
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtbert.config import opt
from mtbert.errors import MtbertError
from mtbert.serve.batching import Batcher, Overloaded

if TYPE_CHECKING:  # the model's modules load only when a server starts
    from mtbert.serve.predictor import Predictor


@dataclass(frozen=True)
class Limits:
    """The server's limits and batching: the flags of `mtbert serve`."""

    max_texts: int = opt(64, "texts (or pairs) per request; more answer 413")
    max_chars: int = opt(2000, "characters per text; a longer one answers 422")
    max_body_bytes: int = opt(1 << 20, "bytes per request body; a larger one answers 413")
    max_batch: int = opt(64, "texts (or pairs) per batch of concurrent requests (1: one request at a time)")
    batch_window_ms: float = opt(5.0, "how long a batch waits for more requests to join it")
    max_queue: int = opt(
        512,
        "texts (or pairs) waiting for inference, all routes together; a request that would pass it answers 503 at "
        "once, with Retry-After",
    )
    request_timeout: float = opt(
        30.0, "seconds a request may wait and run; past it, it answers 504 and is dropped if not yet computed"
    )

    def __post_init__(self) -> None:
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)}: at least 1")
        if self.batch_window_ms < 0:
            raise ValueError(f"--batch_window_ms {self.batch_window_ms}: not negative")
        if not self.request_timeout > 0:
            raise ValueError(f"--request_timeout {self.request_timeout}: above 0")


def create_app(predictor: "Predictor", limits: Limits = Limits(), model_name: str = "model"):  # -> ASGI app
    """The ASGI application serving `predictor` (FastAPI, wrapped in the body-size limit)."""
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.openapi.docs import get_swagger_ui_html
        from fastapi.responses import HTMLResponse, JSONResponse
        from pydantic import BaseModel, Field
    except ImportError:
        raise MtbertError("mtbert serve needs FastAPI and uvicorn: pip install 'mtbert[serve]'") from None

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtbert-inference")  # one batch at a time
    runs = {
        "sst": lambda texts: predictor.sentiment(texts),
        "para": lambda pairs: predictor.paraphrase(pairs),
        "sts": lambda pairs: predictor.similarity(pairs),
    }
    for task in set(predictor.tasks) - set(runs):  # tasks declared in a --tasks file
        runs[task] = functools.partial(predictor.predict, task)
    waiting = [0]  # texts queued on every route together, against --max_queue
    batchers = {
        task: Batcher(
            runs[task],
            executor,
            limits.max_batch,
            limits.batch_window_ms / 1000,
            limits.max_queue,
            limits.request_timeout,
            waiting,
        )
        for task in predictor.tasks
    }

    @asynccontextmanager
    async def lifespan(app):
        yield
        for b in batchers.values():
            await b.close()
        executor.shutdown(wait=True)

    assets = swagger_assets()
    app = FastAPI(
        title="mtbert",
        summary=f"Multitask BERT: {model_name}",
        lifespan=lifespan,
        docs_url=None,  # served below from the bundled assets, not a CDN
        redoc_url=None,
        description="SST-5 sentiment, Quora paraphrase and STS similarity from one fine-tuned BERT "
        "encoder; concurrent requests are batched together.",
    )

    class Texts(BaseModel):
        texts: list[str] = Field(min_length=1, description=f"1 to {limits.max_texts} texts")

    class Pairs(BaseModel):
        pairs: list[tuple[str, str]] = Field(min_length=1, description=f"1 to {limits.max_texts} pairs of texts")

    class SentimentResult(BaseModel):
        label: int = Field(description="0 very negative .. 4 very positive")
        name: str
        probabilities: list[float] = Field(description="of the five labels")

    class ParaphraseResult(BaseModel):
        probability: float = Field(description="that the two ask the same")
        label: int = Field(description="1 when the probability is over 0.5")

    class SimilarityResult(BaseModel):
        similarity: float = Field(description="0 (unrelated) to 5 (the same meaning)")

    class SentimentResponse(BaseModel):
        results: list[SentimentResult]

    class ParaphraseResponse(BaseModel):
        results: list[ParaphraseResult]

    class SimilarityResponse(BaseModel):
        results: list[SimilarityResult]

    def check(texts: list[str]) -> None:
        if len(texts) > limits.max_texts:
            raise HTTPException(413, f"{len(texts)} texts: at most {limits.max_texts} per request (max_texts)")
        for i, t in enumerate(texts):
            if len(t) > limits.max_chars:
                raise HTTPException(422, f"text {i} has {len(t)} characters: at most {limits.max_chars} (max_chars)")
            if not t.strip():
                raise HTTPException(422, f"text {i} is empty")

    async def batched(task: str, items: list) -> list:
        try:
            return await batchers[task].submit(items)
        except Overloaded as e:  # shed at once: the client tries again later
            detail = busy_detail(e.waiting, limits.max_queue)
            raise HTTPException(503, detail, headers={"Retry-After": str(e.retry_after)}) from None
        except TimeoutError:
            raise HTTPException(504, f"not served within {limits.request_timeout:g} s (request_timeout)") from None
        except Exception as e:  # the batch failed: this request answers 500, the server serves on
            raise HTTPException(500, f"prediction failed: {type(e).__name__}: {e}") from None

    if "sst" in predictor.tasks:

        @app.post("/sentiment", response_model=SentimentResponse, summary="SST-5 sentiment of each text")
        async def sentiment(body: Texts) -> dict:
            check(body.texts)
            return {"results": [dataclasses.asdict(r) for r in await batched("sst", body.texts)]}

    if "para" in predictor.tasks:

        @app.post("/paraphrase", response_model=ParaphraseResponse, summary="whether each pair is a paraphrase")
        async def paraphrase(body: Pairs) -> dict:
            check([t for pair in body.pairs for t in pair])
            return {"results": [dataclasses.asdict(r) for r in await batched("para", body.pairs)]}

    if "sts" in predictor.tasks:

        @app.post("/similarity", response_model=SimilarityResponse, summary="STS similarity of each pair, 0-5")
        async def similarity(body: Pairs) -> dict:
            check([t for pair in body.pairs for t in pair])
            return {"results": [{"similarity": s} for s in await batched("sts", body.pairs)]}

    def declared_route(task: str) -> None:
        """POST /tasks/{task}: a declared task's results, for its texts (or pairs of texts)."""
        from mtbert.model.tasks import TASKS
        from mtbert.serve.rows import result_fields

        pair = TASKS[task].pair

        async def run(body: Pairs if pair else Texts) -> dict:
            items = body.pairs if pair else body.texts
            check([t for p in items for t in p] if pair else items)
            return {"results": [result_fields(task, r) for r in await batched(task, items)]}

        what = "pair of texts" if pair else "text"
        app.post(f"/tasks/{task}", summary=f"{task} (a declared task) of each {what}")(run)

    for task in predictor.tasks:
        if task not in ("sst", "para", "sts"):
            declared_route(task)

    from mtbert.model.tasks import TASKS
    from mtbert.serve.page import PAGE

    declared = {
        t: {"pair": TASKS[t].pair, "labels": list(TASKS[t].label_names or ()) or None}
        for t in predictor.tasks
        if t not in ("sst", "para", "sts")
    }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    if assets is not None and "swagger-ui-4." in assets:
        app.openapi_version = "3.0.3"  # Swagger UI before 5 renders no OpenAPI 3.1 document; this one is 3.0-compatible
    if assets is not None:
        from starlette.staticfiles import StaticFiles

        app.mount("/static/swagger", StaticFiles(directory=assets), name="swagger")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        if assets is None:
            return HTMLResponse("<p>The API documentation needs swagger-ui-bundle: pip install 'mtbert[serve]'</p>")
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="mtbert API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    @app.get("/health", summary="the model, its tasks and device, the batches served")
    async def health() -> dict:
        served = {t: {"batches": b.batches, "items": b.items} for t, b in batchers.items()}
        return {
            "status": "ok",
            "model": model_name,
            "tasks": list(predictor.tasks),
            "dev_metrics": getattr(predictor, "dev_metrics", None),
            "declared": declared,
            "device": str(predictor.device),
            "limits": dataclasses.asdict(limits),
            "served": served,
        }

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error: {type(e).__name__}"}, status_code=500)

    def busy() -> tuple[str, int] | None:
        """While the queue is full: the refusal and the seconds to wait (the texts waiting times the seconds per
        text of the recent batches)."""
        if waiting[0] < limits.max_queue:
            return None
        seconds = max(b.seconds_per_item for b in batchers.values())
        return busy_detail(waiting[0], limits.max_queue), max(1, math.ceil(waiting[0] * seconds))

    return BodyLimit(app, limits.max_body_bytes, busy)


def swagger_assets() -> str | None:
    """The folder of Swagger UI's script and style, from the swagger-ui-bundle package (None without it)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)


def busy_detail(waiting: int, max_queue: int) -> str:
    return f"busy: {waiting} texts waiting, at most {max_queue} (max_queue); retry later"


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes answers 413 before the application reads it (by its
    Content-Length, or, for a chunked body, as soon as the bytes received pass the limit); while the queue is full
    (`busy()` gives the refusal), a POST answers 503 before its body is read or parsed, so that a flood costs the
    server little; a client that disconnects cancels its request."""

    def __init__(self, app, limit: int, busy: Callable[[], tuple[str, int] | None] = lambda: None):
        self.app, self.limit, self.busy = app, limit, busy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.busy() if scope["method"] == "POST" else None
        if refusal is not None:
            detail, seconds = refusal
            return await reply(send, 503, detail, [(b"retry-after", str(seconds).encode())])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self.too_large(send)
        body, more = [], True
        while more:  # read the body here (it is at most `limit` bytes), then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, body)) > self.limit:
                return await self.too_large(send)
        whole, sent, gone = b"".join(body), False, asyncio.Event()

        async def replay():
            nonlocal sent
            if sent:  # after the body: the disconnect, when it comes
                await gone.wait()
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": whole, "more_body": False}

        handler = asyncio.ensure_future(self.app(scope, replay, send))

        async def watch() -> None:  # a client that goes away cancels its request: its texts leave the queue
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # the server itself is stopping
        finally:
            watcher.cancel()

    async def too_large(self, send) -> None:
        await reply(send, 413, f"request body over {self.limit} bytes (max_body_bytes)")


async def reply(send, status: int, detail: str, headers: list | None = None) -> None:
    """A JSON answer {"detail": ...} sent from the middleware, without the application."""
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def serve(predictor: "Predictor", host: str, port: int, limits: Limits, model_name: str) -> None:
    """Runs the server until interrupted (Ctrl-C)."""
    app = create_app(predictor, limits, model_name)
    import uvicorn

    try:  # a taken port is one line naming it, before uvicorn starts
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise MtbertError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
