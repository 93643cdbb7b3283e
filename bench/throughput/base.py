"""What every system under test is: a batch setting, a timed run, and the ``System`` that
encodes a slice of the text mix at a setting (in this process, or in a peer's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Config:
    """One batch setting: rows per batch, or bertrec's padded-token budget, or both."""

    batch_size: int | None = None
    max_batch_tokens: int | None = None

    @property
    def label(self) -> str:
        if self.batch_size is not None:
            return f"bs={self.batch_size}"
        if self.max_batch_tokens is not None:
            return f"tokens={self.max_batch_tokens}"
        return "default"


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_s: float
    embeddings: NDArray[np.float32] | None


class SystemFailed(RuntimeError):
    """A system could not be built or stopped working; the run goes on without it."""


def error_text(exc: BaseException) -> str:
    """``Type: message``, cut to a length a record and a table can hold."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 1500 else text[:1500] + " ..."


class System:
    """An encoder under test, run in this process.

    Args:
        name: short id used in the record.
        label: what the table calls it.
        info: backend, precision and whatever else identifies the configuration.
        configs: batch settings to sweep.
        common: the setting used for the common batch size and fidelity.
        fn: encodes a list of texts at a setting, returns (n, dim) float32.
    """

    def __init__(
        self,
        name: str,
        label: str,
        info: dict[str, Any],
        configs: Sequence[Config],
        common: Config,
        fn: Callable[[list[str], Config], Any],
    ) -> None:
        self.name = name
        self.label = label
        self.info = info
        self.configs = list(configs)
        self.common = common
        self._fn = fn
        self.texts: list[str] = []
        # How the system cuts batches, for the FLOPs it runs (bench.peak): "sorted" (fixed
        # rows, longest texts first), "input-order" (fixed rows) or "budget" (bertrec's).
        self.batching = "sorted"

    def prepare(self, texts: list[str]) -> None:
        self.texts = texts

    def encode(self, start: int, stop: int, config: Config, keep: bool = False) -> Run:
        batch = self.texts[start:stop]
        c0, t0 = time.process_time(), time.perf_counter()
        out = self._fn(batch, config)
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        emb = np.asarray(out, dtype=np.float32) if keep else None
        return Run(seconds, cpu_s, emb)

    def latency(self, indices: Sequence[int]) -> list[float]:
        one = Config(batch_size=1)
        times = []
        for i in indices:
            t0 = time.perf_counter()
            self._fn([self.texts[i]], one)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        pass


def ort_options(threads: int) -> Any:
    """ONNX Runtime session options with the run's thread budget (every ORT-based system)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return so


# In input order, a batch of short titles gets padded to the one paragraph among them (the
# mix has texts of 3 to 200+ tokens): several times slower in a trial run, from padding, not
# from the runtime. Sorting by character length, as sentence-transformers' encode() does, keeps
# the comparison about the runtime; fixed rows per batch remain the difference to bertrec.
BY_LENGTH = "fixed batch size, texts sorted by character length (as sentence-transformers)"
INPUT_ORDER = "fixed batch size, texts in input order (fastembed's embed does not sort)"


def by_length(texts: list[str]) -> list[int]:
    """Input positions, longest text first."""
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def unsort(rows: NDArray[np.float32], order: list[int]) -> NDArray[np.float32]:
    """``rows`` (in ``order``) back in input order."""
    out = np.empty_like(rows)
    out[np.asarray(order)] = rows
    return out
