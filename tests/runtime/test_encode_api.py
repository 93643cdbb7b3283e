"""Encoder.encode takes sentence-transformers' arguments: prompts, truncate_dim,
normalize_embeddings, convert_to_numpy, show_progress_bar; encode_query/encode_document."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import bertrec

TEXTS = ["a quiet thriller", "wireless headphones with long battery life", ""]


@pytest.fixture(scope="module")
def enc(tiny_model_dir: Path) -> bertrec.Encoder:
    return bertrec.Encoder(tiny_model_dir, backend="onnxruntime", precision="fp32")


@pytest.fixture()
def prompted(tiny_model_dir: Path, tmp_path: Path) -> Path:
    d = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    data = json.loads((d / "manifest.json").read_text())
    data["prompts"] = {"query": "query: ", "document": "passage: "}
    (d / "manifest.json").write_text(json.dumps(data))
    return d


def test_prompts_are_prefixed_as_in_sentence_transformers(prompted: Path) -> None:
    enc = bertrec.Encoder(prompted, backend="onnxruntime", precision="fp32")
    assert enc.prompts == {"query": "query: ", "document": "passage: "}
    plain = enc.encode(["query: " + t for t in TEXTS])
    np.testing.assert_allclose(enc.encode(TEXTS, prompt_name="query"), plain, atol=1e-6)
    np.testing.assert_allclose(enc.encode_query(TEXTS), plain, atol=1e-6)
    np.testing.assert_allclose(
        enc.encode_document(TEXTS), enc.encode(["passage: " + t for t in TEXTS]), atol=1e-6
    )
    # An explicit prompt wins over a prompt name.
    np.testing.assert_allclose(
        enc.encode(TEXTS, prompt="x ", prompt_name="query"),
        enc.encode(["x " + t for t in TEXTS]),
        atol=1e-6,
    )
    with pytest.raises(bertrec.ConfigError, match="unknown prompt_name 'search'.*document, query"):
        enc.encode(TEXTS, prompt_name="search")


def test_default_prompt_applies_unless_another_is_given(prompted: Path) -> None:
    data = json.loads((prompted / "manifest.json").read_text())
    (prompted / "manifest.json").write_text(json.dumps({**data, "default_prompt_name": "query"}))
    enc = bertrec.Encoder(prompted, backend="onnxruntime", precision="fp32")
    np.testing.assert_allclose(enc.encode(TEXTS), enc.encode(TEXTS, prompt_name="query"), atol=1e-6)
    (prompted / "manifest.json").write_text(json.dumps({**data, "default_prompt_name": "nope"}))
    with pytest.raises(bertrec.FileFormatError, match="default_prompt_name 'nope'"):
        bertrec.Encoder(prompted)


def test_without_prompts_query_and_document_are_plain(enc: bertrec.Encoder) -> None:
    np.testing.assert_array_equal(enc.encode_query(TEXTS), enc.encode(TEXTS))
    np.testing.assert_array_equal(enc.encode_document("one"), enc.encode("one"))


def test_truncate_dim_and_normalize(enc: bertrec.Encoder, tiny_model_dir: Path) -> None:
    full = enc.encode(TEXTS)
    cut = enc.encode(TEXTS, truncate_dim=8)
    np.testing.assert_array_equal(cut, full[:, :8])
    unit = enc.encode(TEXTS, truncate_dim=8, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    small = bertrec.Encoder(tiny_model_dir, backend="onnxruntime", truncate_dim=16)
    assert small.dim == 16 and small.encode(TEXTS).shape == (3, 16)
    for bad in (0, 10_000, 2.5):
        with pytest.raises(bertrec.ConfigError, match="truncate_dim"):
            enc.encode(TEXTS, truncate_dim=bad)  # type: ignore[arg-type]
    with pytest.raises(bertrec.ConfigError, match="truncate_dim 10000 exceeds"):
        bertrec.Encoder(tiny_model_dir, truncate_dim=10_000)


def test_sentence_transformers_keywords(enc: bertrec.Encoder) -> None:
    as_list = enc.encode(TEXTS, convert_to_numpy=False)
    assert isinstance(as_list, list) and len(as_list) == 3 and as_list[0].shape == (enc.dim,)
    np.testing.assert_array_equal(np.stack(as_list), enc.encode(TEXTS))
    out = enc.encode(TEXTS, batch_size=1, show_progress_bar=False)
    np.testing.assert_allclose(out, enc.encode(TEXTS), atol=1e-6)
    with pytest.raises(bertrec.ConfigError, match="batch_size must be >= 1"):
        enc.encode(TEXTS, batch_size=0)
    with pytest.raises(TypeError):
        enc.encode(TEXTS, not_an_argument=1)  # type: ignore[call-arg]


def test_few_texts_tokenize_as_many_do(enc: bertrec.Encoder) -> None:
    """Up to SERIAL_TOKENIZE_TEXTS texts are tokenized one by one, more in one batch call:
    the same ids and masks either way, and the same one-line error for a bad text."""
    from bertrec.runtime.encoder import SERIAL_TOKENIZE_TEXTS

    texts = [TEXTS[i % len(TEXTS)] + " " * (i % 3) + "x" * i for i in range(40)]
    many = enc.tokenize(texts)
    assert len(texts) > SERIAL_TOKENIZE_TEXTS
    for n in (1, 2, SERIAL_TOKENIZE_TEXTS, SERIAL_TOKENIZE_TEXTS + 1):
        few = enc.tokenize(texts[:n])
        assert [e.ids for e in few] == [e.ids for e in many[:n]]
        assert [e.attention_mask for e in few] == [e.attention_mask for e in many[:n]]
    for n in (1, SERIAL_TOKENIZE_TEXTS + 1):
        bad = ["fine"] * (n - 1) + ["lone \ud800 surrogate"]
        with pytest.raises(
            bertrec.InputValueError, match=rf"texts\[{n - 1}\] is not valid Unicode"
        ):
            enc.tokenize(bad)


def test_tokenize_then_encode_tokens_equals_encode(enc: bertrec.Encoder) -> None:
    tokens = enc.tokenize(TEXTS)
    assert [len(t.ids) for t in tokens][2] == 2  # [CLS] [SEP] for the empty text
    np.testing.assert_allclose(enc.encode_tokens(tokens), enc.encode(TEXTS), atol=1e-6)
    assert enc.encode_tokens([]).shape == (0, enc.dim)
    for bad, match in (
        ("text", "got str"),
        (["text"], r"encodings\[0\] is str"),
        (None, "got NoneType"),
    ):
        with pytest.raises(bertrec.InputTypeError, match=match):
            enc.encode_tokens(bad)  # type: ignore[arg-type]
    with pytest.raises(bertrec.ConfigError, match="alone must be"):
        enc.encode_tokens(tokens, alone="yes")  # type: ignore[arg-type]
    with pytest.raises(bertrec.InputTypeError, match=r"texts\[1\] is int"):
        enc.tokenize(["a", 1])  # type: ignore[list-item]


def test_construction_says_what_runs_once_at_info(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="bertrec.runtime"):
        enc = bertrec.Encoder(tiny_model_dir, backend="onnxruntime", precision="fp32")
    lines = [r.getMessage() for r in caplog.records if "bertrec Encoder:" in r.getMessage()]
    assert lines == [enc.describe()]
    assert "onnxruntime fp32 on cpu" in lines[0] and "mean cosine 1.0000" in lines[0]
