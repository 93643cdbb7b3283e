"""How users' histories score catalog items, many users and one block of items at a time.

``profile="knn"`` (item-to-item): an item's content score is the mean of its ``top_m``
highest cosine similarities to the user's ``recent`` latest history entries, each scaled
by the entry's weight. ``profile="mean"``: the cosine to one recency-weighted mean vector.
Either way ``popularity_weight * prior`` is added; a user with no usable history gets the
prior alone (the popularity order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bertrec.core import check_choice, check_float, check_int
from bertrec.errors import ConfigError, InputValueError

PROFILES = ("knn", "mean")
# Defaults picked on the MovieLens validation split by bench/recsys_eval.py.
DEFAULT_POPULARITY_WEIGHT = 1.0
DEFAULT_RECENT = 50
DEFAULT_TOP_M = 2
# Half-life, in history entries, of the recency decay of the "mean" profile.
DEFAULT_HALF_LIFE = 10.0
# History vectors scored together in one GEMM (users are chunked to about this many).
CHUNK_ENTRIES = 4096


@dataclass(frozen=True)
class History:
    """One user's history, ready to score.

    Attributes:
        rows: catalog rows of the history's item ids (the items the user has seen).
        vectors: unit vectors of every entry, oldest first (ids, then free texts).
        weights: one non-negative weight per entry.
    """

    rows: NDArray[np.int64]
    vectors: NDArray[np.float32]
    weights: NDArray[np.float64]

    @property
    def cold(self) -> bool:
        """No entry counts: the user gets the popularity order."""
        return len(self.vectors) == 0 or not bool(self.weights.any())


@dataclass(frozen=True)
class Scorer:
    """The scoring settings (constructor keywords of ``Recommender``), checked."""

    popularity_weight: float = DEFAULT_POPULARITY_WEIGHT
    profile: str = "knn"
    recent: int = DEFAULT_RECENT
    top_m: int = DEFAULT_TOP_M
    half_life: float = DEFAULT_HALF_LIFE

    def __post_init__(self) -> None:
        check_float(self.popularity_weight, "popularity_weight", 0.0)
        check_choice(self.profile, "profile", PROFILES)
        check_int(self.recent, "recent")
        check_int(self.top_m, "top_m")
        if check_float(self.half_life, "half_life", 0.0) == 0:
            raise ConfigError("half_life must be > 0 (in history entries)")

    def user_vector(self, history: History) -> NDArray[np.float32]:
        """The recency-weighted mean of the history's vectors, unit norm.

        Entry ``i`` of ``n`` (oldest first) counts ``weight[i] * 0.5 ** ((n - 1 - i) /
        half_life)``.

        Raises:
            InputValueError: no entry, all weights zero, or vectors that cancel out.
        """
        vecs, w = history.vectors, history.weights
        if len(vecs) == 0:
            raise InputValueError("history is empty; a user vector needs at least one item")
        age = np.arange(len(vecs))[::-1]
        u = ((w * 0.5 ** (age / self.half_life))[:, None] * vecs.astype(np.float64)).sum(axis=0)
        norm = float(np.linalg.norm(u))
        if not norm > 1e-6:
            raise InputValueError(
                "the history's weights are all zero or its item vectors cancel out, so it has "
                "no direction; give positive weights or use profile='knn'"
            )
        return (u / norm).astype(np.float32)

    def block_scores(
        self,
        users: Sequence[History],
        catalog: NDArray[np.float32],
        prior: NDArray[np.float32],
    ) -> Callable[[int, int], NDArray[np.float32]]:
        """``score(start, stop)``: the (len(users), stop - start) scores of catalog rows
        ``start..stop-1`` for ``users`` (for ``bertrec.rank.blocked_topk``).

        Raises:
            InputValueError: a "mean" profile whose vectors cancel out.
        """
        cold = np.array([u.cold for u in users], dtype=bool)
        weight = np.float32(self.popularity_weight)
        content: Callable[[int, int], NDArray[np.float32]]
        if self.profile == "mean":
            dim = catalog.shape[1]
            vecs = np.zeros((len(users), dim), dtype=np.float32)
            for i, u in enumerate(users):
                if not cold[i]:
                    vecs[i] = self.user_vector(u)

            def mean_content(start: int, stop: int) -> NDArray[np.float32]:
                return vecs @ catalog[start:stop].T

            content = mean_content

        else:
            content = self._knn(users, catalog)

        def score(start: int, stop: int) -> NDArray[np.float32]:
            out = content(start, stop)
            out += weight * prior[start:stop]
            if cold.any():
                out[cold] = prior[start:stop]
            return out

        return score

    def entries(self, user: History) -> int:
        """History entries that shape the user's scores (for sizing blocks)."""
        if self.profile == "mean":
            return 1
        return min(self.recent, int((user.weights > 0).sum()))

    def _knn(
        self, users: Sequence[History], catalog: NDArray[np.float32]
    ) -> Callable[[int, int], NDArray[np.float32]]:
        # Users are grouped by how many entries count, so a group's entries stack into one
        # GEMM against each block of items with no padding, and the top-m selection runs
        # over a (users, entries, items) array of that exact width.
        groups: dict[int, list[int]] = {}
        latest = []
        for i, u in enumerate(users):
            keep = u.weights > 0
            v, w = u.vectors[keep][-self.recent :], u.weights[keep][-self.recent :]
            latest.append((v, w))
            if len(v):
                groups.setdefault(len(v), []).append(i)
        plans = []
        for width, members in sorted(groups.items()):
            stack = np.ascontiguousarray(np.concatenate([latest[i][0] for i in members]))
            scale = np.stack([latest[i][1] / latest[i][1].max() for i in members])
            scaled = scale.astype(np.float32)[:, :, None] if (scale != 1).any() else None
            plans.append((np.asarray(members), width, stack.astype(np.float32), scaled))
        m = self.top_m

        def content(start: int, stop: int) -> NDArray[np.float32]:
            out = np.zeros((len(users), stop - start), dtype=np.float32)
            block_t = catalog[start:stop].T
            for members, width, stack, scaled in plans:
                sims = (stack @ block_t).reshape(len(members), width, stop - start)
                if scaled is not None:
                    sims *= scaled
                if m < width:
                    sims = np.partition(sims, width - m, axis=1)[:, width - m :]
                out[members] = sims.sum(axis=1) / np.float32(min(m, width))
            return out

        return content


def user_chunks(users: Sequence[History], scorer: Scorer) -> list[slice]:
    """Consecutive slices of ``users`` holding about ``CHUNK_ENTRIES`` scored entries each."""
    chunks, start, total = [], 0, 0
    for i, u in enumerate(users):
        total += max(1, scorer.entries(u))
        if total >= CHUNK_ENTRIES:
            chunks.append(slice(start, i + 1))
            start, total = i + 1, 0
    if start < len(users):
        chunks.append(slice(start, len(users)))
    return chunks
