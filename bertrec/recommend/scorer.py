"""How users' histories score catalog items, many users and one block of items at a time.

``profile="knn"`` (item-to-item): an item's content score is the mean of its ``top_m``
highest cosine similarities to the user's ``recent`` latest history entries, each scaled
by the entry's weight. ``profile="mean"``: the cosine to one recency-weighted mean vector.
Either way ``popularity_weight * prior`` is added; a user with no usable history gets the
prior alone (the popularity order).

With a collaborative model (``collab.py``) the hybrid score of item ``j`` for a user is

    content_j + (popularity_weight + cf_weight * (1 - h)) * prior_j + cf_weight * h * cf_j / peak

where ``cf_j`` is the model's score (for an item with no interactions, the one predicted
from its text, weighted ``cold_weight`` instead of ``cf_weight``), ``peak`` the user's
largest score over the items with interactions (so ``cf_j / peak`` is at most 1, as a
cosine is), and ``h = n / (n + cf_warmup)`` for ``n`` history items the model knows: a
user with few interactions leans on content and popularity, and a user the model knows
nothing of (only free texts, or no positive score) gets ``h = 0``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import check_choice, check_float, check_int
from bertrec.errors import ConfigError, InputTypeError, InputValueError
from bertrec.recommend.catalog import ItemCatalog, TextEncoder, encode_texts, id_list, text_list
from bertrec.recommend.collab import UserScorer

PROFILES = ("knn", "mean")
ON_UNKNOWN = ("error", "skip")
# Defaults picked on the MovieLens validation split by bench/recsys_eval.py.
DEFAULT_POPULARITY_WEIGHT = 1.0
DEFAULT_RECENT = 50
DEFAULT_TOP_M = 2
# Half-life, in history entries, of the recency decay of the "mean" profile.
DEFAULT_HALF_LIFE = 10.0
# The hybrid's blend (with interactions), picked on the MovieLens validation split by
# bench/recsys_eval.py; the hybrid has defaults of its own for the settings above too.
DEFAULT_CF_WEIGHT = 1.0
DEFAULT_COLD_WEIGHT = 2.0
DEFAULT_CF_WARMUP = 5.0
HYBRID_DEFAULTS = {"popularity_weight": 0.0, "recent": 10}
# History vectors scored together in one GEMM (users are chunked to about this many).
CHUNK_ENTRIES = 4096
# Up to this top_m the knn profile keeps running maxima; above it, np.partition.
RUNNING_TOP_M = 4


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
    cf_weight: float = DEFAULT_CF_WEIGHT
    cold_weight: float = DEFAULT_COLD_WEIGHT
    cf_warmup: float = DEFAULT_CF_WARMUP
    content_min_weight: float = 0.0

    def __post_init__(self) -> None:
        names = ("popularity_weight", "cf_weight", "cold_weight", "cf_warmup", "content_min_weight")
        for name in names:
            check_float(getattr(self, name), name, 0.0)
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
        vecs, w = history.vectors, self.content_weights(history)
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
        collab: UserScorer | None = None,
    ) -> Callable[[int, int], NDArray[np.float32]]:
        """``score(start, stop)``: the (len(users), stop - start) scores of catalog rows
        ``start..stop-1`` for ``users`` (for ``bertrec.rank.blocked_topk``); with
        ``collab`` (the collaborative model's scorer of the same users) the hybrid score.

        Raises:
            InputValueError: a "mean" profile whose vectors cancel out.
        """
        cold = np.array([u.cold for u in users], dtype=bool)
        weight = np.float32(self.popularity_weight)
        gains = None if collab is None else self.collab_gains(users, collab)
        content: Callable[[int, int], NDArray[np.float32]]
        if self.profile == "mean":
            dim = catalog.shape[1]
            vecs = np.zeros((len(users), dim), dtype=np.float32)
            for i, u in enumerate(users):
                if not cold[i] and self.content_weights(u).any():
                    vecs[i] = self.user_vector(u)

            def mean_content(start: int, stop: int) -> NDArray[np.float32]:
                return vecs @ catalog[start:stop].T

            content = mean_content

        else:
            content = self._knn(users, catalog)

        def score(start: int, stop: int) -> NDArray[np.float32]:
            out = content(start, stop)
            if collab is None or gains is None:
                out += weight * prior[start:stop]
            else:
                warm_gain, cold_gain, prior_weight = gains
                cf, cold_rows = collab.block(start, stop)
                cf[:, ~cold_rows] *= warm_gain[:, None]
                cf[:, cold_rows] *= cold_gain[:, None]
                out += cf
                out += prior_weight[:, None] * prior[start:stop]
            if cold.any():
                out[cold] = prior[start:stop]
            return out

        return score

    def collab_gains(
        self, users: Sequence[History], collab: UserScorer
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Per user: the factors of the warm and the cold collaborative scores, and the
        weight of the prior (see the module docstring)."""
        known = collab.n_known.astype(np.float64)
        warmup = self.cf_warmup
        h = known / (known + warmup) if warmup > 0 else (known > 0).astype(np.float64)
        peak = collab.peak.astype(np.float64)
        h[~(peak > 0)] = 0.0
        per_peak = np.divide(h, peak, out=np.zeros_like(h), where=h > 0)
        return (
            (self.cf_weight * per_peak).astype(np.float32),
            (self.cold_weight * per_peak).astype(np.float32),
            (self.popularity_weight + self.cf_weight * (1 - h)).astype(np.float32),
        )

    def entries(self, user: History) -> int:
        """History entries that shape the user's scores (for sizing blocks)."""
        if self.profile == "mean":
            return 1
        return min(self.recent, int((self.content_weights(user) > 0).sum()))

    def peak_entries(self, users: Sequence[History]) -> int:
        """The most history entries one GEMM of a block scores: users are scored in groups
        of equally many entries (``_knn``), so the largest group's entries."""
        if self.profile == "mean":
            return len(users)
        counts = Counter(self.entries(u) for u in users)
        return max([width * n for width, n in counts.items() if width] or [1])

    def content_weights(self, user: History) -> NDArray[np.float64]:
        """The entries' weights in the content score: 0 below ``content_min_weight`` (with
        ratings as weights, e.g. 4.0 lets only liked items shape it; the collaborative
        part still takes every entry)."""
        w = user.weights
        return np.where(w >= self.content_min_weight, w, 0.0) if self.content_min_weight else w

    def _knn(
        self, users: Sequence[History], catalog: NDArray[np.float32]
    ) -> Callable[[int, int], NDArray[np.float32]]:
        # Users are grouped by how many entries count, so a group's entries stack into one
        # GEMM against each block of items with no padding, and the top-m selection runs
        # over a (users, entries, items) array of that exact width.
        groups: dict[int, list[int]] = {}
        latest = []
        for i, u in enumerate(users):
            weights = self.content_weights(u)
            keep = weights > 0
            v, w = u.vectors[keep][-self.recent :], weights[keep][-self.recent :]
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
            block = catalog[start:stop]
            for members, width, stack, scaled in plans:
                # Entries as rows: each entry's similarities to the block are one
                # contiguous row, so the top-m selection is elementwise over whole rows.
                sims = (stack @ block.T).reshape(len(members), width, stop - start)
                if scaled is not None:
                    sims *= scaled
                out[members] = top_m_sum(sims, m) / np.float32(min(m, width))
            return out

        return content


def top_m_sum(sims: NDArray[np.float32], m: int) -> NDArray[np.float32]:
    """The sum of the ``m`` largest values along axis 1 of a (users, entries, items) array.

    For a few entries kept (the defaults keep 2) the values are kept in ``m`` running
    maxima, updated elementwise entry by entry: 2m passes over contiguous rows, where
    ``np.partition`` along a short axis works item by item (bench/cf_scale.py times both
    on 200,000 items by 10 entries: about 1 ms against 7 on AVX-512).
    """
    width = sims.shape[1]
    if m >= width:
        return sims.sum(axis=1)
    if m > RUNNING_TOP_M:
        return np.partition(sims, width - m, axis=1)[:, width - m :].sum(axis=1)
    # tops[0] >= tops[1] >= ... elementwise; each entry is bubbled down through them.
    tops = [np.full(sims[:, 0].shape, -np.inf, dtype=sims.dtype) for _ in range(m)]
    x = np.empty_like(tops[0])
    hi = np.empty_like(tops[0])
    for e in range(width):
        np.copyto(x, sims[:, e])
        for j in range(m):
            np.maximum(tops[j], x, out=hi)
            np.minimum(tops[j], x, out=x)
            tops[j], hi = hi, tops[j]
    total = tops[0]
    for t in tops[1:]:
        total += t
    return total


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


def resolve_scorer(settings: dict[str, Any], hybrid: bool) -> Scorer:
    """The Scorer of ``settings``, a None value taking the default of the mode (content
    only, or hybrid with its ``HYBRID_DEFAULTS``)."""
    defaults: dict[str, Any] = {
        "popularity_weight": DEFAULT_POPULARITY_WEIGHT,
        "recent": DEFAULT_RECENT,
        **(HYBRID_DEFAULTS if hybrid else {}),
    }
    given = {k: v for k, v in settings.items() if v is not None}
    return Scorer(**{**{k: v for k, v in defaults.items() if k not in given}, **given})


def make_history(
    catalog: ItemCatalog,
    encoder: TextEncoder | None,
    history: object,
    weights: object,
    texts: object,
    on_unknown: str = "error",
) -> History:
    """A ``History`` of item ids (rows of ``catalog``), their weights and free texts
    (encoded by ``encoder``), checked (``Recommender.history`` documents the arguments)."""
    check_choice(on_unknown, "on_unknown", ON_UNKNOWN)
    ids = id_list(history, "history")
    w = check_weights(weights, len(ids))
    if on_unknown == "skip":
        found = catalog.ranker.find(ids)
        rows, w = found[found >= 0], w[found >= 0]
    else:
        rows = catalog.rows_of(ids)
    vecs = catalog.vectors[rows]
    if texts is not None and (extra := text_list(texts, "texts")):
        if encoder is None:
            raise ConfigError(
                "free texts need an encoder: build the Recommender with one "
                "(Recommender.load(path, encoder=...))"
            )
        # Free texts count as the most recent entries, with the largest weight.
        vecs = np.concatenate([vecs, encode_texts(encoder, extra)])
        w = np.concatenate([w, np.full(len(extra), w.max() if len(w) else 1.0)])
    return History(rows=rows, vectors=np.asarray(vecs, np.float32), weights=w)


def check_weights(weights: object, n: int) -> NDArray[np.float64]:
    """One finite, non-negative weight per history id (all 1 for None)."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    if isinstance(weights, (str, bytes, bytearray, dict)):
        raise InputTypeError("weights must be a list of numbers, one per history id")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"weights must be a list of numbers: {exc}") from exc
    if w.shape != (n,):
        raise InputValueError(f"weights has shape {w.shape} for {n} history ids; give one each")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputValueError("weights must be finite and >= 0")
    return w
