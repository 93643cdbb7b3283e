"""``Encoder``: pooled sentence embeddings from a model directory through ONNX Runtime.

One template per call: check texts -> tokenize -> plan token-budget batches ->
run each batch (IO binding into a reused per-thread buffer) -> rows back in input order.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

from bertrec.core import check_bool, check_int, check_optional_int
from bertrec.errors import (
    ConfigError,
    FileFormatError,
    InputTypeError,
    InputValueError,
    NotFoundError,
)

from .cpu import CpuFeatures, choice_path, cpu_features, measured_choice, probe_feeds
from .manifest import TOKENIZER_NAME, Manifest, read_manifest
from .openvino_runner import (
    BF16_CHECK,
    BF16_MIN_COS,
    OpenVinoRunner,
    cpu_has_bf16,
    openvino_importable,
)
from .planning import plan_batches
from .providers import cuda_usable, onnxruntime, onnxruntime_installed

log = logging.getLogger("bertrec.runtime")

DEVICES = ("auto", "cpu", "cuda")
# Prompt names encode_query / encode_document look for, in order (sentence-transformers').
QUERY_PROMPTS = ("query",)
DOCUMENT_PROMPTS = ("document", "passage", "corpus")
BACKENDS = ("auto", "onnxruntime", "openvino")

# Padded tokens per batch. Chosen by bench/token_budget.py: on CPU, small batches stay in
# cache and run fastest; on CUDA, larger batches keep the GPU busy.
DEFAULT_MAX_BATCH_TOKENS = {"cpu": 1024, "cuda": 16384}
# ONNX Runtime on a CPU with two or more threads runs batches side by side, one thread
# each: smaller batches measured faster there (bench/token_budget.py, MiniLM int8, 2 cores:
# 512 against 1024 gave 1.07x on short texts and the same on long ones).
SIDE_BY_SIDE_MAX_BATCH_TOKENS = 512


@dataclass(frozen=True)
class Batch:
    """One padded batch: the feeds for the session and the input rows it covers."""

    rows: NDArray[np.intp]
    feeds: dict[str, NDArray[np.int64]]


# Up to this many texts are tokenized one by one on the calling thread; more go through
# ``encode_batch``, which lets go of the GIL and hands them to the tokenizers library's
# thread pool (unless TOKENIZERS_PARALLELISM turns it off; a server does). For one text
# the hand-off costs more than it saves: ~4% more requests/s at concurrency 1 in a one-off
# A/B of two servers (not a bench/ script); the encodings are the same.
SERIAL_TOKENIZE_TEXTS = 8


def _physical_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


_noted_no_cuda = False


def _note_cuda_fallback_once() -> None:
    """device='auto' on a machine whose ONNX Runtime lists CUDA but cannot start it: worth a
    debug line, not a warning (CUDA was not asked for)."""
    global _noted_no_cuda
    if _noted_no_cuda or not onnxruntime_installed():
        return
    if "CUDAExecutionProvider" in onnxruntime().get_available_providers():
        log.debug("CUDAExecutionProvider is installed but not usable here; using the CPU")
    _noted_no_cuda = True


def bf16_check(manifest: Manifest) -> dict[str, Any] | None:
    """The OpenVINO bf16 fidelity check recorded in the manifest (``bertrec check``), if any."""
    return manifest.runtime_checks.get(BF16_CHECK)


def choose_backend(
    backend: str,
    device: str,
    precision: str,
    manifest: Manifest | None = None,
    model_dir: Path | None = None,
    threads: int | None = None,
) -> tuple[str, str]:
    """The backend to use and why, for the ``auto`` rules in ``Encoder``'s docstring.

    On the CPU the machine's features decide (``runtime.cpu``): int8 dot products (VNNI)
    take ONNX Runtime int8, bf16 instructions included (AVX-512 BF16 without AMX), when the
    model has an int8 variant; AMX, or bf16 asked for, takes OpenVINO bf16 where its
    fidelity is recorded; AVX2 or AVX-512 without VNNI or bf16 is measured once (ONNX
    Runtime int8 against OpenVINO fp32, given ``model_dir``) and the winner cached per
    machine.
    """
    if device == "auto" and not cuda_usable():
        _note_cuda_fallback_once()
    if backend == "openvino":
        if device == "cuda":
            raise ConfigError("backend='openvino' runs on the CPU; use device='cpu' or 'auto'")
        return "openvino", "asked for"
    if backend == "onnxruntime":
        return "onnxruntime", "asked for"
    if device != "cpu" and cuda_usable():
        return "onnxruntime", "CUDA is usable"
    if device == "cuda":
        return "onnxruntime", "device='cuda' asked for"
    if precision not in ("auto", "bf16"):
        return "onnxruntime", f"precision={precision!r} is an ONNX Runtime variant"
    features = cpu_features()
    if (
        precision == "auto"
        and features.vnni
        and not features.amx
        and manifest is not None
        and "int8" in manifest.variants
    ):
        # Decided from the flags, before OpenVINO is imported (~0.15 s). Measured on
        # AVX-512 BF16 + VNNI (bench/README.md): ONNX Runtime int8 faster than OpenVINO
        # bf16 on short and long texts and much faster on a server's small batches (half
        # the weight bytes per call). Both pass the int8 gate; precision="bf16" keeps the
        # more faithful path.
        if features.bf16:
            return "onnxruntime", (
                f"{features.isa}: VNNI int8 measured faster than bf16 on this ISA; "
                "precision='bf16' for OpenVINO bf16"
            )
        return "onnxruntime", f"{features.isa}: no bf16 instructions; ONNX Runtime int8 is faster"
    if not openvino_importable():
        return "onnxruntime", "OpenVINO is not installed (pip install 'bertrec[openvino]')"
    if cpu_has_bf16():
        if precision == "auto" and manifest is not None:
            check = bf16_check(manifest)
            if check is None:
                return "onnxruntime", (
                    "the model's bf16 fidelity is not recorded; `bertrec check MODEL_DIR` "
                    "records it"
                )
            if float(check.get("min_cos", 0.0)) < BF16_MIN_COS:
                return "onnxruntime", (
                    f"bf16 min cosine {float(check.get('min_cos', 0.0)):.6f} < {BF16_MIN_COS} "
                    "on this model (recorded by `bertrec check`)"
                )
        return "openvino", (
            f"{features.isa}: CPU has bf16 instructions, OpenVINO is installed, bf16 fidelity "
            "recorded"
        )
    if features.vnni or not features.known or not features.avx2:
        return "onnxruntime", f"{features.isa}: no bf16 instructions; ONNX Runtime int8 is faster"
    if precision != "auto" or manifest is None or model_dir is None:
        return "onnxruntime", f"{features.isa}: no bf16 or VNNI; ONNX Runtime int8 (not measured)"
    if "int8" not in manifest.variants:
        return "onnxruntime", f"{features.isa}: the model has no int8 variant to measure"
    return _measured_backend(features, manifest, model_dir, threads or _physical_cores())


def _measured_backend(
    features: CpuFeatures, manifest: Manifest, model_dir: Path, threads: int
) -> tuple[str, str]:
    """AVX2 / AVX-512 without VNNI or bf16: ONNX Runtime's u8s8 kernels go through 16-bit
    pair sums there, so int8 may or may not beat OpenVINO fp32; one measurement (a second
    or two, once per machine, model and versions) decides, cached in bertrec's cache."""
    from .ort_runner import OrtRunner

    def ort_int8() -> Any:
        return OrtRunner(model_dir, manifest, "int8", "cpu", False, threads, verify=False).run

    def ov_fp32() -> Any:
        return OpenVinoRunner(model_dir, manifest, "fp32", threads, verify=False).run

    build = {"onnxruntime": ort_int8, "openvino": ov_fp32}
    try:
        winner, data, cached = measured_choice(
            choice_path(manifest, threads, features), build, probe_feeds(manifest)
        )
    except Exception as exc:  # a measurement that fails leaves the default
        log.debug("backend measurement failed (%s); using ONNX Runtime int8", exc)
        return "onnxruntime", f"{features.isa}: no bf16 or VNNI; measuring failed, int8"
    ms = data.get("ms", {})
    how = "cached measurement" if cached else "measured now"
    return winner, (
        f"{features.isa}: no bf16 or VNNI; {how}: ONNX Runtime int8 "
        f"{ms.get('onnxruntime', float('nan')):.1f} ms, OpenVINO fp32 "
        f"{ms.get('openvino', float('nan')):.1f} ms per {'x'.join(map(str, data.get('shape', [])))}"
        " batch"
    )


