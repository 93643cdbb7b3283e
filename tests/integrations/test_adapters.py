"""The LangChain and LlamaIndex adapters, with the real packages: their vectors are the
Encoder's, queries and documents take the model's prompts, and the frameworks use them."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import bertrec

DOCS = ["a quiet thriller set in Oslo", "wireless headphones", "a cookbook of soups"]


@pytest.fixture(scope="module")
def prompted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("p") / "m"))
    data = json.loads((d / "manifest.json").read_text())
    data["prompts"] = {"query": "query: ", "document": "passage: "}
    (d / "manifest.json").write_text(json.dumps(data))
    return d


def test_langchain_embeddings(prompted: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.vectorstores import InMemoryVectorStore

    from bertrec.integrations.langchain import BertrecEmbeddings

    emb = BertrecEmbeddings(prompted, backend="onnxruntime", precision="fp32")
    enc = emb.encoder
    docs = emb.embed_documents(DOCS)
    assert isinstance(docs, list) and isinstance(docs[0][0], float)
    np.testing.assert_allclose(docs, enc.encode(["passage: " + d for d in DOCS]), atol=1e-6)
    np.testing.assert_allclose(emb.embed_query("soup"), enc.encode("query: soup"), atol=1e-6)
    assert asyncio.run(emb.aembed_query("soup")) == emb.embed_query("soup")
    store = InMemoryVectorStore.from_texts(DOCS, emb)
    assert len(store.similarity_search("soups to cook", k=2)) == 2


def test_llamaindex_embedding(prompted: Path) -> None:
    pytest.importorskip("llama_index.core")
    from bertrec.integrations.llamaindex import BertrecEmbedding

    emb = BertrecEmbedding(prompted, backend="onnxruntime", precision="fp32", embed_batch_size=2)
    enc = emb.encoder
    np.testing.assert_allclose(
        emb.get_text_embedding_batch(DOCS), enc.encode(["passage: " + d for d in DOCS]), atol=1e-6
    )
    np.testing.assert_allclose(
        emb.get_query_embedding("soup"), enc.encode("query: soup"), atol=1e-6
    )
    got = asyncio.run(emb.aget_query_embedding("soup"))
    np.testing.assert_allclose(got, emb.get_query_embedding("soup"), atol=1e-6)
    assert emb.class_name() == "BertrecEmbedding" and emb.model_name == str(prompted)


def test_adapters_accept_an_encoder(tiny_model_dir: Path) -> None:
    pytest.importorskip("langchain_core")
    from bertrec.integrations.langchain import BertrecEmbeddings

    enc = bertrec.Encoder(tiny_model_dir)
    assert BertrecEmbeddings(enc).encoder is enc
    with pytest.raises(bertrec.NotFoundError):
        BertrecEmbeddings("/nowhere")
