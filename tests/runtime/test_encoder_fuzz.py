"""Hypothesis over Encoder.encode: any list of strings gives finite unit vectors in input
order, or one clean InputValueError; other inputs get a clear InputTypeError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bertrec

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def enc(tiny_model_dir: Path) -> bertrec.Encoder:
    return bertrec.Encoder(tiny_model_dir, backend="onnxruntime", precision="fp32")


@FUZZ
@given(texts=st.lists(st.text(max_size=300), max_size=12))
def test_any_strings_give_finite_unit_vectors(enc: bertrec.Encoder, texts: list[str]) -> None:
    try:
        out = enc.encode(texts)
    except bertrec.InputValueError as exc:
        assert "not valid Unicode" in str(exc)  # lone surrogates are the only refusal
        return
    assert out.shape == (len(texts), enc.dim) and out.dtype == np.float32
    assert np.isfinite(out).all()
    if len(texts):
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Row order is input order: each row equals the text encoded on its own.
    for i in range(min(2, len(texts))):
        try:
            alone = enc.encode([texts[i]])[0]
        except bertrec.InputValueError:
            continue
        np.testing.assert_allclose(out[i], alone, atol=1e-5)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ({"a": "x"}, "is a dict"),
        ({"a", "b"}, "is a set"),
        (None, "is None"),
        (b"bytes", "is bytes"),
        (42, "must be a list of strings"),
        (["ok", 3], r"texts\[1\] is int"),
    ],
)
def test_non_lists_are_refused(enc: bertrec.Encoder, texts: object, match: str) -> None:
    with pytest.raises(bertrec.InputTypeError, match=match):
        enc.encode(texts)  # type: ignore[arg-type]
    if not isinstance(texts, list) and texts is not None and not isinstance(texts, int):
        with pytest.raises(bertrec.InputTypeError):
            next(enc.encode_iter(texts))  # type: ignore[arg-type]


def test_a_huge_input_is_encoded_in_bounded_batches(enc: bertrec.Encoder) -> None:
    out = enc.encode(["word " * 5000, "short"] * 50)
    assert out.shape == (100, enc.dim) and np.isfinite(out).all()
