"""Quantize: add int8 (CPU) and fp16 (CUDA) variants to a model directory."""

# The repository root holds this folder too; only the installed name is valid.
if __name__ != "bertrec.quantize":
    raise ImportError(f"import bertrec.quantize, not {__name__} (this folder is part of bertrec)")


from .checks import check_model
from .quantizer import FALLBACK_LADDER, Gate, add_variant, matmul_groups, top10_overlap

__all__ = [
    "FALLBACK_LADDER",
    "Gate",
    "add_variant",
    "check_model",
    "matmul_groups",
    "top10_overlap",
]
