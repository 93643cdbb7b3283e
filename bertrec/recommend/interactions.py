"""User-item interactions for the collaborative part of a ``Recommender``: parsed from
tuples, triples or a table, checked against the catalog, and held as a sparse matrix.

Accepted forms: an iterable of ``(user_id, item_id)`` or ``(user_id, item_id, weight)``;
a pandas DataFrame or a pyarrow Table / RecordBatch with columns ``user_id``, ``item_id``
and optionally ``weight``; a dict of such columns. pandas and pyarrow are never imported
here: a table is read through its own methods.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bertrec.core import check_choice
from bertrec.errors import InputTypeError, InputValueError, ProviderError
from bertrec.recommend.catalog import ItemCatalog

COLUMNS = ("user_id", "item_id", "weight")
ON_UNKNOWN = ("error", "skip")
INSTALL_CF = "pip install 'bertrec[cf]'"


@dataclass(frozen=True)
class Interactions:
    """Interactions as parallel arrays, one entry per distinct (user, item) pair.

    Attributes:
        users: user codes 0..n_users-1 (``user_ids[code]`` is the id given).
        rows: catalog rows of the items.
        weights: positive weights; a pair given more than once has the sum of its weights.
        user_ids: the distinct user ids, in code order.
        n_items: catalog size the rows index.
    """

    users: NDArray[np.int64]
    rows: NDArray[np.int64]
    weights: NDArray[np.float64]
    user_ids: list[Hashable]
    n_items: int

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> NDArray[np.float64]:
        """Interactions (distinct users) per catalog row: the popularity they imply."""
        return np.bincount(self.rows, minlength=self.n_items).astype(np.float64)

    def matrix(self, columns: NDArray[np.int64] | None = None) -> Any:
        """The (users, items) ``scipy.sparse.csr_matrix`` of the weights, float32; with
        ``columns`` (sorted catalog rows) only those items, as columns 0..len-1."""
        sparse = scipy_sparse()
        rows, users, w = self.rows, self.users, self.weights
        width = self.n_items
        if columns is not None:
            pos = np.searchsorted(columns, rows)
            pos[pos == len(columns)] = 0
            keep = columns[pos] == rows
            rows, users, w, width = pos[keep], users[keep], w[keep], len(columns)
        shape = (len(self.user_ids), width)
        return sparse.csr_matrix((w.astype(np.float32), (users, rows)), shape=shape)


def scipy_sparse() -> Any:
    """``scipy.sparse``, or a ``ProviderError`` naming the extra that brings it."""
    try:
        import scipy.sparse
    except ImportError as exc:
        raise ProviderError(
            f"collaborative filtering needs scipy: {INSTALL_CF}, or build the Recommender "
            "without interactions"
        ) from exc
    return scipy.sparse


def parse_interactions(
    interactions: object, catalog: ItemCatalog, on_unknown: str = "error"
) -> Interactions | None:
    """``interactions`` checked against ``catalog``; None (with a warning) when empty.

    Pairs given more than once are summed into one. Zero weights are dropped.

    Raises:
        InputTypeError: not an iterable of tuples or a table, or a tuple of another length.
        InputValueError: items not in the catalog (named; ``on_unknown="skip"`` drops
            them), weights negative, NaN or infinite, or columns missing.
    """
    check_choice(on_unknown, "on_unknown", ON_UNKNOWN)
    users, items, weights = _columns(interactions)
    if weights is not None:
        if weights.shape != (len(users),):
            raise InputValueError("weights must be one number per interaction")
        bad = ~np.isfinite(weights) | (weights < 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise InputValueError(
                f"{int(bad.sum())} interaction weight(s) are negative, NaN or infinite (the "
                f"first at position {first}: {weights[first]!r}); weights must be finite and "
                ">= 0 (e.g. ratings or counts)"
            )
    rows = catalog.ranker.find(items)
    unknown = rows < 0
    if unknown.any() and on_unknown == "error":
        names = list(dict.fromkeys(items[i] for i in np.flatnonzero(unknown)))
        shown = ", ".join(repr(n) for n in names[:5])
        raise InputValueError(
            f"interactions name {len(names)} item(s) not in the catalog: {shown}"
            f"{', ...' if len(names) > 5 else ''}; add them to the catalog or pass "
            "on_unknown='skip' to leave them out"
        )
    w = np.ones(len(rows)) if weights is None else weights
    keep = ~unknown & (w > 0)
    if not keep.any():
        warnings.warn(
            "the interaction set is empty (after leaving out unknown items and zero weights): "
            "the Recommender scores by content and popularity only",
            UserWarning,
            stacklevel=3,
        )
        return None
    user_ids, codes = _user_codes(users, keep)
    rows, w = rows[keep], w[keep]
    # Duplicate (user, item) pairs: one entry with the summed weight.
    key = codes * np.int64(len(catalog)) + rows
    uniq, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, weights=w, minlength=len(uniq)).astype(np.float64)
    return Interactions(
        users=uniq // len(catalog),
        rows=uniq % len(catalog),
        weights=summed,
        user_ids=user_ids,
        n_items=len(catalog),
    )


def _user_codes(users: Sequence[Hashable], keep: NDArray[np.bool_]) -> tuple[list[Any], Any]:
    kept = [u for u, k in zip(users, keep.tolist(), strict=True) if k]
    index: dict[Hashable, int] = {}
    try:
        codes = np.fromiter((index.setdefault(u, len(index)) for u in kept), np.int64, len(kept))
    except TypeError as exc:
        raise InputTypeError(f"a user id is not hashable: {exc}") from exc
    return list(index), codes


def _columns(data: object) -> tuple[list[Any], list[Any], NDArray[np.float64] | None]:
    """(user ids, item ids, weights or None) from any accepted form."""
    if data is None or isinstance(data, (str, bytes, bytearray)):
        raise InputTypeError(
            "interactions must be an iterable of (user_id, item_id[, weight]) tuples or a "
            f"table with columns {COLUMNS}, got {type(data).__name__}"
        )
    module = type(data).__module__.split(".")[0]
    if isinstance(data, dict) or module in ("pandas", "pyarrow"):
        return _table(data)
    try:
        entries = list(data)  # type: ignore[call-overload]
    except TypeError as exc:
        raise InputTypeError(
            f"interactions must be iterable (tuples or a table), got {type(data).__name__}"
        ) from exc
    if not entries:
        return [], [], None
    width = {len(e) if isinstance(e, (tuple, list)) else -1 for e in entries}
    if len(width) != 1 or width - {2, 3}:
        shown = [e for e in entries if not isinstance(e, (tuple, list)) or len(e) != 2]
        raise InputTypeError(
            f"each interaction must be a (user_id, item_id) or (user_id, item_id, weight) "
            f"tuple, all of one length; got {shown[0]!r} among others"
        )
    users = [e[0] for e in entries]
    items = [e[1] for e in entries]
    if width == {2}:
        return users, items, None
    return users, items, _numbers([e[2] for e in entries])


def _table(data: Any) -> tuple[list[Any], list[Any], NDArray[np.float64] | None]:
    names = list(data) if isinstance(data, dict) else _table_names(data)
    missing = [c for c in COLUMNS[:2] if c not in names]
    if missing:
        raise InputValueError(
            f"the interactions table lacks column(s) {missing}; it has {names[:10]}: name the "
            f"columns {COLUMNS[:2]} (and optionally 'weight')"
        )

    def column(name: str) -> list[Any]:
        col = data[name]
        if hasattr(col, "to_pylist"):  # pyarrow
            return list(col.to_pylist())
        if hasattr(col, "tolist"):  # pandas, NumPy
            return list(col.tolist())
        return list(col)

    weights = _numbers(column("weight")) if "weight" in names else None
    return column("user_id"), column("item_id"), weights


def _table_names(data: Any) -> list[str]:
    names = getattr(data, "column_names", None)  # pyarrow
    if names is None:
        names = getattr(data, "columns", None)  # pandas
    if names is None:
        raise InputTypeError(f"cannot read columns from a {type(data).__name__}")
    return [str(n) for n in names]


def _numbers(values: list[Any]) -> NDArray[np.float64]:
    try:
        return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"interaction weights must be numbers: {exc}") from exc
