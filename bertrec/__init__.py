"""bertrec: fast, faithful BERT-family sentence encoders for recommendation and ranking.

The pipeline, one room each: ``export`` -> ``quantize`` -> ``runtime`` (encode) -> ``rank``
-> ``recommend``, run as batch ``jobs`` or served online. Importing bertrec loads only
numpy, tokenizers and ONNX Runtime; export and quantization (torch, transformers, onnx)
and batch jobs (pyarrow, Ray) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from bertrec.errors import (
    BertrecError,
    ConfigError,
    FileFormatError,
    InputTypeError,
    InputValueError,
    ModelMismatchError,
    NotFoundError,
    OutputError,
    ProviderError,
    ValidationFailedError,
)
from bertrec.rank import CosineRanker, TopK
from bertrec.recommend import CollabSettings, Explanation, ItemCatalog, Recommender
from bertrec.runtime.encoder import Encoder
from bertrec.runtime.manifest import Manifest, Variant, read_manifest

if TYPE_CHECKING:
    from bertrec.export.exporter import export_model
    from bertrec.jobs import JobResult, encode_dataset, recommend_dataset
    from bertrec.quantize.quantizer import add_variant

__all__ = [
    "BertrecError",
    "CollabSettings",
    "ConfigError",
    "CosineRanker",
    "Encoder",
    "Explanation",
    "FileFormatError",
    "InputTypeError",
    "InputValueError",
    "ItemCatalog",
    "JobResult",
    "Manifest",
    "ModelMismatchError",
    "NotFoundError",
    "OutputError",
    "ProviderError",
    "Recommender",
    "TopK",
    "ValidationFailedError",
    "Variant",
    "__version__",
    "add_variant",
    "encode_dataset",
    "export_model",
    "read_manifest",
    "recommend_dataset",
]


def __getattr__(name: str) -> Any:
    # export_model and add_variant pull in torch/onnx, so they load on first use only.
    if name == "export_model":
        from bertrec.export.exporter import export_model

        return export_model
    if name == "add_variant":
        from bertrec.quantize.quantizer import add_variant

        return add_variant
    if name in ("JobResult", "encode_dataset", "recommend_dataset"):
        # Batch jobs need pyarrow (an extra); Ray loads only inside a Ray job.
        from bertrec import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'bertrec' has no attribute {name!r}")