def _check_texts(texts: object) -> list[str]:
    """The texts as a list, or a clear error naming the first bad element."""
    if texts is None:
        raise InputTypeError("texts is None; pass a list of strings")
    if isinstance(texts, (bytes, bytearray)):
        raise InputTypeError("texts is bytes; decode it to str first (e.g. data.decode('utf-8'))")
    if isinstance(texts, dict):
        raise InputTypeError(
            "texts is a dict; pass a list of strings (e.g. list(d.values()) for its values)"
        )
    if isinstance(texts, (set, frozenset)):
        raise InputTypeError("texts is a set, which has no order; pass a list of strings")
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


def _bad_unicode(i: int) -> InputValueError:
    return InputValueError(
        f"texts[{i}] is not valid Unicode (it holds a lone surrogate); clean it, e.g. "
        "text.encode('utf-8', 'replace').decode('utf-8')"
    )


class Encoder:
    """Encode texts to float32 vectors with a bertrec model directory.

    Args:
        model_dir: directory written by ``bertrec export``.
        precision: ``fp32``, ``int8``, ``fp16``, ``bf16`` (OpenVINO) or ``auto``: fp16 on
            CUDA, bf16 with OpenVINO, else int8; fp32 when that variant is missing.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA when it works, else CPU with a warning).
        io_binding: ONNX Runtime only: bind inputs/outputs explicitly; None means on for
            CUDA, off for CPU. (OpenVINO always writes into preallocated outputs.)
        max_batch_tokens: padded-token budget per batch (default by device, see
            ``DEFAULT_MAX_BATCH_TOKENS``; ``SIDE_BY_SIDE_MAX_BATCH_TOKENS`` for ONNX Runtime
            on a CPU with two or more threads, where batches run side by side).
        threads: intra-op threads (default: the CPUs this process may use).
        backend: ``onnxruntime``, ``openvino`` or ``auto``: ONNX Runtime on CUDA when it
            works; on a CPU with VNNI and no AMX, ONNX Runtime int8 (when the model has
            that variant: faster than bf16 there, at the int8 gate); else OpenVINO bf16
            when OpenVINO is installed, the CPU has bf16 instructions and the model's bf16
            fidelity is recorded and good (``bertrec check MODEL_DIR``, run by export where
            it can); else ONNX Runtime on the CPU, except on AVX2 / AVX-512 CPUs without
            VNNI or bf16, where ONNX Runtime int8 and OpenVINO fp32 are timed once per
            machine and model (cached) and the faster runs. ``precision="bf16"`` asks for
            OpenVINO bf16 (the most faithful fast path). ``encoder.backend_reason`` says
            why.
        verify: check each model file's sha256 against the manifest at load (on by
            default; False skips the read of the whole file, sizes are still checked).
        truncate_dim: keep the first dimensions of each vector (Matryoshka models), then
            normalize.
        streams: how many threads will call ``encode`` at once, each run using
            ``threads`` threads (a server's inference workers). OpenVINO compiles that many
            streams: a model compiled for one runs concurrent callers one after another.
            ONNX Runtime runs concurrent calls side by side anyway (give each
            ``threads=1`` so they do not share one thread pool). Either way a call made
            alone (``encode_tokens(..., alone=True)``) runs on every stream's threads.

    The Encoder only reads its model directory: every file keeps its bytes and mtime.
    What it caches (ONNX Runtime's optimized graph, OpenVINO's compiled model, the measured
    backend choice) goes to bertrec's cache dir (``bertrec.core.cache_dir``); a cache that
    is unwritable, stale or damaged is passed over (a debug log line), never an error.
    ``encoder.startup`` says where construction time went.

    Texts longer than the manifest's ``max_length`` tokens are truncated, as
    sentence-transformers does. ``encode`` is safe to call from several threads.

    Raises:
        NotFoundError / FileFormatError / FileFormatError: bad model directory.
        ConfigError: unknown precision, device or backend; bad budget or thread count.
        ProviderError: ``device="cuda"`` where CUDA is not available, or
            ``backend="openvino"`` without OpenVINO installed.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        precision: str = "auto",
        device: str = "auto",
        io_binding: bool | None = None,
        max_batch_tokens: int | None = None,
        threads: int | None = None,
        backend: str = "auto",
        verify: bool = True,
        truncate_dim: int | None = None,
        streams: int = 1,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0
        ):
            raise ConfigError(f"threads must be a positive int or None, got {threads!r}")
        streams = check_int(streams, "streams")
        t0 = time.perf_counter()
        self.model_dir = Path(model_dir)
        self.manifest: Manifest = read_manifest(self.model_dir)
        self.threads = threads or _physical_cores()
        self.streams = streams
        t1 = time.perf_counter()
        self.backend, self.backend_reason = choose_backend(
            backend, device, precision, self.manifest, self.model_dir, self.threads
        )
        t2 = time.perf_counter()
        log.info("bertrec backend: %s (%s)", self.backend, self.backend_reason)
        self._runner: Any
        if self.backend == "openvino":
            self._runner = OpenVinoRunner(
                self.model_dir, self.manifest, precision, self.threads, verify, streams
            )
        else:
            if precision == "bf16":
                raise ConfigError("precision='bf16' runs on backend='openvino' only")
            onnxruntime()  # one clear line when no ONNX Runtime is installed
            from .ort_runner import OrtRunner

            self._runner = OrtRunner(
                self.model_dir,
                self.manifest,
                precision,
                device,
                io_binding,
                self.threads,
                verify,
                streams,
            )
        self.device = self._runner.device
        self.precision = self._runner.precision
        self.providers: list[str] = list(self._runner.providers)
        self.io_binding = self._runner.io_binding
        default = DEFAULT_MAX_BATCH_TOKENS[self.device]
        if getattr(self._runner, "side_by_side", False):
            default = SIDE_BY_SIDE_MAX_BATCH_TOKENS
        budget = max_batch_tokens or default
        plan_batches([1], budget)  # validates the budget once, up front
        self.max_batch_tokens = budget
        self.truncate_dim = check_optional_int(truncate_dim, "truncate_dim")
        if self.truncate_dim is not None and self.truncate_dim > self.manifest.dim:
            raise ConfigError(
                f"truncate_dim {self.truncate_dim} exceeds the model's {self.manifest.dim} "
                "dimensions"
            )
        # The width of the vectors encode returns (what a catalog or an index stores).
        self.dim = self.truncate_dim or self.manifest.dim
        self.max_length = self.manifest.max_length
        self.prompts: dict[str, str] = dict(self.manifest.prompts)
        self.default_prompt_name = self.manifest.default_prompt_name
        t3 = time.perf_counter()
        self._tokenizer = self._load_tokenizer()
        self._inputs = self._runner.input_names
        # Where construction time went (bench/startup.py reports it), and whether the
        # backend's cache in bertrec's cache dir was used ("hit", "miss" or "off").
        self.startup: dict[str, Any] = {
            "manifest_s": t1 - t0,
            "backend_choice_s": t2 - t1,
            **getattr(self._runner, "startup", {}),
            "tokenizer_s": time.perf_counter() - t3,
            "total_s": time.perf_counter() - t0,
            "cache": getattr(self._runner, "cache", "off"),
        }
        log.info("%s", self.describe())

    def describe(self) -> str:
        """One line: the backend and variant that run, why, and their recorded fidelity."""
        figures = self._recorded_fidelity()
        return (
            f"bertrec Encoder: {self.backend} {self.precision} on {self.device} "
            f"({self.backend_reason}); {figures}"
        )

    def _recorded_fidelity(self) -> str:
        if self.precision == "bf16":
            check = bf16_check(self.manifest) or {}
            ref = "fp32 (bertrec check)"
        else:
            variant = self.manifest.variants.get(self.precision)
            check = variant.validation if variant else {}
            check = check.get("vs_pytorch", check) if isinstance(check, dict) else {}
            ref = str(check.get("reference", "pytorch fp32" if self.precision != "fp32" else "?"))
        if not isinstance(check.get("mean_cos"), (int, float)):
            return "no fidelity recorded"
        return (
            f"recorded fidelity vs {ref}: mean cosine {float(check['mean_cos']):.5f}, "
            f"min {float(check.get('min_cos', float('nan'))):.5f}"
        )

    # -- construction -------------------------------------------------------------------

    def _load_tokenizer(self) -> Tokenizer:
        path = self.model_dir / TOKENIZER_NAME
        if not path.is_file():
            raise NotFoundError(f"{str(path)!r} is missing; re-export the model")
        try:
            tok = Tokenizer.from_file(str(path))
        except OSError as exc:
            raise FileFormatError(
                f"{str(path)!r} cannot be read ({exc.strerror}); check its permissions"
            ) from exc
        except Exception as exc:  # tokenizers raises a bare Exception for bad JSON
            raise FileFormatError(
                f"{str(path)!r} is not a valid tokenizer ({str(exc)[:200]}); re-export the model"
            ) from exc
        if self.manifest.pad_token_id >= tok.get_vocab_size():
            raise FileFormatError(
                f"manifest pad_token_id {self.manifest.pad_token_id} is outside the tokenizer's "
                f"vocabulary ({tok.get_vocab_size()} tokens); re-export the model"
            )
        tok.no_padding()  # we pad per batch, after sorting by length
        tok.enable_truncation(max_length=self.max_length)
        return tok

    # -- encoding -----------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The model's identity (sha256 of its fp32 file), shared by all its variants."""
        return self.manifest.fingerprint

    @property
    def variant(self) -> str:
        """What made the vectors: the precision and the file that ran, e.g. ``int8:3fa4...``
        (bf16 runs the fp32 file). Stores record it; see ``ItemCatalog.check_encoder``."""
        file = "fp32" if self.precision == "bf16" else self.precision
        return f"{self.precision}:{self.manifest.variants[file].sha256[:12]}"

    def check_texts(self, texts: Sequence[str]) -> list[str]:
        """``texts`` as a list, checked as ``encode`` checks them (each a str, valid
        Unicode) without tokenizing them: for callers that admit texts now and tokenize
        them later (a server checks a request on arrival and tokenizes it with its batch).

        Raises:
            InputTypeError / InputValueError: as ``encode``.
        """
        items = _check_texts(texts)
        bad = _find_bad_unicode(items)
        if bad is not None:
            raise _bad_unicode(bad)
        return items

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Token ids of ``texts`` (special tokens added, truncated to ``max_length``): the
        first half of ``encode``, for callers that overlap tokenizing with running (a
        server tokenizes the next batch while the current one runs).

        Raises:
            InputTypeError / InputValueError: as ``encode``.
        """
        items = _check_texts(texts)
        return self._tokenize(items) if items else []

    def encode_tokens(
        self,
        encodings: Sequence[Encoding],
        batch_size: int | None = None,
        show_progress: bool = False,
        alone: bool = False,
    ) -> NDArray[np.float32]:
        """The model's (n, manifest.dim) vectors for tokenized texts (``tokenize``), rows in
        input order: token-budget batches, longest first.

        ``alone``: with ``streams > 1``, the caller knows no other thread is encoding now
        (a server with one request in flight): one batch then runs on every stream's
        threads instead of one stream's.
        """
        if isinstance(encodings, (str, bytes, dict)) or not isinstance(encodings, Sequence):
            raise InputTypeError(
                "encodings must be the list Encoder.tokenize returns, got "
                f"{type(encodings).__name__}"
            )
        check_bool(alone, "alone")
        bad = next((i for i, e in enumerate(encodings) if not isinstance(e, Encoding)), None)
        if bad is not None:
            raise InputTypeError(
                f"encodings[{bad}] is {type(encodings[bad]).__name__}, not a tokenizers "
                "Encoding; pass the list Encoder.tokenize returns"
            )
        out = np.empty((len(encodings), self.manifest.dim), dtype=np.float32)
        if not len(encodings):
            return out
        lengths = [len(e.ids) for e in encodings]
        batches = plan_batches(lengths, self.max_batch_tokens, batch_size)
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(encodings), desc="encode", unit="text")

        def padded() -> Iterator[tuple[NDArray[np.intp], dict[str, NDArray[np.int64]]]]:
            for rows in batches:
                batch = self._pad([encodings[i] for i in rows], rows)
                yield batch.rows, batch.feeds
                if progress is not None:
                    progress.update(len(rows))

        run_many = getattr(self._runner, "run_many", None)
        if run_many is not None and len(batches) > 1:
            run_many(padded(), out)  # the runner overlaps batches (OpenVINO streams)
        else:
            for rows, feeds in padded():
                out[rows] = self._runner.run(feeds, alone=alone)
        if progress is not None:
            progress.close()
        return out

    def encode(
        self,
        texts: Sequence[str] | str,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        truncate_dim: int | None = None,
        show_progress: bool | None = None,
    ) -> Any:
        """Encode texts to an (n, dim) float32 array, rows in input order.

        The arguments are sentence-transformers' ``encode`` arguments. A single ``str``
        gives a (dim,) vector. An empty list gives shape (0, dim). An empty string is
        encoded like any other text.

        Args:
            texts: strings to encode.
            batch_size: optional cap on rows per batch (the token budget still applies).
            show_progress_bar: show a progress bar over texts (``show_progress`` is the
                same).
            prompt_name: a prompt of the model's (``encoder.prompts``, from the checkpoint's
                ``config_sentence_transformers.json``) to put before every text; None uses
                the model's default prompt, if it has one.
            prompt: a prompt text to put before every text (wins over ``prompt_name``).
            normalize_embeddings: scale the rows to unit length (models exported with
                ``normalize`` already give unit rows).
            convert_to_numpy: True gives one array; False a list of 1-D arrays.
            truncate_dim: keep the first dimensions only (Matryoshka models); default the
                encoder's own ``truncate_dim``.

        Raises:
            InputTypeError: ``texts`` or one of its elements is not a str (index named), or
                ``texts`` is a dict or a set.
            InputValueError: a text is not valid Unicode (e.g. a lone surrogate; index named).
            ConfigError: an unknown ``prompt_name``, or a bad ``batch_size``/``truncate_dim``.
        """
        single = isinstance(texts, str)
        items: list[str] = [texts] if isinstance(texts, str) else _check_texts(texts)
        check_optional_int(batch_size, "batch_size")
        head = self._prompt(prompt_name, prompt)
        if head:
            items = [head + t for t in items]
        bar = bool(show_progress_bar if show_progress_bar is not None else show_progress)
        out = self.encode_tokens(self._tokenize(items) if items else [], batch_size, bar)
        out = self._finish(out, normalize_embeddings, truncate_dim)
        if single:
            return out[0]
        return out if convert_to_numpy else list(out)

    def encode_query(self, texts: Sequence[str] | str, **kwargs: Any) -> Any:
        """``encode`` with the model's ``query`` prompt (if it has one), as in
        sentence-transformers."""
        return self.encode(texts, **self._role_prompt(QUERY_PROMPTS, kwargs))

    def encode_document(self, texts: Sequence[str] | str, **kwargs: Any) -> Any:
        """``encode`` with the model's ``document``/``passage``/``corpus`` prompt (if it has
        one), as in sentence-transformers."""
        return self.encode(texts, **self._role_prompt(DOCUMENT_PROMPTS, kwargs))

    def _role_prompt(self, names: tuple[str, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            found = next((n for n in names if n in self.prompts), None)
            if found is not None:
                kwargs = {**kwargs, "prompt_name": found}
        return kwargs

    def _prompt(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputTypeError(f"prompt must be a str, got {type(prompt).__name__}")
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none"
            raise ConfigError(f"unknown prompt_name {name!r}; this model's prompts: {known}")
        return self.prompts[name]

    def _finish(
        self, out: NDArray[np.float32], normalize: bool, truncate_dim: int | None
    ) -> NDArray[np.float32]:
        dim = check_optional_int(truncate_dim, "truncate_dim") or self.truncate_dim
        if dim is not None:
            if dim > self.manifest.dim:
                raise ConfigError(
                    f"truncate_dim {dim} exceeds the model's {self.manifest.dim} dimensions"
                )
            out = np.ascontiguousarray(out[:, :dim])
        if normalize and len(out):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out = out / np.maximum(norms, np.float32(1e-12))
        return out

    def encode_iter(
        self,
        texts: Iterable[str],
        chunk_size: int = 4096,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Iterator[NDArray[np.float32]]:
        """Encode a stream chunk by chunk; memory stays bounded by ``chunk_size``.

        Yields one (m, dim) array per chunk of up to ``chunk_size`` texts, in order;
        ``kwargs`` are ``encode``'s (``prompt_name``, ``normalize_embeddings`` ...).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ConfigError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if texts is None or isinstance(texts, (str, bytes, bytearray, dict, set, frozenset)):
            raise InputTypeError(
                f"texts must be an ordered iterable of strings, got {type(texts).__name__}"
            )
        chunk: list[str] = []
        seen = 0
        for t in texts:
            chunk.append(t)
            if len(chunk) == chunk_size:
                yield self._encode_chunk(chunk, seen, batch_size, kwargs)
                seen += len(chunk)
                chunk = []
        if chunk:
            yield self._encode_chunk(chunk, seen, batch_size, kwargs)

    def _encode_chunk(
        self, chunk: list[str], offset: int, batch_size: int | None, kwargs: dict[str, Any]
    ) -> Any:
        try:
            return self.encode(chunk, batch_size=batch_size, **kwargs)
        except (InputTypeError, InputValueError) as exc:
            # Re-point the index at the position in the whole stream.
            raise type(exc)(f"{exc} (chunk starting at stream position {offset})") from exc

    def _tokenize(self, items: list[str]) -> list[Encoding]:
        try:
            if len(items) <= SERIAL_TOKENIZE_TEXTS:
                return [self._tokenizer.encode(t, add_special_tokens=True) for t in items]
            return list(self._tokenizer.encode_batch(items, add_special_tokens=True))
        except Exception as exc:  # tokenizers raises on text that is not valid UTF-8
            bad = _find_bad_unicode(items)
            if bad is None:
                raise
            raise _bad_unicode(bad) from exc

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

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self.model_dir)!r}, precision={self.precision!r}, "
            f"device={self.device!r}, backend={self.backend!r}, dim={self.dim})"
        )
