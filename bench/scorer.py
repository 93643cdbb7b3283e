"""Top-k scoring speed: bertrec ``CosineRanker`` against FAISS ``IndexFlatIP`` and a naive
full-sort NumPy baseline, on the same unit-normalized float32 catalog.

    python -m bench.scorer            # 100k and 1M x 384; 1, 64 and 1,024 queries (~6 min)
    python -m bench.scorer --quick    # 20k x 384, fewer repeats (< 1 min)

Methods run interleaved (a rotating order each repeat) after a warm-up, and the record
keeps every sample and the medians. The naive baseline is timed on at most 32 queries and
scaled linearly (its cost is per query). A JSON record goes to bench/results/scorer-<UTC>.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    blas_threads,
    log,
    machine_info,
    machine_line,
    median,
    versions,
    write_record,
)
from bertrec.rank import CosineRanker

# The naive baseline sorts every score, minutes a run at 1M items and 1,024 queries, so it
# is timed on at most this many queries and scaled linearly (it is per-query work).
NAIVE_MAX_QUERIES = 32
NAIVE_CHUNK = 16


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the figures."""

    sizes: tuple[int, ...] = (100_000, 1_000_000)
    queries: tuple[int, ...] = (1, 64, 1024)
    dim: int = 384
    k: int = 10
    repeats: int = 5
    # One query takes milliseconds and its time swings with cache and load: more samples.
    repeats_single: int = 25
    # Repeats for the largest cases (work >= large_work: 1,024 queries on 1M items), the slowest.
    repeats_large: int = 2
    large_work: int = 200_000_000
    seed: int = 0
    threads: dict[str, Any] = field(default_factory=dict)


