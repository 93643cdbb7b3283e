"""MMR (``mmr_select``) and the product's diversity re-ranking (``diverse_picks``,
``CosineRanker.mmr``): picks, order, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bertrec import ConfigError, CosineRanker, InputTypeError, InputValueError
from bertrec.rank import diverse_picks, mmr_select

TOL = 1e-5


def oracle(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))


def test_mmr_trades_relevance_for_novelty() -> None:
    # a and a2 are near-duplicates; b is a little less relevant but different.
    x = np.array([[1.0, 0.0, 0.0], [0.99, 0.05, 0.0], [0.8, 0.0, 0.6], [-1.0, 0.0, 0.0]])
    ranker = CosineRanker(x, ids=["a", "a2", "b", "z"])
    q = np.array([1.0, 0.0, 0.1])
    assert ranker.topk(q, k=2).ids.tolist() == ["a", "a2"]
    diverse = ranker.mmr(q, k=2, diversity=0.5, exclude=["z"])
    assert diverse.ids.tolist() == ["a", "b"]  # the near-duplicate a2 gives way
    np.testing.assert_allclose(diverse.scores, oracle(x, q)[[0, 2]], atol=TOL)
    plain = ranker.mmr(q, k=4, diversity=0.0)
    top = ranker.topk(q, k=4)
    assert plain.ids.tolist() == top.ids.tolist()
    np.testing.assert_array_equal(plain.scores, top.scores)
    assert ranker.mmr(q, k=2, candidates=1, exclude=["a"]).ids.tolist()[0] == "a2"


def test_mmr_select_mean_redundancy_differs_from_max() -> None:
    # a1 and a2 are orthogonal and picked first; x is close to a1 only, y halfway to both.
    x = [0.9, 0.0, np.sqrt(1 - 0.81)]
    y = [0.6, 0.6, np.sqrt(1 - 0.72)]
    vecs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], x, y])
    rel = np.array([1.0, 0.99, 0.5, 0.5])
    assert mmr_select(rel, vecs, 3, 0.5).tolist() == [0, 1, 3]  # max cosine: y (0.6 < 0.9)
    # mean cosine: x (0.45 < 0.6)
    assert mmr_select(rel, vecs, 3, 0.5, redundancy="mean").tolist() == [0, 1, 2]
    assert mmr_select(rel, vecs, 9, 0.0, redundancy="mean").tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="unknown redundancy 'sum'; choose from max, mean"):
        mmr_select(rel, vecs, 3, 0.5, redundancy="sum")


def test_mmr_select_huge_pool_stays_linear_in_memory() -> None:
    # 200,000 candidates: a p x p similarity matrix would need 320 GB.
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((200_000, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rel = np.linspace(1.0, 0.0, len(vecs))
    for redundancy in ("max", "mean"):
        picked = mmr_select(rel, vecs, 5, 0.5, redundancy=redundancy)
        assert len(set(picked.tolist())) == 5 and picked[0] == 0


def test_mmr_bad_arguments() -> None:
    ranker = CosineRanker(np.eye(3, dtype=np.float32))
    q = np.ones(3)
    for diversity in (-0.1, 1.5):
        with pytest.raises(ConfigError, match=r"diversity must be >= 0 and <= 1"):
            ranker.mmr(q, diversity=diversity)
    with pytest.raises(ConfigError, match="candidates must be >= 1"):
        ranker.mmr(q, candidates=0)
    with pytest.raises(InputValueError, match="1-D"):
        ranker.mmr(np.ones((2, 3)))
    with pytest.raises(InputValueError, match="same p candidates"):
        mmr_select(np.ones(3), np.ones((2, 3)), k=2)
    with pytest.raises(InputTypeError, match="must be real-valued arrays"):
        mmr_select(["a", "b"], np.ones((2, 3)), k=2)
    with pytest.raises(InputTypeError, match="must be real-valued arrays"):
        mmr_select(np.ones(2), "not vectors", k=2)
    for bad in (np.array([1.0, np.nan]), np.array([np.inf, 1.0])):
        with pytest.raises(InputValueError, match="must be finite"):
            mmr_select(bad, np.eye(2), k=2)
    with pytest.raises(InputValueError, match="must be finite"):
        mmr_select(np.ones(2), np.array([[1.0, 0.0], [np.nan, 0.0]]), k=2)
    assert mmr_select(np.empty(0), np.empty((0, 3)), k=2).tolist() == []


def test_diverse_picks_by_rank() -> None:
    # Candidates best first: four near-duplicates of one direction, then a different one.
    v = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]], dtype=np.float32)
    v[1:4, 1] = [0.01, 0.02, 0.03]
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert diverse_picks(v, 2, 0.0).tolist() == [0, 1]
    assert diverse_picks(v, 2, 0.7).tolist() == [0, 4]
    assert diverse_picks(v, 9, 0.7).tolist() == [0, 1, 2, 3, 4]  # k > candidates: all, sorted
    assert diverse_picks(v[:0], 3, 0.7).tolist() == []
    # At a small weight the fifth rank costs too much relevance, unless ranks barely decay.
    assert diverse_picks(v, 2, 0.15).tolist() == [0, 1]
    assert diverse_picks(v, 2, 0.15, rank_decay=0.01).tolist() == [0, 4]
    with pytest.raises(ConfigError, match="diversity must be >= 0 and <= 1"):
        diverse_picks(v, 2, 1.5)
    with pytest.raises(InputTypeError, match="must be real-valued arrays"):
        diverse_picks([["x", "y"]], 2, 0.5)
    for bad in (-1.0, float("nan"), "0.5"):
        with pytest.raises(ConfigError, match="rank_decay must be"):
            diverse_picks(v, 2, 0.5, rank_decay=bad)  # type: ignore[arg-type]
