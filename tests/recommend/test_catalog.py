"""ItemCatalog: building, growing, saving and loading without an encoder, encoder checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_recommender import FakeEncoder, _is_memory_mapped

from bertrec import (
    FileFormatError,
    InputTypeError,
    InputValueError,
    ItemCatalog,
    ModelMismatchError,
    NotFoundError,
    OutputError,
)


class VariantEncoder(FakeEncoder):
    def __init__(self, variant: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.variant = variant


def test_encode_save_load_round_trip(tmp_path: Path) -> None:
    enc = VariantEncoder("int8:abc")
    cat = ItemCatalog.encode(enc, ["a", "b", "c"], ["x", "y", "z"], popularity=[3, 0, 1])
    assert (cat.fingerprint, cat.variant, len(cat), cat.dim) == ("fake-model-1", "int8:abc", 3, 16)
    np.testing.assert_allclose(np.linalg.norm(cat.vectors, axis=1), 1.0, atol=1e-6)
    loaded = ItemCatalog.load(cat.save(tmp_path / "cat"))
    assert loaded.ids.tolist() == ["x", "y", "z"]
    assert (loaded.fingerprint, loaded.variant) == (cat.fingerprint, cat.variant)
    assert _is_memory_mapped(loaded.vectors)
    np.testing.assert_array_equal(loaded.vectors, cat.vectors)
    np.testing.assert_array_equal(loaded.popularity, [3, 0, 1])
    assert loaded.rows_of(["z", "x"]).tolist() == [2, 0]
    with pytest.raises(OutputError, match="overwrite=True"):
        cat.save(tmp_path / "cat")


def test_prior_is_log_scaled_and_zero_without_popularity() -> None:
    cat = ItemCatalog(np.eye(3), [1, 2, 3], popularity=[0, 9, 99])
    np.testing.assert_allclose(cat.prior(), np.log1p([0, 9, 99]) / np.log1p(99), rtol=1e-6)
    assert ItemCatalog(np.eye(3), [1, 2, 3]).prior().tolist() == [0, 0, 0]


def test_with_items_returns_a_new_catalog() -> None:
    cat = ItemCatalog(np.eye(3), [1, 2, 3], popularity=[1, 1, 1], fingerprint="m")
    grown = cat.with_items(np.ones((1, 3)), [4])
    assert len(cat) == 3 and len(grown) == 4 and grown.fingerprint == "m"
    assert grown.popularity.tolist() == [1, 1, 1, 0]  # type: ignore[union-attr]
    with pytest.raises(InputValueError, match="already in the catalog"):
        cat.with_items(np.ones((1, 3)), [2])
    with pytest.raises(InputValueError, match="dimension 2, the catalog 3"):
        cat.with_items(np.ones((1, 2)), [9])
    with pytest.raises(InputValueError, match="no popularity"):
        ItemCatalog(np.eye(3), [1, 2, 3]).with_items(np.ones((1, 3)), [4], popularity=[1])


def test_bad_construction() -> None:
    with pytest.raises(InputValueError, match="all-zero"):
        ItemCatalog(np.zeros((2, 3)), [1, 2])
    with pytest.raises(InputValueError, match="duplicate id 1"):
        ItemCatalog(np.eye(2), [1, 1])
    with pytest.raises(InputTypeError, match="list of item ids"):
        ItemCatalog(np.eye(2), "ab")
    with pytest.raises(InputTypeError, match="list of item ids"):
        ItemCatalog(np.eye(2), {1: "a", 2: "b"})  # type: ignore[arg-type]
    with pytest.raises(InputValueError, match="finite and >= 0"):
        ItemCatalog(np.eye(2), [1, 2], popularity=[1, float("nan")])
    with pytest.raises(InputTypeError, match=r"item_texts\[0\] is bytes"):
        ItemCatalog.encode(FakeEncoder(), [b"x"], [1])  # type: ignore[list-item]


def test_check_encoder(caplog: pytest.LogCaptureFixture) -> None:
    cat = ItemCatalog.encode(VariantEncoder("int8:abc"), ["a"], [1])
    cat.check_encoder(VariantEncoder("int8:abc"))
    with pytest.raises(ModelMismatchError, match="same model"):
        cat.check_encoder(VariantEncoder("int8:abc", fingerprint="other"))
    with pytest.raises(InputValueError, match="dimension 16, the encoder 8"):
        cat.check_encoder(VariantEncoder("int8:abc", dim=8))
    with caplog.at_level(logging.WARNING, logger="bertrec.recommend"):
        cat.check_encoder(VariantEncoder("fp32:def"))
    assert "made by the int8:abc variant, the encoder runs fp32:def" in caplog.text


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="catalog.json"):
        ItemCatalog.load(tmp_path)
    path = ItemCatalog(np.eye(2), [1, 2]).save(tmp_path / "cat")
    (path / "ids.json").write_text("[1, 2, 3]")
    with pytest.raises(FileFormatError, match="must be a list of 2 ids"):
        ItemCatalog.load(path)
    (path / "ids.json").write_text("[1, 1]")
    with pytest.raises(FileFormatError, match="duplicate id 1"):
        ItemCatalog.load(path)
    (path / "catalog.json").write_text('{"schema_version": 7}')
    with pytest.raises(FileFormatError, match="schema_version 7"):
        ItemCatalog.load(path)
