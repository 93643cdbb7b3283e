"""Hypothesis over Recommender.recommend and huge-magnitude vectors: results are ids of the
catalog with finite scores, or a clean bertrec error; never NaN, never a raw exception."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import bertrec
from bertrec import CosineRanker, ItemCatalog, Recommender

IDS = list(range(20))
_RNG = np.random.default_rng(0)
VECTORS = _RNG.standard_normal((20, 8))


def _recommender(profile: str, popularity: bool) -> Recommender:
    catalog = ItemCatalog(VECTORS, IDS, np.arange(20) if popularity else None)
    return Recommender.from_catalog(catalog, profile=profile, top_m=2, recent=5)


@settings(max_examples=200, deadline=None)
@given(
    history=st.lists(st.one_of(st.integers(-3, 25), st.text(max_size=2), st.none()), max_size=8),
    weights=st.one_of(st.none(), st.lists(st.floats(allow_nan=True), max_size=8)),
    k=st.one_of(st.integers(-2, 30), st.floats(0, 5)),
    diversity=st.one_of(st.floats(-1, 2), st.just(0.0)),
    profile=st.sampled_from(["knn", "mean"]),
    popularity=st.booleans(),
    on_unknown=st.sampled_from(["error", "skip"]),
)
def test_recommend_gives_catalog_ids_or_a_clean_error(
    history: list[Any],
    weights: list[float] | None,
    k: Any,
    diversity: float,
    profile: str,
    popularity: bool,
    on_unknown: str,
) -> None:
    rec = _recommender(profile, popularity)
    try:
        out = rec.recommend(
            history, k=k, weights=weights, diversity=diversity, on_unknown=on_unknown
        )
    except bertrec.BertrecError:
        return
    assert len(out) <= min(k, 20)
    seen = {h for h in history if isinstance(h, int) and 0 <= h < 20}
    for item, score in out:
        assert item in IDS and item not in seen
        assert np.isfinite(score)


def test_huge_float64_vectors_keep_their_direction() -> None:
    x = np.array([[1e308, 1e308, 0.0], [0.0, 3e307, 4e307], [1e-300, 0.0, 0.0]])
    ranker = CosineRanker(x)
    np.testing.assert_allclose(np.linalg.norm(ranker.vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ranker.vectors[1], [0.0, 0.6, 0.8], atol=1e-6)
    top = ranker.topk(np.array([0.0, 1e308, 1e308]), k=3)
    assert top.rows.tolist()[0] == 1 and np.isfinite(top.scores).all()
