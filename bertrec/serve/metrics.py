"""Prometheus metrics of one app, in a registry of its own (two apps in one process, as in
tests, do not collide): requests by route and status, latency, batch shape, queue depth."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536)


class Metrics:
    """The server's metrics; ``render()`` is the ``/metrics`` body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queued: Callable[[], float], pending: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bertrec_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "bertrec_request_seconds",
            "Time from routing a request to its response",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "bertrec_batch_size", "Texts per batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "bertrec_batch_requests",
            "Requests merged into a batch",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "bertrec_batch_tokens", "Tokens per batch", buckets=TOKEN_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "bertrec_batch_seconds",
            "Inference time per batch",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        queue = Gauge("bertrec_queue_depth", "Texts waiting for a batch", registry=r)
        queue.set_function(queued)
        inflight = Gauge(
            "bertrec_requests_in_flight", "Requests admitted, not answered", registry=r
        )
        inflight.set_function(pending)
        # Labelled children are looked up once per (route, status), not per request.
        self._counters: dict[tuple[str, int], Counter] = {}
        self._timers: dict[str, Histogram] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.requests.labels(route, str(status))
        counter.inc()
        timer = self._timers.get(route)
        if timer is None:
            timer = self._timers[route] = self.latency.labels(route)
        timer.observe(seconds)

    def observe_batch(self, requests: int, texts: int, tokens: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_size.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
