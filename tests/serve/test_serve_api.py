"""The endpoints of a real server process: vectors equal ``Encoder.encode``, the official
``openai`` client works unchanged, rank and recommend equal the library's answers."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from servekit import KEY, MODEL_NAME, ServerProcess

from bertrec import Encoder
from bertrec.rank.topk import CosineRanker
from bertrec.recommend.recommender import Recommender

TEXTS = [
    "a space adventure",
    "",
    "toys come to life when nobody is looking, and they have adventures of their own",
    "paris",
    "robots!",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder(tiny_model_dir)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", a, b)


def test_embeddings_equal_encoder_encode(server: ServerProcess, encoder: Encoder) -> None:
    r = server.post("/v1/embeddings", {"input": TEXTS, "model": MODEL_NAME})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == MODEL_NAME
    assert [d["index"] for d in body["data"]] == list(range(len(TEXTS)))
    got = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    want = encoder.encode(TEXTS)
    assert got.shape == want.shape
    assert _cos(got, want).min() >= 0.99999
    np.testing.assert_allclose(got, want, atol=1e-5)
    tokens = sum(len(e.ids) for e in encoder.tokenize(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_one_string_and_base64(server: ServerProcess, encoder: Encoder) -> None:
    r = server.post("/v1/embeddings", {"input": TEXTS[0], "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    (item,) = r.json()["data"]
    got = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
    np.testing.assert_allclose(got, encoder.encode(TEXTS[0]), atol=1e-5)
    as_float = server.post("/v1/embeddings", {"input": TEXTS[0]}).json()["data"][0]["embedding"]
    np.testing.assert_array_equal(got, np.asarray(as_float, dtype=np.float32))


def test_official_openai_client_works_unchanged(server: ServerProcess, encoder: Encoder) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    # The client asks for base64 by default and decodes it itself.
    res = client.embeddings.create(model=MODEL_NAME, input=TEXTS)
    got = np.asarray([d.embedding for d in res.data], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode(TEXTS), atol=1e-5)
    assert res.usage.prompt_tokens > 0
    floats = client.embeddings.create(model=MODEL_NAME, input="robots!", encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, encoder.encode("robots!"), atol=1e-5)
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="another-model", input="x")
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model=MODEL_NAME, input="x")


def test_models(server: ServerProcess, encoder: Encoder) -> None:
    (card,) = server.get("/v1/models").json()["data"]
    assert card["id"] == MODEL_NAME and card["object"] == "model"
    assert card["dim"] == encoder.dim and card["variant"] == encoder.variant
    assert card["recommend"] is True


def test_rank_equals_cosine_ranker(server: ServerProcess, encoder: Encoder) -> None:
    query, docs = "a film about robots in space", TEXTS
    r = server.post("/v1/rank", {"query": query, "documents": docs, "top_k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    vectors = encoder.encode([query, *docs])
    want = CosineRanker(vectors[1:]).topk(vectors[0], k=3)
    assert [x["index"] for x in results] == want.rows.tolist()
    np.testing.assert_allclose([x["score"] for x in results], want.scores, atol=1e-5)
    everything = server.post("/v1/rank", {"query": query, "documents": docs}).json()["results"]
    assert sorted(x["index"] for x in everything) == list(range(len(docs)))


@pytest.mark.parametrize(
    "body",
    [
        {"history": [10, 14], "k": 3},
        {"history": [15], "k": 4, "exclude": [12, 999], "diversity": 0.5},
        {"history": [], "k": 2},
        {"history": [11], "texts": ["a film about the sea"], "k": 5, "exclude_seen": False},
        {"history": [11, 999], "on_unknown": "skip"},
    ],
)
def test_recommend_equals_recommender(
    server: ServerProcess, store_dir: Path, encoder: Encoder, body: dict[str, object]
) -> None:
    r = server.post("/v1/recommend", body)
    assert r.status_code == 200, r.text
    got = [(x["id"], x["score"]) for x in r.json()["results"]]
    rec = Recommender.load(store_dir, encoder=encoder)
    want = rec.recommend(
        body["history"],  # type: ignore[arg-type]
        body.get("k", 10),  # type: ignore[arg-type]
        body.get("exclude_seen", True),  # type: ignore[arg-type]
        body.get("exclude"),  # type: ignore[arg-type]
        body.get("diversity", 0.0),  # type: ignore[arg-type]
        texts=body.get("texts"),  # type: ignore[arg-type]
        on_unknown=body.get("on_unknown", "error"),  # type: ignore[arg-type]
    )
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_recommend_unknown_id_is_422(server: ServerProcess) -> None:
    r = server.post("/v1/recommend", {"history": [10, 999]})
    assert r.status_code == 422
    assert "999" in r.json()["error"]["message"]


def test_recommend_without_store_is_404(start_server: object) -> None:
    srv = start_server()  # type: ignore[operator]
    r = srv.post("/v1/recommend", {"history": [1]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_store"


@pytest.mark.slow
def test_minilm_served_vectors_equal_encode(minilm_model_dir: Path, tmp_path: Path) -> None:
    """The real model with its default (auto) variant: vectors batched with other requests
    equal one ``Encoder.encode`` call over all the texts."""
    import asyncio

    import httpx

    from bertrec.runtime.texts import default_sentences

    texts = list(default_sentences())[:96]
    proc = ServerProcess(minilm_model_dir, tmp_path, key=None).wait_ready()
    try:

        async def concurrent() -> list[list[float]]:
            async with httpx.AsyncClient(timeout=60) as client:
                calls = [
                    client.post(proc.url + "/v1/embeddings", json={"input": texts[i : i + 3]})
                    for i in range(0, len(texts), 3)
                ]
                answers = await asyncio.gather(*calls)
            return [d["embedding"] for r in answers for d in r.json()["data"]]

        got = np.asarray(asyncio.run(concurrent()), dtype=np.float32)
    finally:
        assert proc.stop() == 0
    want = Encoder(minilm_model_dir).encode(texts)
    assert _cos(got, want).min() >= 0.99999
