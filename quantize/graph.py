"""ONNX graph edits that shrink a model without changing what it computes (much).

Both edits keep the graph in standard ONNX ops, so every execution provider runs them.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _consumers(model: onnx.ModelProto, name: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if name in n.input]


def quantize_embedding_rows(model: onnx.ModelProto, min_rows: int = 1000) -> list[str]:
    """Store large Gather tables (the word embeddings) as int8 rows with one fp32 scale a row.

    ``table[ids]`` becomes ``Cast(int8_table[ids]) * scales[ids]``. Per-row symmetric
    scales keep every token's vector within 0.4 % of its largest element, and the
    LayerNorm that follows the embeddings absorbs the rest. The table is usually the
    largest tensor of a small encoder (47 MB of MiniLM's 90 MB).

    Returns:
        Names of the tables that were replaced.
    """
    inits = _initializers(model)
    done: list[str] = []
    for node in list(model.graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        name = node.input[0]
        table = numpy_helper.to_array(inits[name])
        if table.dtype != np.float32 or table.ndim != 2 or table.shape[0] < min_rows:
            continue
        if any(c is not node for c in _consumers(model, name)):
            continue  # shared with another op (tied weights): leave it alone
        scales = np.abs(table).max(axis=1, keepdims=True) / 127.0
        scales[scales == 0] = 1.0
        q = np.clip(np.rint(table / scales), -127, 127).astype(np.int8)
        q_name, s_name = f"{name}_int8", f"{name}_row_scale"
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, q_name),
                numpy_helper.from_array(scales.astype(np.float32), s_name),
            ]
        )
        out = node.output[0]
        base = node.name or name
        rows_q, rows_s, rows_f = f"{out}_q", f"{out}_s", f"{out}_f"
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        new_nodes = [
            helper.make_node(
                "Gather", [q_name, node.input[1]], [rows_q], name=f"{base}_q", axis=axis
            ),
            helper.make_node(
                "Gather", [s_name, node.input[1]], [rows_s], name=f"{base}_s", axis=axis
            ),
            helper.make_node("Cast", [rows_q], [rows_f], name=f"{base}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [rows_f, rows_s], [out], name=f"{base}_scale"),
        ]
        idx = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for offset, n in enumerate(new_nodes):
            model.graph.node.insert(idx + offset, n)
        done.append(name)
    return done


def store_matmul_weights_fp16(model: onnx.ModelProto, node_names: set[str]) -> list[str]:
    """Store the fp32 weights of the named MatMuls as fp16 behind a ``Cast`` to fp32.

    ONNX Runtime folds ``Cast(constant)`` when the session starts, so these MatMuls still
    run in fp32; only the file shrinks. fp16 rounding changes a weight by at most 2^-11
    of its value.

    Returns:
        Names of the weights that were converted.
    """
    inits = _initializers(model)
    done: list[str] = []
    for node in model.graph.node:
        if node.name not in node_names or node.op_type != "MatMul":
            continue
        weight = node.input[1]
        if weight not in inits or len(_consumers(model, weight)) != 1:
            continue
        arr = numpy_helper.to_array(inits[weight])
        if arr.dtype != np.float32:
            continue
        half = f"{weight}_fp16"
        model.graph.initializer.remove(inits[weight])
        model.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), half))
        cast_out = f"{weight}_from_fp16"
        node.input[1] = cast_out
        model.graph.node.insert(
            list(model.graph.node).index(node),
            helper.make_node(
                "Cast", [half], [cast_out], name=f"{node.name}_w_cast", to=TensorProto.FLOAT
            ),
        )
        done.append(weight)
    return done


# ONNX Runtime's contrib operators (MatMulIntegerToFloat).
MS_DOMAIN = "com.microsoft"


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the graph already holds quantized ops (it is not an fp32 source)."""
    quant_ops = {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "QLinearMatMul",
        "DequantizeLinear",
        "QuantizeLinear",
        "DynamicQuantizeMatMul",
        "QAttention",
        "MatMulNBits",
    }
    return any(n.op_type in quant_ops for n in model.graph.node)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def per_token_matmuls(model: onnx.ModelProto, names: Collection[str]) -> list[str]:
    """Replace the named fp32 weight MatMuls with int8 ones whose activations get one scale
    per token (row), computed at run time, in place.

    ONNX Runtime's dynamic quantization gives a whole activation tensor one scale, so a
    token's result depends on the other tokens of the batch (and on padding). Here each
    row has its own symmetric scale, max|x| / 127, so a text's vector is the same whatever
    else is in its batch; weights are int8 per output column::

        x2 = Reshape(x, [-1, K])
        s  = Max(ReduceMax(x2, 1), -ReduceMin(x2, 1), eps) / 127            # (rows, 1)
        q  = QuantizeLinear(x2, s, 128, axis=0)                              # uint8
        y  = Reshape(MatMulIntegerToFloat(q, W_int8, 1, w_scale, 128, 0) * s, [..., N])

    The row scale is applied after the integer product, so one zero point serves every row.
    The max of |x| is read as the larger of max(x) and -min(x) (two reductions that write
    nothing, where Abs wrote a copy of the activations); ``QuantizeLinear`` with one scale
    per row divides, rounds, shifts and saturates in one pass (it replaced Div, Round,
    Add, Clip and Cast); ONNX Runtime's ``MatMulIntegerToFloat`` (com.microsoft) applies
    the weights' column scales inside the integer GEMM's output step (it replaced Cast and
    a Mul). The integer products are the same as before; the float rounding of the
    scaling differs in the last bit. Measured on MiniLM, 2 threads: ~1.3x the earlier
    graph's speed on short and long texts at the same fidelity to fp32 (bench/README.md).
    The int8 variant runs on ONNX Runtime only (OpenVINO reads the fp32 file).

    Returns:
        The names of the MatMuls replaced.
    """
    inits = _initializers(model)
    new_axes = _opset(model) >= 18  # Reduce* take their axes as an input from opset 18
    done: list[str] = []
    for node in list(model.graph.node):
        if node.name not in names or node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        x, w_name = node.input
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        if w.ndim != 2 or len(_consumers(model, w_name)) != 1:
            continue
        k, n = w.shape
        w_scale = np.abs(w).max(axis=0) / 127.0
        w_scale[w_scale == 0] = 1.0
        w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
        base = (node.name or w_name).replace("/", "_").strip("_")

        def t(suffix: str, base: str = base) -> str:
            return f"{base}_pt_{suffix}"

        model.graph.initializer.remove(inits[w_name])
        consts = {
            "wq": w_q,
            "ws": w_scale.astype(np.float32),
            "shape2d": np.array([-1, k], np.int64),
            "flat": np.array([-1], np.int64),
            "n": np.array([n], np.int64),
            "start": np.array([0], np.int64),
            "end": np.array([-1], np.int64),
            "inv127": np.array(1 / 127.0, np.float32),
            "one": np.array(1.0, np.float32),
            "eps": np.array(1e-8, np.float32),
            "azp": np.array(128, np.uint8),
            "bzp": np.array(0, np.int8),
        }
        if new_axes:
            consts["axes"] = np.array([1], np.int64)
        model.graph.initializer.extend(numpy_helper.from_array(v, t(c)) for c, v in consts.items())

        def reduce(op: str, out: str) -> onnx.NodeProto:
            if new_axes:
                return helper.make_node(op, [t("x2"), t("axes")], [out], keepdims=1)
            return helper.make_node(op, [t("x2")], [out], axes=[1], keepdims=1)

        new = [
            helper.make_node("Shape", [x], [t("xshape")]),
            helper.make_node("Slice", [t("xshape"), t("start"), t("end")], [t("lead")]),
            helper.make_node("Concat", [t("lead"), t("n")], [t("outshape")], axis=0),
            helper.make_node("Reshape", [x, t("shape2d")], [t("x2")]),
            reduce("ReduceMax", t("hi")),
            reduce("ReduceMin", t("lo")),
            helper.make_node("Neg", [t("lo")], [t("nlo")]),
            helper.make_node("Max", [t("hi"), t("nlo"), t("eps")], [t("amax")]),
            helper.make_node("Mul", [t("amax"), t("inv127")], [t("s")]),
            # QuantizeLinear takes one scale per row as a 1-D tensor, and then a zero point
            # of the same length (128 for every row).
            helper.make_node("Reshape", [t("s"), t("flat")], [t("s1")]),
            helper.make_node("Shape", [t("s1")], [t("rows")]),
            helper.make_node("Expand", [t("azp"), t("rows")], [t("zps")]),
            helper.make_node("QuantizeLinear", [t("x2"), t("s1"), t("zps")], [t("xq")], axis=0),
            helper.make_node(
                "MatMulIntegerToFloat",
                [t("xq"), t("wq"), t("one"), t("ws"), t("azp"), t("bzp")],
                [t("yw")],
                domain=MS_DOMAIN,
            ),
            helper.make_node("Mul", [t("yw"), t("s")], [t("y2")]),
            helper.make_node("Reshape", [t("y2"), t("outshape")], [node.output[0]]),
        ]
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, op in enumerate(new):
            op.name = f"{base}_pt{i}"
            model.graph.node.insert(at + i, op)
        done.append(node.name)
    if done and not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done
