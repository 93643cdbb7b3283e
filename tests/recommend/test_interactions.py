"""Interaction parsing for the hybrid Recommender: tuples, triples, tables, and each kind
of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bertrec import InputTypeError, InputValueError, ItemCatalog
from bertrec.recommend.interactions import parse_interactions

IDS = [10, 11, 12, 13]


@pytest.fixture()
def catalog() -> ItemCatalog:
    return ItemCatalog(np.eye(4, dtype=np.float32), IDS)


def _pairs(found: object) -> dict[tuple[object, int], float]:
    assert found is not None
    users = [found.user_ids[u] for u in found.users]  # type: ignore[attr-defined]
    items = [IDS[r] for r in found.rows]  # type: ignore[attr-defined]
    return dict(zip(zip(users, items, strict=True), found.weights.tolist(), strict=True))  # type: ignore[attr-defined]


def test_pairs_and_triples(catalog: ItemCatalog) -> None:
    assert _pairs(parse_interactions([("a", 10), ("b", 12), ("a", 13)], catalog)) == {
        ("a", 10): 1.0,
        ("b", 12): 1.0,
        ("a", 13): 1.0,
    }
    found = parse_interactions([("a", 10, 4.5), ("b", 11, 2.0)], catalog)
    assert _pairs(found) == {("a", 10): 4.5, ("b", 11): 2.0}
    assert found is not None and found.counts().tolist() == [1.0, 1.0, 0.0, 0.0]


def test_duplicates_are_summed_and_zero_weights_dropped(catalog: ItemCatalog) -> None:
    found = parse_interactions([("a", 10, 1.0), ("a", 10, 2.5), ("b", 11, 0.0)], catalog)
    assert _pairs(found) == {("a", 10): 3.5}


def test_pandas_table(catalog: ItemCatalog) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 12, 13], "weight": [5.0, 3, 1]})
    assert _pairs(parse_interactions(df, catalog)) == {(1, 10): 5.0, (1, 12): 3.0, (2, 13): 1.0}
    no_weight = df[["user_id", "item_id"]]
    assert set(_pairs(parse_interactions(no_weight, catalog)).values()) == {1.0}
    with pytest.raises(InputValueError, match="lacks column"):
        parse_interactions(df.rename(columns={"item_id": "movie"}), catalog)


def test_pyarrow_table(catalog: ItemCatalog) -> None:
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"user_id": ["u", "v"], "item_id": [11, 13], "weight": [2.0, 3.0]})
    assert _pairs(parse_interactions(table, catalog)) == {("u", 11): 2.0, ("v", 13): 3.0}


def test_dict_of_columns(catalog: ItemCatalog) -> None:
    found = parse_interactions({"user_id": [1, 2], "item_id": [10, 11]}, catalog)
    assert _pairs(found) == {(1, 10): 1.0, (2, 11): 1.0}


def test_unknown_items_are_named_or_skipped(catalog: ItemCatalog) -> None:
    data = [("a", 10), ("a", 99), ("b", "zz")]
    with pytest.raises(InputValueError, match=r"2 item\(s\) not in the catalog: 99, 'zz'"):
        parse_interactions(data, catalog)
    assert _pairs(parse_interactions(data, catalog, on_unknown="skip")) == {("a", 10): 1.0}


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_weights(catalog: ItemCatalog, weight: float) -> None:
    with pytest.raises(InputValueError, match="negative, NaN or infinite"):
        parse_interactions([("a", 10, 1.0), ("a", 11, weight)], catalog)


@pytest.mark.parametrize(
    "data",
    [None, "a,10", [("a",)], [("a", 10), ("b", 11, 1.0)], [("a", 10, "x")], 5],
)
def test_bad_shapes(catalog: ItemCatalog, data: object) -> None:
    with pytest.raises(InputTypeError):
        parse_interactions(data, catalog)


def test_empty_set_warns(catalog: ItemCatalog) -> None:
    with pytest.warns(UserWarning, match="content and popularity only"):
        assert parse_interactions([], catalog) is None
    with pytest.warns(UserWarning):
        assert parse_interactions([("a", 99)], catalog, on_unknown="skip") is None
