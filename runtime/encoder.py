"""``Encoder``: pooled sentence embeddings from a model directory through ONNX Runtime.

One template per call: check texts -> tokenize -> plan token-budget batches ->
run each batch (IO binding into a reused per-thread buffer) -> rows back in input order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

from .batching import plan_batches
from .errors import ConfigError, InputTypeError, InputValueError, ModelNotFoundError, ProviderError
from .manifest import TOKENIZER_NAME, Manifest, read_manifest, verify_variant
from .providers import CPU, CUDA, cuda_usable

log = logging.getLogger("bertrec.runtime")

DEVICES = ("auto", "cpu", "cuda")

# Padded tokens per batch. Chosen by bench/batching.py: on CPU, small batches stay in
# cache and run fastest; on CUDA, larger batches keep the GPU busy.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}


@dataclass(frozen=True)
class Batch:
    """One padded batch: the feeds for the session and the input rows it covers."""

    rows: NDArray[np.intp]
    feeds: dict[str, NDArray[np.int64]]


def _physical_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def _check_texts(texts: object) -> list[str]:
    """The texts as a list, or a clear error naming the first bad element."""
    if texts is None:
        raise InputTypeError("texts is None; pass a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputTypeError("texts is bytes; decode it to str first (e.g. data.decode('utf-8'))")
    if isinstance(texts, np.ndarray):
        texts = texts.tolist()
    if not isinstance(texts, Iterable):
        raise InputTypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            hint = " (decode bytes to str first)" if isinstance(t, (bytes, bytearray)) else ""
            raise InputTypeError(f"texts[{i}] is {type(t).__name__}, not str{hint}")
    return items


def _find_bad_unicode(items: Sequence[str]) -> int | None:
    for i, t in enumerate(items):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError:
            return i
    return None


class Encoder:
    """Encode texts to float32 vectors with a bertrec model directory.

    Args:
        model_dir: directory written by ``bertrec export``.
        precision: ``fp32``, ``int8``, ``fp16`` or ``auto`` (fp16 on CUDA, int8 on CPU,
            fp32 when that variant is missing).
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when it works, else CPU with a warning).
        io_binding: bind inputs/outputs explicitly; None means on for CUDA, off for CPU.
        max_batch_tokens: padded-token budget per batch (default by device, see
            ``DEFAULT_MAX_BATCH_TOKENS``).
        threads: ONNX Runtime intra-op threads (default: the CPUs this process may use).

    Texts longer than the manifest's ``max_length`` tokens are truncated, as
    sentence-transformers does. ``encode`` is safe to call from several threads.

    Raises:
        ModelNotFoundError / ManifestError / IntegrityError: bad model directory.
        ConfigError: unknown precision or device, bad budget or thread count.
        ProviderError: ``device="cuda"`` where CUDA is not available.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        precision: str = "auto",
        device: str = "auto",
        io_binding: bool | None = None,
        max_batch_tokens: int | None = None,
        threads: int | None = None,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0
        ):
            raise ConfigError(f"threads must be a positive int or None, got {threads!r}")
        self.model_dir = Path(model_dir)
        self.manifest: Manifest = read_manifest(self.model_dir)
        available = ort.get_available_providers()
        if device == "cuda" and not cuda_usable():
            raise ProviderError(
                f"device='cuda' asked for, but CUDA does not start here (ONNX Runtime lists "
                f"{available}; a listed provider can still lack its GPU or CUDA/cuDNN "
                "libraries); install onnxruntime-gpu with CUDA 13 and cuDNN 9, or use device='cpu'"
            )
        self.threads = threads or _physical_cores()
        self._session, self.device, self.precision = self._open(device, precision, available)
        self.providers: list[str] = list(self._session.get_providers())
        self.backend = "onnxruntime"
        self.io_binding = (self.device == "cuda") if io_binding is None else bool(io_binding)
        budget = max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS[self.device]
        plan_batches([1], budget)  # validates the budget once, up front
        self.max_batch_tokens = budget
        self.dim = self.manifest.dim
        self.max_length = self.manifest.max_length
        self._tokenizer = self._load_tokenizer()
        self._inputs = tuple(i.name for i in self._session.get_inputs())
        self._output = self.manifest.output_name
        self._local = threading.local()

    # -- construction -------------------------------------------------------------------

    def _pick_precision(self, precision: str, device: str) -> str:
        variants = self.manifest.variants
        if precision == "auto":
            preferred = "fp16" if device == "cuda" else "int8"
            return preferred if preferred in variants else "fp32"
        if precision not in variants:
            raise ConfigError(
                f"precision {precision!r} is not in {str(self.model_dir)!r} (it has "
                f"{', '.join(sorted(variants))}); add it with `bertrec quantize "
                f"{self.model_dir} --precision {precision}` or pick another"
            )
        return precision

    def _session_options(self) -> ort.SessionOptions:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def _open(
        self, device: str, precision: str, available: list[str]
    ) -> tuple[ort.InferenceSession, str, str]:
        if device == "cuda" or (device == "auto" and cuda_usable()):
            chosen = self._pick_precision(precision, "cuda")
            path = verify_variant(self.model_dir, self.manifest.variants[chosen])
            try:
                sess = ort.InferenceSession(
                    str(path), self._session_options(), providers=[CUDA, CPU]
                )
            except Exception as exc:  # a broken CUDA install raises from the provider
                raise ProviderError(f"CUDA provider failed to start: {exc}") from exc
            if sess.get_providers()[0] != CUDA:
                raise ProviderError(
                    f"device='cuda' asked for, but the CUDA provider did not start (providers "
                    f"available: {available}); check the CUDA/cuDNN install or use device='cpu'"
                )
            return sess, "cuda", chosen
        if device == "auto" and CUDA in available:
            log.warning("CUDAExecutionProvider is installed but not usable here; using the CPU")
        chosen = self._pick_precision(precision, "cpu")
        path = verify_variant(self.model_dir, self.manifest.variants[chosen])
        sess = ort.InferenceSession(str(path), self._session_options(), providers=[CPU])
        return sess, "cpu", chosen

    def _load_tokenizer(self) -> Tokenizer:
        path = self.model_dir / TOKENIZER_NAME
        if not path.is_file():
            raise ModelNotFoundError(f"{str(path)!r} is missing; re-export the model")
        tok = Tokenizer.from_file(str(path))
        tok.no_padding()  # we pad per batch, after sorting by length
        tok.enable_truncation(max_length=self.max_length)
        return tok

    # -- encoding -----------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The model's identity (sha256 of its fp32 file), shared by all its variants."""
        return self.manifest.fingerprint

    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> NDArray[np.float32]:
        """Encode texts to an (n, dim) float32 array, rows in input order.

        A single ``str`` gives a (dim,) vector, as in sentence-transformers. An empty list
        gives shape (0, dim). An empty string is encoded like any other text.

        Args:
            texts: strings to encode.
            batch_size: optional cap on rows per batch (the token budget still applies).
            show_progress: show a progress bar over batches.

        Raises:
            InputTypeError: ``texts`` or one of its elements is not a str (index named).
            InputValueError: a text is not valid Unicode (e.g. a lone surrogate; index named).
        """
        if isinstance(texts, str):
            return self.encode([texts], batch_size=batch_size)[0]
        items = _check_texts(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        encodings = self._tokenize(items)
        lengths = [len(e.ids) for e in encodings]
        batches = plan_batches(lengths, self.max_batch_tokens, batch_size)
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(items), desc="encode", unit="text")
        for rows in batches:
            batch = self._pad([encodings[i] for i in rows], rows)
            out[batch.rows] = self._run(batch.feeds)
            if progress is not None:
                progress.update(len(rows))
        if progress is not None:
            progress.close()
        return out

    def encode_iter(
        self,
        texts: Iterable[str],
        chunk_size: int = 4096,
        batch_size: int | None = None,
    ) -> Iterator[NDArray[np.float32]]:
        """Encode a stream chunk by chunk; memory stays bounded by ``chunk_size``.

        Yields one (m, dim) array per chunk of up to ``chunk_size`` texts, in order.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ConfigError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if texts is None or isinstance(texts, (str, bytes, bytearray)):
            raise InputTypeError(
                f"texts must be an iterable of strings, got {type(texts).__name__}"
            )
        chunk: list[str] = []
        seen = 0
        for t in texts:
            chunk.append(t)
            if len(chunk) == chunk_size:
                yield self._encode_chunk(chunk, seen, batch_size)
                seen += len(chunk)
                chunk = []
        if chunk:
            yield self._encode_chunk(chunk, seen, batch_size)

    def _encode_chunk(self, chunk: list[str], offset: int, batch_size: int | None) -> Any:
        try:
            return self.encode(chunk, batch_size=batch_size)
        except (InputTypeError, InputValueError) as exc:
            # Re-point the index at the position in the whole stream.
            raise type(exc)(f"{exc} (chunk starting at stream position {offset})") from exc

    def _tokenize(self, items: list[str]) -> list[Encoding]:
        try:
            return list(self._tokenizer.encode_batch(items, add_special_tokens=True))
        except Exception as exc:  # tokenizers raises on text that is not valid UTF-8
            bad = _find_bad_unicode(items)
            if bad is None:
                raise
            raise InputValueError(
                f"texts[{bad}] is not valid Unicode (it holds a lone surrogate); clean it, e.g. "
                "text.encode('utf-8', 'replace').decode('utf-8')"
            ) from exc

    def _pad(self, encodings: list[Encoding], rows: NDArray[np.intp]) -> Batch:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.manifest.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for r, e in enumerate(encodings):
            n = len(e.ids)
            ids[r, :n] = e.ids
            mask[r, :n] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        return Batch(rows=rows, feeds=feeds)

    def _run(self, feeds: dict[str, NDArray[np.int64]]) -> NDArray[np.float32]:
        if not self.io_binding:
            result = self._session.run([self._output], feeds)[0]
            return np.asarray(result, dtype=np.float32)
        n = len(feeds["input_ids"])
        local = self._local
        # One IOBinding and one output buffer per thread: IOBinding is not thread-safe.
        if getattr(local, "binding", None) is None:
            local.binding = self._session.io_binding()
            local.buffer = np.empty((0, self.dim), dtype=np.float32)
        if len(local.buffer) < n:
            local.buffer = np.empty((max(n, 2 * len(local.buffer)), self.dim), dtype=np.float32)
        binding = local.binding
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        out = local.buffer[:n]
        binding.bind_output(
            name=self._output,
            device_type="cpu",
            device_id=0,
            element_type=np.float32,
            shape=out.shape,
            buffer_ptr=out.ctypes.data,
        )
        self._session.run_with_iobinding(binding)
        return out

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_dir)!r}, precision={self.precision!r}, "
            f"device={self.device!r}, backend={self.backend!r}, dim={self.dim})"
        )
