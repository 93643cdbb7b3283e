"""LangChain ``Embeddings`` over a bertrec ``Encoder`` (``pip install 'bertrec[langchain]'``)."""

from __future__ import annotations

import os
from typing import Any

from bertrec.errors import ProviderError
from bertrec.runtime.encoder import Encoder

try:
    from langchain_core.embeddings import Embeddings
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ProviderError(
        "the LangChain adapter needs langchain-core: pip install 'bertrec[langchain]'"
    ) from exc


class BertrecEmbeddings(Embeddings):
    """LangChain embeddings from a bertrec model directory.

    Documents go through ``Encoder.encode_document`` and queries through
    ``Encoder.encode_query``, so a model with sentence-transformers prompts gets them.

    Args:
        model: a bertrec model directory, or an ``Encoder`` already built.
        **encoder_args: ``Encoder`` arguments (precision, device, backend, ...) when
            ``model`` is a directory.

    Example:
        >>> from langchain_core.vectorstores import InMemoryVectorStore
        >>> store = InMemoryVectorStore(BertrecEmbeddings("models/minilm"))  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike[str] | Encoder, **encoder_args: Any) -> None:
        self.encoder = model if isinstance(model, Encoder) else Encoder(model, **encoder_args)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, as lists of floats."""
        return self.encoder.encode_document(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        return self.encoder.encode_query(text).tolist()
