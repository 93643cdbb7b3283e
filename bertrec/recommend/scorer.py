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

    def _knn(
        self, users: Sequence[History], catalog: NDArray[np.float32]
    ) -> Callable[[int, int], NDArray[np.float32]]:
        latest = []
        for u in users:
            keep = u.weights > 0
            latest.append((u.vectors[keep][-self.recent :], u.weights[keep][-self.recent :]))
        width = max(1, max(len(v) for v, _ in latest))
        nu, dim = len(users), catalog.shape[1]
        vecs = np.zeros((nu, width, dim), dtype=np.float32)
        scale = np.zeros((nu, width), dtype=np.float32)
        for i, (v, w) in enumerate(latest):
            vecs[i, : len(v)] = v
            if len(v):
                scale[i, : len(v)] = w / w.max()
        valid = scale > 0
        # Entries averaged per user: top_m, or all of a shorter history (0 for a cold user).
        m = min(self.top_m, width)
        count = np.maximum(np.minimum(valid.sum(axis=1), m), 1).astype(np.float32)
        scaled = bool((scale[valid] != 1).any())
        # (user, item, entry) layout: the top-m selection runs along the contiguous axis.
        entries_t = np.ascontiguousarray(vecs.transpose(0, 2, 1))
        scale_t, valid_t = scale[:, None, :], valid[:, None, :]

        def content(start: int, stop: int) -> NDArray[np.float32]:
            sims = np.matmul(catalog[start:stop], entries_t)  # (users, items, entries)
            if scaled:
                sims *= scale_t
            if m < width:
                np.copyto(sims, np.float32(-np.inf), where=~valid_t)
                top = np.partition(sims, width - m, axis=2)[:, :, width - m :]
                top[top == -np.inf] = 0.0  # users with fewer than m entries
                total = top.sum(axis=2)
            else:
                np.copyto(sims, np.float32(0.0), where=~valid_t)
                total = sims.sum(axis=2)
            return total / count[:, None]

        return content


def user_chunks(users: Sequence[History], recent: int) -> list[slice]:
    """Slices of ``users`` holding about ``CHUNK_ENTRIES`` scored history entries each."""
    per_user = max(1, min(recent, max((len(u.vectors) for u in users), default=1)))
    size = max(1, CHUNK_ENTRIES // per_user)
    return [slice(i, i + size) for i in range(0, len(users), size)]
