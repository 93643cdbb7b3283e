"""The serving bench's in-process references, no HTTP: offline ``Encoder.encode`` and a
bare ``encode([text])``; the server's engine alone (its windows at each concurrency, the
windows it really formed, one model call's cost); a request's path with the model stubbed.
``bench/serve_load.py`` runs them beside the load levels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import percentiles
from bench.serve_peers import loadgen

# The batcher's per-call cost before 2026-12-01 (a sixty-fourth of the token budget): the
# engine line at c=32 also runs windows cut with it, so one run shows what the change gave.
EARLIER_CALL_COST_SHARE = 1 / 64


def offline_pass(enc: Any, texts: list[str]) -> float:
    """Sentences/s of one ``enc.encode(texts)``."""
    t0 = time.perf_counter()
    enc.encode(texts)
    return len(texts) / (time.perf_counter() - t0)


def offline_reference(enc: Any, texts: list[str], repeats: int, bare_calls: int) -> dict[str, Any]:
    """``Encoder.encode(texts)`` throughput (best of ``repeats``) and the latency of
    ``bare_calls`` bare ``encode([text])`` calls, in this process, on ``enc`` (an
    ``Encoder`` with its defaults)."""
    enc.encode(texts[:64])
    runs = [offline_pass(enc, texts) for _ in range(repeats)]
    calls = []
    for t in (texts * (bare_calls // len(texts) + 1))[:bare_calls]:
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
    for w in windows:
        encodings = enc.tokenize([texts[i] for i in w])
        lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        run_windows(enc, encodings, lengths, [np.arange(len(encodings))], call)


def _serve_encoder(model_dir: Path, precision: str = "auto") -> tuple[Any, int]:
    """The Encoder ``bertrec serve`` builds on this CPU (its ``parallelism`` defaults) and
    its inference workers."""
    from bertrec import Encoder
    from bertrec.serve.app import parallelism

    threads, workers = parallelism("cpu", None, None)
    return Encoder(model_dir, precision=precision, threads=threads, streams=workers), workers


def _engine(
    model_dir: Path, texts: list[str], precision: str = "auto", tokenize: bool = False
) -> tuple[Any, int, Callable[[list[Any], int], float]]:
    """``_serve_encoder``'s Encoder, its workers, and a timer: sentences/s of ``workers``
    threads running windows of the texts, each window cut by ``length_groups`` at ``call``
    tokens per batch call, as the workers do; with ``tokenize``, each window is tokenized
    in the timed run too, else all are beforehand."""
    enc, workers = _serve_encoder(model_dir, precision)
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
    model_dir: Path,
    texts: list[str],
    levels: Sequence[tuple[str, int, int]],
    repeats: int,
    headline: str,
    precision: str = "auto",
) -> dict[str, Any]:
    """What the server's engine does with no HTTP in front of it: for each single-text
    load level of ``levels`` (name, concurrency ``c``, texts per request), best of
    ``repeats``: windows of ``c / workers`` texts (what each inference worker takes when
    ``c`` requests wait), cut by ``length_groups`` and run by ``workers`` threads on the
    Encoder ``bertrec serve`` builds (its ``parallelism`` defaults). The
    gap between this and offline ``encode`` is small windows' (fewer texts to sort by
    length, smaller GEMMs); ``engine_at_served_windows`` measures the windows the server
    really formed. At the ``headline`` level the windows are also cut with
    ``EARLIER_CALL_COST_SHARE``, interleaved."""
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
    for name, conc, per in levels:
        if per != 1:
            continue
        size = max(1, -(-conc // workers))
        windows = windows_of(len(texts), size)
        timed(windows, call)  # warm-up: every shape once
        # At the headline level the cut of the earlier per-call cost too, interleaved.
        compare = name == headline
        runs, runs_earlier = [], []
        for _ in range(repeats):
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
    level: str,
    texts_per_window: float,
    offline: Callable[[], float],
    repeats: int,
) -> dict[str, Any]:
    """The engine alone on windows of the size the server formed at load ``level`` (its
    metrics' texts per window, rounded), in ``repeats`` rounds (at least 3): each window
    tokenized and run as a worker does, each run right after an ``offline`` pass, so that
    their ratio holds whatever the machine does meanwhile. Under closed-loop load the
    windows are smaller than ``c / workers``: while two run, the clients of a third are
    answered and come back. Served over offline divided by this ratio is the share of what
    its windows allow that the server keeps: the HTTP side's cost, and the scheduling's."""
    from bertrec.serve.batcher import call_tokens

    enc, workers, timed = _engine(model_dir, texts, tokenize=True)
    size = max(1, round(texts_per_window))
    windows = windows_of(len(texts), size)
    call = call_tokens(enc.device, enc.max_batch_tokens)
    timed(windows, call)  # warm-up: every shape once
    engine, offline_runs = [], []
    for _ in range(max(repeats, 3)):
        offline_runs.append(offline())
        engine.append(timed(windows, call))
    ratios = [e / o for e, o in zip(engine, offline_runs, strict=True)]
    return {
        "level": level,
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
    enc, _ = _serve_encoder(model_dir)
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


def request_path_cost(
    model_dir: Path, texts: list[str], requests: int, rounds: int
) -> dict[str, Any]:
    """Microseconds per single-text request from the event loop through the model call
    and back, with the model call itself answered at once (``_ZeroModel``): bertrec's
    batcher (as ``bertrec serve`` builds it, metrics included) against the naive server's
    ``asyncio.to_thread(Encoder.encode, [text])``, one request at a time, on uvloop, in
    ``rounds`` interleaved rounds of ``requests`` each. At c=1 a request costs this plus
    the model call plus HTTP, so the difference is what the batcher costs a lone request
    against the naive server; it does not move with the machine's load the way the c=1
    throughput does."""
    import asyncio

    from bertrec.serve.batcher import Batcher
    from bertrec.serve.metrics import Metrics

    enc, workers = _serve_encoder(model_dir)
    enc._runner = _ZeroModel(enc._runner, enc.manifest.dim)  # the stub, on this copy only
    one = [[t] for t in texts]

    async def measure() -> dict[str, list[float]]:
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
            for k in range(rounds + 1):  # the first round warms up
                for name in sides if k % 2 else list(sides)[::-1]:
                    call = sides[name]
                    t0 = time.perf_counter()
                    for i in range(requests):
                        await call(one[i % len(one)])
                    if k:
                        out[name].append((time.perf_counter() - t0) / requests * 1e6)
        finally:
            batcher.close()
        return out

    runs = loadgen.run_async(measure())
    return {
        "bertrec_us": float(np.median(runs["bertrec"])),
        "naive_us": float(np.median(runs["naive"])),
        "runs_us": runs,
        "requests_per_round": requests,
    }
