"""Export: a Hugging Face / sentence-transformers checkpoint to a bertrec model directory."""

from __future__ import annotations

from .architectures import ARCHITECTURES, supported_architectures
from .exporter import export_model, parse_precisions

__all__ = ["ARCHITECTURES", "export_model", "parse_precisions", "supported_architectures"]
