"""The load generator and the server checks of bench/serve_load.py: a bounded closed loop
over keep-alive HTTP/1.1 connections (every worker sends its next request when its last
one is answered), server processes on loopback, and the checks of the acceptance list."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
from numpy.typing import NDArray

from bench.common import percentiles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc), in seconds: what a level
    cost the server whatever else ran on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> tuple[int, int]:
    """(idle, total) CPU ticks of the whole machine so far, every core (Linux /proc/stat):
    the idle share between two readings is the capacity nothing used."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait; user ... steal


def own_cpu_seconds() -> float:
    """User + system CPU time of this process (the load generator) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def get(base: str, path: str, headers: dict[str, str], timeout_s: float = 10) -> bytes:
    """The body of ``GET base + path``.

    Raises:
        urllib.error.URLError / OSError: no answer, or an HTTP error status.
    """
    import urllib.request

    req = urllib.request.Request(base + path, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return bytes(r.read())


def metrics(base: str, headers: dict[str, str], names: Sequence[str]) -> NDArray[np.float64]:
    """Samples of a server's Prometheus ``/metrics``, one scrape (0.0 where absent)."""
    text = get(base, "/metrics", headers).decode()
    return np.array([_sample(text, name) for name in names], dtype=np.float64)


class Served:
    """A server process on a loopback port, with the URL of its embeddings route."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        path: str,
        log: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> None:
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + path
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )

    def wait_ready(self, path: str, headers: dict[str, str], timeout_s: float = 300) -> None:
        import urllib.error

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.tail()}")
            try:
                get(self.base, path, headers, timeout_s=2)  # an error status raises
                return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s: {self.tail()}")

    def tail(self, n: int = 800) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self, timeout_s: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._log.close()
        return rc


@dataclass
class LevelResult:
    """One load level's figures."""

    name: str
    concurrency: int
    texts_per_request: int
    requests: int = 0
    sentences: int = 0
    errors: int = 0
    seconds: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list, repr=False)  # each answered request's

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds if self.seconds else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "level": self.name,
            "concurrency": self.concurrency,
            "texts_per_request": self.texts_per_request,
            "requests": self.requests,
            "sentences": self.sentences,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "requests_per_s": self.requests_per_s,
            "sentences_per_s": self.sentences_per_s,
            **self.latency,
            "error_samples": self.error_samples,
        }


def merge_rounds(rounds: Sequence[LevelResult]) -> dict[str, Any]:
    """One row (as ``LevelResult.row``) for a level run in several rounds: requests,
    sentences, errors and seconds summed; requests/s and sentences/s the median of the
    rounds' (one slow or fast moment of a shared machine moves it less than a sum would);
    latency percentiles over every round's requests; ``rounds_sentences_per_s`` each
    round's rate.

    Raises:
        ValueError: no rounds, or rounds of different levels.
    """
    if not rounds:
        raise ValueError("no rounds to merge: run the level at least once")
    first = rounds[0]
    if any((r.name, r.concurrency, r.texts_per_request) != (first.name, first.concurrency,
           first.texts_per_request) for r in rounds):  # fmt: skip
        raise ValueError(f"rounds of different levels: {sorted({r.name for r in rounds})}")
    merged = LevelResult(
        first.name,
        first.concurrency,
        first.texts_per_request,
        requests=sum(r.requests for r in rounds),
        sentences=sum(r.sentences for r in rounds),
        errors=sum(r.errors for r in rounds),
        seconds=sum(r.seconds for r in rounds),
        latency=percentiles([x for r in rounds for x in r.latencies_s]),
        error_samples=[s for r in rounds for s in r.error_samples][:5],
    )
    row = merged.row()
    row["requests_per_s"] = float(np.median([r.requests_per_s for r in rounds]))
    row["sentences_per_s"] = float(np.median([r.sentences_per_s for r in rounds]))
    row["rounds_sentences_per_s"] = [r.sentences_per_s for r in rounds]
    return row


