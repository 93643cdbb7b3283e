"""Start-up caches: ONNX Runtime's optimized graph and OpenVINO's compiled model go to
bertrec's cache dir (hit, miss, stale, damaged, unwritable), never to the model directory;
``Encoder.startup`` says where construction time went."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bertrec
from bertrec.runtime.ort_runner import META_NAME, OPTIMIZED_NAME, session_cache_dir

TEXTS = ["wireless headphones", "", "A quiet thriller about a lighthouse keeper. " * 6, "x"]
PHASES = {"manifest_s", "backend_choice_s", "verify_s", "session_s", "tokenizer_s", "total_s"}


def _openvino() -> bool:
    from bertrec.runtime.openvino_runner import openvino_importable

    return openvino_importable()


def _snapshot(model_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(model_dir.iterdir())}


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache dir; the tiny model's fp32 graph cached as int8 graphs are (the
    mechanism is the same, and the tiny model has no int8 variant)."""
    import bertrec.runtime.ort_runner as ort_mod

    path = tmp_path / "cache"
    monkeypatch.setenv("BERTREC_CACHE", str(path))
    monkeypatch.setattr(ort_mod, "CACHED_PRECISIONS", ("fp32", "int8"))
    return path


def test_only_int8_graphs_are_cached_by_default(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertrec.runtime.ort_runner import CACHED_PRECISIONS

    assert CACHED_PRECISIONS == ("int8",)
    monkeypatch.setenv("BERTREC_CACHE", str(tmp_path / "c"))
    assert ort(tiny_model_dir).startup["cache"] == "off"
    assert not (tmp_path / "c" / "onnxruntime").exists()


@pytest.fixture()
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def ort(model_dir: Path, **kwargs: Any) -> bertrec.Encoder:
    return bertrec.Encoder(
        model_dir,
        backend="onnxruntime",
        precision="fp32",
        device="cpu",
        **kwargs,
    )


def _entry(model_dir: Path) -> Path:
    return session_cache_dir(bertrec.read_manifest(model_dir).variants["fp32"])


def test_ort_cache_miss_then_hit_same_vectors(model: Path, cache: Path) -> None:
    before = _snapshot(model)
    first = ort(model)
    assert first.startup["cache"] == "miss" and set(first.startup) >= PHASES
    assert all(first.startup[k] >= 0 for k in PHASES)
    entry = _entry(model)
    assert entry.is_relative_to(cache)
    assert (entry / OPTIMIZED_NAME).is_file() and (entry / META_NAME).is_file()
    second = ort(model)
    assert second.startup["cache"] == "hit"
    np.testing.assert_allclose(second.encode(TEXTS), first.encode(TEXTS), rtol=0, atol=1e-6)
    # Nothing was written into the model directory; no temp files left in the cache.
    assert _snapshot(model) == before
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp")]


def test_ort_cache_damaged_or_stale_is_rebuilt_silently(
    model: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = ort(model).encode(TEXTS)
    cached = _entry(model) / OPTIMIZED_NAME
    # Same size, other bytes: the sha256 in meta.json catches it.
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    with caplog.at_level(logging.DEBUG, logger="bertrec.runtime"):
        enc = ort(model)
    assert enc.startup["cache"] == "miss" and "damaged" in caplog.text
    np.testing.assert_allclose(enc.encode(TEXTS), ref, rtol=0, atol=1e-6)
    assert ort(model).startup["cache"] == "hit"
    # Truncated, and a meta.json that is not JSON.
    cached.write_bytes(cached.read_bytes()[:100])
    assert ort(model).startup["cache"] == "miss"
    (cached.parent / META_NAME).write_text("{", encoding="utf-8")
    assert ort(model).startup["cache"] == "miss"
    assert ort(model).startup["cache"] == "hit"
    # The model file replaced in place (same bytes, new mtime): stale.
    f = model / "model.fp32.onnx"
    f.write_bytes(f.read_bytes())
    assert ort(model).startup["cache"] == "miss"


def test_ort_cache_with_verify_off_skips_the_hash(model: Path, cache: Path) -> None:
    ort(model)
    cached = _entry(model) / OPTIMIZED_NAME
    data = bytearray(cached.read_bytes())
    i = data.index(b"pytorch")  # the producer name: the graph still loads
    data[i] = ord("O")
    cached.write_bytes(bytes(data))
    # verify=False reads neither the model file nor the cached graph in full.
    assert ort(model, verify=False).startup["cache"] == "hit"
    assert ort(model).startup["cache"] == "miss"


def test_ort_cache_unwritable_falls_back(
    model: Path,
    cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("BERTREC_CACHE", str(blocker / "cache"))
    with caplog.at_level(logging.DEBUG, logger="bertrec.runtime"):
        enc = ort(model)
    assert enc.startup["cache"] == "off" and "cache off" in caplog.text
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)
    assert enc.encode(TEXTS).shape == (len(TEXTS), enc.dim)


def test_ort_cache_dir_read_only(model: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache folder the session cannot write into (ORT's own write fails)."""
    import bertrec.runtime.ort_runner as ort_mod

    real = ort_mod.ort.InferenceSession

    def refuse(path: object, so: object = None, **kw: object) -> object:
        if getattr(so, "optimized_model_filepath", ""):
            raise RuntimeError("cannot write the optimized model")
        return real(path, so, **kw)

    monkeypatch.setattr(ort_mod.ort, "InferenceSession", refuse)
    enc = ort(model)
    assert enc.startup["cache"] == "off"
    assert enc.encode(TEXTS).shape == (len(TEXTS), enc.dim)


def test_a_damaged_model_is_still_an_error(model: Path, cache: Path) -> None:
    ort(model)  # a good cache entry exists for the intact file
    f = model / "model.fp32.onnx"
    f.write_bytes(b"\0" * f.stat().st_size)
    with pytest.raises(bertrec.FileFormatError):
        ort(model)


@pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed")
def test_openvino_cache_hit_miss_and_unwritable(
    model: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _snapshot(model)

    def ov() -> bertrec.Encoder:
        return bertrec.Encoder(model, backend="openvino", precision="fp32")

    first = ov()
    assert first.startup["cache"] == "miss" and set(first.startup) >= PHASES
    blobs = list((cache / "openvino").rglob("*.blob"))
    assert blobs
    assert ov().startup["cache"] == "hit"
    # A damaged blob: OpenVINO compiles again.
    for b in blobs:
        b.write_bytes(b"\0" * 64)
    enc = ov()
    assert enc.encode(TEXTS).shape == (len(TEXTS), enc.dim)
    np.testing.assert_allclose(enc.encode(TEXTS), first.encode(TEXTS), rtol=0, atol=1e-5)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("BERTREC_CACHE", str(blocker / "cache"))
    assert ov().startup["cache"] == "off"
    assert _snapshot(model) == before
