"""The ASGI app: OpenAI-shaped ``/v1/embeddings``, ``/v1/models``, ``/v1/rank``,
``/v1/recommend``, health, readiness and Prometheus metrics, on Starlette. Every text goes
through the app's one ``Batcher``; errors are JSON in OpenAI's shape."""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from bertrec.core import check_float, check_int
from bertrec.errors import BertrecError, ConfigError
from bertrec.rank.topk import CosineRanker
from bertrec.recommend.recommender import Recommender
from bertrec.runtime.encoder import Encoder
from bertrec.runtime.openvino_runner import openvino_importable, set_shape_cache
from bertrec.runtime.providers import cuda_usable
from bertrec.serve.batcher import DEFAULT_MAX_QUEUE, DEFAULT_MAX_WAIT_MS, Batcher
from bertrec.serve.errors import (
    AUTH,
    SERVER,
    ApiError,
    Overloaded,
    error_response,
    from_bertrec,
    status_error,
)
from bertrec.serve.metrics import Metrics
from bertrec.serve.schemas import (
    Limits,
    embeddings_body,
    embeddings_request,
    rank_request,
    read_json,
    recommend_request,
)

log = logging.getLogger("bertrec.serve")

JSON = "application/json"
# nginx's status for a client that closed the connection before its answer.
CLIENT_GONE = ApiError(499, "the client closed the connection", "client_closed_request")
Handler = Callable[[Request], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


class _BatchedTextEncoder:
    """What the ``Recommender`` sees as its encoder: the served model's identity, with
    free texts encoded through the batcher (so they are batched with everyone else's)."""

    def __init__(self, encoder: Encoder, batcher: Batcher) -> None:
        self._encoder = encoder
        self._batcher = batcher

    @property
    def dim(self) -> int:
        return self._encoder.dim

    @property
    def fingerprint(self) -> str:
        return self._encoder.fingerprint

    @property
    def variant(self) -> str:
        return self._encoder.variant

    def encode(self, texts: Any, **_: Any) -> NDArray[np.float32]:
        return self._batcher.encode(texts)


class Server:
    """The state behind the routes: one encoder, its batcher, an optional recommender.

    Built ready to serve; ``create_app`` wraps it in a Starlette app.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        store_dir: str | os.PathLike[str] | None = None,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_queue: int = DEFAULT_MAX_QUEUE,
        workers: int = 1,
        api_key: str | None = None,
        model_name: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        max_wait_s = check_float(max_wait_ms, "max_wait_ms", 0.0, 1000.0) / 1e3
        max_queue = check_int(max_queue, "max_queue")
        workers = check_int(workers, "workers")
        if api_key is not None and not api_key:
            raise ConfigError("the API key is empty; set a non-empty key")
        self.encoder = encoder
        self.model_name = model_name or Path(encoder.model_dir).resolve().name
        self.limits = limits or Limits()
        self.api_key = None if api_key is None else api_key.encode("utf-8")
        self.created = int(time.time())
        self.metrics = Metrics(lambda: self.batcher.queued, lambda: self.batcher.pending)
        self.batcher = Batcher(
            encoder, max_wait_s, max_queue, workers=workers, observe=self.metrics.observe_batch
        )
        self.recommender = (
            None
            if store_dir is None
            else Recommender.load(store_dir, encoder=_BatchedTextEncoder(encoder, self.batcher))
        )
        # Recommendations score the catalog (NumPy, the GIL released) off the event loop.
        self._workers = ThreadPoolExecutor(2, thread_name_prefix="bertrec-recommend")
        self._recommending = 0
        self._closing = False

    # -- plumbing -------------------------------------------------------------------------

    def route(self, name: str, handler: Handler, auth: bool = True) -> Handler:
        """``handler`` with the API key check, errors as JSON, and the request metrics."""
        metrics = self.metrics

        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                if auth and self.api_key is not None:
                    _check_key(request, self.api_key)
                response = await handler(request)
            except ApiError as err:
                response = error_response(err)
            except BertrecError as exc:
                response = error_response(from_bertrec(exc))
            except ClientDisconnect:  # nobody reads the answer; the status is for metrics
                response = error_response(CLIENT_GONE)
            except Exception as exc:  # a bug: logged with its traceback, answered as JSON
                log.exception("%s failed", name)
                response = error_response(
                    ApiError(500, f"internal error: {type(exc).__name__}", "internal_error", SERVER)
                )
            metrics.observe_request(name, response.status_code, time.perf_counter() - t0)
            return response

        return endpoint

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise ApiError(
                404,
                f"model {model!r} is not served here; this server serves {self.model_name!r}",
                "model_not_found",
            )

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.batcher.start(asyncio.get_running_loop())
        log.info("%s; serving %r", self.encoder.describe(), self.model_name)
        try:
            yield
        finally:
            # Requests already received have been answered (the ASGI server drains them
            # before the lifespan ends); the batcher finishes whatever is still queued.
            self._closing = True
            await asyncio.to_thread(self.batcher.close)
            self._workers.shutdown(wait=False, cancel_futures=True)

    # -- routes ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self._closing:
            return _json({"status": "shutting down"}, 503)
        if not self.batcher.ready.is_set():
            return _json({"status": "warming up"}, 503)
        return _json({"status": "ready", "model": self.model_name})

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def models(self, request: Request) -> Response:
        enc = self.encoder
        card = {
            "id": self.model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "bertrec",
            "dim": enc.dim,
            "max_length": enc.max_length,
            "variant": enc.variant,
            "backend": enc.backend,
            "device": enc.device,
            "recommend": self.recommender is not None,
            "batching": {**self.batcher.describe(), "threads": enc.threads},
        }
        return _json({"object": "list", "data": [card]})

    async def embeddings(self, request: Request) -> Response:
        req = embeddings_request(await read_json(request, self.limits), self.limits)
        self._check_model(req.model)
        vectors, tokens = await self.batcher.embed(req.texts)
        return Response(embeddings_body(vectors, tokens, self.model_name, req.base64), 200,
                        media_type=JSON)  # fmt: skip

    async def rank(self, request: Request) -> Response:
        req = rank_request(await read_json(request, self.limits), self.limits)
        self._check_model(req.model)
        vectors, tokens = await self.batcher.embed([req.query, *req.documents])
        top = CosineRanker(vectors[1:]).topk(vectors[0], k=req.top_k or len(req.documents))
        results = [
            {"index": i, "score": s}
            for i, s in zip(top.rows.tolist(), top.scores.tolist(), strict=True)
        ]
        return _json(
            {
                "object": "list",
                "model": self.model_name,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def recommend(self, request: Request) -> Response:
        if self.recommender is None:
            raise ApiError(
                404, "this server has no catalog: start it with --store STORE_DIR", "no_store"
            )
        req = recommend_request(await read_json(request, self.limits), self.limits)
        if self._recommending >= self.batcher.max_queue:
            raise Overloaded(f"{self._recommending} recommendations are waiting; retry later")
        call = functools.partial(
            self.recommender.recommend,
            req.history,
            req.k,
            req.exclude_seen,
            req.exclude,
            req.diversity,
            texts=req.texts,
            on_unknown=req.on_unknown,
        )
        self._recommending += 1
        try:
            # (id, score) pairs: recommend is called without explain=True.
            picks: list[Any] = await asyncio.get_running_loop().run_in_executor(self._workers, call)
        finally:
            self._recommending -= 1
        results = [{"id": item, "score": score} for item, score in picks]
        return _json({"object": "list", "model": self.model_name, "results": results})


def _check_key(request: Request, key: bytes) -> None:
    """401 unless the request carries ``Authorization: Bearer <key>`` (compared in constant
    time, so the answer's timing says nothing about how much of a guess was right)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), key):
        raise ApiError(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
            "invalid_api_key",
            AUTH,
            {"WWW-Authenticate": "Bearer"},
        )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    err = status_error(exc.status_code, exc.detail)
    err.headers.update(exc.headers or {})
    return error_response(err)


def build_app(server: Server) -> Starlette:
    """The Starlette app around a ``Server``: no CORS, no middleware of its own."""
    r = server.route
    routes = [
        Route("/health", r("health", server.health, auth=False), methods=["GET"]),
        Route("/ready", r("ready", server.ready), methods=["GET"]),
        Route("/metrics", r("metrics", server.metrics_page), methods=["GET"]),
        Route("/v1/models", r("models", server.models), methods=["GET"]),
        Route("/v1/embeddings", r("embeddings", server.embeddings), methods=["POST"]),
        Route("/v1/rank", r("rank", server.rank), methods=["POST"]),
        Route("/v1/recommend", r("recommend", server.recommend), methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.server = server
    return app


# Input shapes whose compiled kernels OpenVINO's CPU plugin keeps (5000 by default; about
# 1 MB each for MiniLM, more for larger batches). Serving meets a new (rows, width) shape
# with almost every batch: unbounded, the process grows by gigabytes; too few, and most
# batches recompile. Measured on MiniLM bf16 (2-core AVX-512, the bench's text mix):
# 64 shapes: 300 / 510 sentences/s at concurrency 1 / 32, ~430 MB; 256: 326 / 551,
# ~750 MB; 1024: 336 / 579, ~1.1 GB; 5000: 383 / 619 (README, "Serving").
DEFAULT_SHAPE_CACHE = 1024


def parallelism(device: str, threads: int | None, workers: int | None) -> tuple[int | None, int]:
    """Threads per model run and runs at once: as given, else two runs, of half the cores
    each on a CPU (on CUDA with the Encoder's default threads: one run's host side, its
    padding and copies, overlaps the other's kernels; on an H200, two runs against one:
    1.08x / 1.02x / 1.12x at concurrency 8 / 32 / 128 and 1.23x on 64-text requests,
    0.92x at concurrency 1, record gpu-check-20261130T220521Z of bench/gpu_check.py)."""
    on_cpu = device == "cpu" or (device == "auto" and not cuda_usable())
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    if workers is None:
        workers = 2 if cores >= 2 else 1
    if threads is None and on_cpu:
        threads = max(1, cores // workers)
    return threads, workers


def create_app(
    model_dir: str | os.PathLike[str],
    *,
    store_dir: str | os.PathLike[str] | None = None,
    precision: str = "auto",
    device: str = "auto",
    backend: str = "auto",
    max_batch_tokens: int | None = None,
    threads: int | None = None,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    workers: int | None = None,
    api_key: str | None = None,
    model_name: str | None = None,
    limits: Limits | None = None,
    shape_cache: int = DEFAULT_SHAPE_CACHE,
) -> Starlette:
    """The ASGI app serving one model directory (and optionally a recommender store).

    The model loads here, so a bad directory fails at once; the app warms it up when its
    lifespan starts (``/ready`` answers 503 until then). Host it with any ASGI server:
    ``bertrec serve``, uvicorn or gunicorn workers, or Ray Serve (``serve.ingress``).

    Args:
        model_dir: a directory written by ``bertrec export``.
        store_dir: a directory written by ``Recommender.save`` (enables ``/v1/recommend``).
        precision / device / backend / max_batch_tokens: as ``Encoder``.
        max_wait_ms: the longest the engine waits, after a batch, for the clients it just
            answered to come back and share the next one (never when idle).
        max_queue: requests get 503 while this many texts or more wait.
        threads / workers: threads per model run and model runs at once. Default on a
            CPU: two runs of half the cores each, so one run's Python work (padding,
            answering) overlaps the other's model time and no run waits on a thread that
            the HTTP side holds; on CUDA two runs of the Encoder's default threads
            (bench/serve_load.py and bench/gpu_check.py measured one and two).
        api_key: when set, every route but ``/health`` needs ``Authorization: Bearer``.
        model_name: the name in ``/v1/models`` and responses (default: the directory's).
        limits: body size, inputs per request and characters per text.
        shape_cache: OpenVINO only: input shapes whose compiled kernels are kept
            (process-wide); more is faster and takes more memory (``DEFAULT_SHAPE_CACHE``).

    Raises:
        NotFoundError / FileFormatError / ConfigError / ProviderError: as ``Encoder`` and
            ``Recommender.load``.
        ModelMismatchError: the store was encoded by another model.
    """
    threads, workers = parallelism(device, threads, workers)
    shape_cache = check_int(shape_cache, "shape_cache")
    if openvino_importable():
        set_shape_cache(shape_cache)
    encoder = Encoder(
        model_dir,
        precision=precision,
        device=device,
        backend=backend,
        max_batch_tokens=max_batch_tokens,
        threads=threads,
        streams=workers,
    )
    server = Server(
        encoder,
        store_dir=store_dir,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        workers=workers,
        api_key=api_key,
        model_name=model_name,
        limits=limits,
    )
    return build_app(server)
