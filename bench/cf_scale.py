"""The hybrid Recommender at scale: fit time and memory on a synthetic 200,000-item,
5,000,000-interaction set, and the latency of ``recommend`` for one user on it.

    python -m bench.cf_scale           # 200k items, 5M interactions (the issue's figures)
    python -m bench.cf_scale --quick   # 25k items, 300k interactions: ALS as well (< 1 min)

Synthetic data (seed 0): item vectors are unit vectors of dim 384 around 500 topic
centres; each user (mean history 50, lognormal lengths) picks items from two or three
topics, items inside a topic by a Zipf popularity, with a rating-like weight in 1..5.
``Recommender.from_vectors(..., interactions=...)`` fits the model "auto" picks (ALS above
``EASE_MAX_ITEMS`` items with interactions). Fit time is wall time of that call (parsing
the interactions included); memory is the process's peak resident set (an upper bound:
the synthetic data is in it too). Latency: ``recommend(history, k=10, weights=...)`` for
users drawn from the set, one call each, after warm-up; p50/p90/p99; also the content-only
Recommender and the collaborative part alone (factors, all scores, top 10). The content
part reads the whole catalog (200,000 x 384 float32, 300 MB) for every request, so it
bounds the hybrid from below. Targets (the issue):
fit <= 10 min and <= 8 GB on 2 cores, one recommendation <= 50 ms. The record goes to
bench/results/cf-scale-<UTC>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    VERSIONED,
    log,
    machine_info,
    machine_line,
    percentiles,
    versions,
    write_record,
)
from bertrec.recommend import Recommender
from bertrec.recommend.collab import EASE_MAX_ITEMS
from bertrec.recommend.scorer import top_m_sum

TARGET_FIT_S = 600.0
TARGET_RSS_GIB = 8.0
TARGET_LATENCY_MS = 50.0
DIM = 384
TOPICS = 500
MEAN_HISTORY = 50


class SyntheticEncoder:
    """Stands for the model that made the synthetic vectors (only its identity is used)."""

    dim = DIM
    fingerprint = "synthetic-cf-scale"
    variant = ""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        raise NotImplementedError("the synthetic catalog has no texts")


def synthetic(items: int, interactions: int, seed: int = 0) -> dict[str, Any]:
    """Item vectors, and interactions as columns (user_id, item_id, weight)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    topic = rng.integers(0, TOPICS, size=items)
    vectors = centres[topic] + 0.8 * rng.standard_normal((items, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    members = [np.flatnonzero(topic == t) for t in range(TOPICS)]
    users, chosen = [], []
    total, u = 0, 0
    while total < interactions:
        n = int(min(1000, max(2, rng.lognormal(np.log(MEAN_HISTORY) - 0.5, 1.0))))
        n = min(n, interactions - total)
        tastes = rng.integers(0, TOPICS, size=int(rng.integers(2, 4)))
        pool = np.concatenate([members[t] for t in tastes])
        zipf = 1.0 / np.arange(1, len(pool) + 1)
        pick = rng.choice(pool, size=min(n, len(pool)), replace=False, p=zipf / zipf.sum())
        users.append(np.full(len(pick), u))
        chosen.append(pick)
        total += len(pick)
        u += 1
    user_col = np.concatenate(users)
    item_col = np.concatenate(chosen)
    weights = rng.integers(1, 6, size=len(item_col)).astype(np.float64)
    return {
        "vectors": vectors,
        "columns": {"user_id": user_col, "item_id": item_col, "weight": weights},
        "users": u,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    items, n_inter = (25_000, 300_000) if args.quick else (args.items, args.interactions)
    log(f"making {items:,} items and {n_inter:,} interactions")
    t0 = time.perf_counter()
    data = synthetic(items, n_inter)
    make_s = time.perf_counter() - t0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cols = data["columns"]
    log("fitting (model 'auto')")
    t0 = time.perf_counter()
    rec = Recommender.from_vectors(
        SyntheticEncoder(), data["vectors"], np.arange(items), None, interactions=cols
    )
    fit_s = time.perf_counter() - t0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if rec.model is None:
        raise RuntimeError("no collaborative model was fitted")
    log(f"fit {fit_s:.1f} s ({rec.model.kind}), peak RSS {rss_gib:.2f} GiB")

    # Users drawn from the set: their own history (ids and weights), seen items excluded.
    rng = np.random.default_rng(1)
    order = np.argsort(cols["user_id"], kind="stable")
    bounds = np.searchsorted(cols["user_id"][order], np.arange(data["users"] + 1))
    picks = rng.choice(data["users"], size=args.requests + 5, replace=False)
    histories = []
    for u in picks:
        span = order[bounds[u] : bounds[u + 1]]
        histories.append((cols["item_id"][span].tolist(), cols["weight"][span].tolist()))
    content = Recommender.from_catalog(rec.catalog)
    model = rec.model
    timings: dict[str, list[float]] = {"hybrid": [], "content_only": [], "collaborative": []}

    def collaborative(hist: list[int], w: list[float]) -> None:
        # The collaborative part alone: the user's factors, every item's score, the top 10.
        rows = rec.catalog.rows_of(hist)
        scores = model.users([(rows, np.asarray(w))], rec.vectors).block(0, items)[0][0]
        np.argpartition(-scores, 10)[:10]

    calls = {
        "hybrid": lambda h, w: rec.recommend(h, k=10, weights=w),
        "content_only": lambda h, w: content.recommend(h, k=10, weights=w),
        "collaborative": collaborative,
    }
    for i, (hist, w) in enumerate(histories):
        for name, call in calls.items():
            t = time.perf_counter()
            call(hist, w)
            if i >= 5:  # the first calls warm up
                timings[name].append(time.perf_counter() - t)
    latency = {name: percentiles(v) for name, v in timings.items()}
    topm = top_m_timing(items, rec.scorer.recent, rec.scorer.top_m)
    lengths = [len(h) for h, _ in histories[5:]]
    return {
        "settings": {
            "quick": args.quick,
            "items": items,
            "interactions": n_inter,
            "users": data["users"],
            "dim": DIM,
            "topics": TOPICS,
            "mean_history": MEAN_HISTORY,
            "requests": args.requests,
            "model": rec.model.kind,
            "collab": rec.model.meta()["settings"],
            "recommender": rec.settings(),
            "ease_max_items": EASE_MAX_ITEMS,
        },
        "machine": machine_info(),
        "versions": versions((*VERSIONED, "implicit", "scipy")),
        "make_s": make_s,
        "fit_s": fit_s,
        "peak_rss_gib": rss_gib,
        "rss_before_fit_gib": rss_before,
        "warm_items": len(rec.model.warm),
        "history_length": {"median": float(np.median(lengths)), "max": int(max(lengths))},
        "latency": latency,
        "top_m_selection_ms": topm,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "acceptance": {
            "fit_s": fit_s,
            "fit_met": fit_s <= TARGET_FIT_S,
            "peak_rss_gib": rss_gib,
            "memory_met": rss_gib <= TARGET_RSS_GIB,
            "recommend_p50_ms": latency["hybrid"]["p50_ms"],
            "latency_met": latency["hybrid"]["p50_ms"] <= TARGET_LATENCY_MS,
        },
    }


def top_m_timing(items: int, entries: int, m: int, repeats: int = 9) -> dict[str, float]:
    """The knn profile's top-m selection for one user over the whole catalog (``entries``
    similarities per item): ``top_m_sum``'s running maxima against ``np.partition`` along
    the entries axis (what the scorer used before), median ms."""
    sims = np.random.default_rng(2).standard_normal((1, entries, items)).astype(np.float32)
    by_item = np.ascontiguousarray(sims.transpose(2, 0, 1))
    width = entries

    def partition() -> None:
        np.partition(by_item, width - m, axis=2)[:, :, width - m :].sum(axis=2)

    out: dict[str, list[float]] = {"running_maxima": [], "np_partition": []}
    for _ in range(repeats):
        calls = (("running_maxima", lambda: top_m_sum(sims, m)), ("np_partition", partition))
        for name, call in calls:
            t = time.perf_counter()
            call()
            out[name].append((time.perf_counter() - t) * 1e3)
    return {name: float(np.median(v)) for name, v in out.items()}


def print_report(record: dict[str, Any]) -> None:
    s, a = record["settings"], record["acceptance"]
    print(
        f"{s['items']:,} items, {s['interactions']:,} interactions, {s['users']:,} users: "
        f"model {s['model']}, fit {record['fit_s']:.1f} s, peak RSS "
        f"{record['peak_rss_gib']:.2f} GiB"
    )
    for name, lat in record["latency"].items():
        print(
            f"  recommend ({name}): p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, "
            f"p99 {lat['p99_ms']:.1f} ms over {lat['n']} users (median history "
            f"{record['history_length']['median']:.0f})"
        )
    t = record["top_m_selection_ms"]
    print(
        f"  top-m selection over the catalog: running maxima {t['running_maxima']:.1f} ms, "
        f"np.partition {t['np_partition']:.1f} ms"
    )
    print(
        f"acceptance: fit {'met' if a['fit_met'] else 'NOT met'} (<= {TARGET_FIT_S:.0f} s), "
        f"memory {'met' if a['memory_met'] else 'NOT met'} (<= {TARGET_RSS_GIB:.0f} GiB), "
        f"latency {'met' if a['latency_met'] else 'NOT met'} (p50 <= {TARGET_LATENCY_MS:.0f} ms)"
    )
    print(f"machine: {machine_line(record['machine'])}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cf_scale", description=__doc__)
    p.add_argument("--quick", action="store_true", help="25k items, 300k interactions")
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--interactions", type=int, default=5_000_000)
    p.add_argument("--requests", type=int, default=50, help="users timed")
    p.add_argument("--no-record", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    record = run(args)
    print_report(record)
    if not args.no_record:
        print(f"record: {write_record('cf-scale', record, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
