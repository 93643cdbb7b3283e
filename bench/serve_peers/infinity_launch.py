"""Starts infinity-emb's command line inside its venv (run with that venv's python).

optimum 1.x, which infinity's ONNX engine needs, imports private helpers from
``torch.onnx.symbolic_opset14`` that torch 2.13 moved (the CPU wheel on disk is 2.13); they
are put back first. They serve ONNX export only, which the bench never runs: infinity loads
an ONNX file that sentence-transformers exported. Imports nothing from bertrec or bench.
"""

import sys

import torch.onnx.symbolic_opset14 as public
from torch.onnx._internal.torchscript_exporter import symbolic_opset14 as moved

for name in ("_attention_scale", "_causal_attention_mask", "_onnx_symbolic", "_type_utils",
             "jit_utils", "symbolic_helper"):  # fmt: skip
    if not hasattr(public, name):
        setattr(public, name, getattr(moved, name))

from infinity_emb.cli import cli  # noqa: E402

if __name__ == "__main__":
    sys.argv[0] = "infinity_emb"
    sys.exit(cli())
