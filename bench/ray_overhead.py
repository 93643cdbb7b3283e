"""What Ray costs and gives for `bertrec encode` on one machine: the same MovieLens texts
encoded in this process and on a local Ray (one worker, then one per CPU).

    python -m bench.ray_overhead            # 20,000 texts (~5 min on 2 cores)
    python -m bench.ray_overhead --quick    # 4,000 texts, CI smoke (< 2 min)

MovieLens comes from ``--data DIR`` or ``$BERTREC_MOVIELENS``.

The one-worker Ray figure is the per-worker throughput to plan a cluster with; its gap to
one in-process thread is Ray's overhead (actor start, model load per actor, scheduling).
Every run is checked to give the in-process ids and vectors. A JSON record goes to
bench/results/ray-<UTC>.json (a quick one to a temp dir).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import (
    VERSIONED,
    add_data_arg,
    bench_model_dir,
    log,
    machine_info,
    machine_line,
    movielens_dir,
    usable_cores,
    versions,
    write_record,
)
from bertrec.jobs import encode_dataset
from bertrec.runtime.encoder import Encoder
from examples.movielens.data import load_movielens

# Two phrasings per film, so 20,000 rows are realistic item texts with few repeats.
TEMPLATES = ("{title}. Genres: {genres}.", "A {genres} film: {title}")


@dataclass(frozen=True)
class Row:
    """One timed run: every setting that produced it and its figures."""

    engine: str
    workers: int
    threads_per_worker: int
    rows: int
    shards: int
    seconds: float
    rows_per_s: float
    max_abs_diff_vs_in_process: float | None
    loadavg_1m_after: float


def movielens_texts(n: int, data_dir: Path) -> list[str]:
    """``n`` short texts of MovieLens films (title and genres in two phrasings), cycling the
    films. Shorter than the demo's ``item_text`` (no tags), so a Ray job's rows are many
    and cheap, which is where its per-row overhead shows."""
    data = load_movielens(data_dir)
    films = [
        (title, ", ".join(genres).lower() or "(no genres listed)")
        for title, genres in zip(data.titles, data.genres, strict=True)
    ]
    out = []
    for i in range(n):
        title, genres = films[i % len(films)]
        out.append(TEMPLATES[(i // len(films)) % len(TEMPLATES)].format(title=title, genres=genres))
    return out


def read_vectors(out: Path) -> tuple[list[Any], np.ndarray]:
    table = pq.read_table(out)
    dim = table.schema.field("embedding").type.list_size
    flat = table.column("embedding").combine_chunks().flatten().to_numpy()
    return table.column("id").to_pylist(), flat.reshape(-1, dim)


def run(label: str, work: Path, src: Path, model: Path, **kw: Any) -> tuple[Row, Path]:
    """One encode job into a fresh folder; its figures."""
    out = work / label.replace(" ", "_").replace(",", "")
    shutil.rmtree(out, ignore_errors=True)
    res = encode_dataset(src, out, model, **kw)
    row = Row(
        engine=res.engine,
        workers=kw.get("workers") or 1,
        threads_per_worker=kw.get("cpus_per_worker") or kw.get("threads") or 1,
        rows=res.written,
        shards=res.shards,
        seconds=round(res.seconds, 3),
        rows_per_s=round(res.written / res.seconds, 1),
        max_abs_diff_vs_in_process=None,
        loadavg_1m_after=round(os.getloadavg()[0], 2),
    )
    log(f"  {label:26s} {row.seconds:8.2f} s  {row.rows_per_s:8.1f} rows/s")
    return row, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4,000 texts, CI smoke (< 2 min)")
    p.add_argument("--rows", type=int, default=None, help="texts to encode (default 20,000)")
    p.add_argument("--shard-rows", type=int, default=None, help="default: rows / (4 x CPUs)")
    p.add_argument("--precision", default="auto", help="model variant (auto: as Encoder)")
    p.add_argument("--model", type=Path, default=None, help="model dir (default: cached MiniLM)")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    add_data_arg(p)
    args = p.parse_args(argv)
    data_dir = movielens_dir(args.data)
    import ray

    machine = machine_info()
    cpus = usable_cores()
    n = args.rows or (4000 if args.quick else 20000)
    # Several shards per worker, so one slow shard does not leave a worker idle at the end.
    shard_rows = args.shard_rows or max(256, n // (4 * cpus))
    model = args.model or bench_model_dir()
    enc = Encoder(model, precision=args.precision, device="cpu")
    backend, precision = enc.backend, enc.precision
    log(f"{machine_line(machine)}")
    log(f"{n} MovieLens texts, {backend} {precision}, shards of {shard_rows}")
    common = {"precision": precision, "shard_rows": shard_rows}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bertrec-ray-bench-") as tmp:
        work = Path(tmp)
        src = work / "items.parquet"
        texts = movielens_texts(n, data_dir)
        pq.write_table(pa.table({"id": np.arange(n, dtype=np.int64), "text": texts}), src)
        enc.encode(texts[:256])  # warm-up: first-run compilation and caches, not timed
        del enc

        base, base_out = run("in-process, 1 thread", work, src, model, threads=1, **common)
        rows.append(base)
        if cpus > 1:
            label = f"in-process, {cpus} threads"
            rows.append(run(label, work, src, model, threads=cpus, **common)[0])
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
        log(f"  ray.init (local)           {ray_init_s:8.2f} s")
        ref_ids, ref = read_vectors(base_out)
        for w in sorted({1, cpus}):
            label = f"ray, {w} x 1 CPU"
            row, out = run(
                label, work, src, model, ray_address="local", workers=w, cpus_per_worker=1,
                **common,
            )  # fmt: skip
            ids, got = read_vectors(out)
            if ids != ref_ids:
                sys.exit(f"{label}: ids differ from the in-process run")
            rows.append(replace(row, max_abs_diff_vs_in_process=float(np.abs(got - ref).max())))
        ray.shutdown()

    one_worker = next(r for r in rows if r.engine == "ray" and r.workers == 1)
    record = {
        "quick": args.quick,
        "settings": {
            "rows": n,
            "shard_rows": shard_rows,
            "precision_asked": args.precision,
            "backend": backend,
            "precision": precision,
            "model": str(model),
            "texts": "MovieLens movies.csv: title and genres, 2 templates",
            "data_dir": str(data_dir),
        },
        "machine": machine,
        "versions": versions((*VERSIONED, "ray", "pyarrow")),
        "ray_init_s": round(ray_init_s, 3),
        "ray_one_worker_rows_per_s": one_worker.rows_per_s,
        "ray_one_worker_overhead": round(1 - one_worker.rows_per_s / base.rows_per_s, 4),
        "rows": [asdict(r) for r in rows],
    }
    path = write_record("ray", record, results_dir=args.out, quick=args.quick)

    print("| run | workers x threads | seconds | rows/s | max abs diff vs in-process |")
    print("|---|---|---|---|---|")
    for r in rows:
        diff = r.max_abs_diff_vs_in_process
        print(
            f"| {r.engine} | {r.workers} x {r.threads_per_worker} | {r.seconds:.2f} | "
            f"{r.rows_per_s:.0f} | {'-' if diff is None else f'{diff:.1e}'} |"
        )
    print(
        f"\nray.init {ray_init_s:.1f} s (outside the job times). One Ray worker: "
        f"{one_worker.rows_per_s:.0f} rows/s, {100 * record['ray_one_worker_overhead']:.1f}% "
        f"below one in-process thread.\nrecord: {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
