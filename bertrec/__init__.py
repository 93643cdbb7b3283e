"""bertrec: fast, faithful BERT-family sentence encoders for recommendation and ranking.

Importing bertrec loads only numpy, tokenizers and ONNX Runtime; export and
quantization (torch, transformers, onnx) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from bertrec.runtime.encoder import Encoder
from bertrec.runtime.errors import (
    BertrecError,
    CheckpointError,
    ConfigError,
    InputTypeError,
    InputValueError,
    IntegrityError,
    ManifestError,
    ModelMismatchError,
    ModelNotFoundError,
    OutputExistsError,
    OutputNotWritableError,
    ProviderError,
    UnsupportedModelError,
    ValidationFailedError,
)
from bertrec.runtime.manifest import Manifest, Variant, read_manifest
from bertrec.runtime.ranker import CosineRanker, TopK
from bertrec.runtime.recommender import Recommender

if TYPE_CHECKING:
    from bertrec.export.exporter import export_model
    from bertrec.quantize.quantizer import add_variant
    from bertrec.runtime.batch import BatchResult, encode_dataset, recommend_dataset

__all__ = [
    "BatchResult",
    "BertrecError",
    "CheckpointError",
    "ConfigError",
    "Encoder",
    "InputTypeError",
    "InputValueError",
    "IntegrityError",
    "Manifest",
    "ManifestError",
    "ModelNotFoundError",
    "OutputExistsError",
    "OutputNotWritableError",
    "ProviderError",
    "UnsupportedModelError",
    "ValidationFailedError",
    "Variant",
    "__version__",
    "add_variant",
    "encode_dataset",
    "export_model",
    "read_manifest",
    "recommend_dataset",
    "CosineRanker",
    "ModelMismatchError",
    "Recommender",
    "TopK",
]


def __getattr__(name: str) -> Any:
    # export_model and add_variant pull in torch/onnx, so they load on first use only.
    if name == "export_model":
        from bertrec.export.exporter import export_model

        return export_model
    if name == "add_variant":
        from bertrec.quantize.quantizer import add_variant

        return add_variant
    if name in ("BatchResult", "encode_dataset", "recommend_dataset"):
        # Batch jobs need pyarrow (an extra); Ray loads only inside a Ray job.
        from bertrec.runtime import batch

        return getattr(batch, name)
    raise AttributeError(f"module 'bertrec' has no attribute {name!r}")
