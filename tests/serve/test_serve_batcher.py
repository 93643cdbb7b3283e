"""The batcher's cut of a window into batches of similar lengths (a pure function)."""

from __future__ import annotations

import numpy as np
import pytest

from bertrec.serve.batcher import length_groups


@pytest.mark.parametrize("seed", range(5))
def test_groups_cover_every_row_once_within_the_budget(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 257, size=int(rng.integers(1, 200)))
    groups = length_groups(lengths, 1024, 64)
    rows = np.concatenate(groups)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or len(g) * lengths[g].max() <= 1024
    widths = [int(lengths[g].max()) for g in groups]
    assert widths == sorted(widths, reverse=True)  # longest first


def test_mixed_lengths_are_not_padded_to_the_longest() -> None:
    lengths = np.array([200, 12, 10, 11, 9, 190, 10, 12])
    groups = length_groups(lengths, 4096, 64)
    # The short texts share one batch, apart from the long ones.
    assert sorted(lengths[groups[-1]].tolist()) == [9, 10, 10, 11, 12, 12]
    assert all(lengths[g].min() >= 190 for g in groups[:-1])
    padded = sum(len(g) * int(lengths[g].max()) for g in groups)
    assert padded < 0.3 * len(lengths) * lengths.max()
    # Equal lengths stay one batch; a lone text is its own.
    assert len(length_groups(np.full(30, 20), 1024, 64)) == 1
    assert [g.tolist() for g in length_groups(np.array([7]), 1024, 64)] == [[0]]


def _cost(lengths: np.ndarray, groups: list[np.ndarray], call: int) -> int:
    return sum(len(g) * int(lengths[g].max()) + call for g in groups)


@pytest.mark.parametrize("seed", range(20))
def test_groups_are_the_cut_of_least_cost(seed: int) -> None:
    """Against every cut of the sorted rows into consecutive batches (2^(n-1) of them)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    lengths = rng.integers(1, 120, size=n)
    budget, call = int(rng.integers(100, 400)), int(rng.integers(0, 80))
    sorted_rows = np.argsort(-lengths, kind="stable")
    best = None
    for mask in range(2 ** (n - 1)):
        cuts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1] + [n]
        groups = [sorted_rows[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        if any(len(g) > 1 and len(g) * lengths[g].max() > budget for g in groups):
            continue
        cost = _cost(lengths, groups, call)
        best = cost if best is None else min(best, cost)
    got = length_groups(lengths, budget, call)
    assert _cost(lengths, got, call) == best


def test_groups_of_no_rows_and_bad_lengths() -> None:
    assert length_groups(np.array([], dtype=np.int64), 1024, 64) == []
    # One text over the budget still runs (alone); the rest are cut around it.
    groups = length_groups(np.array([5000, 10, 10]), 1024, 64)
    assert [g.tolist() for g in groups] == [[0], [1, 2]]
