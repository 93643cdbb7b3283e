"""ONNX Runtime backend: one session, optional IO binding into a reused per-thread buffer.

On the CPU the graph ONNX Runtime optimized at a session's first start is kept in bertrec's
cache and loaded, with optimizations off, on later starts (bench/startup.py measures it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from bertrec.core import atomic_write_json, cache_dir, sha256_file
from bertrec.errors import ConfigError, FileFormatError, ProviderError

from .cpu import cpu_features
from .forking import renew_after_fork
from .manifest import PRECISIONS, Manifest, Variant, check_against_model, verify_variant
from .providers import CPU, CUDA, cuda_usable

log = logging.getLogger("bertrec.runtime")

# bertrec.core.cache_dir(SESSION_CACHE, key) holds one optimized graph and its meta.json.
SESSION_CACHE = "onnxruntime"
# Variants whose optimized graph is cached: the per-token int8 graph's optimization (constant
# folding, shared quantization of Q/K/V inputs) costs more than reading the result back; an
# fp32 graph optimizes about as fast as its cached copy loads and is hashed (bench/startup.py).
CACHED_PRECISIONS = ("int8",)
OPTIMIZED_NAME = "model.optimized.onnx"
META_NAME = "meta.json"


def pick_variant(manifest: Manifest, model_dir: Path, precision: str, preferred: str) -> str:
    """``precision``, or for ``auto`` the preferred variant when present, else fp32."""
    variants = manifest.variants
    if precision == "auto":
        return preferred if preferred in variants else "fp32"
    if precision not in PRECISIONS:
        raise ConfigError(
            f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)} "
            "(or bf16 on the OpenVINO backend)"
        )
    if precision not in variants:
        raise ConfigError(
            f"precision {precision!r} is not in {str(model_dir)!r} (it has "
            f"{', '.join(sorted(variants))}); add it with `bertrec quantize "
            f"{model_dir} --precision {precision}` or pick another"
        )
    return precision


class OrtRunner:
    """Runs padded batches through an ONNX Runtime session on CPU or CUDA."""

    def __init__(
        self,
        model_dir: Path,
        manifest: Manifest,
        precision: str,
        device: str,
        io_binding: bool | None,
        threads: int,
        verify: bool = True,
        streams: int = 1,
    ) -> None:
        self.threads = threads
        self.output = manifest.output_name
        self.dim = manifest.dim
        available = ort.get_available_providers()
        if device == "cuda" and not cuda_usable():
            raise ProviderError(
                f"device='cuda' asked for, but CUDA does not start here (ONNX Runtime lists "
                f"{available}; a listed provider can still lack its GPU or CUDA/cuDNN "
                "libraries); install onnxruntime-gpu with CUDA 13 and cuDNN 9, or use device='cpu'"
            )
        use_cuda = device == "cuda" or (device == "auto" and cuda_usable())
        self.device = "cuda" if use_cuda else "cpu"
        self.precision = pick_variant(
            manifest, model_dir, precision, "fp16" if use_cuda else "int8"
        )
        variant = manifest.variants[self.precision]
        t0 = time.perf_counter()
        path = verify_variant(model_dir, variant, check_hash=verify)
        t1 = time.perf_counter()
        providers = [CUDA, CPU] if use_cuda else [CPU]
        # "hit": the cached optimized graph was loaded; "miss": optimized now and cached;
        # "off": not cached (CUDA, a variant not in CACHED_PRECISIONS, or no writable cache).
        self.cache = "off"
        try:
            if use_cuda or self.precision not in CACHED_PRECISIONS:
                self.session = ort.InferenceSession(str(path), self._options(), providers=providers)
            else:
                self.session = self._cpu_session(path, variant, verify)
        except Exception as exc:  # ORT raises its own types for bad files and providers
            if use_cuda:
                raise ProviderError(f"CUDA provider failed to start: {exc}") from exc
            raise FileFormatError(
                f"ONNX Runtime cannot load {str(path)!r} ({str(exc).splitlines()[0][:200]}); "
                "the file is damaged: re-export the model"
            ) from exc
        if use_cuda and self.session.get_providers()[0] != CUDA:
            raise ProviderError(
                f"the CUDA provider did not start (available: {available}); check the "
                "CUDA/cuDNN install or use device='cpu'"
            )
        self.providers: list[str] = list(self.session.get_providers())
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        check_against_model(
            manifest,
            path,
            self.input_names,
            {o.name: o.shape for o in self.session.get_outputs()},
        )
        self.io_binding = use_cuda if io_binding is None else bool(io_binding)
        # With streams (concurrent callers of ``threads`` threads each), a call made alone
        # runs on a second session of every stream's threads, as a bare encode([text])
        # does (one short text, MiniLM int8, timed once by hand: ~1.3 ms on 2 threads
        # against ~1.8 ms on one). Built from the optimized graph the first session cached.
        self._path, self._variant = path, variant
        self._whole = (
            self._cpu_session_of(threads * streams) if streams > 1 and not use_cuda else None
        )
        # ``threads`` batches side by side, one thread each (``run_many``).
        self.side_by_side = not use_cuda and threads >= 2
        self._local = threading.local()
        self._lock = threading.Lock()
        self._side_by_side: tuple[ort.InferenceSession, ThreadPoolExecutor] | None = None
        renew_after_fork(self)
        self.startup = {"verify_s": t1 - t0, "session_s": time.perf_counter() - t1}

    def _options(self, threads: int | None = None) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def _cpu_session(
        self, path: Path, variant: Variant, verify: bool, threads: int | None = None
    ) -> ort.InferenceSession:
        """A CPU session of ``threads`` (default: the runner's) intra-op threads: from the
        cached optimized graph when there is a good one, else from ``path``, writing the
        optimized graph to the cache on the way. The cache is never needed: an unwritable,
        stale or damaged one costs a debug line and the optimization."""
        entry = session_cache_dir(variant)
        source = _file_stamp(path)
        cached = _load_cached(entry, variant, source, verify, lambda: self._options(threads))
        if cached is not None:
            self.cache = "hit"
            return cached
        try:
            entry.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.debug("ONNX Runtime session cache off: cannot create %s (%s)", entry, exc)
            return ort.InferenceSession(str(path), self._options(threads), providers=[CPU])
        tmp = entry / f".{OPTIMIZED_NAME}.{os.getpid()}.{threading.get_ident()}.tmp"
        so = self._options(threads)
        so.optimized_model_filepath = str(tmp)
        try:
            session = ort.InferenceSession(str(path), so, providers=[CPU])
        except Exception as exc:  # e.g. the file could not be written: start without it
            tmp.unlink(missing_ok=True)
            log.debug("ONNX Runtime session cache off: %s", str(exc).splitlines()[0][:200])
            return ort.InferenceSession(str(path), self._options(threads), providers=[CPU])
        try:
            meta = {
                "variant_sha256": variant.sha256,
                "source": source,
                "onnxruntime": ort.__version__,
                "cpu": cpu_features().key(),
                "size": tmp.stat().st_size,
                "sha256": sha256_file(tmp),
            }
            os.replace(tmp, entry / OPTIMIZED_NAME)
            atomic_write_json(entry / META_NAME, meta)
            self.cache = "miss"
        except Exception as exc:  # OSError, OutputError: the session is fine without it
            tmp.unlink(missing_ok=True)
            log.debug("ONNX Runtime session cache not written to %s (%s)", entry, exc)
        return session

    def run(self, feeds: dict[str, NDArray[np.int64]], alone: bool = False) -> NDArray[np.float32]:
        """Embeddings of one padded batch. With IO binding the result is a view of a
        per-thread buffer that the next call on this thread overwrites: copy it out.
        ``alone``: the caller knows no other call runs now (with streams, this one then
        uses every stream's threads)."""
        session = self._whole if alone and self._whole is not None else self.session
        whole = session is not self.session
        if not self.io_binding:
            result = session.run([self.output], feeds)[0]
            return np.asarray(result, dtype=np.float32)
        n = len(feeds["input_ids"])
        local = self._local
        # One IOBinding per session and one output buffer per thread: IOBinding is not
        # thread-safe.
        if getattr(local, "buffer", None) is None:
            local.bindings = {}
            local.buffer = np.empty((0, self.dim), dtype=np.float32)
        binding = local.bindings.get(whole)
        if binding is None:
            binding = local.bindings[whole] = session.io_binding()
        if len(local.buffer) < n:
            local.buffer = np.empty((max(n, 2 * len(local.buffer)), self.dim), dtype=np.float32)
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        out = local.buffer[:n]
        # The output goes straight into host memory: on CUDA, ORT copies the small
        # [batch, dim] result there; on CPU the kernel writes it in place.
        binding.bind_output(
            name=self.output,
            device_type="cpu",
            device_id=0,
            element_type=np.float32,
            shape=out.shape,
            buffer_ptr=out.ctypes.data,
        )
        session.run_with_iobinding(binding)
        return out

    def run_many(
        self,
        batches: Iterable[tuple[NDArray[np.intp], dict[str, NDArray[np.int64]]]],
        out: NDArray[np.float32],
    ) -> None:
        """Run several batches and write each one's rows of ``out``.

        On a CPU with two or more threads, ``threads`` batches run side by side, one
        thread each (a session of one intra-op thread, called from a pool of ``threads``
        threads), while this thread pads the next ones: ONNX Runtime's intra-op threads
        meet at every node, so one batch on all threads spends much of its time waiting
        (MiniLM int8 on 2 cores: compare the ``bertrec onnxruntime int8`` rows of
        bench.throughput's records before and after this path, bench/README.md). Single
        batches, CUDA, and one thread keep ``run``.
        """
        if not self.side_by_side:
            for rows, feeds in batches:
                out[rows] = self.run(feeds)
            return
        session, pool = self._side_by_side_pool()

        def one(rows: NDArray[np.intp], feeds: dict[str, NDArray[np.int64]]) -> None:
            out[rows] = session.run([self.output], feeds)[0]

        running: deque[Future[None]] = deque()
        try:
            for rows, feeds in batches:
                if len(running) >= 2 * self.threads:  # padded batches in memory stay few
                    running.popleft().result()
                running.append(pool.submit(one, rows, feeds))
        except BaseException:
            wait(running)  # no batch writes into ``out`` once this has returned
            raise
        for job in running:
            job.result()

    def _after_fork(self) -> None:
        """In a forked child (``forking``): a new lock, and the side-by-side pool, whose
        threads stayed in the parent, made again on first use."""
        self._lock = threading.Lock()
        self._side_by_side = None

    def _side_by_side_pool(self) -> tuple[ort.InferenceSession, ThreadPoolExecutor]:
        """The one-thread session and its pool, made on first use (and again in a forked
        child: ``_after_fork``)."""
        with self._lock:
            if self._side_by_side is None:
                pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bertrec-ort")
                self._side_by_side = (self._cpu_session_of(1), pool)
            return self._side_by_side

    def _cpu_session_of(self, threads: int) -> ort.InferenceSession:
        """A second CPU session of the runner's variant with ``threads`` intra-op threads,
        from the optimized graph the first one cached where it did; ``cache`` keeps saying
        how the first one started."""
        cache = self.cache
        try:
            if self.precision in CACHED_PRECISIONS:
                return self._cpu_session(self._path, self._variant, False, threads)
            return ort.InferenceSession(str(self._path), self._options(threads), providers=[CPU])
        finally:
            self.cache = cache


def session_cache_dir(variant: Variant) -> Path:
    """The cache entry of a variant's optimized graph: keyed by the file's sha256, the ONNX
    Runtime version and the CPU's kernel flags (an optimized graph may hold kernels chosen
    for this CPU, which ONNX Runtime says to use only where it was made)."""
    key = f"{variant.sha256}|{ort.__version__}|{cpu_features().key()}"
    return cache_dir(SESSION_CACHE, hashlib.sha256(key.encode()).hexdigest()[:24])


def _file_stamp(path: Path) -> list[int]:
    """Size and mtime of the model file: a file replaced in place (even with ``verify``
    off) makes the cached graph stale."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _load_cached(
    entry: Path, variant: Variant, source: list[int], verify: bool, options: Any
) -> ort.InferenceSession | None:
    """A session on the cached optimized graph, or None when there is no good one."""
    model = entry / OPTIMIZED_NAME
    try:
        meta = json.loads((entry / META_NAME).read_text(encoding="utf-8"))
        size = model.stat().st_size
    except (OSError, ValueError):
        return None  # nothing cached yet (or half of it): the common first start
    if (
        not isinstance(meta, dict)
        or meta.get("variant_sha256") != variant.sha256
        or meta.get("source") != source
        or meta.get("onnxruntime") != ort.__version__
        or meta.get("size") != size
    ):
        log.debug("ONNX Runtime session cache %s is stale; optimizing again", entry)
        return None
    try:
        if verify and sha256_file(model) != meta.get("sha256"):
            log.debug("ONNX Runtime session cache %s is damaged; optimizing again", entry)
            return None
        so = options()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(model), so, providers=[CPU])
    except Exception as exc:  # unreadable or not loadable: optimize from the model file
        log.debug("ONNX Runtime session cache %s not loadable (%s)", entry, str(exc)[:200])
        return None
