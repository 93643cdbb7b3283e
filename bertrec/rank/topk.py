"""``CosineRanker``: exact top-k cosine search over an in-memory (or memory-mapped) catalog.

One query is one GEMV over the catalog and a partial selection. A batch runs GEMMs over
blocks of catalog rows and keeps, per query, only the scores above its running k-th best,
so memory stays bounded and the selection work shrinks as the thresholds rise.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bertrec.core import check_int, check_optional_int
from bertrec.errors import InputTypeError, InputValueError
from bertrec.rank.mmr import (
    DEFAULT_CANDIDATES,
    SUGGESTED_DIVERSITY,
    check_diversity,
    diverse_picks,
)

# Float32 scores of one block of catalog rows for a whole batch: larger GEMMs run faster
# until the block falls out of cache (bench/scorer.py measures the trade).
BLOCK_BYTES = 16 << 20
MIN_BLOCK_ROWS = 1024
MAX_BLOCK_ROWS = 65536
# select_topk samples every step-th score so that the sample holds this many per k.
SAMPLE_PER_K = 512
# Rows scanned per pass when checking and normalizing a catalog (bounded extra memory).
SCAN_ROWS = 65536
# A float32 row whose norm is this close to 1 is taken as already normalized, so a
# normalized float32 catalog (e.g. a memory-mapped .npy) is used without a copy.
NORM_TOL = 1e-5


@dataclass(frozen=True)
class TopK:
    """The best items for one query (1-D fields) or for a batch (2-D fields, one row each).

    Best first: higher score, then lower catalog row. A single query returns only the
    items that exist (fewer than k when the catalog, less exclusions, is smaller). In a
    batch every row has the same width, ``min(k, len(catalog))``; where a query has fewer
    eligible items its row is padded with ``rows == -1`` and ``scores == -inf`` (and an id
    of -1, "" or None by the id type), so test ``rows >= 0`` before using an id.

    Attributes:
        ids: item ids (the catalog's ids, or row numbers when it has none).
        scores: cosine similarities, float32.
        rows: catalog row numbers, int64.
    """

    ids: NDArray[Any]
    scores: NDArray[np.float32]
    rows: NDArray[np.int64]


def _as_matrix(x: object, name: str, ndims: tuple[int, ...]) -> NDArray[Any]:
    """``x`` as a numeric array with one of ``ndims`` dimensions, or a clear error."""
    if x is None:
        raise InputTypeError(f"{name} is None; pass a float array")
    if isinstance(x, (str, bytes, bytearray)):
        raise InputTypeError(f"{name} must be a float array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise InputValueError(f"{name} is ragged (rows of different lengths): {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise InputTypeError(
            f"{name} must hold real numbers, got dtype {arr.dtype} "
            "(bools, complex numbers, strings and objects are not vectors)"
        )
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise InputValueError(f"{name} must be {want}, got shape {arr.shape}")
    if arr.size == 0:
        raise InputValueError(f"{name} is empty (shape {arr.shape}); pass at least one vector")
    return arr


def _bad_rows(mask: NDArray[np.bool_], offset: int = 0) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r) + offset) for r in rows[:5])
    return f"{len(rows)} row(s) ({shown}{', ...' if len(rows) > 5 else ''})"


def normalize_rows(x: NDArray[Any], name: str = "vectors") -> NDArray[np.float32]:
    """Rows of ``x`` scaled to unit L2 norm, as a new float32 C-contiguous array.

    Raises:
        InputValueError: a row holds NaN or inf, or is all zeros (it has no direction).
    """
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, len(x), SCAN_ROWS):
        block = np.asarray(x[start : start + SCAN_ROWS], dtype=np.float64)
        norms = _checked_norms(block, name, start)
        peak = np.abs(block).max(axis=1, keepdims=True)
        # Divide by the peak first: block / norms could overflow where block is huge.
        out[start : start + len(block)] = (block / peak) / (norms[:, None] / peak)
    return out


def _checked_norms(block: NDArray[Any], name: str, offset: int) -> NDArray[np.float64]:
    finite = np.isfinite(block).all(axis=1)
    if not finite.all():
        raise InputValueError(
            f"{name} has NaN or inf in {_bad_rows(~finite, offset)}; clean or drop those rows"
        )
    # Scaled by each row's largest magnitude first, so that huge but finite values (float64
    # near its max) do not overflow to inf when squared and turn the row into zeros.
    peak = np.abs(block).max(axis=1)
    safe = np.where(peak > 0, peak, 1.0)
    scaled = block / safe[:, None]
    norms = peak * np.sqrt(np.einsum("ij,ij->i", scaled, scaled, dtype=np.float64))
    zero = peak == 0
    if zero.any():
        raise InputValueError(
            f"{name} has all-zero {_bad_rows(zero, offset)}: cosine similarity is undefined "
            "for them; drop them or give them a real embedding"
        )
    return norms


def _prepare_catalog(x: NDArray[Any]) -> NDArray[np.float32]:
    """The catalog checked and unit-normalized; an already-normalized float32 C-contiguous
    array is returned as is (no copy of a large or memory-mapped catalog)."""
    reusable = x.dtype == np.float32 and x.flags.c_contiguous
    for start in range(0, len(x), SCAN_ROWS):
        block = x[start : start + SCAN_ROWS]
        norms = _checked_norms(np.asarray(block, dtype=np.float64), "vectors", start)
        if reusable and np.abs(norms - 1.0).max() > NORM_TOL:
            reusable = False
    if reusable:
        view: NDArray[np.float32] = x.view()
        view.flags.writeable = False
        return view
    out = normalize_rows(x)
    out.flags.writeable = False
    return out


def _check_k(k: object) -> int:
    return check_int(k, "k")


def _pad_value(ids: NDArray[Any]) -> object:
    if ids.dtype.kind in "iu":
        return -1
    if ids.dtype.kind == "U":
        return ""
    return None


def _order_candidates(
    scores: NDArray[np.float32], rows: NDArray[np.int64], k: int
) -> NDArray[np.intp]:
    """Positions of the best ``k`` candidates: higher score first, then lower row."""
    return np.lexsort((rows, -scores))[:k]


def select_topk(scores: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    """Indices of the ``k`` highest scores, best first (ties: lower index first).

    Scores of -inf mark left-out items and are never returned, so fewer than ``k``
    indices come back when fewer are eligible.
    """
    n = len(scores)
    if k < n:
        kth = np.float32(-np.inf)
        step = n // (SAMPLE_PER_K * k)
        if step >= 2:
            # The k-th best of every step-th score is a lower bound of the true k-th best,
            # found in a fraction of the time of a full partition; about k * step scores
            # pass it and only those are sorted.
            sample = scores[::step]
            kth = np.partition(sample, len(sample) - k)[len(sample) - k]
        if kth == -np.inf:  # small catalog, or the sample hit mostly left-out items
            kth = np.partition(scores, n - k)[n - k]
        # Every score tied with the k-th is a candidate, so ties break by index.
        cand = np.flatnonzero(scores >= kth) if kth > -np.inf else np.flatnonzero(scores > kth)
    else:
        cand = np.flatnonzero(scores > -np.inf)
    return cand[_order_candidates(scores[cand], cand, k)].astype(np.int64)


class CosineRanker:
    """Exact top-k by cosine similarity over a fixed catalog of vectors.

    The catalog is checked and normalized once, kept as float32 C-contiguous. An
    already-normalized float32 C-contiguous array (such as ``np.load(..., mmap_mode="r")``
    of saved item vectors) is used in place, without a copy; do not modify it afterwards.

    Args:
        vectors: (n, dim) item vectors, any real dtype.
        ids: n distinct hashable item ids; None means the row numbers 0..n-1.
        block_rows: catalog rows per block for batched queries; None picks it from the
            batch size so one block of scores is about ``BLOCK_BYTES``.

    Raises:
        InputTypeError: vectors are not a real-valued array, or an id is not hashable.
        InputValueError: vectors are empty or not 2-D, a row is NaN/inf or all zeros,
            ids do not match the rows in number, or an id repeats.
        ConfigError: block_rows is not a positive int.
    """

    def __init__(
        self,
        vectors: ArrayLike,
        ids: Sequence[Hashable] | NDArray[Any] | None = None,
        *,
        block_rows: int | None = None,
    ) -> None:
        arr = _as_matrix(vectors, "vectors", (2,))
        self.block_rows = check_optional_int(block_rows, "block_rows")
        self._vectors = _prepare_catalog(arr)
        n = len(self._vectors)
        if ids is None:
            self.ids: NDArray[Any] = np.arange(n, dtype=np.int64)
            self._index: dict[Hashable, int] | None = None
        else:
            self.ids, self._index = _index_ids(ids, n)
        self._pad = _pad_value(self.ids)

    # -- properties -----------------------------------------------------------------------

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The normalized catalog, (n, dim) float32, read-only."""
        return self._vectors

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._vectors.shape[1])

    def __len__(self) -> int:
        return len(self._vectors)

    def __repr__(self) -> str:
        return f"CosineRanker(n={len(self)}, dim={self.dim})"

    def find(self, ids: Iterable[Hashable]) -> NDArray[np.int64]:
        """Catalog row of each id, -1 where the catalog lacks it.

        Raises:
            InputTypeError: ``ids`` is a str/bytes (pass a list of ids) or holds an unhashable.
        """
        if isinstance(ids, (str, bytes, bytearray, dict)):
            raise InputTypeError(f"pass a list of ids, not a {type(ids).__name__}")
        n = len(self)
        rows = [self._row(item, n) for item in ids]
        return np.asarray([-1 if r is None else r for r in rows], dtype=np.int64)

    def rows_of(self, ids: Iterable[Hashable], *, skip_unknown: bool = False) -> NDArray[np.int64]:
        """Catalog rows of ``ids``, in order.

        Args:
            ids: item ids.
            skip_unknown: leave out ids the catalog lacks instead of raising.

        Raises:
            InputTypeError: ``ids`` is a str/bytes (pass a list of ids) or holds an unhashable.
            InputValueError: an id is not in the catalog (unless ``skip_unknown``).
        """
        items = ids if isinstance(ids, (str, bytes, bytearray, dict)) else list(ids)
        found = self.find(items)
        if not skip_unknown and (found < 0).any():
            unknown = [items[i] for i in np.flatnonzero(found < 0)]
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise InputValueError(
                f"{len(unknown)} id(s) not in the catalog: {shown}"
                f"{', ...' if len(unknown) > 5 else ''}; pass on_unknown='skip' to leave them out"
            )
        return found[found >= 0]

    def _row(self, item: object, n: int) -> int | None:
        try:
            if self._index is not None:
                return self._index.get(item)
        except TypeError as exc:
            raise InputTypeError(f"id {item!r} is not hashable") from exc
        # Row-number ids: exact integers in range only (True and 1.0 are not ids).
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= item < n:
            return int(item)
        return None

    # -- search ---------------------------------------------------------------------------

    def _normalized_queries(self, q: NDArray[Any]) -> NDArray[np.float32]:
        if q.shape[-1] != self.dim:
            raise InputValueError(
                f"query dimension {q.shape[-1]} does not match the catalog's {self.dim}; "
                "encode queries with the model that encoded the catalog"
            )
        return normalize_rows(q.reshape(-1, self.dim), "queries")

    def _exclusion_rows(self, exclude: object, n_queries: int, single: bool) -> list[Any]:
        """Per query, the catalog rows to leave out (unknown ids are ignored)."""
        if exclude is None:
            return [None] * n_queries
        if single:
            return [self._one_exclusion(exclude, "exclude")]
        if isinstance(exclude, (str, bytes, bytearray)) or not isinstance(exclude, Sequence):
            raise InputTypeError(
                "for a batch of queries, exclude must be a list with one collection of ids "
                f"(or None) per query, got {type(exclude).__name__}"
            )
        if len(exclude) != n_queries:
            raise InputValueError(
                f"exclude has {len(exclude)} entries for {n_queries} queries; give one each"
            )
        return [
            None if e is None else self._one_exclusion(e, f"exclude[{i}]")
            for i, e in enumerate(exclude)
        ]

    def _one_exclusion(self, ids: object, name: str) -> NDArray[np.int64] | None:
        if isinstance(ids, (str, bytes, bytearray)) or not isinstance(ids, (Iterable, np.ndarray)):
            raise InputTypeError(f"{name} must be a collection of ids, got {type(ids).__name__}")
        rows = self.rows_of(ids, skip_unknown=True)
        return rows if len(rows) else None

    def topk(
        self,
        queries: ArrayLike,
        k: int = 10,
        exclude: Collection[Hashable] | Sequence[Collection[Hashable] | None] | None = None,
    ) -> TopK:
        """The ``k`` most similar catalog items for one query or a batch of queries.

        Args:
            queries: one (dim,) vector or a (q, dim) batch; normalized here.
            k: items per query; more than the catalog holds returns what exists.
            exclude: ids to leave out (e.g. items already seen). For one query, a
                collection of ids; for a batch, a list with one collection (or None) per
                query. Ids the catalog lacks are ignored: there is nothing to leave out.

        Returns:
            ``TopK`` with 1-D fields for a 1-D query, 2-D fields (one row per query) for a
            batch; see ``TopK`` for the padding of short rows.

        Raises:
            ConfigError: k is not a positive int.
            InputTypeError / InputValueError: queries are not finite non-zero vectors of the
                catalog's dimension, or ``exclude`` does not match the queries.
        """
        k = _check_k(k)
        raw = _as_matrix(queries, "queries", (1, 2))
        single = raw.ndim == 1
        q = self._normalized_queries(raw)
        excluded = self._exclusion_rows(exclude, len(q), single)
        k = min(k, len(self))
        if single:
            scores, rows = self._topk_one(q[0], k, excluded[0])
            return TopK(ids=self.ids[rows], scores=scores, rows=rows)
        scores2, rows2 = self._topk_batch(q, k, excluded)
        ids = self.ids[np.maximum(rows2, 0)]
        if (rows2 < 0).any():
            ids[rows2 < 0] = self._pad
        return TopK(ids=ids, scores=scores2, rows=rows2)

    def mmr(
        self,
        query: ArrayLike,
        k: int = 10,
        diversity: float = SUGGESTED_DIVERSITY,
        candidates: int = DEFAULT_CANDIDATES,
        exclude: Collection[Hashable] | None = None,
    ) -> TopK:
        """Top-k of one query with diversity re-ranking (the ``Recommender``'s own).

        Takes the ``candidates`` most similar items, then keeps ``k`` of them picked by
        ``diverse_picks`` (MMR on rank relevance with mean-cosine redundancy); the kept
        items stay in score order.

        Args:
            query: one (dim,) vector.
            k: items to return.
            diversity: weight of novelty in [0, 1]; 0 is plain ``topk``.
            candidates: size of the pool re-ranked; raised to ``k`` when smaller.
            exclude: ids to leave out, as in ``topk``.

        Returns:
            ``TopK`` (1-D), best first; ``scores`` are the cosine similarities.

        Raises:
            ConfigError: k or candidates not a positive int, diversity outside [0, 1].
            InputTypeError / InputValueError: as ``topk``.
        """
        k = _check_k(k)
        candidates = check_int(candidates, "candidates")
        check_diversity(diversity)
        q = _as_matrix(query, "query", (1,))
        pool = self.topk(q, k=max(k, candidates), exclude=exclude)
        keep = diverse_picks(self._vectors[pool.rows], k, diversity)
        return TopK(ids=pool.ids[keep], scores=pool.scores[keep], rows=pool.rows[keep])

    def _topk_one(
        self, q: NDArray[np.float32], k: int, excluded: NDArray[np.int64] | None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        # One GEMV over the whole catalog: memory-bound, so the selection must stay a
        # small fraction of it (the target is 1.25x a bare ``catalog @ q``).
        s = self._vectors @ q
        if excluded is not None:
            s[excluded] = -np.inf
        best = select_topk(s, k)
        return s[best], best

    def _block_rows(self, n_queries: int) -> int:
        return self.block_rows if self.block_rows is not None else block_rows_for(n_queries)

    def _topk_batch(
        self, q: NDArray[np.float32], k: int, excluded: list[Any]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        nq, n = len(q), len(self)
        block = self._block_rows(nq)
        buf = np.empty((nq, min(block, n)), dtype=np.float32)

        def score(start: int, stop: int) -> NDArray[np.float32]:
            s = buf if stop - start == buf.shape[1] else np.empty((nq, stop - start), np.float32)
            return np.matmul(q, self._vectors[start:stop].T, out=s)

        return blocked_topk(score, n, nq, k, excluded, block)


def block_rows_for(n_queries: int, bytes_per_score: int = 4) -> int:
    """Catalog rows per block so one block of scores for ``n_queries`` is ~``BLOCK_BYTES``."""
    rows = BLOCK_BYTES // (bytes_per_score * max(1, n_queries))
    return int(min(MAX_BLOCK_ROWS, max(MIN_BLOCK_ROWS, rows)))


def blocked_topk(
    score: Callable[[int, int], NDArray[np.float32]],
    n: int,
    n_queries: int,
    k: int,
    excluded: Sequence[NDArray[np.int64] | None] | None = None,
    block_rows: int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The ``k`` best of ``n`` items for each of ``n_queries`` queries, scored block by block.

    The one batch ranking path: ``CosineRanker`` scores a block with a GEMM, the
    ``Recommender`` with its history scorer. Per query only the scores above its running
    k-th best are kept, so memory stays bounded by one block and the selection work
    shrinks as the thresholds rise.

    Args:
        score: ``score(start, stop)`` gives the (n_queries, stop - start) float32 scores of
            items ``start..stop-1``; it may return a reused buffer (it is changed in place).
            -inf marks an item left out.
        n: items.
        n_queries: queries.
        k: items per query (at most ``n``).
        excluded: per query, item rows to leave out (or None).
        block_rows: items per block (default: ``block_rows_for(n_queries)``).

    Returns:
        (scores, rows), each (n_queries, k), best first (higher score, then lower row);
        short rows are padded with -inf / -1.
    """
    nq = n_queries
    block = block_rows or block_rows_for(nq)
    best_s = np.full((nq, k), -np.inf, dtype=np.float32)
    best_r = np.full((nq, k), -1, dtype=np.int64)
    # A score must beat its query's threshold to be a candidate. Thresholds start at
    # -inf (so excluded items never qualify) and rise to the running k-th best at each
    # merge; a stale, lower threshold only lets more candidates through.
    thr = np.full((nq, 1), -np.inf, dtype=np.float32)
    ex_q, ex_r = _flatten_exclusions(list(excluded) if excluded is not None else [])
    pend_q: list[NDArray[np.intp]] = []
    pend_r: list[NDArray[np.int64]] = []
    pend_s: list[NDArray[np.float32]] = []
    pending = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        s = score(start, stop)
        lo, hi = np.searchsorted(ex_r, (start, stop))
        if hi > lo:
            s[ex_q[lo:hi], ex_r[lo:hi] - start] = -np.inf
        if start == 0 and stop - start > k:
            # Seed the thresholds with the first block's k-th best: without it every
            # score of the first block would be a candidate.
            thr = np.partition(s, s.shape[1] - k, axis=1)[:, s.shape[1] - k :][:, :1]
            # >= keeps the first block's ties at the k-th score; later blocks only
            # need to beat it strictly (on a tie the earlier, lower row wins).
            qi, ci = np.nonzero((s >= thr) & (s > -np.inf))
        else:
            qi, ci = _above(s, thr)
        if len(qi):
            pend_q.append(qi)
            pend_r.append(ci + start)
            pend_s.append(s[qi, ci])
            pending += len(qi)
        if pending > 2 * nq * k or stop == n:
            _merge(best_s, best_r, pend_q, pend_r, pend_s)
            thr = best_s[:, k - 1 :].copy()
            pend_q, pend_r, pend_s, pending = [], [], [], 0
    return best_s, best_r


def _index_ids(ids: object, n: int) -> tuple[NDArray[Any], dict[Hashable, int]]:
    if isinstance(ids, (str, bytes, bytearray)) or not isinstance(ids, (Iterable, np.ndarray)):
        raise InputTypeError(f"ids must be a sequence of item ids, got {type(ids).__name__}")
    items = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    if len(items) != n:
        raise InputValueError(f"got {len(items)} ids for {n} vectors; give one id per row")
    index: dict[Hashable, int] = {}
    for row, item in enumerate(items):
        try:
            first = index.setdefault(item, row)
        except TypeError as exc:
            raise InputTypeError(f"ids[{row}] = {item!r} is not hashable") from exc
        if first != row:
            raise InputValueError(
                f"duplicate id {item!r} at rows {first} and {row}; ids must be unique"
            )
    ints = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items)
    if items and ints and all(-(2**63) <= i < 2**63 for i in items):
        arr = np.asarray(items, dtype=np.int64)
    elif items and all(isinstance(i, str) for i in items):
        arr = np.asarray(items, dtype=str)
    else:
        # Mixed or other types: keep the objects as given (np.asarray would stringify them).
        arr = np.empty(n, dtype=object)
        arr[:] = items
    arr.flags.writeable = False
    return arr, index


def _flatten_exclusions(excluded: list[Any]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """(query, row) pairs to exclude, sorted by row so each block finds its slice fast."""
    pairs_q = [np.full(len(r), i, dtype=np.intp) for i, r in enumerate(excluded) if r is not None]
    pairs_r = [r for r in excluded if r is not None]
    if not pairs_r:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.int64)
    eq, er = np.concatenate(pairs_q), np.concatenate(pairs_r)
    order = np.argsort(er, kind="stable")
    return eq[order], er[order]


def _above(
    s: NDArray[np.float32], thr: NDArray[np.float32]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(query, column) of the scores above their query's threshold.

    Row maxima first: a SIMD reduction costs a tenth of a full compare-and-nonzero pass,
    and once the thresholds have risen most queries have nothing in most blocks.
    """
    hot = np.flatnonzero(s.max(axis=1) > thr[:, 0])
    if not len(hot):
        return hot, hot
    sub = s[hot]
    flat = np.flatnonzero(sub > thr[hot])
    width = s.shape[1]
    return hot[flat // width], flat % width


def _merge(
    best_s: NDArray[np.float32],
    best_r: NDArray[np.int64],
    pend_q: list[NDArray[np.intp]],
    pend_r: list[NDArray[np.int64]],
    pend_s: list[NDArray[np.float32]],
) -> None:
    """Fold candidate (query, row, score) triples into the per-query best lists, in place."""
    nq, k = best_s.shape
    have = best_r >= 0
    all_q = np.concatenate([np.nonzero(have)[0], *pend_q])
    all_r = np.concatenate([best_r[have], *pend_r])
    all_s = np.concatenate([best_s[have], *pend_s])
    order = np.lexsort((all_r, -all_s, all_q))
    all_q, all_r, all_s = all_q[order], all_r[order], all_s[order]
    starts = np.searchsorted(all_q, np.arange(nq))
    rank = np.arange(len(all_q)) - starts[all_q]
    keep = rank < k
    best_s.fill(-np.inf)
    best_r.fill(-1)
    best_s[all_q[keep], rank[keep]] = all_s[keep]
    best_r[all_q[keep], rank[keep]] = all_r[keep]
