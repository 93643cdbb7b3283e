"""Makes infinity-emb's optimum engine import under torch 2.13 (run inside infinity's venv).

optimum 1.x, which infinity's ONNX engine needs, imports private helpers from
``torch.onnx.symbolic_opset14`` that torch 2.13 moved (the CPU wheel on disk is 2.13); they
are put back. They serve ONNX export only, which the benchmarks never run: infinity loads
an ONNX file that sentence-transformers exported. Imports nothing from bertrec or bench.
"""

import torch.onnx.symbolic_opset14 as public
from torch.onnx._internal.torchscript_exporter import symbolic_opset14 as moved

HELPERS = ("_attention_scale", "_causal_attention_mask", "_onnx_symbolic", "_type_utils",
           "jit_utils", "symbolic_helper")  # fmt: skip


def restore_opset14_helpers() -> None:
    for name in HELPERS:
        if not hasattr(public, name):
            setattr(public, name, getattr(moved, name))
