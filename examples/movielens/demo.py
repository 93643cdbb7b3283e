"""``bertrec demo``: offline, end to end on MovieLens ml-latest-small.

Exports the packaged all-MiniLM-L6-v2 once into the cache, encodes the catalog (title,
genres, tags), shows a few users' recent history and their top-10, and scores the
recommender against the popularity baseline on the held-out ratings. Every stage is timed.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.core import cache_dir, check_int
from bertrec.errors import BertrecError, ProviderError
from bertrec.recommend import ItemCatalog, Recommender
from bertrec.runtime.encoder import Encoder

from .data import (
    MovieLens,
    UserSplit,
    default_data_dir,
    item_texts,
    load_movielens,
    split_movielens,
)
from .metrics import evaluate, popularity_counts, user_history
from .model import ensure_model


class _Stages:
    """Wall-clock time of each named stage, printed as a table at the end."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.times[name] = time.perf_counter() - t0
        print(f"  [{name}: {self.times[name]:.2f} s]")


def _catalog_recommender(
    encoder: Encoder, texts: list[str], data: MovieLens, popularity: Any
) -> tuple[Recommender, str]:
    """The recommender over the catalog, from the vector cache when it matches."""
    digest = hashlib.sha256("\0".join(texts).encode("utf-8")).hexdigest()[:16]
    # Keyed by the variant that ran (an int8 rebuilt by a newer quantizer gives new vectors).
    key = f"{encoder.fingerprint[:16]}-{encoder.variant.replace(':', '-')}-{digest}"
    cached = cache_dir("demo", key)
    try:
        saved = ItemCatalog.load(cached)
        if saved.ids.tolist() == list(data.item_ids) and saved.variant == encoder.variant:
            # Only the vectors are reused: popularity and settings are this run's.
            catalog = ItemCatalog(
                saved.vectors,
                data.item_ids,
                popularity,
                fingerprint=encoder.fingerprint,
                variant=encoder.variant,
            )
            rec = Recommender.from_catalog(catalog, encoder)
            return rec, f"loaded the cached catalog vectors from {cached}"
    except BertrecError:
        pass  # no cache yet, or a stale or damaged one: rebuilt below
    catalog = ItemCatalog.encode(encoder, texts, data.item_ids, popularity, show_progress=True)
    rec = Recommender.from_catalog(catalog, encoder)
    try:
        catalog.save(cached, overwrite=True)
        note = f"encoded {len(texts):,} items; cached at {cached}"
    except BertrecError as exc:
        note = f"encoded {len(texts):,} items (not cached: {exc})"
    return rec, note


def _pick_users(splits: list[UserSplit], n: int) -> list[UserSplit]:
    """``n`` users spread over the id range, each with some liked history to show."""
    eligible = [s for s in splits if len(user_history(s)[0]) >= 5 and s.test]
    if not eligible:
        return []
    picks = np.linspace(0, len(eligible) - 1, num=min(n, len(eligible))).round().astype(int)
    return [eligible[i] for i in dict.fromkeys(picks.tolist())]


