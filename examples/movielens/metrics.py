"""The MovieLens evaluation protocol: NDCG@k, Recall@k, intra-list diversity, coverage."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bertrec.errors import ConfigError

from .data import UserSplit

HISTORY_MODES = ("liked", "all", "none")


@dataclass(frozen=True)
class Metrics:
    """Averages over users of one recommender run.

    Attributes:
        ndcg: NDCG@k with binary relevance (held-out items are relevant), averaged over
            every user (a user with no held-out item counts 0).
        recall: held-out items in the top k over held-out items, averaged the same way.
        diversity: intra-list diversity, 1 - mean pairwise cosine of a top-k list,
            averaged over lists of at least two items.
        coverage: distinct recommended items over catalog size.
        users: users averaged over.
        k: list length.
        user_ndcg: each user's NDCG@k, in the order of the splits (for paired
            comparisons of two recommenders on the same users).
    """

    ndcg: float
    recall: float
    diversity: float
    coverage: float
    users: int
    k: int
    user_ndcg: tuple[float, ...] = ()


def ndcg_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """Binary-relevance NDCG@k: DCG of ``ranked[:k]`` over the best DCG possible."""
    if not relevant:
        return 0.0
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum(g for g, item in zip(gains, ranked[:k], strict=False) if item in relevant)
    return float(dcg / gains[: min(k, len(relevant))].sum())


def recall_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """Share of ``relevant`` found in ``ranked[:k]`` (0 when nothing is relevant)."""
    if not relevant:
        return 0.0
    return sum(1 for item in ranked[:k] if item in relevant) / len(relevant)


def intra_list_diversity(vectors: NDArray[np.float32]) -> float | None:
    """1 - mean pairwise cosine of unit-norm ``vectors`` (None for fewer than two)."""
    n = len(vectors)
    if n < 2:
        return None
    sims = np.asarray(vectors, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def popularity_counts(splits: Sequence[UserSplit], item_ids: Sequence[int]) -> NDArray[np.float64]:
    """Ratings per item counted over the histories only (no held-out rating leaks in)."""
    row = {m: i for i, m in enumerate(item_ids)}
    counts = np.zeros(len(item_ids), dtype=np.float64)
    for s in splits:
        for m in s.history:
            if m in row:
                counts[row[m]] += 1
    return counts


def user_history(
    split: UserSplit, mode: str = "liked", like_threshold: float = 4.0
) -> tuple[list[int], list[int]]:
    """(history to recommend from, items to leave out) for one user.

    ``mode`` picks the history: ``"liked"`` its ratings >= ``like_threshold``, ``"all"``
    every rating, ``"none"`` nothing (the popularity baseline). Every rated item is left
    out of the ranking either way, and nothing else.
    """
    if mode not in HISTORY_MODES:
        raise ConfigError(f"unknown history mode {mode!r}; choose from {HISTORY_MODES}")
    if mode == "none":
        history = []
    elif mode == "all":
        history = list(split.history)
    else:
        history = [
            m
            for m, r in zip(split.history, split.history_ratings, strict=True)
            if r >= like_threshold
        ]
    return history, list(split.history)


class _Recommends(Protocol):
    def recommend(
        self,
        history: Sequence[Hashable],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Hashable] | None = None,
        diversity: float = 0.0,
    ) -> list[tuple[Any, float]]: ...


def evaluate(
    recommender: _Recommends,
    splits: Sequence[UserSplit],
    item_vectors: NDArray[np.float32],
    item_ids: Sequence[int],
    k: int = 10,
    diversity: float = 0.0,
    history: str = "liked",
) -> Metrics:
    """Score a recommender on the temporal split: NDCG@k, Recall@k, diversity, coverage.

    Args:
        recommender: anything with ``Recommender.recommend``'s signature.
        splits: per-user splits (``temporal_split``).
        item_vectors: unit-norm vectors in ``item_ids`` order (for the diversity figure).
        item_ids: the catalog ids.
        k: list length.
        diversity: passed to ``recommend`` (MMR weight).
        history: which ratings form the history, see ``user_history``.
    """
    row = {m: i for i, m in enumerate(item_ids)}
    ndcgs, recalls, ilds = [], [], []
    shown: set[int] = set()
    for s in splits:
        hist, seen = user_history(s, history)
        recs = [
            item for item, _ in recommender.recommend(hist, k=k, exclude=seen, diversity=diversity)
        ]
        relevant = set(s.test)
        ndcgs.append(ndcg_at_k(recs, relevant, k))
        recalls.append(recall_at_k(recs, relevant, k))
        rows = [row[m] for m in recs]
        shown.update(rows)
        ild = intra_list_diversity(item_vectors[rows])
        if ild is not None:
            ilds.append(ild)
    return Metrics(
        ndcg=float(np.mean(ndcgs)) if ndcgs else 0.0,
        recall=float(np.mean(recalls)) if recalls else 0.0,
        diversity=float(np.mean(ilds)) if ilds else 0.0,
        coverage=len(shown) / len(item_ids) if len(item_ids) else 0.0,
        users=len(splits),
        k=k,
        user_ndcg=tuple(ndcgs),
    )
