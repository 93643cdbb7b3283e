"""The knn profile's top-m selection (``top_m_sum``) against a full sort."""

from __future__ import annotations

import numpy as np
import pytest

from bertrec.recommend.scorer import RUNNING_TOP_M, top_m_sum


def reference(sims: np.ndarray, m: int) -> np.ndarray:
    width = sims.shape[1]
    return np.sort(sims, axis=1)[:, width - min(m, width) :].sum(axis=1)


@pytest.mark.parametrize("m", [1, 2, 3, RUNNING_TOP_M, RUNNING_TOP_M + 1, 9])
@pytest.mark.parametrize("width", [1, 2, 5, 12])
def test_top_m_sum_matches_a_full_sort(m: int, width: int) -> None:
    rng = np.random.default_rng(m * 100 + width)
    sims = rng.standard_normal((3, width, 257)).astype(np.float32)
    before = sims.copy()
    got = top_m_sum(sims, m)
    assert got.shape == (3, 257) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(sims, m), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(sims, before)  # the input is left as it was


def test_top_m_sum_ties_and_equal_rows() -> None:
    # Ties (the same similarity from two entries) count once per entry, as in a sort.
    sims = np.array([[[0.5, 0.2], [0.5, 0.9], [0.5, 0.9], [-1.0, 0.9]]], dtype=np.float32)
    np.testing.assert_allclose(top_m_sum(sims, 2), [[1.0, 1.8]])
    np.testing.assert_allclose(top_m_sum(sims, 3), [[1.5, 2.7]])
