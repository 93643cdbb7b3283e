"""Encoder: shapes, order, IO binding, threads, streaming, integrity, bad input."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bertrec
from bertrec.runtime.planning import plan_batches
from bertrec.runtime.providers import cuda_usable

TEXTS = [
    "wireless headphones",
    "",
    "A quiet thriller about a lighthouse keeper who finds a stranger on the rocks.",
    "kids loved it",
    "The battery lasts two full days, but the charger gets warm. " * 4,
    "x",
]


def _openvino() -> bool:
    from bertrec.runtime.openvino_runner import openvino_importable

    return openvino_importable()


BACKENDS = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed"),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each behaviour test runs on both backends (OpenVINO in f32, for exact comparisons)."""
    return str(request.param)


def make(model_dir: Path, backend: str, **kwargs: object) -> bertrec.Encoder:
    return bertrec.Encoder(
        model_dir,
        backend=backend,
        precision="fp32",
        device="cpu",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def enc(tiny_model_dir: Path, backend: str) -> bertrec.Encoder:
    return make(tiny_model_dir, backend)


def test_attributes(tiny_model_dir: Path) -> None:
    enc = bertrec.Encoder(tiny_model_dir, device="cpu", backend="onnxruntime")
    assert (enc.dim, enc.precision, enc.device, enc.backend) == (32, "fp32", "cpu", "onnxruntime")
    assert enc.providers == ["CPUExecutionProvider"]
    assert enc.io_binding is False  # off by default on CPU
    assert "Encoder(" in repr(enc)
    assert enc.backend_reason == "asked for"


def test_rows_in_input_order_and_normalized(enc: bertrec.Encoder) -> None:
    out = enc.encode(TEXTS)
    assert out.shape == (len(TEXTS), 32) and out.dtype == np.float32
    one_by_one = np.stack([enc.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(out, one_by_one, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(out).all()


def test_single_string_and_empty_inputs(enc: bertrec.Encoder) -> None:
    assert enc.encode("kids loved it").shape == (32,)
    empty = enc.encode([])
    assert empty.shape == (0, 32) and empty.dtype == np.float32
    blank = enc.encode(["", " ", "\n"])
    assert np.isfinite(blank).all()
    assert enc.encode(()).shape == (0, 32)
    assert enc.encode(np.array(["a", "b"])).shape == (2, 32)


def test_long_text_is_truncated_to_max_length(enc: bertrec.Encoder) -> None:
    long = "the plot is predictable but the performances are wonderful " * 200
    tok = enc._tokenizer.encode(long)
    assert len(tok.ids) == enc.max_length
    truncated = enc._tokenizer.decode(tok.ids, skip_special_tokens=True)
    a, b = enc.encode([long, truncated])
    assert float(a @ b) > 0.9999


@pytest.mark.parametrize("budget", [1, 7, 64, 100_000])
@pytest.mark.parametrize("batch_size", [None, 1, 3])
def test_batching_does_not_change_results(
    tiny_model_dir: Path, backend: str, budget: int, batch_size: int | None
) -> None:
    ref = make(tiny_model_dir, backend, max_batch_tokens=100_000).encode(TEXTS, batch_size=1)
    got = make(tiny_model_dir, backend, max_batch_tokens=budget).encode(
        TEXTS, batch_size=batch_size
    )
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_io_binding_on_and_off_identical(tiny_model_dir: Path) -> None:
    texts = TEXTS * 20
    off = make(tiny_model_dir, "onnxruntime", io_binding=False, max_batch_tokens=64).encode(texts)
    on = make(tiny_model_dir, "onnxruntime", io_binding=True, max_batch_tokens=64)
    assert on.io_binding is True
    a = on.encode(texts)
    b = on.encode(texts[::-1])  # the reused buffer must not leak rows between calls
    np.testing.assert_array_equal(a, off)
    np.testing.assert_array_equal(b, off[::-1])


@pytest.mark.parametrize(("io_binding", "streams"), [(False, 1), (True, 1), (False, 2)])
def test_threads_match_sequential(
    tiny_model_dir: Path, backend: str, io_binding: bool, streams: int
) -> None:
    enc = make(tiny_model_dir, backend, io_binding=io_binding, max_batch_tokens=48, threads=1,
               streams=streams)  # fmt: skip
    rng = np.random.default_rng(0)
    calls = [[TEXTS[i] for i in rng.integers(0, len(TEXTS), 7)] for _ in range(8 * 50)]
    expected = [enc.encode(c) for c in calls]
    results: list[np.ndarray | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for j in range(k, len(calls), 8):
                results[j] = enc.encode(calls[j])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_encode_iter_matches_encode(enc: bertrec.Encoder) -> None:
    texts = [f"item number {i} with some words" for i in range(23)]
    chunks = list(enc.encode_iter(iter(texts), chunk_size=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_allclose(np.concatenate(chunks), enc.encode(texts), atol=1e-6)
    assert list(enc.encode_iter([], chunk_size=5)) == []


def test_encode_iter_bad_input(enc: bertrec.Encoder) -> None:
    with pytest.raises(bertrec.ConfigError, match="chunk_size"):
        next(enc.encode_iter(["a"], chunk_size=0))
    with pytest.raises(bertrec.InputTypeError, match="iterable of strings"):
        next(enc.encode_iter("not a list"))
    with pytest.raises(bertrec.InputTypeError, match=r"texts\[1\].*stream position 4"):
        list(enc.encode_iter(["a", "b", "c", "d", "e", 5], chunk_size=4))


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (None, bertrec.InputTypeError, "None"),
        (b"bytes", bertrec.InputTypeError, "decode"),
        (42, bertrec.InputTypeError, "int"),
        (["ok", None], bertrec.InputTypeError, r"texts\[1\] is NoneType"),
        (["ok", "fine", b"raw"], bertrec.InputTypeError, r"texts\[2\] is bytes.*decode"),
        (["ok", 3.5], bertrec.InputTypeError, r"texts\[1\] is float"),
        (["ok", "bad \ud800 surrogate"], bertrec.InputValueError, r"texts\[1\].*Unicode"),
    ],
)
def test_bad_input(enc: bertrec.Encoder, texts: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        enc.encode(texts)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):  # check_texts refuses what encode refuses
        enc.check_texts(texts)  # type: ignore[arg-type]


def test_check_texts_gives_the_texts_as_a_list(enc: bertrec.Encoder) -> None:
    assert enc.check_texts(["a", "b"]) == ["a", "b"]
    assert enc.check_texts(("a", "")) == ["a", ""]
    assert enc.check_texts(np.array(["x", "y"])) == ["x", "y"]
    assert enc.check_texts([]) == []
    many = ["text"] * 100_000
    assert enc.check_texts(many) == many


def test_bad_input_is_also_the_builtin_error(enc: bertrec.Encoder) -> None:
    with pytest.raises(TypeError):
        enc.encode([None])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        enc.encode(["\udfff"])


# -- construction -----------------------------------------------------------------------


def test_bad_constructor_arguments(tiny_model_dir: Path) -> None:
    with pytest.raises(bertrec.ConfigError, match="unknown device 'tpu'"):
        bertrec.Encoder(tiny_model_dir, device="tpu")
    with pytest.raises(bertrec.ConfigError, match="precision 'int8' is not in"):
        bertrec.Encoder(tiny_model_dir, precision="int8")
    with pytest.raises(bertrec.ConfigError, match="max_batch_tokens must be > 0"):
        bertrec.Encoder(tiny_model_dir, max_batch_tokens=-5)
    with pytest.raises(bertrec.ConfigError, match="threads"):
        bertrec.Encoder(tiny_model_dir, threads=0)
    with pytest.raises(bertrec.ConfigError, match="streams must be >= 1, got 0"):
        bertrec.Encoder(tiny_model_dir, streams=0)
    with pytest.raises(bertrec.ConfigError, match="streams must be an int"):
        bertrec.Encoder(tiny_model_dir, streams="2")  # type: ignore[arg-type]


def test_onnxruntime_runs_batches_side_by_side(tiny_model_dir: Path) -> None:
    """With two threads on a CPU, ONNX Runtime runs several batches at once on one thread
    each: the same vectors as one batch at a time, and a batch that fails fails the call
    (after every batch already started has finished)."""
    texts = [f"{t} {i}" * (1 + i % 5) for i, t in enumerate(TEXTS * 20)]
    one = bertrec.Encoder(tiny_model_dir, backend="onnxruntime", precision="fp32", threads=1)
    two = bertrec.Encoder(
        tiny_model_dir, backend="onnxruntime", precision="fp32", threads=2, max_batch_tokens=64
    )
    want = one.encode(texts)
    np.testing.assert_allclose(two.encode(texts), want, atol=1e-5)
    session, pool = two._runner._side_by_side
    assert session.get_session_options().intra_op_num_threads == 1
    assert pool._max_workers == 2
    assert one._runner._side_by_side is None  # one thread: one batch at a time

    class Failing:
        calls = 0

        def run(self, names: object, feeds: object) -> object:
            Failing.calls += 1
            if Failing.calls == 3:
                raise RuntimeError("batch 3 failed")
            return session.run(names, feeds)

    two._runner._side_by_side = (Failing(), pool)
    with pytest.raises(RuntimeError, match="batch 3 failed"):
        two.encode(texts)
    two._runner._side_by_side = (session, pool)
    np.testing.assert_allclose(two.encode(texts), want, atol=1e-5)


def _put_result(fn: Any, args: tuple[Any, ...], queue: Any) -> None:
    queue.put(fn(*args))


def _in_forked_child(fn: Any, *args: Any, held: Any = None) -> Any:
    """``fn(*args)`` in a child forked while ``held`` is entered (a lock some thread of
    the parent holds at the fork); fails if the child hangs or dies."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_put_result, args=(fn, args, queue))
    with held if held is not None else contextlib.nullcontext():
        child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    return got


def _encode_in_forked_child(encoder: bertrec.Encoder, texts: list[str], held: Any = None) -> Any:
    return _in_forked_child(encoder.encode, texts, held=held)


def _side_by_side_encoder(model_dir: Path) -> bertrec.Encoder:
    return bertrec.Encoder(
        model_dir, backend="onnxruntime", precision="fp32", threads=2, max_batch_tokens=64
    )


FORK_TEXTS = [f"{t} {i}" * (1 + i % 5) for i, t in enumerate(TEXTS * 20)]


def test_side_by_side_encoder_works_in_a_forked_child(tiny_model_dir: Path) -> None:
    """An Encoder that ran batches side by side, then forked (multiprocessing's default
    on Linux): the child's pool threads are gone, so it makes its own instead of waiting
    forever for them."""
    enc = _side_by_side_encoder(tiny_model_dir)
    want = enc.encode(FORK_TEXTS)
    assert enc._runner._side_by_side is not None  # the pool exists before the fork
    np.testing.assert_allclose(_encode_in_forked_child(enc, FORK_TEXTS), want, atol=1e-5)


def test_fork_while_another_thread_holds_the_runner_lock(tiny_model_dir: Path) -> None:
    """A fork while another thread of the parent holds the runner's lock (making the
    side-by-side pool): the child, where that thread does not exist, still encodes instead
    of waiting forever for the lock."""
    enc = _side_by_side_encoder(tiny_model_dir)
    want = enc.encode(FORK_TEXTS)
    # What a thread inside _side_by_side_pool holds.
    got = _encode_in_forked_child(enc, FORK_TEXTS, held=enc._runner._lock)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fork_while_another_thread_holds_the_openvino_lock(tiny_model_dir: Path) -> None:
    """The same with OpenVINO, whose runner takes its lock to make a thread's first infer
    request: a child forked while another thread holds it makes its own requests instead
    of waiting forever (and runs the batches that the parent would run on its streams
    model one after another: that model's threads stayed in the parent)."""
    pytest.importorskip("openvino")
    want = make(tiny_model_dir, "openvino", threads=2).encode(FORK_TEXTS)
    enc = make(tiny_model_dir, "openvino", threads=2)  # no request yet: the child makes one
    got = _encode_in_forked_child(enc, FORK_TEXTS, held=enc._runner._lock)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_openvino_encoder_with_streams_works_in_a_forked_child(tiny_model_dir: Path) -> None:
    """An OpenVINO Encoder compiled for concurrent callers (streams: a server's), used,
    then forked: in the child its calls run on the one-stream model instead of waiting
    forever for the streams' threads, which stayed in the parent."""
    pytest.importorskip("openvino")
    enc = make(tiny_model_dir, "openvino", threads=1, streams=2)
    want = enc.encode(FORK_TEXTS)
    np.testing.assert_allclose(_encode_in_forked_child(enc, FORK_TEXTS), want, atol=1e-5)


def _error_making_openvino_encoder(model_dir: Path) -> str:
    try:
        make(model_dir, "openvino")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "made"


def test_new_openvino_encoder_in_a_forked_child_is_refused(tiny_model_dir: Path) -> None:
    """OpenVINO cannot compile in a child forked from a process that compiled (it would
    wait forever): a new Encoder there gets an error naming the ways out instead."""
    pytest.importorskip("openvino")
    make(tiny_model_dir, "openvino").encode(TEXTS)  # this process has compiled
    said = _in_forked_child(_error_making_openvino_encoder, tiny_model_dir)
    assert said.startswith("ProviderError: OpenVINO compiled a model in process"), said
    assert "'spawn'" in said and "backend='onnxruntime'" in said


def test_default_budget_follows_side_by_side(tiny_model_dir: Path, backend: str) -> None:
    """ONNX Runtime with two threads or more on a CPU runs batches side by side and plans
    smaller ones by default; one thread, OpenVINO, or a budget given keep theirs."""
    from bertrec.runtime.encoder import DEFAULT_MAX_BATCH_TOKENS, SIDE_BY_SIDE_MAX_BATCH_TOKENS

    two = make(tiny_model_dir, backend, threads=2)
    want = SIDE_BY_SIDE_MAX_BATCH_TOKENS if backend == "onnxruntime" else 1024
    assert two.max_batch_tokens == want
    assert (
        make(tiny_model_dir, backend, threads=1).max_batch_tokens
        == (DEFAULT_MAX_BATCH_TOKENS["cpu"])
    )
    assert make(tiny_model_dir, backend, threads=2, max_batch_tokens=300).max_batch_tokens == 300


def test_streams_give_the_same_vectors(tiny_model_dir: Path, backend: str) -> None:
    """A model compiled for concurrent callers (OpenVINO streams) encodes as one that is
    not: the same graph, only scheduled differently."""
    one = make(tiny_model_dir, backend, threads=1)
    two = make(tiny_model_dir, backend, threads=1, streams=2)
    assert two.streams == 2
    want = one.encode(TEXTS)
    np.testing.assert_allclose(two.encode(TEXTS), want, atol=1e-5)
    # A call made alone (all threads on one request) gives the same vectors too.
    tokens = two.tokenize(TEXTS)
    for i, t in enumerate(tokens):
        got = two.encode_tokens([t], alone=True)[0]
        np.testing.assert_allclose(got / np.linalg.norm(got), want[i], atol=1e-5)
    if backend == "onnxruntime":
        # ONNX Runtime: a lone call runs on a second session of both streams' threads, with
        # or without IO binding (one binding per session and thread).
        whole = two._runner._whole
        assert whole is not None and whole.get_session_options().intra_op_num_threads == 2
        assert one._runner._whole is None
        bound = make(tiny_model_dir, backend, threads=1, streams=2, io_binding=True)
        for i, t in enumerate(tokens):
            for alone in (True, False, True):
                got = bound.encode_tokens([t], alone=alone)[0]
                np.testing.assert_allclose(got / np.linalg.norm(got), want[i], atol=1e-5)


def test_auto_precision_falls_back_to_fp32(tiny_model_dir: Path) -> None:
    enc = bertrec.Encoder(tiny_model_dir, precision="auto", device="cpu", backend="onnxruntime")
    assert enc.precision == "fp32"


@pytest.mark.skipif(cuda_usable(), reason="CUDA works here")
def test_cuda_unavailable_is_a_clear_error(tiny_model_dir: Path) -> None:
    with pytest.raises(bertrec.ProviderError, match="CPUExecutionProvider.*device='cpu'"):
        bertrec.Encoder(tiny_model_dir, device="cuda")


@pytest.mark.skipif(cuda_usable(), reason="CUDA works here")
def test_auto_device_falls_back_to_cpu_quietly(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertrec.runtime.encoder as encoder_mod

    monkeypatch.setattr(encoder_mod, "_noted_no_cuda", False)
    with caplog.at_level(logging.DEBUG, logger="bertrec.runtime"):
        enc = bertrec.Encoder(tiny_model_dir, device="auto")
        bertrec.Encoder(tiny_model_dir, device="auto")
    assert enc.device == "cpu"
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        # CUDA was not asked for: one debug line per process, never a warning.
        assert caplog.text.count("not usable here") == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _snapshot(model_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(model_dir.iterdir())}


@pytest.mark.parametrize("kwargs", [{}, {"backend": "onnxruntime", "precision": "fp32"}])
def test_encoder_never_writes_its_model_directory(
    tiny_model_dir: Path, tmp_path: Path, kwargs: dict[str, str]
) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    before = _snapshot(d)
    enc = bertrec.Encoder(d, **kwargs)
    enc.encode(TEXTS)
    assert _snapshot(d) == before


def test_auto_picks_bf16_only_where_its_fidelity_is_recorded(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bertrec.runtime.encoder as encoder_mod
    from bertrec.runtime.manifest import write_manifest

    monkeypatch.setattr(encoder_mod, "openvino_importable", lambda: True)
    monkeypatch.setattr(encoder_mod, "cpu_has_bf16", lambda: True)
    d = _copy(tiny_model_dir, tmp_path / "m")
    m = bertrec.read_manifest(d)
    choose = encoder_mod.choose_backend
    unrecorded = replace(m, runtime_checks={})
    backend, why = choose("auto", "cpu", "auto", unrecorded)
    assert backend == "onnxruntime" and "bertrec check" in why
    bad = replace(m, runtime_checks={"openvino-bf16": {"min_cos": 0.99}})
    assert choose("auto", "cpu", "auto", bad)[0] == "onnxruntime"
    good = replace(m, runtime_checks={"openvino-bf16": {"min_cos": 0.99999}})
    assert choose("auto", "cpu", "auto", good)[0] == "openvino"
    write_manifest(d, unrecorded)
    assert bertrec.Encoder(d, device="cpu").backend == "onnxruntime"


def test_verify_false_skips_the_hash_not_the_size(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    f = d / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    # A byte inside the producer-name string: the graph still loads, the hash differs.
    i = data.index(b"pytorch")
    data[i] = ord("P")
    f.write_bytes(bytes(data))
    with pytest.raises(bertrec.FileFormatError, match="modified or truncated"):
        bertrec.Encoder(d, precision="fp32", backend="onnxruntime")
    enc = bertrec.Encoder(d, precision="fp32", backend="onnxruntime", verify=False)
    assert enc.encode(["fine"]).shape == (1, enc.dim)
    f.write_bytes(bytes(data[:-10]))
    with pytest.raises(bertrec.FileFormatError, match="modified or truncated"):
        bertrec.Encoder(d, precision="fp32", backend="onnxruntime", verify=False)


def test_variant_names_precision_and_file(tiny_model_dir: Path) -> None:
    enc = bertrec.Encoder(tiny_model_dir, precision="fp32", backend="onnxruntime")
    sha = bertrec.read_manifest(tiny_model_dir).variants["fp32"].sha256
    assert enc.variant == f"fp32:{sha[:12]}"


@pytest.mark.gpu
def test_cuda_encoder_matches_cpu(tiny_model_dir: Path) -> None:
    cpu = bertrec.Encoder(tiny_model_dir, device="cpu").encode(TEXTS)
    gpu = bertrec.Encoder(tiny_model_dir, device="cuda", precision="fp32")
    assert gpu.device == "cuda" and gpu.io_binding
    np.testing.assert_allclose(gpu.encode(TEXTS), cpu, atol=1e-4)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_tampered_and_truncated_model_files(
    tiny_model_dir: Path, tmp_path: Path, backend: str
) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    f = d / "model.fp32.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(bertrec.FileFormatError, match="modified or truncated"):
        make(d, backend)
    f.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(bertrec.FileFormatError, match="re-export"):
        make(d, backend)
    f.unlink()
    with pytest.raises(bertrec.NotFoundError, match="missing"):
        make(d, backend)


def test_bad_model_directories(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(bertrec.NotFoundError, match="does not exist"):
        bertrec.Encoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(bertrec.NotFoundError, match="not a bertrec model directory"):
        bertrec.Encoder(tmp_path / "empty")
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "manifest.json").write_text("{broken")
    with pytest.raises(bertrec.FileFormatError, match="not valid JSON"):
        bertrec.Encoder(d)
    good = json.loads((tiny_model_dir / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**good, "schema_version": 99}))
    with pytest.raises(bertrec.FileFormatError, match="schema_version 99"):
        bertrec.Encoder(d)
    (d / "manifest.json").write_text(json.dumps({k: v for k, v in good.items() if k != "dim"}))
    with pytest.raises(bertrec.FileFormatError, match="'dim'"):
        bertrec.Encoder(d)
    (d / "manifest.json").write_text(json.dumps({**good, "pooling": "sum"}))
    with pytest.raises(bertrec.FileFormatError, match="pooling 'sum'"):
        bertrec.Encoder(d)
    (d / "manifest.json").write_text(json.dumps(good))
    (d / "tokenizer.json").unlink()
    with pytest.raises(bertrec.NotFoundError, match="tokenizer.json"):
        bertrec.Encoder(d)


def test_backend_choice_and_errors(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bertrec.runtime.encoder as encoder_mod

    with pytest.raises(bertrec.ConfigError, match="unknown backend 'tvm'"):
        bertrec.Encoder(tiny_model_dir, backend="tvm")
    with pytest.raises(bertrec.ConfigError, match="runs on the CPU"):
        bertrec.Encoder(tiny_model_dir, backend="openvino", device="cuda")
    with pytest.raises(bertrec.ConfigError, match="backend='openvino' only"):
        bertrec.Encoder(tiny_model_dir, backend="onnxruntime", precision="bf16")
    # Without OpenVINO, auto keeps ONNX Runtime and says why; asking for it names the extra.
    monkeypatch.setattr(encoder_mod, "openvino_importable", lambda: False)
    enc = bertrec.Encoder(tiny_model_dir, device="cpu")
    assert enc.backend == "onnxruntime" and "bertrec[openvino]" in enc.backend_reason
    import bertrec.runtime.openvino_runner as ov_mod

    monkeypatch.setattr(ov_mod, "openvino_importable", lambda: False)
    with pytest.raises(bertrec.ProviderError, match=r"bertrec\[openvino\]"):
        bertrec.Encoder(tiny_model_dir, backend="openvino")
    # An explicit ONNX Runtime variant keeps ONNX Runtime under auto.
    monkeypatch.setattr(encoder_mod, "openvino_importable", lambda: True)
    monkeypatch.setattr(encoder_mod, "cpu_has_bf16", lambda: True)
    assert bertrec.Encoder(tiny_model_dir, precision="fp32", device="cpu").backend == (
        "onnxruntime"
    )


@pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed")
def test_openvino_sends_no_telemetry(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino_telemetry

    made: list[object] = []
    real_init = openvino_telemetry.Telemetry.__init__

    def spy(self: object, *args: object, **kwargs: object) -> None:
        made.append(self)
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(openvino_telemetry.Telemetry, "__init__", spy)
    enc = bertrec.Encoder(tiny_model_dir, backend="openvino", precision="fp32")
    enc.encode(TEXTS)
    assert made == []


@pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed")
def test_openvino_precision_rules(tiny_model_dir: Path) -> None:
    with pytest.raises(bertrec.ConfigError, match="not 'int8'"):
        bertrec.Encoder(tiny_model_dir, backend="openvino", precision="int8")
    enc = bertrec.Encoder(tiny_model_dir, backend="openvino", precision="fp32", threads=1)
    assert (enc.precision, enc.device, enc.threads) == ("fp32", "cpu", 1)


# -- batching plan ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 512), max_size=300),
    budget=st.integers(1, 5000),
    cap=st.one_of(st.none(), st.integers(1, 64)),
)
def test_plan_batches_covers_every_row_once_within_budget(
    lengths: list[int], budget: int, cap: int | None
) -> None:
    batches = plan_batches(lengths, budget, cap)
    rows = np.concatenate(batches) if batches else np.array([], dtype=np.intp)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    for b in batches:
        padded = len(b) * max(lengths[i] for i in b)
        assert padded <= budget or len(b) == 1
        if cap is not None:
            assert len(b) <= cap


def test_plan_batches_bad_arguments() -> None:
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(bertrec.ConfigError):
            plan_batches([3, 4], bad)  # type: ignore[arg-type]
    with pytest.raises(bertrec.ConfigError):
        plan_batches([3], 10, 0)


# -- the real model -------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_int8_fidelity_and_size(
    minilm_source: Path, minilm_model_dir: Path, movie_texts: list[str]
) -> None:
    """int8 vs PyTorch fp32 on >= 1,000 real item texts not used for calibration."""
    from sentence_transformers import SentenceTransformer

    from bertrec.runtime.fidelity import fidelity

    texts = movie_texts[::8][:1200]
    ref = SentenceTransformer(str(minilm_source), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    enc = bertrec.Encoder(minilm_model_dir, precision="auto", device="cpu", backend="onnxruntime")
    assert enc.precision == "int8"
    figures = fidelity(enc.encode(texts), ref)
    assert figures["mean_cos"] >= 0.995, figures
    assert figures["p1_cos"] >= 0.99, figures
    m = bertrec.read_manifest(minilm_model_dir)
    assert m.variants["int8"].size_bytes <= 0.35 * m.variants["fp32"].size_bytes


@pytest.mark.slow
@pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed")
def test_minilm_openvino_bf16_matches_onnxruntime_fp32(
    minilm_model_dir: Path, movie_texts: list[str]
) -> None:
    from bertrec.runtime.cpu import cpu_features
    from bertrec.runtime.fidelity import fidelity
    from bertrec.runtime.openvino_runner import cpu_has_bf16

    texts = movie_texts[1::8][:1200]
    ov = bertrec.Encoder(minilm_model_dir, backend="openvino", precision="auto")
    assert ov.precision == ("bf16" if cpu_has_bf16() else "fp32")
    ref = bertrec.Encoder(minilm_model_dir, backend="onnxruntime", precision="fp32")
    figures = fidelity(ov.encode(texts), ref.encode(texts))
    assert figures["n"] >= 1000 and figures["min_cos"] >= 0.9999, figures
    if ov.precision == "bf16":
        # Export recorded the check on this bf16 machine, so bf16 is chosen when asked for,
        # and by auto unless VNNI int8 is (a CPU with VNNI and no AMX, the model has int8).
        check = bertrec.read_manifest(minilm_model_dir).runtime_checks["openvino-bf16"]
        assert check["min_cos"] >= 0.9999
        assert bertrec.Encoder(minilm_model_dir, precision="bf16").backend == "openvino"
        features = cpu_features()
        int8 = "int8" in bertrec.read_manifest(minilm_model_dir).variants
        auto = bertrec.Encoder(minilm_model_dir)
        assert auto.backend == (
            "onnxruntime" if features.vnni and not features.amx and int8 else "openvino"
        ), auto.backend_reason


@pytest.mark.slow
@pytest.mark.gpu
def test_minilm_fp16_on_cuda_matches_fp32(
    minilm_model_dir: Path, movie_texts: list[str], tmp_path: Path
) -> None:
    """fp16 on CUDA against fp32 on the CPU, on 1,200 real item texts."""
    from bertrec.quantize import add_variant
    from bertrec.runtime.fidelity import fidelity

    d = _copy(minilm_model_dir, tmp_path / "m")
    add_variant(d, "fp16")
    texts = movie_texts[2::8][:1200]
    gpu = bertrec.Encoder(d, device="cuda", precision="fp16")
    assert gpu.device == "cuda"
    ref = bertrec.Encoder(d, device="cpu", precision="fp32", backend="onnxruntime")
    figures = fidelity(gpu.encode(texts), ref.encode(texts))
    assert figures["mean_cos"] >= 0.9999 and figures["min_cos"] >= 0.999, figures


@pytest.mark.slow
def test_encode_iter_memory_is_bounded(tiny_model_dir: Path) -> None:
    """200,000 short texts streamed: peak RSS grows by < 300 MB beyond the loaded model."""
    enc = bertrec.Encoder(tiny_model_dir)
    enc.encode(["warm up"] * 64)

    def status(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
        raise AssertionError(field)

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to read peak RSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    base = status("VmRSS:")
    texts = (f"short item text number {i}" for i in range(200_000))
    total = 0
    for chunk in enc.encode_iter(texts, chunk_size=2048):
        assert np.isfinite(chunk).all()
        total += len(chunk)
    assert total == 200_000
    growth = status("VmHWM:") - base
    assert growth < 300 * 2**20, f"peak RSS grew {growth / 2**20:.0f} MB"


@pytest.mark.skipif(not _openvino(), reason="bertrec[openvino] not installed")
@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_many_batches_match_one_at_a_time(tiny_model_dir: Path, threads: int) -> None:
    """Several batches run through OpenVINO's two-stream queue (threads >= 2) or one by one
    (1 thread); either way each row equals encoding its text alone."""
    enc = make(tiny_model_dir, "openvino", max_batch_tokens=32, threads=threads)
    texts = [t for t in TEXTS * 6 if t] + ["x " * 40]
    alone = np.stack([enc.encode([t])[0] for t in texts])
    many = enc.encode(texts)
    assert (enc._runner._streams is not None) == (threads >= 2)
    np.testing.assert_allclose(many, alone, atol=1e-5)
    assert np.isfinite(many).all()
    np.testing.assert_array_equal(enc.encode(texts[::-1]), many[::-1])


@pytest.mark.slow
def test_minilm_int8_is_batch_invariant(minilm_model_dir: Path, movie_texts: list[str]) -> None:
    """The real int8 variant: each text's vector alone equals its vector in a mixed batch
    (long and short neighbours, padding, budgets that cut the batch differently)."""
    texts = movie_texts[3::40][:200]
    alone = bertrec.Encoder(minilm_model_dir, precision="int8", backend="onnxruntime")
    ref = np.stack([alone.encode([t])[0] for t in texts])
    for budget in (512, 4096, 16384):
        enc = bertrec.Encoder(
            minilm_model_dir, precision="int8", backend="onnxruntime", max_batch_tokens=budget
        )
        got = enc.encode(texts[::-1])[::-1]
        assert float(np.min(np.sum(got * ref, axis=1))) >= 0.99999, budget


def test_set_shape_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import bertrec.runtime.openvino_runner as ov_mod

    with pytest.raises(bertrec.ConfigError, match="capacity must be >= 1, got 0"):
        ov_mod.set_shape_cache(0)
    with pytest.raises(bertrec.ConfigError, match="capacity must be an int"):
        ov_mod.set_shape_cache("64")  # type: ignore[arg-type]
    if _openvino():
        ov_mod.set_shape_cache(64)  # OpenVINO refuses a property name it does not know
    monkeypatch.setattr(ov_mod, "openvino_importable", lambda: False)
    with pytest.raises(bertrec.ProviderError, match=r"bertrec\[openvino\]"):
        ov_mod.set_shape_cache(64)
