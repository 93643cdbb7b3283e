"""Export: a Hugging Face / sentence-transformers checkpoint to a bertrec model directory."""

# The repository root holds this folder too; only the installed name is valid.
if __name__ != "bertrec.export":
    raise ImportError(f"import bertrec.export, not {__name__} (this folder is part of bertrec)")


from .architectures import ARCHITECTURES, supported_architectures
from .exporter import export_model, parse_precisions

__all__ = ["ARCHITECTURES", "export_model", "parse_precisions", "supported_architectures"]
