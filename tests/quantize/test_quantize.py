"""Quantize: the int8 recipe and gate, fp16 structure, CLI-level bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bertrec
from bertrec.quantize import Gate, add_variant, matmul_groups, top10_overlap
from bertrec.quantize.graph import (
    per_token_matmuls,
    quantize_embedding_rows,
    store_matmul_weights_fp16,
)
from bertrec.runtime.manifest import read_manifest
from bertrec.runtime.texts import default_sentences, read_text_file


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def _state(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_int8_variant_added_with_recipe_and_figures(model_copy: Path) -> None:
    v = add_variant(model_copy, "int8")
    m = read_manifest(model_copy)
    assert m.variants["int8"] == v
    assert (model_copy / "model.int8.onnx").stat().st_size == v.size_bytes
    assert v.recipe["weights"] == "int8 per output channel"
    assert v.recipe["kept_fp32"] == []
    assert "per token" in v.recipe["activations"]
    val = v.validation
    assert val["mean_cos"] >= 0.995 and val["p1_cos"] >= 0.99 and val["top10_overlap"] >= 0.9
    # On ONNX Runtime, "auto" on CPU takes the int8 variant once it exists.
    enc = bertrec.Encoder(model_copy, precision="auto", device="cpu", backend="onnxruntime")
    assert enc.precision == "int8"
    fp32_enc = bertrec.Encoder(model_copy, precision="fp32", backend="onnxruntime")
    fp32 = fp32_enc.encode(default_sentences())
    cos = np.sum(enc.encode(default_sentences()) * fp32, axis=1)
    assert cos.mean() >= 0.995
    assert not [p for p in model_copy.iterdir() if p.name.startswith(".")]


def test_int8_graph_is_quantized(model_copy: Path) -> None:
    v = add_variant(model_copy, "int8")
    g = onnx.load(str(model_copy / "model.int8.onnx")).graph
    ops = {n.op_type for n in g.node}
    assert "MatMulIntegerToFloat" in ops and "DynamicQuantizeLinear" not in ops
    assert v.recipe["int8_matmuls"] == 12 and v.recipe["fp32_matmuls"] == 0
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in g.node) == 12
    # The tiny vocabulary is under the 1,000-row threshold for int8 embedding rows.
    assert v.recipe["embedding_tables_int8_rows"] == []


def test_gate_that_cannot_pass_explains_and_writes_nothing(model_copy: Path) -> None:
    before = _state(model_copy)
    with pytest.raises(bertrec.ValidationFailedError, match="even with every weight MatMul"):
        add_variant(model_copy, "int8", gate=Gate(mean_cos=1.01))
    assert _state(model_copy) == before


def test_gate_fallback_keeps_more_fp32(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import bertrec.quantize.quantizer as q

    real = q._check
    calls = {"n": 0}

    def first_fails(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        variant, figures = real(*args, **kwargs)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == 1:
            figures = {**figures, "mean_cos": 0.5}
        return variant, figures

    monkeypatch.setattr(q, "_check", first_fails)
    v = add_variant(model_copy, "int8")
    assert v.recipe["kept_fp32"] == ["first_ffn_up"]
    assert v.recipe["fallback_steps"] == 1
    assert "missed the accuracy gate" in caplog.text


def test_fp16_variant_structure(model_copy: Path) -> None:
    v = add_variant(model_copy, "fp16")
    model = onnx.load(str(model_copy / "model.fp16.onnx"))
    g = model.graph
    assert [i.type.tensor_type.elem_type for i in g.input] == [onnx.TensorProto.INT64] * 3
    assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    big = [t for t in g.initializer if np.prod(t.dims) > 1000]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    assert v.size_bytes < 0.6 * read_manifest(model_copy).variants["fp32"].size_bytes
    if "skipped" not in v.validation:
        assert v.validation["min_cos"] > 0.99


def test_matmul_groups_by_weight_shape(tiny_model_dir: Path) -> None:
    groups = matmul_groups(onnx.load(str(tiny_model_dir / "model.fp32.onnx")))
    # 2 layers: Q, K, V, attention output are square; one up- and one down-projection each.
    sizes = {k: len(v) for k, v in groups.items()}
    assert sizes == {"ffn_down": 2, "ffn_up": 2, "attention": 8, "first_ffn_up": 1}
    assert groups["first_ffn_up"] == groups["ffn_up"][:1]


def test_graph_edits_preserve_outputs(tiny_model_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    src = onnx.load(str(tiny_model_dir / "model.fp32.onnx"))
    edited = onnx.load(str(tiny_model_dir / "model.fp32.onnx"))
    assert quantize_embedding_rows(edited, min_rows=100)
    names = {n.name for n in edited.graph.node if n.op_type == "MatMul"}
    assert store_matmul_weights_fp16(edited, names)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(3, 9)).astype(np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, feeds)[0]  # noqa: E731
    a, b = run(src), run(edited)
    assert np.min(np.sum(a * b, axis=1)) > 0.999


def _one_matmul(k: int, n: int, opset: int) -> tuple[onnx.ModelProto, np.ndarray]:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(3).normal(size=(k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # what ONNX Runtime reads, whatever the onnx package writes
    return model, w


@pytest.mark.parametrize("opset", [17, 18])
def test_per_token_matmul_is_the_reference_quantization(opset: int) -> None:
    """The graph computes exactly per-row symmetric int8 (scale max|x| / 127, round half to
    even) times per-column int8 weights, whatever else is in the batch: a NumPy reference
    gives the same numbers, an all-zero row stays zero, the extremes of a row map to
    +-127."""
    import onnxruntime as ort

    model, w = _one_matmul(16, 8, opset)
    assert per_token_matmuls(model, {"mm"}) == ["mm"]
    assert not any(node.op_type == "MatMul" for node in model.graph.node)
    onnx.checker.check_model(model)
    x = np.random.default_rng(4).normal(size=(3, 5, 16)).astype(np.float32)
    x[1, 2] = 0.0  # a row of zeros: the eps scale, not a division by zero
    x[2, 0, 3] = -40.0  # a row whose largest magnitude is negative
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]

    rows = x.reshape(-1, 16)
    s = np.maximum(np.abs(rows).max(axis=1, keepdims=True), np.float32(1e-8)) * np.float32(
        1 / 127.0
    )
    q = np.clip(np.rint(rows / s), -127, 127)
    assert np.abs(q).max() == 127 and q[2 * 5].min() == -127
    w_scale = np.abs(w).max(axis=0) / 127.0
    w_q = np.clip(np.rint(w / w_scale), -127, 127)
    want = ((q @ w_q) * s * w_scale.astype(np.float32)).reshape(3, 5, 8)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.all(got[1, 2] == 0.0)
    # One row alone gives the same numbers as inside the batch.
    alone = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x[2:3, :1]})[0]
    np.testing.assert_array_equal(alone[0, 0], got[2, 0])


def test_top10_overlap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    assert top10_overlap(x, x) == 1.0
    assert top10_overlap(rng.normal(size=(50, 8)).astype(np.float32), x) < 0.6
    assert top10_overlap(x[:1], x[:1]) == 1.0


# -- bad input ------------------------------------------------------------------------


def test_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(bertrec.NotFoundError, match="no manifest.json"):
        add_variant(tmp_path, "int8")


def test_unknown_precision(model_copy: Path) -> None:
    with pytest.raises(bertrec.ConfigError, match="int4"):
        add_variant(model_copy, "int4")


def test_already_quantized_source(model_copy: Path) -> None:
    add_variant(model_copy, "int8")
    data = json.loads((model_copy / "manifest.json").read_text())
    shutil.copy(model_copy / "model.int8.onnx", model_copy / "model.fp32.onnx")
    data["variants"]["fp32"] = {
        **data["variants"]["int8"],
        "precision": "fp32",
        "file": "model.fp32.onnx",
    }
    (model_copy / "manifest.json").write_text(json.dumps(data))
    before = _state(model_copy)
    with pytest.raises(bertrec.ConfigError, match="already quantized"):
        add_variant(model_copy, "int8")
    assert _state(model_copy) == before


@pytest.mark.parametrize("texts", [[], ["ok", "  "], ["ok", 3]])
def test_bad_calibration_text(model_copy: Path, texts: list[object]) -> None:
    with pytest.raises(bertrec.InputValueError, match="calibration text"):
        add_variant(model_copy, "int8", calibration_texts=texts)  # type: ignore[arg-type]


def test_calibration_files(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("one sentence\n\n  two sentences  \n", encoding="utf-8")
    assert read_text_file(tmp_path / "ok.txt") == ["one sentence", "two sentences"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(bertrec.InputValueError, match="no non-empty line"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(bertrec.InputValueError, match="not UTF-8"):
        read_text_file(tmp_path / "latin1.txt")
    with pytest.raises(bertrec.NotFoundError):
        read_text_file(tmp_path / "missing.txt")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_int8_vectors_do_not_depend_on_the_batch(int8_model: Path, data: st.DataObject) -> None:
    """A text's int8 vector is the same alone and in any batch (any neighbours, any
    padding, any budget that splits the batch): min cosine >= 0.99999."""
    texts = default_sentences()
    enc = _INT8[str(int8_model)]
    i = data.draw(st.integers(0, len(texts) - 1), label="text")
    others = data.draw(st.lists(st.sampled_from(texts), max_size=24), label="batch")
    pos = data.draw(st.integers(0, len(others)), label="position")
    batch = [*others[:pos], texts[i], *others[pos:]]
    alone = enc.encode([texts[i]])[0]
    among = enc.encode(batch)[pos]
    assert float(alone @ among) >= 0.99999


_INT8: dict[str, bertrec.Encoder] = {}


@pytest.fixture(scope="module")
def int8_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("int8") / "m"))
    add_variant(d, "int8")
    _INT8[str(d)] = bertrec.Encoder(d, precision="int8", backend="onnxruntime")
    return d


def test_int8_on_an_opset_18_export(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """From opset 18 ReduceMax takes its axes as an input: the per-token graph follows."""
    from bertrec.export import export_model

    d = export_model(tiny_bert_dir, tmp_path / "m", precision="fp32,int8", opset=18)
    g = onnx.load(str(d / "model.int8.onnx")).graph
    reduces = [n for n in g.node if n.op_type in ("ReduceMax", "ReduceMin")]
    assert {n.op_type for n in reduces} == {"ReduceMax", "ReduceMin"}
    assert all(len(n.input) == 2 and not n.attribute[1:] for n in reduces)
    enc = bertrec.Encoder(d, precision="int8", backend="onnxruntime")
    assert np.isfinite(enc.encode(default_sentences()[:8])).all()
