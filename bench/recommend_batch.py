"""Many users at once: ``Recommender.recommend_batch`` against one ``recommend`` call per
user, checked to give the same lists.

    python -m bench.recommend_batch           # 610 MovieLens users; 10,000 synthetic users
    python -m bench.recommend_batch --quick   # 100 MovieLens users; a small synthetic case

Two cases, each run by both paths with the same arguments:
- ``movielens``: the MovieLens users (from ``--data DIR`` or ``$BERTREC_MOVIELENS``), the
  fp32 all-MiniLM-L6-v2 vectors of the item texts, popularity counted on the histories,
  and the recsys_eval protocol: the liked history of
  ``examples.movielens.metrics.user_history``, every rated item excluded.
- ``synthetic``: users with 20 random history items over random unit vectors of dim 384,
  with a Zipf popularity over a random item order.

After one warm-up call of each path, ``repeats`` rounds alternate which path goes first;
the figure is the median, as users/s, and the batch path's speed over the loop's. Every
timed pair is checked: the same ids in the same order for every user, scores within
``tolerance``; the script exits 1 when they differ. A user of the synthetic case scores
20 x 384 multiply-adds per catalog item, so a pass over every synthetic user would take
long; each round takes the next ``run_users`` of them instead (a users/s figure does not
depend on which). A JSON record goes to bench/results/recommend-batch-<UTC>.json.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from bench.common import (
    add_data_arg,
    blas_threads,
    log,
    machine_info,
    machine_line,
    median,
    movielens_dir,
    usable_cores,
    versions,
    write_record,
)
from bench.recsys_eval import subset
from bench.scorer import make_catalog
from bertrec.recommend import ItemCatalog, Recommender
from bertrec.recommend.scorer import CHUNK_ENTRIES
from bertrec.runtime.encoder import Encoder
from examples.movielens.data import item_texts, load_movielens, split_movielens
from examples.movielens.metrics import popularity_counts, user_history
from examples.movielens.model import ensure_model

KIND = "recommend-batch"
PATHS = ("batch", "loop")
Lists = list[list[tuple[Any, float]]]


@dataclass(frozen=True)
class Settings:
    """Everything that shapes the figures.

    Attributes:
        movielens_users: MovieLens users (a seeded sample; None: every user).
        synthetic_users: synthetic users made.
        synthetic_items: synthetic catalog size.
        dim: synthetic vector dimension (MiniLM's).
        history: items per synthetic history.
        run_users: synthetic users per timed run (the next slice each round).
        k: items per list.
        repeats: timed rounds per case.
        warmup_users: users of the warm-up call of each path.
        tolerance: largest score difference that counts as the same.
        seed: fixes the synthetic data and the MovieLens sample.
    """

    movielens_users: int | None = None
    synthetic_users: int = 10_000
    synthetic_items: int = 100_000
    dim: int = 384
    history: int = 20
    run_users: int = 400
    k: int = 10
    repeats: int = 5
    warmup_users: int = 64
    tolerance: float = 1e-5
    seed: int = 0


QUICK = Settings(
    movielens_users=100,
    synthetic_users=1_000,
    synthetic_items=10_000,
    run_users=200,
    repeats=2,
    warmup_users=16,
)


@dataclass(frozen=True)
class Case:
    """One recommender and its users: what both paths are given."""

    name: str
    rec: Recommender
    histories: list[list[Hashable]]
    exclude: list[list[Hashable]] | None
    run_users: int
    info: dict[str, Any]


# -- the cases --------------------------------------------------------------------------------


def movielens_case(settings: Settings, args: argparse.Namespace) -> Case:
    """The MovieLens users with the fp32 MiniLM catalog, as bench/recsys_eval.py scores them."""
    model_dir = ensure_model(args.model, say=log)
    data_dir = movielens_dir(args.data)
    data = load_movielens(data_dir)
    enc = Encoder(model_dir, precision="fp32", device="cpu")
    texts = item_texts(data)
    log(f"encoding {len(texts):,} MovieLens items with {enc.backend} {enc.precision}")
    t0 = time.perf_counter()
    vectors = enc.encode(texts)
    encode_s = time.perf_counter() - t0
    splits = split_movielens(data)
    rec = Recommender.from_vectors(
        enc, vectors, data.item_ids, popularity_counts(splits, data.item_ids)
    )
    users = subset(splits, settings.movielens_users, settings.seed)
    histories, exclude = [], []
    for s in users:
        hist, seen = user_history(s)
        histories.append(list(hist))
        exclude.append(list(seen))
    lengths = [len(h) for h in histories]
    info = {
        "data_dir": str(data_dir),
        "model_dir": str(model_dir),
        "model_variant": enc.variant,
        "encoder": repr(enc),
        "encode_s": round(encode_s, 2),
        "history": "liked (>= 4.0) history items, oldest first; every rated item excluded",
        "history_mean": float(np.mean(lengths)),
        "history_max": max(lengths),
    }
    return Case("movielens", rec, histories, exclude, len(users), info)


def synthetic_case(settings: Settings) -> Case:
    """Random unit vectors, Zipf popularity and random histories, fixed by the seed."""
    n, users = settings.synthetic_items, settings.synthetic_users
    log(f"building {users:,} synthetic users over {n:,} x {settings.dim} items")
    rng = np.random.default_rng(settings.seed)
    vectors = make_catalog(n, settings.dim, settings.seed)
    popularity = np.floor(10_000 / np.arange(1, n + 1))[rng.permutation(n)]
    histories: list[list[Hashable]] = [
        rng.choice(n, settings.history, replace=False).tolist() for _ in range(users)
    ]
    catalog = ItemCatalog(vectors, np.arange(n), popularity, fingerprint="synthetic")
    info = {
        "popularity": "floor(10000 / rank) over a random item order",
        "history_mean": float(settings.history),
        "history_max": settings.history,
    }
    return Case("synthetic", Recommender.from_catalog(catalog), histories, None,
                min(settings.run_users, users), info)  # fmt: skip


# -- timing -----------------------------------------------------------------------------------


def runners(case: Case, k: int) -> dict[str, Callable[[slice], Lists]]:
    """Both paths over a slice of the case's users."""
    rec, histories, exclude = case.rec, case.histories, case.exclude

    def batch(part: slice) -> Lists:
        return rec.recommend_batch(
            histories[part], k, exclude=None if exclude is None else exclude[part]
        )

    def loop(part: slice) -> Lists:
        if exclude is None:
            return [rec.recommend(h, k) for h in histories[part]]
        return [
            rec.recommend(h, k, exclude=e)
            for h, e in zip(histories[part], exclude[part], strict=True)
        ]

    return {"batch": batch, "loop": loop}


def compare(a: Lists, b: Lists, tolerance: float) -> dict[str, Any]:
    """Whether two runs gave the same lists: ids in the same order, scores within
    ``tolerance``."""
    other_ids = 0
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if [i for i, _ in x] != [i for i, _ in y]:
            other_ids += 1
            continue
        if x:
            worst = max(worst, max(abs(s - t) for (_, s), (_, t) in zip(x, y, strict=True)))
    return {
        "users": len(a),
        "users_with_other_ids": other_ids,
        "max_score_diff": worst,
        "equal": other_ids == 0 and worst <= tolerance,
    }


def time_case(case: Case, settings: Settings) -> dict[str, Any]:
    """Warm-up, then ``repeats`` interleaved rounds of both paths, each checked."""
    run = runners(case, settings.k)
    n, size = len(case.histories), case.run_users
    warm = slice(0, min(settings.warmup_users, n))
    for path in PATHS:
        run[path](warm)
    seconds: dict[str, list[float]] = {p: [] for p in PATHS}
    checks = []
    for r in range(settings.repeats):
        start = (r * size) % n
        part = slice(start, min(start + size, n))
        out = {}
        for path in PATHS if r % 2 == 0 else PATHS[::-1]:
            gc.collect()
            t0 = time.perf_counter()
            out[path] = run[path](part)
            seconds[path].append(time.perf_counter() - t0)
        checks.append(compare(out["batch"], out["loop"], settings.tolerance))
        users = part.stop - part.start
        log(
            f"  {case.name} round {r + 1}: batch {users / seconds['batch'][-1]:.1f} users/s, "
            f"loop {users / seconds['loop'][-1]:.1f} users/s"
            + ("" if checks[-1]["equal"] else f"; LISTS DIFFER: {checks[-1]}")
        )
    users = [min(size, n - (r * size) % n) for r in range(settings.repeats)]
    runs = {
        p: {
            "users": users,
            "seconds": [round(x, 4) for x in seconds[p]],
            "median_s": median(seconds[p]),
            "users_per_s": median([u / s for u, s in zip(users, seconds[p], strict=True)]),
        }
        for p in PATHS
    }
    return {
        "users": n,
        "users_per_run": size,
        "items": len(case.rec),
        "dim": case.rec.catalog.dim,
        "recommender": case.rec.settings(),
        **case.info,
        "runs": runs,
        "batch_vs_loop": runs["batch"]["users_per_s"] / runs["loop"]["users_per_s"],
        "check": {
            "users": sum(c["users"] for c in checks),
            "users_with_other_ids": sum(c["users_with_other_ids"] for c in checks),
            "max_score_diff": max(c["max_score_diff"] for c in checks),
            "equal": all(c["equal"] for c in checks),
        },
    }


# -- main ---------------------------------------------------------------------------------------


def print_table(record: dict[str, Any]) -> None:
    head = (
        f"{'case':10s} {'users':>6s} {'items':>7s} {'history':>7s} {'batch/s':>8s} "
        f"{'loop/s':>8s} {'batch÷loop':>10s} {'same lists':>10s} {'max |Δ|':>8s}"
    )
    print(head)
    for name, c in record["cases"].items():
        check = c["check"]
        print(
            f"{name:10s} {c['users']:>6,} {c['items']:>7,} {c['history_mean']:7.1f} "
            f"{c['runs']['batch']['users_per_s']:8.1f} {c['runs']['loop']['users_per_s']:8.1f} "
            f"{c['batch_vs_loop']:9.2f}x {'yes' if check['equal'] else 'NO':>10s} "
            f"{check['max_score_diff']:8.1e}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.recommend_batch", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, CI smoke")
    p.add_argument("--model", default=None, help="model directory (default: cached export)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    p.add_argument("--no-record", action="store_true", help="print only, write no JSON")
    add_data_arg(p)
    args = p.parse_args(argv)
    settings = QUICK if args.quick else Settings()
    if args.repeats:
        settings = replace(settings, repeats=args.repeats)
    t_start = time.perf_counter()
    machine = machine_info()
    log(f"machine: {machine_line(machine)}")
    cases = {}
    for make in (lambda: movielens_case(settings, args), lambda: synthetic_case(settings)):
        case = make()
        log(f"{case.name}: {len(case.histories):,} users x {len(case.rec):,} items")
        cases[case.name] = time_case(case, settings)
        del case
        gc.collect()
    record = {
        "settings": asdict(settings),
        "machine": machine,
        "versions": versions(("bertrec", "numpy")),
        "threads": {"cores_usable": usable_cores(), "blas": blas_threads()},
        "chunk_entries": CHUNK_ENTRIES,
        "cases": cases,
        "all_equal": all(c["check"]["equal"] for c in cases.values()),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
    }
    print_table(record)
    if not args.no_record:
        print(f"record: {write_record(KIND, record, quick=args.quick)}")
    if not record["all_equal"]:
        print("the batch and the loop gave different lists (see the check in the record)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