def run_demo(
    data_dir: str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    users: int = 3,
    plot: str | os.PathLike[str] | None = None,
) -> int:
    """Run the demo and print what it does; returns the exit status (0).

    Args:
        data_dir: MovieLens ml-latest-small folder (default: ``$BERTREC_MOVIELENS``).
        model_dir: an exported model directory (default: the cached MiniLM export).
        users: users whose history and recommendations are shown.
        plot: a PNG path: draw the catalog in 2-D with the first user's history and
            recommendations marked (needs matplotlib: pip install 'bertrec[plot]').

    Raises:
        ConfigError: ``users`` is not a positive int, or no data folder is given.
        NotFoundError: the data or the model cannot be found.
    """
    users = check_int(users, "users")
    stage = _Stages()
    t_start = time.perf_counter()
    data_path = Path(data_dir) if data_dir is not None else default_data_dir()
    print(f"bertrec demo: MovieLens from {data_path}")

    with stage("model"):
        path = ensure_model(model_dir)
        encoder = Encoder(path, precision="auto", device="cpu")
        print(f"  {encoder!r}")
        print(f"  variants in {path}: {', '.join(sorted(encoder.manifest.variants))}")

    with stage("load data"):
        data = load_movielens(data_path)
        texts = item_texts(data)
        splits = split_movielens(data)
        popularity = popularity_counts(splits, data.item_ids)
        print(
            f"  {len(data.item_ids):,} films, {len(data.ratings):,} ratings, {len(splits)} users;"
            " per user the last 10 ratings >= 4 are held out, the rest is history"
        )
        print(f"  item text, e.g.: {texts[0]!r}")

    with stage("catalog vectors"):
        rec, note = _catalog_recommender(encoder, texts, data, popularity)
        print(f"  {note}")
        print(f"  {rec!r}")

    titles = dict(zip(data.item_ids, data.titles, strict=True))
    shown: list[tuple[UserSplit, list[int], list[int]]] = []
    with stage("recommend"):
        for s in _pick_users(splits, users):
            liked, seen = user_history(s)
            ratings = dict(zip(s.history, s.history_ratings, strict=True))
            top = rec.recommend(liked, k=10, exclude=seen)
            shown.append((s, liked, [m for m, _ in top]))
            held_out = set(s.test)
            print(f"\n  user {s.user}: {len(s.history)} rated, {len(liked)} liked; latest liked:")
            for m in liked[-5:]:
                print(f"      {ratings[m]:.1f}  {titles[m]}")
            print("    top-10 (* = in the user's held-out liked films):")
            for rank, (m, score) in enumerate(top, 1):
                mark = "*" if m in held_out else " "
                print(f"    {rank:2d}. {mark} {score:.3f}  {titles[m]}")

    if plot is not None and shown:
        with stage("plot"):
            user, liked, top_ids = shown[0]
            path = plot_catalog(rec, liked[-20:], top_ids, set(user.test), plot, user.user)
            print(f"  the catalog in 2-D, user {user.user} marked: {path}")

    with stage("evaluate"):
        pop = evaluate(rec, splits, rec.vectors, data.item_ids, history="none")
        ours = evaluate(rec, splits, rec.vectors, data.item_ids)
        print(f"\n  NDCG@10 over {ours.users} users (Recall@10, diversity, coverage):")
        print(
            f"    popularity baseline : {pop.ndcg:.4f}  ({pop.recall:.4f}, {pop.diversity:.3f},"
            f" {pop.coverage:.3f})"
        )
        print(
            f"    bertrec Recommender : {ours.ndcg:.4f}  ({ours.recall:.4f}, "
            f"{ours.diversity:.3f}, {ours.coverage:.3f})  = {ours.ndcg / pop.ndcg:.2f}x popularity"
        )

    total = time.perf_counter() - t_start
    print("\n  stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in stage.times.items()))
    print(f"  total {total:.1f} s")
    return 0


def plot_catalog(
    rec: Recommender,
    history: list[int],
    recommended: list[int],
    held_out: set[int],
    path: str | os.PathLike[str],
    user: int,
) -> Path:
    """The catalog's vectors projected on their two principal components (PCA by SVD, no
    new dependency), with a user's latest history and recommendations marked: items near
    the history are what the content score favours."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ProviderError("--plot needs matplotlib: pip install 'bertrec[plot]'") from exc
    vectors = np.asarray(rec.vectors, dtype=np.float64)
    centred = vectors - vectors.mean(axis=0)
    # The top two right singular vectors of the centred catalog span its widest plane.
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 5000)], full_matrices=False)
    xy = centred @ vt[:2].T
    rows = {m: i for i, m in enumerate(rec.item_ids.tolist())}
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(xy[:, 0], xy[:, 1], s=2, c="#c8c8c8", label=f"catalog ({len(xy):,} items)")
    h = [rows[m] for m in history]
    ax.scatter(xy[h, 0], xy[h, 1], s=40, c="#1f77b4", label="latest liked (history)")
    hits = [rows[m] for m in recommended if m in held_out]
    misses = [rows[m] for m in recommended if m not in held_out]
    ax.scatter(xy[misses, 0], xy[misses, 1], s=60, c="#d62728", marker="^", label="top-10")
    ax.scatter(
        xy[hits, 0], xy[hits, 1], s=160, c="#ff7f0e", marker="*", label="top-10, liked later"
    )
    ax.set_title(f"MovieLens catalog, PCA of the item vectors: user {user}")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.legend(loc="best", fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