def make_catalog(n: int, dim: int, seed: int) -> NDArray[np.float32]:
    """Unit-norm Gaussian rows (the same matrix for every method)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):
        block = rng.standard_normal((min(65536, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start : start + len(block)] = block
    return x


def naive_topk(catalog: NDArray[np.float32], queries: NDArray[np.float32], k: int) -> Any:
    """Every score, fully sorted: what one writes without thinking about speed."""
    out = []
    for start in range(0, len(queries), NAIVE_CHUNK):
        scores = queries[start : start + NAIVE_CHUNK] @ catalog.T
        out.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])
    return np.concatenate(out)


def time_interleaved(
    methods: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True
) -> dict[str, list[float]]:
    """Seconds per call of each method; one warm-up each (if asked), then rotating order."""
    names = list(methods)
    for name in names if warmup else ():
        methods[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            gc.collect()
            t0 = time.perf_counter()
            methods[name]()
            samples[name].append(time.perf_counter() - t0)
    return samples


def agreement(a: NDArray[np.int64], b: NDArray[np.int64]) -> float:
    """Share of the top-k sets that match exactly (ties may legitimately differ)."""
    a2, b2 = np.atleast_2d(a), np.atleast_2d(b)
    same = [set(x.tolist()) == set(y.tolist()) for x, y in zip(a2, b2, strict=True)]
    return float(np.mean(same))


def run_case(
    catalog: NDArray[np.float32],
    ranker: CosineRanker,
    index: Any,
    nq: int,
    settings: Settings,
) -> dict[str, Any]:
    rng = np.random.default_rng(settings.seed + nq)
    q = rng.standard_normal((nq, settings.dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = settings.k
    one = q[0]
    naive_q = q[: min(nq, NAIVE_MAX_QUERIES)]
    methods: dict[str, Callable[[], Any]] = {
        "bertrec": (lambda: ranker.topk(one, k)) if nq == 1 else (lambda: ranker.topk(q, k)),
        "naive_sort": lambda: naive_topk(catalog, naive_q, k),
    }
    if index is not None:
        methods["faiss_flatip"] = lambda: index.search(q, k)
    if nq == 1:
        methods["bare_gemv"] = lambda: catalog @ one
    work = len(catalog) * nq
    repeats = settings.repeats_large if work >= settings.large_work else settings.repeats
    if nq == 1:
        repeats = settings.repeats_single
    # The largest cases run after smaller ones on the same catalog, which warmed the pages
    # and thread pools already; a warm-up call of theirs would cost a minute and tell nothing.
    samples = time_interleaved(methods, repeats, warmup=work < settings.large_work)
    med = {name: median(s) for name, s in samples.items()}
    if len(naive_q) < nq:
        med["naive_sort"] *= nq / len(naive_q)
    ours = ranker.topk(q, k).rows if nq > 1 else ranker.topk(one, k).rows
    row: dict[str, Any] = {
        "n": len(catalog),
        "queries": nq,
        "k": k,
        "repeats": repeats,
        "median_s": med,
        "samples_s": samples,
        "naive_timed_queries": len(naive_q),
        "queries_per_s": {name: nq / t for name, t in med.items() if name != "bare_gemv"},
    }
    if index is not None:
        _, ids = index.search(q, k)
        row["agreement_with_faiss"] = agreement(ours, ids.reshape(ours.shape))
        row["speedup_vs_faiss"] = med["faiss_flatip"] / med["bertrec"]
    row["speedup_vs_naive"] = med["naive_sort"] / med["bertrec"]
    if nq == 1:
        row["ratio_to_bare_gemv"] = med["bertrec"] / med["bare_gemv"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scorer", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    p.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=None)
    p.add_argument("--no-record", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    settings = Settings()
    if args.quick:
        settings = Settings(sizes=(20_000,), queries=(1, 64, 256), repeats=3)
    if args.sizes:
        settings = Settings(**{**asdict(settings), "sizes": args.sizes})
    faiss: Any = None
    try:
        import faiss
    except ImportError:
        log("faiss-cpu is not installed: the FAISS column is left out (pip install faiss-cpu)")
    threads: dict[str, Any] = {
        "faiss_omp": faiss.omp_get_max_threads() if faiss is not None else None,
        "blas": blas_threads(),
    }
    settings = Settings(**{**asdict(settings), "threads": threads})
    machine = machine_info()
    log(f"machine: {machine_line(machine)}")
    rows = []
    for n in settings.sizes:
        log(f"building a {n:,} x {settings.dim} catalog")
        catalog = make_catalog(n, settings.dim, settings.seed)
        t0 = time.perf_counter()
        ranker = CosineRanker(catalog)
        build_s = time.perf_counter() - t0
        index = None
        if faiss is not None:
            index = faiss.IndexFlatIP(settings.dim)
            index.add(catalog)
        for nq in settings.queries:
            log(f"  n={n:,} queries={nq}")
            row = run_case(catalog, ranker, index, nq, settings)
            row["ranker_build_s"] = build_s
            rows.append(row)
        del catalog, ranker, index
        gc.collect()
    record = {
        "settings": asdict(settings),
        "machine": machine,
        "versions": versions(("bertrec", "numpy", "faiss-cpu")),
        "results": rows,
    }
    print_table(rows)
    if not args.no_record:
        path = write_record("scorer", record, quick=args.quick)
        print(f"record: {path}")
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'n':>9} {'queries':>7} {'bertrec ms':>11} {'faiss ms':>9} {'naive ms':>10} "
        f"{'vs faiss':>8} {'vs naive':>8} {'/gemv':>6} {'agree':>6}"
    )
    print(head)
    for r in rows:
        m = r["median_s"]
        faiss_ms = f"{m['faiss_flatip'] * 1e3:9.1f}" if "faiss_flatip" in m else f"{'-':>9}"
        vs_faiss = f"{r['speedup_vs_faiss']:7.2f}x" if "speedup_vs_faiss" in r else f"{'-':>8}"
        gemv = f"{r['ratio_to_bare_gemv']:6.2f}" if "ratio_to_bare_gemv" in r else f"{'':>6}"
        agree = f"{r['agreement_with_faiss']:6.2f}" if "agreement_with_faiss" in r else f"{'':>6}"
        print(
            f"{r['n']:>9,} {r['queries']:>7} {m['bertrec'] * 1e3:11.1f} {faiss_ms} "
            f"{m['naive_sort'] * 1e3:10.1f} {vs_faiss} {r['speedup_vs_naive']:7.1f}x {gemv} "
            f"{agree}"
        )


if __name__ == "__main__":
    sys.exit(main())
