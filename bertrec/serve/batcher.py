"""The dynamic batcher: one per model. Concurrent requests' texts, checked on arrival on
the event loop, wait in one bounded queue; inference threads take them in windows,
tokenize each window (while the other thread runs its own), run it as batches of similar
lengths within the token budget (``Encoder.encode_tokens``) and scatter the rows back to
each request, in order.

The queue holds one segment per request, not one item per text, so a request of one text
and a request of a thousand cost the scheduler the same few operations; a request longer
than a window is split across windows like any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import check_int
from bertrec.errors import ConfigError
from bertrec.runtime.encoder import Encoder
from bertrec.serve.errors import ApiError, Overloaded

log = logging.getLogger("bertrec.serve")

# A window (one worker's turn) holds up to this many budgets of real tokens: enough texts
# to group by length, not so many that new requests wait long behind it
# (bench/serve_load.py measures the latency it gives).
WINDOW_BUDGETS = 4
# One more batch costs about as much as this share of the token budget in padding (4
# tokens of a CPU's 1024): windows are cut into batches of similar lengths where the
# padding saved is worth more. Two inference threads on 10- and 16-text windows (MiniLM
# int8, 2 cores) ran 1.09x faster with 1/64 than with the earlier 1/16, which cut fewer,
# more padded batches; 1/256 then beat 1/64 in every round of a one-off A/B of two
# servers (not a bench/ script; 6 interleaved rounds on a quiet machine): c=32 +2%, c=8
# +2.6%, 64-text requests +1.8%; 1/1024 lost to 1/256 at c=32 (-2%) and c=8 (-1%).
# bench/serve_load.py's engine line at c=32 runs both this and the earlier share.
CALL_COST_SHARE = 1 / 256
# On CUDA a call costs far more against its budget: a one-text call of MiniLM fp16 took
# 1.2-1.4 ms on an H200, where full batches ran 34,000-45,000 texts a second. The engine
# alone on windows of 16 / 64 / 256 texts, cut at 1/4 of CUDA's 16,384 tokens per call,
# ran 1.3-2.6x / 1.6x / 1.7x faster than at 1/64; 1/10 and a whole budget per call were
# within run-to-run noise of 1/4 (0.8-1.2x; bench/gpu_check.py, records
# gpu-check-20261130T215053Z and gpu-check-20261130T220521Z).
CUDA_CALL_COST_SHARE = 1 / 4
# Texts are tokenized by the inference thread that runs them, a window at a time, not on
# the event loop: one short text costs ~35 us to tokenize (MiniLM's WordPiece, ~100
# characters), a quarter of the loop's work per request, and a window of more than a few
# texts is tokenized with the GIL let go (``Encoder.tokenize``), so the loop keeps
# answering meanwhile. The loop's CPU per request at c=32 went from 0.18-0.21 ms to
# 0.10 ms; against tokenizing on arrival, in a one-off A/B of two servers (not a bench/
# script; 2 cores, interleaved, 4 rounds): c=32 +4%, c=8 +1%, c=128 and 64-text requests
# within 1%, c=1 within its noise. Until then the queue counts a text's tokens by this
# estimate (it sizes windows only; batches use the real lengths):
CHARS_PER_TOKEN = 4
# The tokenizers library runs a batch on a thread pool of every core unless this variable
# says no: beside two inference threads that already keep the cores busy, its threads
# only contend with them (the same A/B with the pool on: c=32 -3%, noisy).
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"
# The longest the engine waits, after a window, for the clients it answered to come back
# (a loopback round trip through Python clients takes a few milliseconds).
DEFAULT_MAX_WAIT_MS = 5.0
# Texts that may wait before requests are refused: four requests of the most inputs one
# may hold (schemas.Limits), a few seconds of work on a small CPU.
DEFAULT_MAX_QUEUE = 8192
WARMUP_TEXTS = ("warm up", "a warm-up sentence of a few more words to run a longer shape " * 3)

# Called with (requests, texts, tokens, seconds) of each window.
BatchObserver = Callable[[int, int, int, float], None]


class _Job:
    """One request's texts: filled in by the inference thread, awaited on the loop.
    ``lengths`` are estimated token counts (the queue's accounting); ``tokens`` adds up
    the real ones as the texts are tokenized."""

    __slots__ = ("texts", "lengths", "total", "out", "future", "left", "cancelled", "tokens")

    def __init__(
        self,
        texts: list[str],
        lengths: NDArray[np.int64],
        dim: int,
        future: asyncio.Future[None],
    ) -> None:
        self.texts = texts
        self.lengths = lengths
        self.total = int(lengths.sum())
        self.out = np.empty((len(texts), dim), dtype=np.float32)
        self.future = future
        self.left = len(texts)
        self.cancelled = False
        self.tokens = 0


class _Window:
    """One worker's turn: ``parts``, each a request and the rows ``[start, stop)`` of it
    that this window runs, and ``tokens``, their estimated tokens as ``_cut`` counted
    them (running until the window is answered, then taken off the same count)."""

    __slots__ = ("parts", "tokens")

    def __init__(self, parts: list[tuple[_Job, int, int]], tokens: int) -> None:
        self.parts = parts
        self.tokens = tokens


class Batcher:
    """Merges concurrent requests' texts into token-budget batches for one ``Encoder``.

    Scheduling: a free worker takes the next window at once while another worker is
    running (every core stays busy). When none is, it makes one exception: right after
    the last window ended (at most ``max_wait_s`` after), while fewer requests are queued
    than were in flight during it, it waits for the rest. Clients answered together come
    back together, and one full window serves them all instead of a lone request running
    ahead of the others. An engine idle for longer than ``max_wait_s`` never waits, nor
    does one whose queue holds a full window.

    A window takes requests (whole, unless one is longer than a window) until it holds
    its worker's share of the work in the server: the queued texts' tokens and those of
    the windows running, over the workers. The rest waits for the next worker to free.
    Without the share, a worker freed beside a short window took every request queued,
    and the other, soon free, took the few that came back meanwhile: under closed-loop
    load the windows split into a long one and a run of short ones, whose clients went
    round faster than the long one's. With it, in one-off paired runs of two servers
    (2 cores, interleaved rounds; not a bench/ script), p99 fell in 15 of 16 rounds at
    concurrency 32 (114 against 158 ms, medians) and at 8 (46 against 55 ms), and at 32
    was 107 against 134 ms over 20 more rounds against the code before it. Throughput
    did not move: 1.02x, 1.03x and 1.00x (the 20 rounds); 64-text requests at
    concurrency 4 and single texts at 128, 0.99x and 0.98x (10 rounds), within the noise.

    A window is cut into batches of similar lengths (``length_groups``): a few dozen texts
    of mixed lengths padded as one batch would spend most of their time on padding.

    Args:
        encoder: the model.
        max_wait_s: the longest an idle engine waits, after a window, for the clients it
            answered to come back.
        max_queue: requests are refused (``Overloaded``, 503) while this many texts or
            more wait; memory stays bounded by it plus one request's inputs.
        workers: inference threads, each running one window at a time.
        observe: called with (requests, texts, tokens, seconds) after every window, from
            an inference thread.
    """

    def __init__(
        self,
        encoder: Encoder,
        max_wait_s: float = DEFAULT_MAX_WAIT_MS / 1e3,
        max_queue: int = DEFAULT_MAX_QUEUE,
        *,
        workers: int = 1,
        observe: BatchObserver | None = None,
    ) -> None:
        self.encoder = encoder
        self.workers = workers
        self.call_tokens = call_tokens(encoder.device, encoder.max_batch_tokens)
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.window_tokens = WINDOW_BUDGETS * encoder.max_batch_tokens
        self._observe = observe
        name = encoder.default_prompt_name
        self._prefix = encoder.prompts.get(name, "") if name else ""
        # One lock. Each worker sleeps on a signal of its own, so that a request to an
        # idle engine wakes worker 0 alone (with one shared condition every worker woke,
        # and the others went back to sleep after taking the lock and the GIL on the
        # request's critical path). A worker is signalled after the lock is let go, not
        # under it as a threading.Condition must be, so it never wakes to find the lock
        # still held; and it waits in C (``SimpleQueue.get``), not in Condition's Python.
        # With this and length_groups' one-row case, a lone request's round trip with the
        # model call answered at once (bench/serve_engine.py's request_path_cost) went from
        # ~310 to ~270 us, against ~240 us for the naive server's thread hop (one-off
        # interleaved runs, 2 cores).
        self._lock = threading.Lock()  # guards the queue and the counters below
        self._signals: list[queue.SimpleQueue[None]] = [queue.SimpleQueue() for _ in range(workers)]
        self._sleeping = [False] * workers  # waiting for a signal
        self._queue: deque[tuple[_Job, int]] = deque()
        self._waiting = 0  # texts admitted and not yet taken into a window
        self._queued_tokens = 0
        # The most requests in flight since the last window was cut: how many clients may
        # come back together once it is answered.
        self._peak = 0
        self._free_since = 0.0  # when the engine last had nothing running
        self._busy = 0  # workers running a window
        self._running_tokens = 0  # estimated tokens of the windows running
        self._warmed = 0  # workers done warming up
        self._wakeups = [0] * workers  # times each worker woke from waiting for work
        self._windows = [0] * workers  # windows each worker ran
        self._closing = False
        self._pending = 0  # requests admitted and not answered (changed on the loop only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()

    # -- state read by metrics and health ---------------------------------------------------

    @property
    def queued(self) -> int:
        """Texts admitted and not yet running."""
        return self._waiting

    @property
    def pending(self) -> int:
        """Requests admitted and not yet answered."""
        return self._pending

    def worker_stats(self) -> list[dict[str, int]]:
        """For each inference worker: ``wakeups`` (times it woke from waiting for work)
        and ``windows`` (windows it ran, warm-up not counted)."""
        with self._lock:
            return [
                {"wakeups": w, "windows": n}
                for w, n in zip(self._wakeups, self._windows, strict=True)
            ]

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the inference threads; ``ready`` is set once each has warmed up. Turns
        the tokenizers library's own thread pool off for the process (the environment
        variable ``TOKENIZERS_PARALLELISM``), unless it is set already."""
        self._loop = loop
        os.environ.setdefault(TOKENIZERS_PARALLELISM, "false")
        for i in range(self.workers):
            thread = threading.Thread(
                target=self._main, args=(i,), name=f"bertrec-inference-{i}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 30.0) -> None:
        """Refuse new requests, finish the queued ones, stop the thread."""
        with self._lock:
            self._closing = True
            wake = self._sleepers()
        self._signal(wake)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- the event-loop side --------------------------------------------------------------

    async def embed(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], int]:
        """The vectors of ``texts`` (as ``Encoder.encode`` gives them) and their tokens.

        Raises:
            Overloaded: the queue is full, or the server is shutting down.
            InputTypeError / InputValueError: as ``Encoder.encode`` (a text that is not a
                str, or not valid Unicode).
        """
        loop = self._loop
        if loop is None or self._closing:
            raise Overloaded("the server is shutting down; retry on another replica")
        items = self.encoder.check_texts(texts)
        if self._prefix:
            items = [self._prefix + t for t in items]
        n = len(items)
        top = self.encoder.max_length
        lengths = np.fromiter(
            (min(top, 2 + len(t) // CHARS_PER_TOKEN) for t in items), dtype=np.int64, count=n
        )
        job = _Job(items, lengths, self.encoder.manifest.dim, loop.create_future())
        with self._lock:
            if self._waiting >= self.max_queue:
                raise Overloaded(
                    f"the queue holds {self._waiting} texts (limit {self.max_queue}); "
                    "retry after a second"
                )
            self._waiting += n
            self._pending += 1
            self._peak = max(self._peak, self._pending)
            self._queue.append((job, 0))
            self._queued_tokens += job.total
            # Whichever worker is free; an idle engine's work goes to worker 0.
            wake = self._sleepers(None if self._busy else 0)
        self._signal(wake)
        try:
            await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # the scheduler drops what has not run yet
            raise
        finally:
            self._pending -= 1
        dim = self.encoder.dim
        out = job.out if dim == job.out.shape[1] else np.ascontiguousarray(job.out[:, :dim])
        return out, job.tokens

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """``embed`` for a worker thread (the ``Recommender``'s free texts): blocks until
        the texts have gone through the batcher like any request's."""
        if self._loop is None:
            raise Overloaded("the batcher is not running")
        future = asyncio.run_coroutine_threadsafe(self.embed(list(texts)), self._loop)
        return future.result()[0]

    def _sleepers(self, only: int | None = None) -> list[int]:
        """The waiting workers (or worker ``only`` if it waits), marked awake: the caller
        holds the lock, and signals them (``_signal``) once it has let the lock go, so a
        worker never wakes to find the lock still held."""
        if only is not None:
            if not self._sleeping[only]:
                return []
            self._sleeping[only] = False
            return [only]
        woken = [w for w, asleep in enumerate(self._sleeping) if asleep]
        for w in woken:
            self._sleeping[w] = False
        return woken

    def _signal(self, workers: list[int]) -> None:
        for w in workers:
            self._signals[w].put(None)

    def _sleep(self, worker: int, timeout: float | None = None) -> None:
        """Wait (the caller holds the lock; it is let go meanwhile) until signalled or
        ``timeout``. A signal that comes after a timeout stays queued and makes the next
        wait return at once: the caller looks at the queue again either way."""
        self._sleeping[worker] = True
        self._lock.release()
        try:
            self._signals[worker].get(timeout=timeout)
        except queue.Empty:
            pass
        finally:
            self._lock.acquire()
            self._sleeping[worker] = False
        self._wakeups[worker] += 1

    def _finish(self, jobs: list[_Job], error: BaseException | None) -> None:
        for job in jobs:
            if not job.future.done():
                if error is None:
                    job.future.set_result(None)
                else:
                    job.future.set_exception(error)

    # -- the inference thread -------------------------------------------------------------

    def _main(self, worker: int) -> None:
        self._warm_up()
        with self._lock:
            self._warmed += 1
            if self._warmed == self.workers:
                self.ready.set()
        while True:
            window = self._next_window(worker)
            if window is None:
                return
            self._run(window)

    def _warm_up(self) -> None:
        """A short text and a full batch on this thread: backends keep per-thread state
        (OpenVINO's infer requests), made now rather than on a client's request."""
        try:
            short, long = self.encoder.tokenize(list(WARMUP_TEXTS))
            self.encoder.encode_tokens([short])
            self.encoder.encode_tokens([long] * (self.encoder.max_batch_tokens // len(long)))
        except Exception:  # a model that cannot run shows it on the first request too
            log.exception("warm-up failed")

    def _next_window(self, worker: int) -> _Window | None:
        """Wait for work by the scheduling rule, then cut a window off the queue. An idle
        engine's work goes to worker 0, the others join while a window runs: a lone
        request always meets the same thread (and its backend state, warm) instead of
        the workers taking turns."""
        with self._lock:
            while True:
                if not self._queue or (worker and not self._busy and not self._closing):
                    if self._closing and not self._queue:
                        return None
                    self._sleep(worker)
                    continue
                if self._closing or self._queued_tokens >= self.window_tokens:
                    break
                # Another window running: take what is here and keep every core busy.
                if self._busy or len(self._queue) >= self._peak:
                    break
                left = self._free_since + self.max_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._sleep(worker, left)
            self._windows[worker] += 1
            window = self._cut()
            wake = self._sleepers() if self._queue else []  # the rest is another worker's
        self._signal(wake)
        return window

    def _cut(self) -> _Window:
        """Up to ``window_tokens`` tokens (as estimated on arrival) off the front of the
        queue (at least one text), and no more than this worker's share of the queue while
        others are free, so they all get work; a request that does not fit is split and
        its rest stays first in line. No further request joins once the window holds
        this worker's share of the work queued and running (the class docstring)."""
        parts: list[tuple[_Job, int, int]] = []
        used = 0
        free = self.workers - self._busy
        limit = min(self.window_tokens, -(-self._queued_tokens // free))
        share = -(-(self._queued_tokens + self._running_tokens) // self.workers)
        while self._queue:
            job, start = self._queue[0]
            n = len(job.texts)
            if parts and used >= share:
                break
            if job.cancelled:
                self._queue.popleft()
                self._waiting -= n - start
                self._queued_tokens -= int(job.lengths[start:].sum())
                continue
            room = limit - used
            if start == 0 and job.total <= room:  # the whole request fits
                take, tokens = n, job.total
            else:
                lengths = job.lengths[start:]
                if int(lengths[0]) > room and parts:
                    break
                take = int(np.searchsorted(np.cumsum(lengths), room, side="right"))
                take = max(take, 1)
                tokens = int(lengths[:take].sum())
            stop = start + take
            parts.append((job, start, stop))
            used += tokens
            self._waiting -= take
            self._queued_tokens -= tokens
            if stop < n:
                self._queue[0] = (job, stop)
                break
            self._queue.popleft()
        self._peak = self._pending
        self._busy += 1
        self._running_tokens += used
        return _Window(parts, used)

    def _run(self, window: _Window) -> None:
        parts = window.parts
        texts: list[str] = []
        for job, start, stop in parts:
            texts.extend(job.texts[start:stop])
        t0 = time.perf_counter()
        lengths = np.zeros(0, dtype=np.int64)
        done: list[_Job] = []
        error: BaseException | None = None
        # One request in the whole server: its batch may take every thread (a bare
        # encode([text])'s speed); under load each worker keeps to its own stream.
        alone = len(parts) == 1 and self._pending <= 1 and self._busy == 1
        try:
            encodings = self.encoder.tokenize(texts)  # checked on arrival (embed)
            lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(texts))
            out = np.empty((len(texts), self.encoder.manifest.dim), dtype=np.float32)
            for rows in length_groups(lengths, self.encoder.max_batch_tokens, self.call_tokens):
                batch = [encodings[i] for i in rows]
                out[rows] = self.encoder.encode_tokens(batch, alone=alone)
        except Exception as exc:  # answered as a 500 to every request of the window
            log.exception("inference failed")
            error = ApiError(500, f"inference failed: {exc}", "inference_failed", "server_error")
        seconds = time.perf_counter() - t0
        with self._lock:
            row = 0
            for job, start, stop in parts:
                if error is not None:
                    job.cancelled = True  # the rest of a split request is not run for nothing
                    done.append(job)
                    continue
                job.out[start:stop] = out[row : row + stop - start]
                job.tokens += int(lengths[row : row + stop - start].sum())
                row += stop - start
                job.left -= stop - start
                if job.left == 0:
                    done.append(job)
            self._busy -= 1
            self._running_tokens -= window.tokens
            if not self._busy:
                self._free_since = time.monotonic()
            # Work left (an idle engine's for worker 0), or the end.
            wake = self._sleepers() if self._queue or self._closing else []
        self._signal(wake)
        if done and self._loop is not None:
            self._loop.call_soon_threadsafe(self._finish, done, error)
        if self._observe is not None:
            self._observe(len(parts), len(texts), int(lengths.sum()), seconds)

    def describe(self) -> dict[str, Any]:
        """The settings, for logs and ``/v1/models``."""
        return {
            "max_batch_tokens": self.encoder.max_batch_tokens,
            "window_tokens": self.window_tokens,
            "max_wait_ms": self.max_wait_s * 1e3,
            "max_queue": self.max_queue,
            "workers": self.workers,
        }


def call_tokens(device: str, max_batch_tokens: int) -> int:
    """What one more batch call costs, in padded tokens, on ``device`` (``cpu`` or
    ``cuda``, as ``Encoder.device``) with this token budget.

    Raises:
        ConfigError: another device, or a budget that is not an int >= 1.
    """
    budget = check_int(max_batch_tokens, "max_batch_tokens")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu' or 'cuda' (an Encoder's device), got {device!r}")
    share = CUDA_CALL_COST_SHARE if device == "cuda" else CALL_COST_SHARE
    return max(1, int(budget * share))


def length_groups(
    lengths: NDArray[np.int64], max_batch_tokens: int, call_tokens: int
) -> list[NDArray[np.intp]]:
    """Rows of one window cut into batches of similar lengths, longest first.

    A window of a few dozen texts of mixed lengths padded as one batch (or cut only by the
    token budget) spends most of its time on padding; cut at every length, it pays a
    model call per text. With the rows sorted longest first, the cut is the one of least
    cost, counting each batch's padded tokens plus ``call_tokens`` for each call, with no
    batch over ``max_batch_tokens`` (unless a single text is): a dynamic program over the
    cut points, one NumPy step per row (about 1 ms for 128 texts). It replaced a greedy
    cut (a new batch wherever the rest of the window would pay more padding than a call)
    that cut large windows of distinct lengths into many tiny batches.
    """
    if len(lengths) == 1:  # a lone request's window: the program below costs ~12 us
        return [np.zeros(1, dtype=np.intp)]
    order = np.argsort(-lengths, kind="stable")
    widths = lengths[order].astype(np.int64)
    n = len(widths)
    best = np.zeros(n + 1, dtype=np.int64)  # least cost of the first i rows
    start = np.zeros(n + 1, dtype=np.int64)  # where the last batch of that cut starts
    for i in range(1, n + 1):
        rows = i - np.arange(i)  # a batch of rows j..i-1 for each start j
        padded = rows * widths[:i]  # its width is its first (longest) row's
        cost = best[:i] + padded + call_tokens
        cost[(padded > max_batch_tokens) & (rows > 1)] = np.iinfo(np.int64).max // 2
        j = int(np.argmin(cost))  # on a tie the earliest start: fewer calls
        best[i], start[i] = cost[j], j
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(int(start[cuts[-1]]))
    cuts.reverse()
    return [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
