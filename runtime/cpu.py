"""What this CPU runs fast: its instruction-set features (from /proc/cpuinfo) and, where the
features do not settle the backend, a short measurement cached per machine and model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.core import atomic_write_json, cache_dir

from .manifest import Manifest

log = logging.getLogger("bertrec.runtime")

CPUINFO = Path("/proc/cpuinfo")
# The flags that pick kernels: int8 dot products (VNNI) add four u8*s8 products into int32
# in one instruction; without them, ONNX Runtime's u8s8 kernels go through 16-bit pair sums.
KERNEL_FLAGS = (
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
# oneDNN's (and so OpenVINO's) ISA cap, ONEDNN_MAX_CPU_ISA, in its own order: bf16 kernels
# need AVX512_CORE_BF16 or higher. ONNX Runtime's MLAS has no such cap.
ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "ALL",
)
# Where auto's measured choices are kept (``bertrec.core.cache_dir``).
CHOICE_CACHE = "cpu-choice"
CHOICE_SCHEMA = 1


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model name and flags, and what they mean for bertrec's kernels."""

    model: str
    flags: frozenset[str]
    known: bool = True  # False where /proc/cpuinfo could not be read (not Linux)

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def avx512(self) -> bool:
        return {"avx512f", "avx512bw"} <= self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic (AVX512-BF16 or AMX-BF16)."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def amx(self) -> bool:
        return "amx_tile" in self.flags and bool({"amx_int8", "amx_bf16"} & self.flags)

    @property
    def isa(self) -> str:
        """The best kernel family: amx, avx512-bf16, avx512-vnni, avx512, avx2-vnni, avx2,
        older (x86 without AVX2) or unknown."""
        if not self.known:
            return "unknown"
        if self.amx:
            return "amx"
        if self.avx512 and self.bf16:
            return "avx512-bf16"
        if self.avx512 and self.vnni:
            return "avx512-vnni"
        if self.avx512:
            return "avx512"
        if self.avx2 and self.vnni:
            return "avx2-vnni"
        if self.avx2:
            return "avx2"
        return "older"

    def describe(self) -> str:
        on = [f for f in KERNEL_FLAGS if f in self.flags]
        return f"{self.model or 'unknown CPU'} ({self.isa}; {', '.join(on) or 'no AVX2'})"

    def key(self) -> str:
        """Identifies the machine's kernel choice: model name and kernel flags."""
        on = ",".join(f for f in KERNEL_FLAGS if f in self.flags)
        return hashlib.sha256(f"{self.model}|{on}".encode()).hexdigest()[:16]


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The features of the first processor in a /proc/cpuinfo text (x86 ``flags`` line)."""
    model, flags = "", ""
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = value
    return CpuFeatures(model=model, flags=frozenset(flags.split()), known=bool(flags))


@lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's features, read once per process."""
    try:
        return parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuFeatures(model="", flags=frozenset(), known=False)


def onednn_cap() -> str | None:
    """The ISA cap oneDNN (OpenVINO's CPU kernels) honours, from ``ONEDNN_MAX_CPU_ISA``
    (or the older ``DNNL_MAX_CPU_ISA``); None when unset or not a name oneDNN knows."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    value = value.strip().upper()
    return value if value in ONEDNN_ISAS else None


def onednn_allows_bf16(cap: str | None) -> bool:
    """Whether oneDNN may use bf16 kernels under ``cap`` (compiling bf16 fails below it)."""
    return cap is None or ONEDNN_ISAS.index(cap) >= ONEDNN_ISAS.index("AVX512_CORE_BF16")


# -- the measured choice --------------------------------------------------------------------

# One batch of the default budget's shape (rows x tokens): what a CPU encode mostly runs.
PROBE_SHAPE = (8, 128)
PROBE_ROUNDS = 3


def _versions() -> str:
    import importlib.metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu", "openvino"):
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ",".join(found)


def choice_path(manifest: Manifest, threads: int, features: CpuFeatures | None = None) -> Path:
    """Where the measured choice for this machine, model, thread count and versions lives."""
    feats = features or cpu_features()
    variants = ",".join(f"{k}:{v.sha256}" for k, v in sorted(manifest.variants.items()))
    key = hashlib.sha256(
        f"{CHOICE_SCHEMA}|{feats.key()}|{threads}|{_versions()}|{variants}".encode()
    ).hexdigest()[:24]
    return cache_dir(CHOICE_CACHE, f"{key}.json")


def read_choice(path: Path, candidates: tuple[str, ...]) -> dict[str, Any] | None:
    """A cached choice, or None when missing, unreadable, damaged or for other candidates."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if path.exists():
            log.debug("ignoring the cached backend choice %s (%s)", path, exc)
        return None
    if (
        not isinstance(data, dict)
        or data.get("schema") != CHOICE_SCHEMA
        or data.get("winner") not in candidates
        or sorted(data.get("candidates", [])) != sorted(candidates)
    ):
        log.debug("ignoring the cached backend choice %s (stale or damaged)", path)
        return None
    return data


def write_choice(path: Path, data: dict[str, Any]) -> None:
    """Keep a measured choice; an unwritable cache only costs the next start a measurement."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, data)
    except Exception as exc:  # OutputError, OSError: the cache is optional
        log.debug("backend choice not cached at %s (%s)", path, exc)


Runner = Callable[[dict[str, Any]], Any]


def probe_feeds(manifest: Manifest) -> dict[str, Any]:
    """A batch of ``PROBE_SHAPE``: the cost of a run does not depend on the token ids."""
    rows, width = PROBE_SHAPE
    ids = np.full((rows, width), manifest.pad_token_id, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in manifest.input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def time_runners(runners: dict[str, Runner], feeds: dict[str, Any]) -> dict[str, float]:
    """Fastest of ``PROBE_ROUNDS`` interleaved runs of each runner, after one warm-up each."""
    for run in runners.values():
        run(feeds)
    best = {name: float("inf") for name in runners}
    for _ in range(PROBE_ROUNDS):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(feeds)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measured_choice(
    path: Path, build: dict[str, Callable[[], Runner]], feeds: dict[str, Any]
) -> tuple[str, dict[str, Any], bool]:
    """The faster of ``build``'s candidates: from the cache at ``path``, else measured now
    (each built, timed on ``feeds``) and cached.

    Returns:
        (winner, the record, whether it came from the cache).
    """
    candidates = tuple(build)
    cached = read_choice(path, candidates)
    if cached is not None:
        return str(cached["winner"]), cached, True
    runners = {name: make() for name, make in build.items()}
    seconds = time_runners(runners, feeds)
    winner = min(seconds, key=lambda k: seconds[k])
    data = {
        "schema": CHOICE_SCHEMA,
        "winner": winner,
        "candidates": list(candidates),
        "ms": {k: round(v * 1e3, 3) for k, v in seconds.items()},
        "shape": list(PROBE_SHAPE),
        "cpu": cpu_features().describe(),
        "versions": _versions(),
    }
    write_choice(path, data)
    return winner, data, False
