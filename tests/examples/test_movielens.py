"""The MovieLens example: loader, item text, temporal split and metrics, on tiny tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recommend.test_recommender import FakeEncoder

from bertrec import ConfigError, NotFoundError, Recommender
from examples.movielens import data, metrics

# -- the MovieLens protocol on a tiny synthetic table ------------------------------------


def _table(rows: list[tuple[int, int, float, int]]) -> tuple[np.ndarray, ...]:
    a = np.array(rows, dtype=np.float64)
    return (
        a[:, 0].astype(np.int64),
        a[:, 1].astype(np.int64),
        a[:, 2].astype(np.float32),
        a[:, 3].astype(np.int64),
    )


RATINGS = [
    # user, item, rating, time (file order is not time order)
    (1, 10, 5.0, 3),
    (1, 11, 2.0, 1),
    (1, 12, 4.0, 2),
    (1, 13, 4.5, 5),
    (1, 14, 1.0, 4),
    (1, 15, 4.0, 6),
    (2, 10, 4.0, 1),
    (2, 11, 3.0, 2),
    (2, 16, 4.0, 3),
    (3, 12, 2.0, 1),
    (3, 13, 1.0, 2),
]


def test_temporal_split() -> None:
    splits = data.temporal_split(*_table(RATINGS), n_test=2)
    by_user = {s.user: s for s in splits}
    # User 1 in time order: 11(2) 12(4) 10(5) 14(1) 13(4.5) 15(4): the last two liked are
    # 13 and 15; the disliked 14 between them stays history.
    assert by_user[1].test == [13, 15]
    assert by_user[1].history == [11, 12, 10, 14]
    assert by_user[1].history_ratings == [2.0, 4.0, 5.0, 1.0]
    assert by_user[2].test == [10, 16] and by_user[2].history == [11]
    assert by_user[3].test == [] and by_user[3].history == [12, 13]
    assert metrics.user_history(by_user[1], "liked") == ([12, 10], [11, 12, 10, 14])
    assert metrics.user_history(by_user[1], "none") == ([], [11, 12, 10, 14])
    counts = metrics.popularity_counts(splits, [10, 11, 12, 13, 14, 15, 16])
    # Held-out ratings (13 and 15 of user 1, 10 and 16 of user 2) are not counted.
    assert counts.tolist() == [1, 2, 2, 1, 1, 0, 0]
    with pytest.raises(ConfigError, match="n_test"):
        data.temporal_split(*_table(RATINGS), n_test=0)


def test_metrics() -> None:
    assert metrics.ndcg_at_k([1, 2, 3], {1}, k=3) == pytest.approx(1.0)
    assert metrics.ndcg_at_k([2, 1], {1}, k=2) == pytest.approx(1 / np.log2(3))
    assert metrics.ndcg_at_k([5, 1, 2], {1, 2}, k=3) == pytest.approx(
        (1 / np.log2(3) + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    )
    assert metrics.ndcg_at_k([1], set(), k=3) == 0.0
    assert metrics.recall_at_k([1, 2, 3], {2, 9}, k=2) == 0.5
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    assert metrics.intra_list_diversity(v) == pytest.approx(1 - 2 / 6)
    assert metrics.intra_list_diversity(v[:1]) is None


class _Fixed:
    """A stub recommender returning a fixed ranking minus the excluded ids."""

    def __init__(self, order: list[int]) -> None:
        self.order = order
        self.seen: list[tuple[list[Any], list[Any]]] = []

    def recommend(
        self,
        history: Sequence[Any],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Any] | None = None,
        diversity: float = 0.0,
    ) -> list[tuple[Any, float]]:
        self.seen.append((list(history), list(exclude or [])))
        left_out = set(exclude or [])
        return [(i, 0.0) for i in self.order if i not in left_out][:k]


def test_evaluate_on_a_synthetic_table() -> None:
    splits = data.temporal_split(*_table(RATINGS), n_test=2)
    items = [10, 11, 12, 13, 14, 15, 16]
    vectors = np.eye(7, dtype=np.float32)
    stub = _Fixed([13, 16, 15, 10, 11, 12, 14])
    m = metrics.evaluate(stub, splits, vectors, items, k=2)
    # User 1 gets [13, 16]: one hit at rank 1 of 2 relevant; user 2 (seen 11) gets [13, 16]:
    # one hit at rank 2; user 3 has nothing held out and counts 0.
    idcg = 1 + 1 / np.log2(3)
    assert m.ndcg == pytest.approx((1 / idcg + (1 / np.log2(3)) / idcg + 0) / 3)
    assert m.recall == pytest.approx((0.5 + 0.5 + 0) / 3)
    # User 3 (seen 12, 13) gets [16, 15]: three distinct items shown in all.
    assert m.coverage == pytest.approx(3 / 7)
    assert m.diversity == pytest.approx(1.0)
    assert m.users == 3
    assert stub.seen[0] == ([12, 10], [11, 12, 10, 14])


def test_evaluate_runs_a_recommender() -> None:
    enc = FakeEncoder()
    splits = data.temporal_split(*_table(RATINGS), n_test=2)
    items = [10, 11, 12, 13, 14, 15, 16]
    counts = metrics.popularity_counts(splits, items)
    rec = Recommender(enc, [f"film {i}" for i in items], items, popularity=counts)
    pop = metrics.evaluate(rec, splits, rec.vectors, items, k=3, history="none")
    hybrid = metrics.evaluate(rec, splits, rec.vectors, items, k=3, diversity=0.3)
    for m in (pop, hybrid):
        assert 0.0 <= m.ndcg <= 1.0 and 0.0 <= m.recall <= 1.0 and 0.0 < m.coverage <= 1.0


def test_movielens_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,Toy Story (1995),Adventure|Animation\n2,"Heat, The (1995)",(no genres listed)\n',
        encoding="utf-8",
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.5,11\n", encoding="utf-8"
    )
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n1,1,fun,3\n", encoding="utf-8"
    )
    ml = data.load_movielens(tmp_path)
    assert ml.item_ids == [1, 2]
    assert data.item_texts(ml) == [
        "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun.",
        "Heat, The (1995).",
    ]
    assert ml.ratings.tolist() == [4.0, 3.5]
    (tmp_path / "ratings.csv").unlink()
    with pytest.raises(NotFoundError, match="ratings.csv"):
        data.load_movielens(tmp_path)
    monkeypatch.delenv("BERTREC_MOVIELENS", raising=False)
    with pytest.raises(ConfigError, match="BERTREC_MOVIELENS"):
        data.load_movielens(None)


# -- the real model ------------------------------------------------------------------------
