"""Token-budget batching: sort by length, cut batches so padded tokens stay under a budget."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from bertrec.errors import ConfigError


def plan_batches(
    lengths: NDArray[np.integer] | list[int],
    max_batch_tokens: int,
    max_batch_size: int | None = None,
) -> list[NDArray[np.intp]]:
    """Split row indices into batches whose padded size ``rows * longest`` fits the budget.

    Rows are taken longest first, so the first batch of a call is its largest in
    memory and padding inside a batch is minimal. A single row longer than the
    budget still gets a batch of its own (it cannot be split).

    Args:
        lengths: token count of every row.
        max_batch_tokens: upper bound on ``rows * longest_row`` per batch.
        max_batch_size: optional upper bound on rows per batch.

    Returns:
        A list of index arrays into ``lengths``; together they cover every row once.

    Raises:
        ConfigError: when the budget or batch size is not a positive integer.
    """
    if isinstance(max_batch_tokens, bool) or not isinstance(max_batch_tokens, int):
        raise ConfigError(f"max_batch_tokens must be an int, got {max_batch_tokens!r}")
    if max_batch_tokens <= 0:
        raise ConfigError(f"max_batch_tokens must be > 0, got {max_batch_tokens}")
    if max_batch_size is not None and (
        isinstance(max_batch_size, bool)
        or not isinstance(max_batch_size, int)
        or max_batch_size <= 0
    ):
        raise ConfigError(f"batch_size must be a positive int or None, got {max_batch_size!r}")
    lens = np.asarray(lengths, dtype=np.int64)
    # Stable sort on the negated length: equal lengths keep input order (deterministic).
    order = np.argsort(-lens, kind="stable")
    batches: list[NDArray[np.intp]] = []
    start, n = 0, len(order)
    while start < n:
        longest = max(int(lens[order[start]]), 1)
        rows = max(1, max_batch_tokens // longest)
        if max_batch_size is not None:
            rows = min(rows, max_batch_size)
        batches.append(order[start : start + rows])
        start += rows
    return batches
