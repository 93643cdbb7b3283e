"""ONNX graph edits that shrink a model without changing what it computes (much).

Both edits keep the graph in standard ONNX ops, so every execution provider runs them.
"""

from __future__ import annotations

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


def is_quantized(model: onnx.ModelProto) -> bool:
    """True when the graph already holds quantized ops (it is not an fp32 source)."""
    quant_ops = {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "QLinearMatMul",
        "DequantizeLinear",
        "QuantizeLinear",
        "DynamicQuantizeMatMul",
        "QAttention",
        "MatMulNBits",
    }
    return any(n.op_type in quant_ops for n in model.graph.node)