def request_bodies(texts: list[str], per_request: int, model: str) -> list[bytes]:
    """JSON bodies of ``per_request`` consecutive texts each, cycling through ``texts``."""
    n = max(1, len(texts) // per_request)
    return [
        orjson.dumps({"input": texts[i * per_request : (i + 1) * per_request], "model": model})
        for i in range(n)
    ]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends prepared request bytes and reads the
    answer by its Content-Length: a few dozen microseconds of client CPU per request, where
    aiohttp spends about a millisecond (on a 2-core machine the load generator shares the
    cores with the server it measures, so its cost caps every server alike)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # body bytes still to come; -1 while reading the head
        self.status = 0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).split(b"\r\n")
            self.status = int(lines[0].split(b" ", 2)[1])
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            del self.buf[: end + 4]
            if length is None:
                waiter.set_exception(ConnectionError("an answer without Content-Length"))
                return
            self.need = length
        if len(self.buf) >= self.need:
            body = bytes(self.buf[: self.need])
            del self.buf[: self.need]
            self.need = -1
            waiter.set_result((self.status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection closed: {exc!r}"))
        self.transport = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def http_requests(url: str, headers: dict[str, str], bodies: list[bytes]) -> list[bytes]:
    """Each body as the bytes of a whole HTTP/1.1 POST to ``url``."""
    split = urllib.parse.urlsplit(url)
    head = [f"POST {split.path or '/'} HTTP/1.1", f"Host: {split.netloc}"]
    head += [f"{k}: {v}" for k, v in {"Content-Type": "application/json", **headers}.items()]
    return [
        ("\r\n".join([*head, f"Content-Length: {len(b)}", "", ""])).encode("latin-1") + b
        for b in bodies
    ]


async def _closed_loop(
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    per_request: int,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    result: LevelResult | None,
) -> None:
    stop_at = time.perf_counter() + duration_s
    sent = 0
    latencies: list[float] = []
    requests = http_requests(url, headers, bodies)
    split = urllib.parse.urlsplit(url)
    if split.hostname is None or split.port is None:
        raise ValueError(f"{url!r}: the load generator needs a URL with a host and a port")
    host, port = split.hostname, split.port
    loop = asyncio.get_running_loop()

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, host, port)
        return conn

    def failed(why: str) -> None:
        if result is not None:
            result.errors += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(why[:200])

    async def worker() -> None:
        nonlocal sent
        try:
            conn = await connect()
        except OSError as exc:  # the server is gone: an error, not a crash of the run
            failed(f"connect: {exc!r}")
            return
        try:
            while sent < max_requests and time.perf_counter() < stop_at:
                request = requests[sent % len(requests)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, payload = await asyncio.wait_for(conn.send(request), 120)
                    ok = status == 200
                except (TimeoutError, ConnectionError, OSError) as exc:
                    failed(repr(exc))
                    if conn.transport is not None:
                        conn.transport.close()
                    try:
                        conn = await connect()
                    except OSError as again:
                        failed(f"reconnect: {again!r}")
                        return
                    continue
                if result is None:
                    continue
                if ok:
                    latencies.append(time.perf_counter() - t0)
                    result.requests += 1
                    result.sentences += per_request
                else:
                    failed(payload.decode(errors="replace"))
        finally:
            if conn.transport is not None:
                conn.transport.close()

    t_start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if result is not None:
        result.seconds = time.perf_counter() - t_start
        result.latency = percentiles(latencies)
        result.latencies_s = latencies


def run_async(coro: Any) -> Any:
    """``asyncio.run`` on uvloop where it is installed (the serve extra has it), as the
    servers run."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_level(
    name: str,
    url: str,
    headers: dict[str, str],
    bodies: list[bytes],
    per_request: int,
    concurrency: int,
    duration_s: float,
    max_requests: int,
    warmup_s: float,
) -> LevelResult:
    """A warm-up, then ``duration_s`` (at most ``max_requests``) of closed-loop load."""
    result = LevelResult(name, concurrency, per_request)
    if warmup_s > 0:
        run_async(
            _closed_loop(url, headers, bodies, per_request, concurrency, warmup_s, 10**9, None)
        )
    run_async(
        _closed_loop(
            url, headers, bodies, per_request, concurrency, duration_s, max_requests, result
        )
    )
    return result


# -- checks ---------------------------------------------------------------------------------


def served_vectors(url: str, headers: dict[str, str], texts: list[str], model: str) -> Any:
    """``texts`` embedded by concurrent single-text requests (so they batch together)."""

    async def go() -> list[list[float]]:
        async with aiohttp.ClientSession(headers=headers) as s:

            async def one(t: str) -> list[float]:
                async with s.post(url, json={"input": t, "model": model}) as r:
                    data = await r.json(loads=orjson.loads)
                    return list(data["data"][0]["embedding"])

            return await asyncio.gather(*(one(t) for t in texts))

    return np.asarray(asyncio.run(go()), dtype=np.float32)


BAD_REQUESTS: list[tuple[str, bytes, bool]] = [
    # (what, body, send the API key)
    ("malformed JSON", b'{"input": ', True),
    ("wrong type", b'{"input": 42}', True),
    ("token ids", b'{"input": [1, 2, 3]}', True),
    ("huge body", b'{"input": "' + b"x" * (16 << 20) + b'"}', True),
    ("100k inputs", orjson.dumps({"input": ["a text"] * 100_000}), True),
    ("text past the character limit", orjson.dumps({"input": "y" * 200_000}), True),
    ("unauthorized", b'{"input": "hello"}', False),
]


def bad_requests(served: Served, headers: dict[str, str]) -> dict[str, Any]:
    """Each bad request's status and whether it came back as OpenAI-shaped JSON; then
    whether the server still answers."""

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with aiohttp.ClientSession() as s:
            for what, body, auth in BAD_REQUESTS:
                hdrs = {"Content-Type": "application/json", **(headers if auth else {})}
                try:
                    async with s.post(served.url, data=body, headers=hdrs) as r:
                        raw = await r.read()
                        status = r.status
                except aiohttp.ClientError as exc:
                    out[what] = {"status": None, "json_error": False, "error": repr(exc)}
                    continue
                shaped = False
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    err = orjson.loads(raw)["error"]
                    shaped = all(k in err for k in ("message", "type", "code"))
                out[what] = {
                    "status": status,
                    "json_error": bool(shaped) if raw.startswith(b"{") else False,
                }
            async with s.post(served.url, json={"input": "still up"}, headers=headers) as r:
                healthy = r.status == 200
        return {"requests": out, "healthy_after": healthy}

    result = asyncio.run(go())
    result["all_4xx_json"] = all(
        r["status"] is not None and 400 <= r["status"] < 500 and r["json_error"]
        for r in result["requests"].values()
    )
    return result


def sigterm_under_load(
    served: Served, headers: dict[str, str], bodies: list[bytes], n_requests: int
) -> dict[str, Any]:
    """``n_requests`` concurrent requests, SIGTERM once the server has received them all
    (answered or in flight by its metrics), then: were all answered 200, and the exit code."""

    async def go() -> dict[str, Any]:
        async with aiohttp.ClientSession(headers=headers) as s:

            async def one(body: bytes) -> int:
                hdrs = {"Content-Type": "application/json"}
                try:
                    async with s.post(served.url, data=body, headers=hdrs) as r:
                        await r.read()
                        return r.status
                except aiohttp.ClientError:
                    return -1

            async def counts() -> tuple[float, float]:
                async with s.get(served.base + "/metrics") as r:
                    text = await r.text()
                answered = _sample(text, 'bertrec_requests_total{route="embeddings",status="200"}')
                return _sample(text, "bertrec_requests_in_flight"), answered

            _, before = await counts()
            tasks = [asyncio.ensure_future(one(bodies[i % len(bodies)])) for i in range(n_requests)]
            in_flight = 0.0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                in_flight, answered = await counts()
                if in_flight + answered - before >= n_requests:
                    break
                await asyncio.sleep(0.005)
            t0 = time.perf_counter()
            served.proc.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*tasks)
            return {
                "requests": n_requests,
                "in_flight_at_signal": in_flight,
                "answered_200": sum(1 for x in statuses if x == 200),
                "drain_s": time.perf_counter() - t0,
            }

    out = asyncio.run(go())
    out["exit_code"] = served.proc.wait(120)
    out["ok"] = out["exit_code"] == 0 and out["answered_200"] == n_requests
    return out


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " ") or (name.endswith("}") and line.startswith(name)):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def soak(
    served: Served,
    headers: dict[str, str],
    bodies: list[bytes],
    concurrency: int,
    duration_s: float,
    sample_every_s: float = 5.0,
) -> dict[str, Any]:
    """``duration_s`` of closed-loop load; the server's RSS sampled as it runs."""
    samples: list[tuple[float, float]] = []
    stop = False

    async def sampler() -> None:
        t0 = time.perf_counter()
        while not stop:
            samples.append((time.perf_counter() - t0, rss_mb(served.proc.pid)))
            await asyncio.sleep(sample_every_s)

    async def go() -> LevelResult:
        nonlocal stop
        result = LevelResult("soak", concurrency, 1)
        task = asyncio.ensure_future(sampler())
        await _closed_loop(served.url, headers, bodies, 1, concurrency, duration_s, 10**9, result)
        stop = True
        await task
        return result

    result = run_async(go())
    samples.append((duration_s, rss_mb(served.proc.pid)))
    rss = [r for _, r in samples]
    return {
        **result.row(),
        "rss_mb_start": rss[0],
        "rss_mb_end": rss[-1],
        "rss_mb_max": max(rss),
        "rss_growth_mb": rss[-1] - rss[0],
        "rss_samples": [(round(t, 1), round(r, 1)) for t, r in samples],
        "server_alive": served.proc.poll() is None,
    }
