"""SmoothQuant-style activation smoothing for the MatMuls whose inputs have outlier channels.

Dynamic int8 quantization gives each activation tensor one scale, so a few channels
with large values (typical of the GELU output feeding an FFN down-projection) squeeze
every other channel into a handful of levels. Smoothing divides each input channel j
by s_j and multiplies the weight row j by s_j: the product is unchanged in exact
arithmetic, and with s_j = max|X_j|^a / max|W_j|^(1-a) the activation range flattens
while the weights, quantized per output channel, absorb the difference. The division
is an explicit ``Mul`` by 1/s (the GELU before it is non-linear, so it cannot be folded).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper


def activation_absmax(
    model_path: Path,
    tokenizer_path: Path,
    texts: Sequence[str],
    tensors: Sequence[str],
    max_length: int,
) -> dict[str, NDArray[np.float32]]:
    """Per-channel max |x| of the named intermediate tensors over the given texts."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in existing:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    out: dict[str, NDArray[np.float32]] = {}
    # One text per run: no padding rows, so the statistics are those of real tokens.
    for enc in tok.encode_batch(list(texts)):
        ids = np.asarray([enc.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        values = sess.run(list(tensors), feeds)
        for name, v in zip(tensors, values, strict=True):
            amax = np.abs(v.reshape(-1, v.shape[-1])).max(axis=0)
            out[name] = np.maximum(out.get(name, amax), amax)
    return out


def smooth_matmuls(
    model: onnx.ModelProto,
    node_names: set[str],
    absmax: dict[str, NDArray[np.float32]],
    alpha: float,
) -> list[str]:
    """Insert ``x * (1/s)`` before each named MatMul and scale its weight rows by ``s``."""
    inits = {t.name: t for t in model.graph.initializer}
    done: list[str] = []
    for node in list(model.graph.node):
        if node.name not in node_names or node.input[0] not in absmax:
            continue
        w_init = inits[node.input[1]]
        w = numpy_helper.to_array(w_init).astype(np.float32)
        a = np.maximum(absmax[node.input[0]].astype(np.float64), 1e-5)
        wmax = np.maximum(np.abs(w).max(axis=1).astype(np.float64), 1e-5)
        s = np.clip(a**alpha / wmax ** (1.0 - alpha), 1e-4, 1e4)
        w_init.CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(np.float32), w_init.name))
        inv_name = f"{node.name}_smooth_inv"
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / s).astype(np.float32), inv_name)
        )
        smoothed = f"{node.input[0]}_smoothed_{len(done)}"
        mul = helper.make_node(
            "Mul", [node.input[0], inv_name], [smoothed], name=f"{node.name}_smooth"
        )
        node.input[0] = smoothed
        model.graph.node.insert(list(model.graph.node).index(node), mul)
        done.append(node.name)
    return done
