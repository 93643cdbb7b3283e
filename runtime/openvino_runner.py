"""OpenVINO backend: the model directory's fp32 ONNX file compiled for the CPU, in bf16
where the CPU has bf16 instructions (AMX or AVX512-BF16), f32 elsewhere.

bertrec uses only ``openvino.Core`` (read_model / compile_model). OpenVINO's usage
statistics live in ``openvino.tools.ovc`` and ``openvino_telemetry``, which the model
converter calls; bertrec never imports either, so nothing is sent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import cache_dir, check_int
from bertrec.errors import ConfigError, FileFormatError, ProviderError

from .cpu import cpu_features, onednn_allows_bf16, onednn_cap
from .forking import renew_after_fork
from .manifest import Manifest, check_against_model, verify_variant

log = logging.getLogger("bertrec.runtime")

# bf16 is used by ``auto`` only where ``bertrec check`` recorded at least this min cosine.
BF16_MIN_COS = 0.9999
# The manifest key of that check (``Manifest.runtime_checks``).
BF16_CHECK = "openvino-bf16"
# Streams of the THROUGHPUT-mode model used by run_many.
STREAMS = 2


def openvino_importable() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _core() -> Any:
    import openvino as ov

    return ov.Core()


# The process that compiled a model here first. Compiling starts the CPU plugin's own
# threads, which a process forked from that one lacks: a compile there waits forever, and
# so does a run on a multi-stream model compiled before the fork (``run``).
_compiled_in_pid: int | None = None


def _forked_after_compile() -> bool:
    return _compiled_in_pid is not None and _compiled_in_pid != os.getpid()


def set_shape_cache(capacity: int) -> None:
    """Cap how many input shapes' compiled kernels OpenVINO's CPU plugin keeps (5000 by
    default), for every model compiled after this call in this process (the runtime's
    ``Core`` is shared). A server meets a new (rows, width) shape with almost every batch;
    a few dozen keep its memory flat.

    Raises:
        ConfigError: ``capacity`` is not a positive int.
        ProviderError: OpenVINO is not installed.
    """
    capacity = check_int(capacity, "capacity")
    if not openvino_importable():
        raise ProviderError("set_shape_cache needs OpenVINO: pip install 'bertrec[openvino]'")
    _core().set_property("CPU", {"CPU_RUNTIME_CACHE_CAPACITY": capacity})


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 (AMX-BF16 or AVX512-BF16 in its flags), oneDNN's
    ISA cap (``ONEDNN_MAX_CPU_ISA``) allows bf16 kernels, and OpenVINO reports bf16.

    The flags are read first, so a CPU without bf16 never pays for starting OpenVINO here;
    under a cap below AVX512_CORE_BF16 OpenVINO still reports bf16 but cannot compile it.
    """
    if not openvino_importable():
        return False
    features = cpu_features()
    if (features.known and not features.bf16) or not onednn_allows_bf16(onednn_cap()):
        return False
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """Runs padded batches through an OpenVINO compiled model, one infer request a thread."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        precision: str,
        threads: int,
        verify: bool = True,
        streams: int = 1,
    ) -> None:
        if not openvino_importable():
            raise ProviderError(
                "backend='openvino' needs OpenVINO: pip install 'bertrec[openvino]'"
            )
        if precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(
                f"the OpenVINO backend runs bf16 or fp32 (from model.fp32.onnx), not "
                f"{precision!r}; use backend='onnxruntime' for int8/fp16"
            )
        if precision == "bf16" and not cpu_has_bf16():
            raise ConfigError(
                "precision='bf16' asked for, but this CPU has no bf16 instructions "
                "(AMX-BF16 or AVX512-BF16); use precision='fp32'"
            )
        if "fp32" not in manifest.variants:
            raise ConfigError(f"{str(model_dir)!r} has no fp32 variant for OpenVINO to read")
        variant = manifest.variants["fp32"]
        t0 = time.perf_counter()
        path = verify_variant(model_dir, variant, check_hash=verify)
        t1 = time.perf_counter()
        self.precision = "bf16" if precision == "auto" and cpu_has_bf16() else precision
        if self.precision == "auto":
            self.precision = "fp32"
        self.threads = threads
        self.streams = streams
        self.device = "cpu"
        self.providers = ["OpenVINO CPU"]
        self.io_binding = True  # outputs go to preallocated per-thread tensors
        self.dim = manifest.dim
        if _forked_after_compile():
            raise ProviderError(
                f"OpenVINO compiled a model in process {_compiled_in_pid}, which then forked "
                f"this one ({os.getpid()}); a compile here would wait forever for threads that "
                "stayed there. Make the Encoder before forking, start processes with "
                "multiprocessing's 'spawn' or 'forkserver' method, or use backend='onnxruntime'"
            )
        core = _core()
        # Compiled blobs are cached per model file, so the second start skips compilation.
        cache = cache_dir("openvino", variant.sha256[:16])
        # "hit": the compile wrote no new blob (it read one); "miss": it wrote one; "off".
        self.cache = "off"
        blobs: set[Path] = set()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            blobs = set(cache.glob("*.blob"))
            core.set_property({"CACHE_DIR": str(cache)})
            self.cache = "on"
        except OSError as exc:
            log.debug("OpenVINO model cache off (%s)", exc)
        self._path = path
        try:
            # One stream runs every thread on one request at a time; with more, each of
            # ``streams`` concurrent callers gets a stream of ``threads`` threads.
            self.compiled = (
                self._compile("LATENCY")
                if streams == 1
                else self._compile("THROUGHPUT", NUM_STREAMS=streams, total=threads * streams)
            )
            # With streams, a call made alone runs on a one-stream model of all the
            # threads, as a bare encode([text]) uses (a server's lone request).
            self._whole = (
                None if streams == 1 else self._compile("LATENCY", total=threads * streams)
            )
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable models
            raise FileFormatError(
                f"OpenVINO cannot load {str(path)!r} ({str(exc).splitlines()[0][:200]}); "
                "re-export the model"
            ) from exc
        self.input_names = tuple(p.any_name for p in self.compiled.inputs)
        check_against_model(
            manifest,
            path,
            self.input_names,
            {
                name: [d.get_length() if d.is_static else None for d in o.get_partial_shape()]
                for o in self.compiled.outputs
                for name in o.get_names()
            },
        )
        self._output = self.compiled.output(0)
        self.startup = {"verify_s": t1 - t0, "session_s": time.perf_counter() - t1}
        if self.cache == "on":
            self.cache = "miss" if set(cache.glob("*.blob")) - blobs else "hit"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._streams: Any = None  # THROUGHPUT-mode model, compiled on first run_many
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """In a forked child (``forking``): a new lock, in case a thread of the parent held
        it (making its first infer request) at the fork."""
        self._lock = threading.Lock()

    def _compile(self, hint: str, total: int | None = None, **extra: Any) -> Any:
        global _compiled_in_pid
        core = _core()
        _compiled_in_pid = _compiled_in_pid or os.getpid()
        config = {
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": total or self.threads,
            "PERFORMANCE_HINT": hint,
            **extra,
        }
        return core.compile_model(core.read_model(str(self._path)), "CPU", config)

    def run(self, feeds: dict[str, NDArray[np.int64]], alone: bool = False) -> NDArray[np.float32]:
        """Embeddings of one padded batch, written into a per-thread preallocated buffer
        that the next call on this thread overwrites: copy it out. ``alone``: the caller
        knows no other call runs now (with streams, this one then uses every thread)."""
        import openvino as ov

        local = self._local
        if getattr(local, "request", None) is None:
            with self._lock:  # creating requests is not documented as thread-safe
                local.request = self.compiled.create_infer_request()
                local.whole = (
                    local.request if self._whole is None else self._whole.create_infer_request()
                )
            local.buffer = np.empty((0, self.dim), dtype=np.float32)
        n = len(feeds["input_ids"])
        if len(local.buffer) < n:
            local.buffer = np.empty((max(n, 2 * len(local.buffer)), self.dim), dtype=np.float32)
        out = local.buffer[:n]
        # A call made while no other runs (``alone``) takes every thread (the one-stream
        # model); concurrent calls get a stream each. In a child forked after the compile
        # every call runs on the one-stream model: measured on OpenVINO 2026.4, an infer
        # request of a THROUGHPUT-mode model, sync or async, waits forever there for the
        # streams' threads, which stayed in the parent; a LATENCY-mode model's runs.
        req = local.whole if alone or _forked_after_compile() else local.request
        req.set_output_tensor(0, ov.Tensor(out, shared_memory=True))
        req.infer({k: v for k, v in feeds.items() if k in self.input_names}, share_inputs=True)
        return out

    def run_many(
        self,
        batches: Iterable[tuple[NDArray[np.intp], dict[str, NDArray[np.int64]]]],
        out: NDArray[np.float32],
    ) -> None:
        """Run several batches at once and write each one's rows of ``out``.

        With two or more threads the model is compiled a second time in OpenVINO's
        THROUGHPUT mode with two streams (half the threads each), and batches go through
        an ``AsyncInferQueue`` of two requests: while one stream finishes a batch the
        other starts the next, which measured faster for many batches
        (bench/openvino_async.py). Single batches keep the LATENCY-mode model, which uses
        every thread on one request. One queue per thread, like the infer requests.
        """
        import openvino as ov

        if self.threads < 2 or _forked_after_compile():  # no streams there (``run``)
            for rows, feeds in batches:
                out[rows] = self.run(feeds)
            return
        local = self._local
        if getattr(local, "queue", None) is None:
            with self._lock:
                if self._streams is None:
                    self._streams = self._compile("THROUGHPUT", NUM_STREAMS=STREAMS)
                local.queue = ov.AsyncInferQueue(self._streams, STREAMS)
                local.queue.set_callback(_copy_rows)
        queue = local.queue
        try:
            for rows, feeds in batches:
                inputs = {k: v for k, v in feeds.items() if k in self.input_names}
                queue.start_async(inputs, (out, rows))
        finally:
            queue.wait_all()


def _copy_rows(request: Any, job: tuple[NDArray[np.float32], NDArray[np.intp]]) -> None:
    out, rows = job
    out[rows] = request.get_output_tensor(0).data
