"""CosineRanker and blocked_topk against a float64 brute-force oracle, plus every bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bertrec import ConfigError, CosineRanker, InputTypeError, InputValueError, TopK
from bertrec.rank.topk import select_topk

TOL = 1e-5


def oracle(vectors: Any, query: Any, excluded: set[int] | None = None) -> np.ndarray:
    """Cosine of every row with the query, in float64; excluded rows get -inf."""
    x = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    s = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    for r in excluded or ():
        s[r] = -np.inf
    return s


def check_result(rows: np.ndarray, scores: np.ndarray, ref: np.ndarray, k: int) -> None:
    """``rows``/``scores`` are a valid top-k of ``ref`` within float32 rounding."""
    rows, scores = rows[rows >= 0], scores[: int((rows >= 0).sum())]
    eligible = np.isfinite(ref)
    assert len(rows) == min(k, int(eligible.sum()))
    assert len(set(rows.tolist())) == len(rows)
    assert eligible[rows].all(), "an excluded item came back"
    np.testing.assert_allclose(scores, ref[rows], atol=TOL)
    # Best first; equal scores by ascending row.
    for i in range(len(rows) - 1):
        assert scores[i] >= scores[i + 1]
        if scores[i] == scores[i + 1]:
            assert rows[i] < rows[i + 1]
    rest = eligible.copy()
    rest[rows] = False
    if len(rows) and rest.any():
        assert ref[rows].min() >= ref[rest].max() - TOL


finite = st.floats(-10, 10, allow_nan=False, width=32)
small_ints = st.integers(-2, 2).map(float)


@st.composite
def catalogs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, list[set[int]]]:
    n = draw(st.integers(1, 40))
    dim = draw(st.integers(1, 6))
    # Small integers make exact ties (and duplicate rows) common.
    elements = draw(st.sampled_from([finite, small_ints]))
    x = draw(arrays(np.float32, (n, dim), elements=elements))
    x[np.linalg.norm(x, axis=1) == 0, 0] = 1.0
    nq = draw(st.integers(1, 5))
    q = draw(arrays(np.float32, (nq, dim), elements=elements))
    q[np.linalg.norm(q, axis=1) == 0, 0] = 1.0
    k = draw(st.integers(1, n + 5))
    excl = [draw(st.sets(st.integers(0, n - 1), max_size=n)) for _ in range(nq)]
    return x, q, k, excl


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs(), st.sampled_from([None, 1, 3, 7]))
def test_topk_matches_oracle(case: Any, block_rows: int | None) -> None:
    x, q, k, excl = case
    ranker = CosineRanker(x, block_rows=block_rows)
    batch = ranker.topk(q, k=k, exclude=[sorted(e) for e in excl])
    assert batch.rows.shape == (len(q), min(k, len(x)))
    for i in range(len(q)):
        ref = oracle(x, q[i], excl[i])
        check_result(batch.rows[i], batch.scores[i], ref, k)
        one = ranker.topk(q[i], k=k, exclude=excl[i])
        check_result(one.rows, one.scores, ref, k)
        assert (one.ids == one.rows).all()


def test_topk_real_ish_vectors_batch_equals_single() -> None:
    rng = np.random.default_rng(1)
    # Clustered, anisotropic vectors like sentence embeddings, across many small blocks.
    centers = rng.standard_normal((8, 48))
    x = centers[rng.integers(0, 8, 3000)] + 0.6 * rng.standard_normal((3000, 48))
    q = centers[rng.integers(0, 8, 20)] + 0.6 * rng.standard_normal((20, 48))
    ranker = CosineRanker(x, block_rows=256)
    batch = ranker.topk(q, k=25)
    for i in range(len(q)):
        check_result(batch.rows[i], batch.scores[i], oracle(x, q[i]), 25)
        one = ranker.topk(q[i], k=25)
        np.testing.assert_array_equal(one.rows, batch.rows[i])


def test_select_topk_sampled_path_is_exact() -> None:
    rng = np.random.default_rng(2)
    s = rng.standard_normal(200_000).astype(np.float32)
    s[rng.integers(0, len(s), 5000)] = -np.inf
    s[[7, 70_000, 150_000]] = 9.0  # a three-way tie at the top
    best = select_topk(s, 10)
    ref = np.lexsort((np.arange(len(s)), -s))[:10]
    np.testing.assert_array_equal(best, ref)
    assert best[:3].tolist() == [7, 70_000, 150_000]


def test_exact_ties_break_by_row() -> None:
    # 0.5-valued rows are exactly representable: equal rows give bitwise-equal scores.
    base = np.zeros((6, 8), dtype=np.float32)
    base[:, :4] = 1.0
    base[[1, 4], 4:] = 1.0  # two rows of a different direction
    query = np.zeros(8, dtype=np.float32)
    query[:4] = 1.0
    ranker = CosineRanker(base, ids=["a", "b", "c", "d", "e", "f"], block_rows=2)
    top = ranker.topk(query, k=3)
    assert top.ids.tolist() == ["a", "c", "d"]
    assert top.scores.tolist() == [1.0, 1.0, 1.0]
    batch = ranker.topk(np.stack([query, query]), k=5)
    assert batch.ids.tolist() == [["a", "c", "d", "f", "b"]] * 2


def test_ids_exclusion_and_k_larger_than_catalog() -> None:
    x = np.eye(4, dtype=np.float32) + 0.1
    ranker = CosineRanker(x, ids=[10, 20, 30, 40])
    top = ranker.topk(x[0], k=100, exclude=[10, 999])  # 999 is not in the catalog
    assert top.ids.tolist()[0] != 10 and len(top.ids) == 3
    assert top.ids.dtype.kind == "i" and top.rows.dtype == np.int64
    assert top.scores.dtype == np.float32


def test_batch_rows_are_padded_when_exclusions_leave_too_few() -> None:
    x = np.eye(3, dtype=np.float32) + 0.1
    for ids, pad in ((["a", "b", "c"], ""), ([1, 2, 3], -1), ([1, "b", (3,)], None)):
        ranker = CosineRanker(x, ids=ids)
        top = ranker.topk(x[:2], k=3, exclude=[ids[:2], None])
        assert top.rows[0].tolist()[1:] == [-1, -1]
        assert np.isneginf(top.scores[0, 1:]).all()
        assert top.ids[0, 1] == pad
        assert (top.rows[1] >= 0).all()


def test_normalized_float32_catalog_is_not_copied(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.shares_memory(CosineRanker(x).vectors, x)
    np.save(tmp_path / "v.npy", x)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    ranker = CosineRanker(mapped)
    assert np.shares_memory(ranker.vectors, mapped)
    assert ranker.topk(x[3], k=1).rows.tolist() == [3]


def test_unnormalized_input_is_left_alone() -> None:
    x = np.array([[3.0, 4.0], [0.0, 2.0]])
    keep = x.copy()
    ranker = CosineRanker(x)
    np.testing.assert_array_equal(x, keep)
    assert ranker.vectors.dtype == np.float32 and ranker.vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(ranker.vectors, axis=1), 1.0, atol=1e-6)
    assert not ranker.vectors.flags.writeable


@pytest.mark.parametrize(
    ("vectors", "error", "match"),
    [
        (None, InputTypeError, "None"),
        ("abc", InputTypeError, "float array"),
        (np.array([["a", "b"]]), InputTypeError, "real numbers"),
        (np.array([[True, False]]), InputTypeError, "real numbers"),
        (np.zeros((0, 4)), InputValueError, "empty"),
        (np.ones(4), InputValueError, "2-D"),
        ([[1.0, 2.0], [1.0]], InputValueError, "ragged"),
        ([[1.0, np.nan], [1.0, 0.0]], InputValueError, "NaN or inf in 1 row"),
        ([[1.0, 0.0], [np.inf, 0.0]], InputValueError, r"\(1\)"),
        ([[1.0, 0.0], [0.0, 0.0]], InputValueError, "all-zero"),
    ],
)
def test_bad_catalogs(vectors: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        CosineRanker(vectors)


def test_bad_ids() -> None:
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(InputValueError, match="duplicate id 'a' at rows 0 and 2"):
        CosineRanker(x, ids=["a", "b", "a"])
    with pytest.raises(InputValueError, match="2 ids for 3 vectors"):
        CosineRanker(x, ids=["a", "b"])
    with pytest.raises(InputTypeError, match="not hashable"):
        CosineRanker(x, ids=[[1], [2], [3]])
    with pytest.raises(InputTypeError, match="sequence of item ids"):
        CosineRanker(x, ids="abc")
    with pytest.raises(ConfigError, match="block_rows"):
        CosineRanker(x, block_rows=0)


def test_bad_queries_and_arguments() -> None:
    ranker = CosineRanker(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
    q = np.ones(3, dtype=np.float32)
    for k in (0, -1):
        with pytest.raises(ConfigError, match="k must be >= 1"):
            ranker.topk(q, k=k)
    for k in (1.5, True, "3"):
        with pytest.raises(ConfigError, match="k must be an int"):
            ranker.topk(q, k=k)  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match="dimension 4 does not match the catalog's 3"):
        ranker.topk(np.ones(4))
    with pytest.raises(InputValueError, match="NaN or inf"):
        ranker.topk(np.array([1.0, np.nan, 0.0]))
    with pytest.raises(InputValueError, match="all-zero"):
        ranker.topk(np.zeros(3))
    with pytest.raises(InputValueError, match="1-D or 2-D"):
        ranker.topk(np.ones((1, 1, 3)))
    with pytest.raises(InputTypeError, match="None"):
        ranker.topk(None)  # type: ignore[arg-type]
    with pytest.raises(InputTypeError, match="collection of ids"):
        ranker.topk(q, exclude="a")  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match="1 entries for 2 queries"):
        ranker.topk(np.ones((2, 3)), exclude=[["a"]])
    with pytest.raises(InputTypeError, match="one collection of ids"):
        ranker.topk(np.ones((2, 3)), exclude={"a"})  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match="not in the catalog: 'z'"):
        ranker.rows_of(["a", "z"])


def test_topk_type() -> None:
    top = CosineRanker(np.eye(2)).topk(np.ones(2), k=1)
    assert isinstance(top, TopK)
    assert repr(CosineRanker(np.eye(2))) == "CosineRanker(n=2, dim=2)"
