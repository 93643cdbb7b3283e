"""The batcher: its cut of a window into batches of similar lengths (a pure function),
and the scheduler on a real Encoder."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bertrec.serve.batcher import length_groups


@pytest.mark.parametrize("seed", range(5))
def test_groups_cover_every_row_once_within_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 257, size=int(rng.integers(1, 200)))
    groups = length_groups(lengths, 1024, 64)
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or len(g) * lengths[g].max() <= 1024
    widths = [int(lengths[g].max()) for g in groups]
    assert widths == sorted(widths, reverse=True)  # longest first


def test_mixed_lengths_are_not_padded_to_the_longest() -> None:
    lengths = np.array([200, 12, 10, 11, 9, 190, 10, 12])
    groups = length_groups(lengths, 4096, 64)
    # The short texts share one batch, apart from the long ones.
    assert sorted(lengths[groups[-1]].tolist()) == [9, 10, 10, 11, 12, 12]
    assert all(lengths[g].min() >= 190 for g in groups[:-1])
    padded = sum(len(g) * int(lengths[g].max()) for g in groups)
    assert padded < 0.3 * len(lengths) * lengths.max()
    # Equal lengths stay one batch; a lone text is its own.
    assert len(length_groups(np.full(30, 20), 1024, 64)) == 1
    assert [g.tolist() for g in length_groups(np.array([7]), 1024, 64)] == [[0]]


def _cost(lengths: np.ndarray, groups: list[np.ndarray], call: int) -> int:
    return sum(len(g) * int(lengths[g].max()) + call for g in groups)


@pytest.mark.parametrize("seed", range(20))
def test_groups_are_the_cut_of_least_cost(seed: int) -> None:
    """Against every cut of the sorted rows into consecutive batches (2^(n-1) of them)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    lengths = rng.integers(1, 120, size=n)
    budget, call = int(rng.integers(100, 400)), int(rng.integers(0, 80))
    sorted_rows = np.argsort(-lengths, kind="stable")
    best = None
    for mask in range(2 ** (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        groups = [sorted_rows[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        if any(len(g) > 1 and len(g) * lengths[g].max() > budget for g in groups):
            continue
        cost = _cost(lengths, groups, call)
        best = cost if best is None else min(best, cost)
    got = length_groups(lengths, budget, call)
    assert _cost(lengths, got, call) == best


def test_groups_of_no_rows_and_bad_lengths() -> None:
    assert length_groups(np.array([], dtype=np.int64), 1024, 64) == []
    # One text over the budget still runs (alone); the rest are cut around it.
    groups = length_groups(np.array([5000, 10, 10]), 1024, 64)
    assert [g.tolist() for g in groups] == [[0], [1, 2]]


def _batcher(model_dir: Path, workers: int, **options: Any) -> Any:
    from bertrec import Encoder
    from bertrec.serve.batcher import Batcher

    enc = Encoder(model_dir, precision="fp32", threads=1, streams=workers)
    return enc, Batcher(enc, workers=workers, **options)


def test_batcher_serves_concurrent_requests_as_encode_does(tiny_model_dir: Path) -> None:
    """Concurrent requests of one and of many texts through two workers: each gets the
    rows ``Encoder.encode`` gives its texts, in order, and the token count."""
    enc, batcher = _batcher(tiny_model_dir, 2)
    requests = [[f"text {i} " * (1 + i % 4)] for i in range(12)]
    requests.append([f"item {j} " * (1 + j % 6) for j in range(40)])

    async def go() -> list[tuple[Any, int]]:
        batcher.start(asyncio.get_running_loop())
        try:
            return await asyncio.gather(*(batcher.embed(r) for r in requests))
        finally:
            batcher.close()

    for texts, (vectors, tokens) in zip(requests, asyncio.run(go()), strict=True):
        np.testing.assert_allclose(vectors, enc.encode(texts), atol=1e-5)
        assert tokens == sum(len(e) for e in enc.tokenize(texts))


def test_idle_engine_wakes_worker_zero_only(tiny_model_dir: Path) -> None:
    """Requests one after another (an engine idle at each arrival) go to worker 0 and
    never wake worker 1: a wake-up it would only go back to sleep from, on the request's
    critical path."""
    enc, batcher = _batcher(tiny_model_dir, 2)

    async def go() -> None:
        batcher.start(asyncio.get_running_loop())
        await asyncio.get_running_loop().run_in_executor(None, batcher.ready.wait)
        before = batcher.worker_stats()
        for i in range(20):
            vectors, _ = await batcher.embed([f"one text {i}"])
            assert vectors.shape == (1, enc.dim)
        after = batcher.worker_stats()
        batcher.close()
        assert after[1] == before[1]  # worker 1 neither woke nor ran a window
        assert after[0]["windows"] - before[0]["windows"] == 20

    asyncio.run(go())
    assert batcher.worker_stats()[1]["wakeups"] >= 1  # close() woke it to stop


def test_no_request_waits_forever_when_signals_race_timeouts(tiny_model_dir: Path) -> None:
    """Clients that come back at scattered moments, with a wait bound shorter than a
    window, so workers often time out as a signal arrives: every request is answered
    with its own rows, and close() stops both workers."""
    enc, batcher = _batcher(tiny_model_dir, 2, max_wait_s=0.0005)
    rng = np.random.default_rng(0)
    pauses = rng.exponential(0.002, size=(8, 25))

    async def client(k: int) -> list[tuple[str, Any]]:
        got = []
        for i, pause in enumerate(pauses[k]):
            await asyncio.sleep(float(pause))
            text = f"client {k} request {i} " * (1 + (k + i) % 5)
            got.append((text, (await batcher.embed([text]))[0]))
        return got

    async def go() -> list[list[tuple[str, Any]]]:
        batcher.start(asyncio.get_running_loop())
        try:
            return await asyncio.wait_for(asyncio.gather(*(client(k) for k in range(8))), 60)
        finally:
            batcher.close()

    answers = [pair for got in asyncio.run(go()) for pair in got]
    assert len(answers) == 8 * 25
    texts = [t for t, _ in answers]
    np.testing.assert_allclose(np.vstack([v for _, v in answers]), enc.encode(texts), atol=1e-5)
    assert not any(t.is_alive() for t in batcher._threads)


def _queue_texts(batcher: Any, loop: asyncio.AbstractEventLoop, first: int, n: int) -> list[Any]:
    """``n`` one-text requests through ``embed``, each text estimated at 10 tokens (32
    characters), left queued: no worker runs. Their tasks, to await once run."""
    batcher._loop = loop
    texts = [f"request {i:03d} ".ljust(32, "x") for i in range(first, first + n)]
    tasks = [loop.create_task(batcher.embed([t])) for t in texts]
    loop.run_until_complete(asyncio.sleep(0))  # each task queues its text and waits
    return tasks


def _cut(batcher: Any) -> Any:
    with batcher._lock:
        return batcher._cut()


def test_a_freed_worker_takes_its_share_of_the_work_in_the_server(tiny_model_dir: Path) -> None:
    """Beside a short window running, a freed worker takes half of all the work in the
    server (queued and running), not every request queued: 2 one-text requests run and
    28 wait, so it takes 15 and leaves 13 for the next worker to free. Once both windows
    have run, nothing counts as running; a lone worker takes the whole queue."""
    enc, batcher = _batcher(tiny_model_dir, 2)
    loop = asyncio.new_event_loop()
    try:
        tasks = _queue_texts(batcher, loop, 0, 4)
        short = _cut(batcher)  # both workers free: half the queue each
        assert len(short.parts) == 2 and short.tokens == 20
        tasks += _queue_texts(batcher, loop, 4, 26)
        assert batcher.queued == 28
        window = _cut(batcher)
        assert len(window.parts) == 15  # ceil((280 queued + 20 running tokens) / 2 workers)
        assert window.tokens == 150 and batcher._running_tokens == 170
        assert batcher.queued == 13
        batcher._run(short)
        batcher._run(window)
        assert batcher._busy == 0 and batcher._running_tokens == 0
        answered = [job for job, _, _ in short.parts + window.parts]
        for job in answered:
            np.testing.assert_allclose(job.out, enc.encode(job.texts), atol=1e-5)
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

        _, alone = _batcher(tiny_model_dir, 1)
        tasks = _queue_texts(alone, loop, 0, 30)
        assert len(_cut(alone).parts) == 30
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    finally:
        loop.close()


def test_a_call_costs_more_tokens_on_cuda() -> None:
    from bertrec.serve.batcher import call_tokens

    assert call_tokens("cpu", 1024) == 4
    assert call_tokens("cuda", 16384) == 4096
    # The cut follows: on CUDA a window of a few lengths stays one call.
    lengths = np.array([30] * 10 + [12] * 60)
    assert len(length_groups(lengths, 16384, call_tokens("cpu", 16384))) == 2
    assert len(length_groups(lengths, 16384, call_tokens("cuda", 16384))) == 1
    assert call_tokens("cpu", 1) == 1  # never free
    assert call_tokens("cuda", 10**9) == 250_000_000


@pytest.mark.parametrize(
    ("device", "budget", "says"),
    [
        ("cpu", 0, "max_batch_tokens must be >= 1"),
        ("cpu", -5, "max_batch_tokens must be >= 1"),
        ("cpu", 1024.0, "max_batch_tokens must be an int"),
        ("cpu", "1024", "max_batch_tokens must be an int"),
        ("cpu", True, "max_batch_tokens must be an int"),
        ("gpu", 1024, "device must be 'cpu' or 'cuda'"),
        ("", 1024, "device must be 'cpu' or 'cuda'"),
        (None, 1024, "device must be 'cpu' or 'cuda'"),
    ],
)
def test_call_cost_of_bad_input_says_what_is_wrong(device: Any, budget: Any, says: str) -> None:
    from bertrec.errors import ConfigError
    from bertrec.serve.batcher import call_tokens

    with pytest.raises(ConfigError, match=says):
        call_tokens(device, budget)


def test_texts_are_tokenized_by_the_inference_threads(tiny_model_dir: Path) -> None:
    """The event loop only checks a request's texts; the inference thread that runs them
    tokenizes them, a window at a time, and the token counts are the tokenizer's."""
    enc, batcher = _batcher(tiny_model_dir, 2)
    where: list[str] = []  # the thread of every tokenize call after warm-up
    tokenize = enc.tokenize

    def recording(texts: Any) -> Any:
        where.append(threading.current_thread().name)
        return tokenize(texts)

    one = ["one short text"]
    many = [f"a longer item text number {i} " * (1 + i % 5) for i in range(64)]

    async def go() -> list[tuple[Any, int]]:
        batcher.start(asyncio.get_running_loop())
        await asyncio.get_running_loop().run_in_executor(None, batcher.ready.wait)
        enc.tokenize = recording  # type: ignore[method-assign]
        try:
            return [
                await batcher.embed(one),
                *await asyncio.gather(*(batcher.embed(many[i : i + 8]) for i in range(0, 64, 8))),
            ]
        finally:
            batcher.close()

    results = asyncio.run(go())
    assert where and all(name.startswith("bertrec-inference") for name in where)
    for texts, (vectors, tokens) in zip(
        [one] + [many[i : i + 8] for i in range(0, 64, 8)], results, strict=True
    ):
        np.testing.assert_allclose(vectors, enc.encode(texts), atol=1e-5)
        assert tokens == sum(len(e) for e in tokenize(texts))


def test_a_bad_text_fails_its_own_request_only(tiny_model_dir: Path) -> None:
    """Texts are checked on arrival: a text that is not a str, or not valid Unicode, is
    refused at once with the Encoder's error, nothing of it queued, and requests beside it
    are answered."""
    from bertrec.errors import InputTypeError, InputValueError

    enc, batcher = _batcher(tiny_model_dir, 2)

    async def go() -> list[Any]:
        batcher.start(asyncio.get_running_loop())
        try:
            return await asyncio.gather(
                batcher.embed(["fine", "also fine"]),
                batcher.embed(["ok", "lone \ud800 surrogate"]),
                batcher.embed(["ok", 3]),  # type: ignore[list-item]
                batcher.embed(["fine too"]),
                return_exceptions=True,
            )
        finally:
            batcher.close()

    good, surrogate, number, other = asyncio.run(go())
    assert isinstance(surrogate, InputValueError) and "texts[1]" in str(surrogate)
    assert isinstance(number, InputTypeError) and "texts[1] is int" in str(number)
    np.testing.assert_allclose(good[0], enc.encode(["fine", "also fine"]), atol=1e-5)
    np.testing.assert_allclose(other[0], enc.encode(["fine too"]), atol=1e-5)
    assert batcher.queued == 0 and batcher.pending == 0


def test_two_model_runs_by_default_on_cpu_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertrec.serve import app

    monkeypatch.setattr(app.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert app.parallelism("cpu", None, None) == (2, 2)  # half the cores each
    assert app.parallelism("cuda", None, None) == (None, 2)  # the Encoder's default threads
    assert app.parallelism("cuda", 3, 1) == (3, 1)  # as given
    monkeypatch.setattr(app, "cuda_usable", lambda: True)
    assert app.parallelism("auto", None, None) == (None, 2)
    monkeypatch.setattr(app.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert app.parallelism("cpu", None, None) == (1, 1)
