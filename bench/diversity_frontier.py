"""How much intra-list diversity each re-ranking buys for 5% of NDCG@10 on MovieLens.

    python -m bench.diversity_frontier           # 610 users, both splits (~1 min)
    python -m bench.diversity_frontier --quick   # 100 users, fewer weights (< 1 min)

Same protocol, model and Recommender defaults as bench/recsys_eval.py. Each user's 300
best candidates (``recommend(k=300)``) are re-ranked to 10 by every variant below, at
several weights; each weight gives (NDCG@10 change, intra-list diversity change) against
no re-ranking, on the validation split and on the test split. The figure compared is the
diversity change at -5% NDCG@10, interpolated on each variant's frontier (the issue asks
for >= +20% there).

Variants:
- ``classic_mmr``: MMR on the raw scores, max cosine to the picks, pick order.
- ``recommender``: what ``recommend(diversity=w)`` does (``diverse_picks``: MMR on
  ``rank ** -0.5`` with mean cosine, listed in score order). The record also holds how
  the hit rate falls with rank (``hit_rate_decay``: a in rank ** -a), which that uses,
  and the hit rate of ranks 11-100 by quintile of similarity to the top 10.
- ``swap_search``: the set maximizing ``sum(rank relevance x position gain) + w x ILD``,
  by swaps from the top 10 until none helps (a stronger optimizer of the same trade).
- ``history_scaled``: ``recommender`` with the weight scaled per user by their history's
  own diversity over the catalog's (varied taste, more varied list).

The record goes to bench/results/diversity-<UTC>.json. MovieLens comes from ``--data DIR``
or ``$BERTREC_MOVIELENS``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.common import (
    add_data_arg,
    log,
    machine_info,
    machine_line,
    movielens_dir,
    versions,
    write_record,
)
from bench.recsys_eval import QUICK_USERS, subset, validation_split
from bertrec.rank import RANK_DECAY, diverse_picks, mmr_select
from bertrec.recommend import Recommender
from bertrec.runtime.encoder import Encoder
from examples.movielens.data import item_texts, load_movielens, split_movielens
from examples.movielens.metrics import (
    intra_list_diversity,
    ndcg_at_k,
    popularity_counts,
    user_history,
)
from examples.movielens.model import ensure_model

K = 10
POOL = 300
MAX_NDCG_LOSS = 0.05
TARGET_GAIN = 0.20

Picker = Callable[[NDArray[np.float32], NDArray[np.float32], float, float], NDArray[np.intp]]


def swap_search(vectors: NDArray[np.float32], weight: float) -> NDArray[np.intp]:
    """Swaps from the top k while ``sum(rank ** -RANK_DECAY x gain) + weight x ILD`` grows."""
    p = len(vectors)
    k = min(K, p)
    rel = np.arange(1, p + 1, dtype=np.float64) ** -RANK_DECAY
    gain = 1.0 / np.log2(np.arange(2, k + 2))
    sims = vectors.astype(np.float64) @ vectors.T.astype(np.float64)
    sel = np.arange(k)

    def value(s: NDArray[np.intp]) -> float:
        sub = sims[np.ix_(s, s)]
        ild = 1 - (sub.sum() - np.trace(sub)) / (k * (k - 1)) if k > 1 else 0.0
        return float(np.sort(rel[s])[::-1] @ gain + weight * ild)

    best = value(sel)
    improved = k > 1
    while improved:
        improved = False
        for i in range(k):
            rest = np.delete(sel, i)
            cand = np.setdiff1d(np.arange(p), sel)
            if not len(cand):
                break
            inner = sims[np.ix_(rest, rest)]
            pairs = inner.sum() - np.trace(inner) + 2 * sims[np.ix_(cand, rest)].sum(axis=1)
            rels = np.concatenate([np.tile(rel[rest], (len(cand), 1)), rel[cand, None]], axis=1)
            vals = -np.sort(-rels, axis=1) @ gain + weight * (1 - pairs / (k * (k - 1)))
            j = int(np.argmax(vals))
            if vals[j] > best + 1e-12:
                sel, best, improved = np.append(rest, cand[j]), float(vals[j]), True
    return np.sort(sel)


VARIANTS: dict[str, tuple[Picker, tuple[float, ...]]] = {
    "classic_mmr": (lambda v, s, w, f: mmr_select(s, v, K, w), (0.2, 0.3, 0.4, 0.5)),
    "recommender": (lambda v, s, w, f: diverse_picks(v, K, w), (0.6, 0.65, 0.7, 0.75, 0.8)),
    "swap_search": (lambda v, s, w, f: swap_search(v, w), (1.0, 2.0, 3.0, 4.0, 6.0)),
    "history_scaled": (
        lambda v, s, w, f: diverse_picks(v, K, min(1.0, w * f)),
        (0.6, 0.65, 0.7, 0.75, 0.8),
    ),
}
QUICK_WEIGHTS = {"classic_mmr": (0.3,), "recommender": (0.7,), "swap_search": (3.0,)}


def at_loss(points: list[dict[str, float]], loss: float = MAX_NDCG_LOSS) -> float | None:
    """Diversity change where the frontier crosses ``-loss`` NDCG change (linear), if it does."""
    pts = sorted(points, key=lambda p: -p["ndcg_change"])
    for a, b in zip(pts, pts[1:], strict=False):
        if a["ndcg_change"] >= -loss >= b["ndcg_change"] and a["ndcg_change"] != b["ndcg_change"]:
            t = (-loss - a["ndcg_change"]) / (b["ndcg_change"] - a["ndcg_change"])
            return a["diversity_change"] + t * (b["diversity_change"] - a["diversity_change"])
    return None


def hit_rate_decay(users: list[Any]) -> float:
    """``a`` in hit rate ~ rank ** -a: a least-squares line through log hit rate against
    log rank over the candidate ranks, each rank weighted by the square root of its hits."""
    hits = np.zeros(POOL)
    counts = np.zeros(POOL)
    for rows, _, relevant, _ in users:
        hits[: len(rows)] += [r in relevant for r in rows.tolist()]
        counts[: len(rows)] += 1
    ok = hits > 0
    rank = np.arange(1, POOL + 1)[ok]
    slope = np.polyfit(np.log(rank), np.log(hits[ok] / counts[ok]), 1, w=np.sqrt(hits[ok]))[0]
    return float(-slope)


def hit_rate_by_similarity(
    users: list[Any], vectors: NDArray[np.float32], ranks: tuple[int, int] = (10, 100)
) -> list[float]:
    """Hit rate of the candidates at ``ranks`` (0-based, end excluded) in each quintile of
    their mean cosine to the user's top 10: flat means a swap for a less similar
    candidate costs only what its rank costs."""
    sims, hits = [], []
    for rows, _, relevant, _ in users:
        pool = rows[ranks[0] : ranks[1]]
        if not len(pool):
            continue
        sims.append((vectors[pool] @ vectors[rows[:K]].T).mean(axis=1))
        hits.append(np.array([r in relevant for r in pool.tolist()], dtype=np.float64))
    if not sims:
        return []
    sim, hit = np.concatenate(sims), np.concatenate(hits)
    order = np.argsort(sim, kind="stable")
    return [float(hit[part].mean()) for part in np.array_split(order, 5)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    data_dir = movielens_dir(args.data)
    data = load_movielens(data_dir)
    enc = Encoder(ensure_model(args.model, say=log), precision="fp32", device="cpu")
    log(f"encoding {len(data.item_ids):,} items")
    vectors = enc.encode(item_texts(data))
    catalog_ild = float(1 - np.square(vectors.mean(axis=0, dtype=np.float64)).sum())
    row = {m: i for i, m in enumerate(data.item_ids)}
    test_all = split_movielens(data)
    splits = {"validation": validation_split(data, test_all), "test": test_all}
    n_users = QUICK_USERS if args.quick else None
    out: dict[str, Any] = {}
    for name, all_users in splits.items():
        rec = Recommender.from_vectors(
            enc, vectors, data.item_ids, popularity_counts(all_users, data.item_ids)
        )
        users = []
        for s in subset(all_users, n_users):
            hist, seen = user_history(s)
            pool = rec.recommend(hist, k=POOL, exclude=seen)
            rows = np.array([row[m] for m, _ in pool], dtype=np.intp)
            h_rows = [row[m] for m in hist][-rec.scorer.recent :]
            h_ild = intra_list_diversity(vectors[h_rows]) if len(h_rows) > 1 else None
            users.append((rows, np.array([sc for _, sc in pool]), {row[m] for m in s.test}, h_ild))

        def score(
            pick: Callable[[Any], NDArray[np.intp]], users: list[Any] = users
        ) -> tuple[float, float]:
            nd, il = [], []
            for u in users:
                shown = u[0][pick(u)]
                nd.append(ndcg_at_k(shown.tolist(), u[2], K))
                il.append(intra_list_diversity(vectors[shown]) or 0.0)
            return float(np.mean(nd)), float(np.mean(il))

        base_ndcg, base_ild = score(lambda u: np.arange(min(K, len(u[0]))))
        out[name] = {
            "base": {"ndcg": base_ndcg, "diversity": base_ild},
            "hit_rate_decay": hit_rate_decay(users),
            "hit_rate_by_similarity_quintile": hit_rate_by_similarity(users, vectors),
            "variants": {},
        }
        for variant, (picker, weights) in VARIANTS.items():
            if args.quick and variant not in QUICK_WEIGHTS:
                continue
            points = []
            for w in QUICK_WEIGHTS[variant] if args.quick else weights:

                def pick(u: Any, w: float = w, picker: Picker = picker) -> NDArray[np.intp]:
                    return picker(vectors[u[0]], u[1], w, (u[3] or catalog_ild) / catalog_ild)

                ndcg, ild = score(pick)
                points.append(
                    {
                        "weight": w,
                        "ndcg": ndcg,
                        "diversity": ild,
                        "ndcg_change": ndcg / base_ndcg - 1,
                        "diversity_change": ild / base_ild - 1,
                    }
                )
                log(f"  {name} {variant} {w}: NDCG {points[-1]['ndcg_change']:+.1%}, "
                    f"ILD {points[-1]['diversity_change']:+.1%}")  # fmt: skip
            out[name]["variants"][variant] = {"points": points, "gain_at_loss": at_loss(points)}
    return {
        "settings": {
            "quick": args.quick,
            "users": len(users),
            "pool": POOL,
            "k": K,
            "max_ndcg_loss": MAX_NDCG_LOSS,
            "target_gain": TARGET_GAIN,
            "recommender_defaults": rec.settings(),
            "catalog_ild": catalog_ild,
            "data_dir": str(data_dir),
            "model_variant": enc.variant,
        },
        "machine": machine_info(),
        "versions": versions(),
        "splits": out,
        "timings": {"total_s": time.perf_counter() - t_start},
    }


def print_report(record: dict[str, Any]) -> None:
    s = record["settings"]
    print(
        f"intra-list diversity change at -{s['max_ndcg_loss']:.0%} NDCG@10 "
        f"({s['users']} users per split, pool {s['pool']}; target +{s['target_gain']:.0%}):"
    )
    decay = ", ".join(f"{k} {v['hit_rate_decay']:.2f}" for k, v in record["splits"].items())
    print(f"hit rate ~ rank ** -a over the candidates: a = {decay}")
    for split, v in record["splits"].items():
        q = ", ".join(f"{h:.2%}" for h in v["hit_rate_by_similarity_quintile"])
        print(
            f"{split}: hit rate of ranks 11-100 by similarity-to-top-10 quintile (low..high): {q}"
        )
    names = list(record["splits"]["test"]["variants"])
    for v in names:
        cells = []
        for split in ("validation", "test"):
            g = record["splits"][split]["variants"][v]["gain_at_loss"]
            cells.append(f"{split} {'not crossed' if g is None else f'{g:+.1%}'}")
        print(f"  {v:15s} " + ", ".join(cells))
    print(f"machine: {machine_line(record['machine'])}; total {record['timings']['total_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.diversity_frontier", description=__doc__)
    p.add_argument("--quick", action="store_true", help=f"{QUICK_USERS} users, one weight each")
    add_data_arg(p)
    p.add_argument("--model", default=None, help="model directory (default: cached export)")
    p.add_argument("--no-record", action="store_true", help="print only, write no JSON")
    args = p.parse_args(argv)
    record = run(args)
    print_report(record)
    if not args.no_record:
        print(f"record: {write_record('diversity', record, quick=args.quick)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
