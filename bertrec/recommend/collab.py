"""The collaborative part of a hybrid ``Recommender``: EASE or ALS fitted on interactions,
and a linear map from item text vectors into the model, so items with no interactions
(cold at fit time, or added later by ``add_items``) get a collaborative score too.

- ``EASE`` (Steck 2019): item-item weights ``B`` in closed form, ``B = I - P / diag(P)``
  with ``P = (X'X + text_weight**2 E E' + l2 I)^-1`` (``E``: the items' text vectors as
  extra pseudo-users, the "collective" form of Jeunen et al. 2020). A user's score is
  ``x @ B``. Dense ``n x n`` over the items with interactions, so only up to
  ``EASE_MAX_ITEMS`` of them; with fewer users than items the Woodbury identity turns
  the ``n^3`` solve into ``(users + dim) n^2``. A cold item's column is predicted by
  ridge regression of the warm columns on the text vectors: ``B[:, j] ~ R @ e_j``.
- ``ALS`` (``implicit``'s alternating least squares, Hu et al. 2008) beyond that size:
  item factors ``Y``; a user's factors are solved from their history at request time
  (``(Y'Y + l2 I + sum (c-1) y y') u = sum c y``, ``c = alpha * weight``), so no user
  is stored. A cold item's factors are predicted from its text vector by ridge regression.

Weights are divided by the mean interaction weight at fit time (``scale``), and the same
``scale`` divides request-time weights, so a history without weights counts each entry
as an average interaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import check_choice, check_float, check_int
from bertrec.errors import ConfigError, InputTypeError, ProviderError
from bertrec.recommend.interactions import INSTALL_CF, Interactions, scipy_sparse

MODELS = ("auto", "ease", "als")
# Largest number of items with interactions that EASE takes: its B is dense, 4 n^2
# bytes (1.6 GB at 20k) and its solve n^3 (minutes at 20k on 2 cores); "auto" picks ALS
# above it.
EASE_MAX_ITEMS = 20_000
# Catalog rows scored per step when a user's largest ALS score is sought, and the most
# scores (users x items) kept from that pass for the blocks (64 MB).
PASS_ROWS = 32768
CACHE_SCORES = 1 << 24
# EASE and text-map defaults picked on the MovieLens validation split by bench/recsys_eval.py.
DEFAULT_L2 = 1000.0
DEFAULT_TEXT_WEIGHT = 0.0
DEFAULT_MAP_L2 = 10.0
# ALS (catalogs past EASE_MAX_ITEMS, which MovieLens is not): implicit's usual ranges,
# fitted at scale by bench/cf_scale.py.
DEFAULT_FACTORS = 64
DEFAULT_ALS_L2 = 0.05
DEFAULT_ALPHA = 10.0
DEFAULT_ITERATIONS = 15

Array = NDArray[Any]


@dataclass(frozen=True)
class CollabSettings:
    """How the collaborative model is fitted (``Recommender(..., collab=...)``).

    Attributes:
        model: ``"ease"``, ``"als"`` or ``"auto"`` (EASE up to ``EASE_MAX_ITEMS`` items
            with interactions, ALS above).
        l2: EASE's L2 regularization (lambda).
        text_weight: weight of the item text vectors as EASE pseudo-users (0: plain EASE).
        map_l2: ridge regularization of the map from text vectors to the model (cold items).
        factors / als_l2 / alpha / iterations / seed: ALS's factors, regularization,
            confidence scale, sweeps and random seed.
    """

    model: str = "auto"
    l2: float = DEFAULT_L2
    text_weight: float = DEFAULT_TEXT_WEIGHT
    map_l2: float = DEFAULT_MAP_L2
    factors: int = DEFAULT_FACTORS
    als_l2: float = DEFAULT_ALS_L2
    alpha: float = DEFAULT_ALPHA
    iterations: int = DEFAULT_ITERATIONS
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice(self.model, "model", MODELS)
        for name in ("l2", "map_l2", "als_l2", "alpha"):
            if check_float(getattr(self, name), name, 0.0) == 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        check_float(self.text_weight, "text_weight", 0.0)
        check_int(self.factors, "factors")
        check_int(self.iterations, "iterations")
        check_int(self.seed, "seed", 0)


def settings_of(collab: object) -> CollabSettings:
    """``collab`` (None, a ``CollabSettings`` or its keywords as a dict) as settings."""
    if collab is None:
        return CollabSettings()
    if isinstance(collab, CollabSettings):
        return collab
    if isinstance(collab, dict):
        try:
            return CollabSettings(**collab)
        except TypeError as exc:
            raise ConfigError(f"collab: {exc}; see CollabSettings for its fields") from exc
    raise InputTypeError(f"collab must be a CollabSettings or a dict, got {type(collab).__name__}")


class CollabModel:
    """A fitted collaborative model over catalog rows (``EASE`` or ``ALS``).

    ``warm`` lists the catalog rows that had interactions, sorted; every other row
    (including rows added later) is cold and scored through the text map.
    """

    kind = ""

    def __init__(self, settings: CollabSettings, warm: Array, scale: float) -> None:
        self.settings = settings
        self.warm = np.asarray(warm, dtype=np.int64)
        self.scale = float(scale)

    def arrays(self) -> dict[str, Array]:
        raise NotImplementedError

    def with_rows(self, vectors: NDArray[np.float32]) -> CollabModel:
        """The model over a catalog grown by ``vectors`` (new rows are cold)."""
        return self

    def positions(self, rows: Array) -> Array:
        """Position of each catalog row among the warm rows, -1 for a cold row."""
        pos = np.searchsorted(self.warm, rows)
        pos[pos == len(self.warm)] = 0
        return np.where(self.warm[pos] == rows, pos, -1)

    def users(
        self, histories: Sequence[tuple[Array, Array]], vectors: NDArray[np.float32]
    ) -> UserScorer:
        """A scorer for users given as (catalog rows, weights) of their histories."""
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {"model": self.kind, "settings": asdict(self.settings), "scale": self.scale}


class UserScorer:
    """A chunk of users' collaborative scores: ``block(start, stop)`` for catalog rows
    (warm rows the model's score, cold rows the mapped one), ``peak`` each user's
    largest warm score, ``parts(u, row)`` one user's per-history-entry contributions."""

    peak: NDArray[np.float32]
    n_known: NDArray[np.int64]  # per user: history items with interactions, weight > 0

    def block(self, start: int, stop: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """(scores, cold mask) of catalog rows ``start..stop-1``."""
        raise NotImplementedError

    def parts(self, user: int, row: int) -> NDArray[np.float64]:
        """Contribution of each of the user's history entries to the score of ``row``."""
        raise NotImplementedError


class EASE(CollabModel):
    kind = "ease"

    def __init__(
        self, settings: CollabSettings, warm: Array, scale: float, b: Array, r: Array
    ) -> None:
        super().__init__(settings, warm, scale)
        self.b = b  # (warm, warm) item-item weights, zero diagonal
        self.r = r  # (warm, dim): B[:, j] ~ r @ vector_j for a cold item j

    @classmethod
    def fit(
        cls, x: Any, warm: Array, vectors: NDArray[np.float32], s: CollabSettings, scale: float
    ) -> EASE:
        e = np.asarray(vectors[warm], dtype=np.float64)
        side = s.text_weight * e.T if s.text_weight > 0 else None
        p = _ease_inverse(x, side, s.l2)
        d = np.diag(p).copy()
        p /= -d[None, :]  # P becomes B in place: B = -P / diag(P), zero diagonal
        np.fill_diagonal(p, 0.0)
        r = _ridge(e, p.T, s.map_l2).T  # (warm, dim)
        return cls(s, warm, scale, p, r.astype(np.float32))

    def arrays(self) -> dict[str, Array]:
        return {"warm": self.warm, "b": self.b, "r": self.r}

    def users(
        self, histories: Sequence[tuple[Array, Array]], vectors: NDArray[np.float32]
    ) -> UserScorer:
        return _EaseUsers(self, histories, vectors)


class _EaseUsers(UserScorer):
    def __init__(
        self, model: EASE, histories: Sequence[tuple[Array, Array]], vectors: NDArray[np.float32]
    ) -> None:
        sparse = scipy_sparse()
        self.m, self.vectors = model, vectors
        self.entries = []
        u_idx, cols, vals = [], [], []
        for u, (rows, w) in enumerate(histories):
            pos = model.positions(rows)
            self.entries.append((pos, w / model.scale))
            ok = (pos >= 0) & (w > 0)
            u_idx.append(np.full(int(ok.sum()), u))
            cols.append(pos[ok])
            vals.append(w[ok] / model.scale)
        n, width = len(histories), len(model.warm)
        self.x = sparse.csr_matrix(
            (np.concatenate(vals or [np.zeros(0)]).astype(np.float32),
             (np.concatenate(u_idx or [np.zeros(0)]), np.concatenate(cols or [np.zeros(0)]))),
            shape=(n, width),
        )  # fmt: skip
        self.z = np.asarray(self.x @ model.r, dtype=np.float32)  # (users, dim)
        # Every warm score at once (sparse rows of B summed: history x items work): the
        # users of one chunk times at most EASE_MAX_ITEMS floats.
        self.s = np.asarray(self.x @ model.b, dtype=np.float32)
        self.peak = self.s.max(axis=1)
        self.n_known = np.diff(self.x.indptr).astype(np.int64)

    def block(self, start: int, stop: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        m = self.m
        lo, hi = np.searchsorted(m.warm, (start, stop))
        out = np.empty((self.x.shape[0], stop - start), dtype=np.float32)
        cold = np.ones(stop - start, dtype=bool)
        cold[m.warm[lo:hi] - start] = False
        if hi > lo:
            out[:, ~cold] = self.s[:, lo:hi]
        if cold.any():
            out[:, cold] = self.z @ self.vectors[start:stop][cold].T
        return out, cold

    def parts(self, user: int, row: int) -> NDArray[np.float64]:
        pos, w = self.entries[user]
        out = np.zeros(len(pos))
        ok = pos >= 0
        (col,) = self.m.positions(np.array([row]))
        if col >= 0:
            out[ok] = w[ok] * self.m.b[pos[ok], col]
        else:
            out[ok] = w[ok] * (self.m.r[pos[ok]] @ self.vectors[row])
        return out


class ALS(CollabModel):
    kind = "als"

    def __init__(
        self,
        settings: CollabSettings,
        warm: Array,
        scale: float,
        y: Array,
        gram: Array,
        w: Array,
    ) -> None:
        super().__init__(settings, warm, scale)
        self.y = y  # (catalog rows, factors): fitted for warm rows, mapped for cold ones
        self.gram = gram  # Y'Y over the warm rows + l2 I
        self.w = w  # (dim, factors): text vector -> factors
        self.is_warm = np.zeros(len(y), dtype=bool)
        self.is_warm[self.warm] = True

    @classmethod
    def fit(
        cls, x: Any, warm: Array, vectors: NDArray[np.float32], s: CollabSettings, scale: float
    ) -> ALS:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
            from threadpoolctl import threadpool_limits
        except ImportError as exc:
            raise ProviderError(
                f"the ALS model (catalogs of more than {EASE_MAX_ITEMS:,} items with "
                f"interactions) needs the implicit package: {INSTALL_CF}"
            ) from exc
        # implicit runs its own threads; a threaded BLAS inside them oversubscribes.
        with threadpool_limits(1, "blas"):
            als = AlternatingLeastSquares(
                factors=s.factors,
                regularization=s.als_l2,
                alpha=s.alpha,
                iterations=s.iterations,
                calculate_training_loss=False,
                random_state=s.seed,
            )
            als.fit(x, show_progress=False)
        fitted = np.asarray(als.item_factors, dtype=np.float32)
        e = np.asarray(vectors, dtype=np.float32)
        w = _ridge(e[warm], fitted, s.map_l2).astype(np.float32)
        y = e @ w
        y[warm] = fitted
        gram = fitted.T.astype(np.float64) @ fitted + s.als_l2 * np.eye(s.factors)
        return cls(s, warm, scale, y, gram.astype(np.float32), w)

    def arrays(self) -> dict[str, Array]:
        return {"warm": self.warm, "y": self.y, "gram": self.gram, "w": self.w}

    def with_rows(self, vectors: NDArray[np.float32]) -> ALS:
        y = np.concatenate([self.y, vectors @ self.w])
        return ALS(self.settings, self.warm, self.scale, y, self.gram, self.w)

    def users(
        self, histories: Sequence[tuple[Array, Array]], vectors: NDArray[np.float32]
    ) -> UserScorer:
        return _AlsUsers(self, histories)


class _AlsUsers(UserScorer):
    def __init__(self, model: ALS, histories: Sequence[tuple[Array, Array]]) -> None:
        self.m = model
        f = model.gram.shape[0]
        a = np.repeat(model.gram[None].astype(np.float64), len(histories), axis=0)
        b = np.zeros((len(histories), f))
        self.entries = []
        for u, (rows, w) in enumerate(histories):
            c = model.settings.alpha * np.where(w > 0, w, 0.0) / model.scale
            ys = model.y[rows[c > 0]].astype(np.float64)
            # As implicit's solver: confidence c, preference 1 for each history item.
            a[u] += (ys * (c[c > 0] - 1)[:, None]).T @ ys
            b[u] = c[c > 0] @ ys
            self.entries.append((rows, c))
        self.a = a
        self.n_known = np.array(
            [int((model.is_warm[r] & (c > 0)).sum()) for r, c in self.entries], dtype=np.int64
        )
        self.u = np.linalg.solve(a, b[:, :, None])[:, :, 0].astype(np.float32)
        # Every score at once when that is small (one user: the whole catalog row), so the
        # pass for the peak is the only product; else block by block, twice.
        n = len(model.y)
        self.s = self.u @ model.y.T if len(histories) * n <= CACHE_SCORES else None
        peak = np.full(len(histories), -np.inf, dtype=np.float32)
        for start in range(0, n, PASS_ROWS):
            stop = min(start + PASS_ROWS, n)
            part = (
                self.s[:, start:stop].copy() if self.s is not None else self._product(start, stop)
            )
            part[:, ~model.is_warm[start:stop]] = -np.inf
            np.maximum(peak, part.max(axis=1), out=peak)
        self.peak = peak

    def _product(self, start: int, stop: int) -> NDArray[np.float32]:
        return np.asarray(self.u @ self.m.y[start:stop].T, dtype=np.float32)

    def block(self, start: int, stop: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        scores = self.s[:, start:stop].copy() if self.s is not None else self._product(start, stop)
        return scores, ~self.m.is_warm[start:stop]

    def parts(self, user: int, row: int) -> NDArray[np.float64]:
        # u = A^-1 sum_i c_i y_i, so u . y_row = sum_i c_i (A^-1 y_i) . y_row: exact shares.
        rows, c = self.entries[user]
        target = np.linalg.solve(self.a[user], self.m.y[row].astype(np.float64))
        return c * (self.m.y[rows].astype(np.float64) @ target)


def fit(
    interactions: Interactions, vectors: NDArray[np.float32], settings: CollabSettings
) -> CollabModel:
    """Fit the model ``settings`` names on ``interactions`` over a catalog of ``vectors``.

    Raises:
        ProviderError: scipy (or, for ALS, implicit) is not installed.
        ConfigError: ``model="ease"`` with more than ``EASE_MAX_ITEMS`` items.
    """
    warm = np.unique(interactions.rows)
    kind = settings.model
    if kind == "auto":
        kind = "ease" if len(warm) <= EASE_MAX_ITEMS else "als"
    if kind == "ease" and len(warm) > EASE_MAX_ITEMS:
        raise ConfigError(
            f"EASE takes at most {EASE_MAX_ITEMS:,} items with interactions (its item-item "
            f"matrix is dense), got {len(warm):,}; use model='als' or 'auto'"
        )
    scale = float(interactions.weights.mean())
    scaled = Interactions(
        interactions.users,
        interactions.rows,
        interactions.weights / scale,
        interactions.user_ids,
        interactions.n_items,
    )
    x = scaled.matrix(warm)
    model = EASE if kind == "ease" else ALS
    return model.fit(x, warm, vectors, settings, scale)


def _ease_inverse(x: Any, side: Array | None, l2: float) -> NDArray[np.float32]:
    """``(A'A + l2 I)^-1`` for ``A`` = the rows of ``x`` (sparse) and ``side`` (dense), as
    float32: by Woodbury when ``A`` has few rows, else by Cholesky, in place."""
    n = x.shape[1]
    rows = x.shape[0] + (0 if side is None else side.shape[0])
    if rows**3 + 2 * rows * n**2 < n**3:
        # (A'A + l2 I)^-1 = (I - A' (A A' + l2 I)^-1 A) / l2: an (r x r) inverse and two
        # (r x n) products instead of an (n x n) inverse.
        a = x.toarray().astype(np.float64)
        if side is not None:
            a = np.vstack([a, side])
        k = np.linalg.inv(a @ a.T + l2 * np.eye(rows))
        p = -(a.T.astype(np.float32) @ (k @ a).astype(np.float32))
        p[np.diag_indices(n)] += 1.0
        p /= np.float32(l2)
        return p
    from scipy.linalg import lapack

    g = np.array((x.T @ x).toarray(), dtype=np.float32, order="C")
    if side is not None:
        s32 = side.astype(np.float32)
        g += s32.T @ s32
    g[np.diag_indices(n)] += l2
    # float32 Cholesky and inverse in place (g.T is g in Fortran order, so LAPACK needs no
    # copy): one n x n array, 1.6 GB at EASE_MAX_ITEMS. Its "upper" is g's lower triangle.
    c, info = lapack.spotrf(g.T, lower=0, overwrite_a=1, clean=0)
    if info == 0:
        c, info = lapack.spotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise ConfigError(f"EASE's Gram matrix is not positive definite (LAPACK {info}); raise l2")
    band = 2048
    for i in range(0, n, band):  # mirror the lower triangle into the upper, a band at a time
        g[:i, i : i + band] = g[i : i + band, :i].T
        block = g[i : i + band, i : i + band]
        block[:] = np.tril(block) + np.tril(block, -1).T
    return g


def _ridge(e: Array, targets: Array, l2: float) -> NDArray[np.float64]:
    """``W`` minimizing ``|e W - targets|^2 + l2 |W|^2``: (dim, targets' columns)."""
    lhs = np.asarray(e.T @ e, dtype=np.float64) + l2 * np.eye(e.shape[1])
    # e' targets in the targets' dtype: a float32 (n x n) B is never copied to float64.
    rhs = np.asarray(e.T.astype(targets.dtype) @ targets, dtype=np.float64)
    return np.asarray(np.linalg.solve(lhs, rhs), dtype=np.float64)
