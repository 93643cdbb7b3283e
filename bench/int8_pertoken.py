"""Per-token int8 activations for chosen MatMuls, in standard ONNX ops (an int8 recipe
measured by bench/int8_frontier.py).

ONNX Runtime's dynamic quantization gives a whole activation tensor one scale
(``DynamicQuantizeLinear``), so one outlier token in a batch coarsens every other token.
Here each row (token) of the input gets its own symmetric scale, max|x| / 127:

    x2 = Reshape(x, [-1, K]);  s = max(ReduceMax(|x2|, axis 1), eps) / 127
    q  = Cast(Clip(Round(x2 / s) + 128, 0, 255), uint8)          # zero point 128
    y  = Reshape(Cast(MatMulInteger(q, W_int8, 128, 0), float) * s * w_scale, [..., N])

The weights are int8 per output column. The row scale is applied after the integer
product, so one zero point (128) serves every row.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def per_token_matmuls(model: onnx.ModelProto, names: Collection[str]) -> list[str]:
    """Replace the named fp32 weight MatMuls (opset < 18 ``ReduceMax``) in place.

    Returns:
        The names of the MatMuls replaced.
    """
    inits = {t.name: t for t in model.graph.initializer}
    done: list[str] = []
    for node in list(model.graph.node):
        if node.name not in names or node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        x, w_name = node.input
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        k, n = w.shape
        w_scale = np.abs(w).max(axis=0) / 127.0
        w_scale[w_scale == 0] = 1.0
        w_q = np.clip(np.rint(w / w_scale), -127, 127).astype(np.int8)
        base = node.name.replace("/", "_").strip("_")

        def t(suffix: str, base: str = base) -> str:
            return f"{base}_pt_{suffix}"

        model.graph.initializer.remove(inits[w_name])
        consts = {
            "wq": w_q,
            "ws": w_scale.astype(np.float32),
            "shape2d": np.array([-1, k], np.int64),
            "n": np.array([n], np.int64),
            "start": np.array([0], np.int64),
            "end": np.array([-1], np.int64),
            "inv127": np.array(1 / 127.0, np.float32),
            "eps": np.array(1e-8, np.float32),
            "c128": np.array(128.0, np.float32),
            "c0": np.array(0.0, np.float32),
            "c255": np.array(255.0, np.float32),
            "azp": np.array(128, np.uint8),
            "bzp": np.array(0, np.int8),
        }
        model.graph.initializer.extend(numpy_helper.from_array(v, t(c)) for c, v in consts.items())
        new = [
            helper.make_node("Shape", [x], [t("xshape")]),
            helper.make_node("Slice", [t("xshape"), t("start"), t("end")], [t("lead")]),
            helper.make_node("Concat", [t("lead"), t("n")], [t("outshape")], axis=0),
            helper.make_node("Reshape", [x, t("shape2d")], [t("x2")]),
            helper.make_node("Abs", [t("x2")], [t("ax")]),
            helper.make_node("ReduceMax", [t("ax")], [t("amax")], axes=[1], keepdims=1),
            helper.make_node("Max", [t("amax"), t("eps")], [t("amax2")]),
            helper.make_node("Mul", [t("amax2"), t("inv127")], [t("s")]),
            helper.make_node("Div", [t("x2"), t("s")], [t("xs")]),
            helper.make_node("Round", [t("xs")], [t("xr")]),
            helper.make_node("Add", [t("xr"), t("c128")], [t("xo")]),
            helper.make_node("Clip", [t("xo"), t("c0"), t("c255")], [t("xc")]),
            helper.make_node("Cast", [t("xc")], [t("xq")], to=TensorProto.UINT8),
            helper.make_node("MatMulInteger", [t("xq"), t("wq"), t("azp"), t("bzp")], [t("yi")]),
            helper.make_node("Cast", [t("yi")], [t("yf")], to=TensorProto.FLOAT),
            helper.make_node("Mul", [t("yf"), t("s")], [t("y1")]),
            helper.make_node("Mul", [t("y1"), t("ws")], [t("y2")]),
            helper.make_node("Reshape", [t("y2"), t("outshape")], [node.output[0]]),
        ]
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for i, op in enumerate(new):
            op.name = f"{base}_pt{i}"
            model.graph.node.insert(at + i, op)
        done.append(node.name)
    return done
