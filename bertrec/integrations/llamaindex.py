"""LlamaIndex ``BaseEmbedding`` over a bertrec ``Encoder``
(``pip install 'bertrec[llamaindex]'``)."""

from __future__ import annotations

import os
from typing import Any

from bertrec.errors import ProviderError
from bertrec.runtime.encoder import Encoder

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from pydantic import PrivateAttr
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ProviderError(
        "the LlamaIndex adapter needs llama-index-core: pip install 'bertrec[llamaindex]'"
    ) from exc


class BertrecEmbedding(BaseEmbedding):
    """LlamaIndex embeddings from a bertrec model directory.

    Texts go through ``Encoder.encode_document`` and queries through
    ``Encoder.encode_query`` (the model's prompts, if it has any). LlamaIndex's own
    ``embed_batch_size`` batches calls; bertrec's token-budget batching runs inside each.

    Args:
        model: a bertrec model directory, or an ``Encoder`` already built.
        **kwargs: ``BaseEmbedding`` fields (``embed_batch_size`` ...) and ``Encoder``
            arguments (``precision``, ``device``, ``backend``) when ``model`` is a directory.
    """

    _encoder: Encoder = PrivateAttr()

    def __init__(self, model: str | os.PathLike[str] | Encoder, **kwargs: Any) -> None:
        encoder_args = {
            k: kwargs.pop(k) for k in ("precision", "device", "backend", "threads") if k in kwargs
        }
        encoder = model if isinstance(model, Encoder) else Encoder(model, **encoder_args)
        kwargs.setdefault("model_name", str(encoder.model_dir))
        super().__init__(**kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "BertrecEmbedding"

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encoder.encode_query(query).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encoder.encode_document(text).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encoder.encode_document(list(texts)).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)
