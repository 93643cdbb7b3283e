"""Bad requests get 4xx JSON in OpenAI's error shape, one line each, and the server stays
healthy: auth, malformed bodies, wrong types, limits, a full queue, clients that leave."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest
from servekit import KEY, ServerProcess


def _error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    assert isinstance(err["message"], str) and err["message"] and "\n" not in err["message"]
    if code is not None:
        assert err["code"] == code, err
    return dict(err)


def test_auth_on_every_route_but_health(server: ServerProcess) -> None:
    for path in ("/ready", "/metrics", "/v1/models"):
        err = _error(httpx.get(server.url + path), 401, "invalid_api_key")
        assert err["type"] == "authentication_error"
    for bad in ("Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer", ""):
        r = httpx.post(
            server.url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": bad}
        )
        _error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(server.url + "/health").status_code == 200
    assert server.post("/v1/embeddings", {"input": "x"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'["a list"]', 400, "invalid_json"),
        (b'{"input": 3}', 422, "invalid_type"),
        (b'{"input": [1, 2, 3]}', 422, "invalid_type"),
        (b'{"input": ["ok", null]}', 422, "invalid_type"),
        (b'{"input": []}', 422, "empty_input"),
        (b'{"model": "tiny"}', 422, "missing_field"),
        (b'{"input": "x", "encoding_format": "int8"}', 422, "invalid_type"),
        (b'{"input": "x", "model": 5}', 422, "invalid_type"),
        (b'{"input": "x", "model": "gpt-9"}', 404, "model_not_found"),
    ],
)
def test_bad_embeddings_requests(
    server: ServerProcess, body: bytes, status: int, code: str
) -> None:
    r = httpx.post(server.url + "/v1/embeddings", content=body, headers=server.headers)
    _error(r, status, code)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/rank", {"query": 1, "documents": ["a"]}, 422),
        ("/v1/rank", {"query": "q", "documents": "a"}, 422),
        ("/v1/rank", {"query": "q", "documents": ["a"], "top_k": 0}, 422),
        ("/v1/rank", {"query": "q", "documents": ["a"], "top_k": True}, 422),
        ("/v1/recommend", {"history": "10"}, 422),
        ("/v1/recommend", {"history": [10.5]}, 422),
        ("/v1/recommend", {"history": [10], "k": -1}, 422),
        ("/v1/recommend", {"history": [10], "diversity": 2}, 422),
        ("/v1/recommend", {"history": [10], "diversity": "a lot"}, 422),
        ("/v1/recommend", {"history": [10], "on_unknown": "ignore"}, 422),
        ("/v1/recommend", {"history": [10], "texts": [1]}, 422),
    ],
)
def test_bad_rank_and_recommend_requests(
    server: ServerProcess, path: str, body: object, status: int
) -> None:
    _error(server.post(path, body), status)


def test_limits_are_413(server: ServerProcess) -> None:
    huge = b'{"input": "' + b"a" * (9 << 20) + b'"}'
    r = httpx.post(server.url + "/v1/embeddings", content=huge, headers=server.headers)
    _error(r, 413, "body_too_large")

    def chunks() -> object:  # no Content-Length: the limit holds while reading
        yield b'{"input": "'
        for _ in range(10):
            yield b"a" * (1 << 20)
        yield b'"}'

    r = httpx.post(server.url + "/v1/embeddings", content=chunks(), headers=server.headers)
    _error(r, 413, "body_too_large")
    _error(server.post("/v1/embeddings", {"input": ["x"] * 100_000}), 413, "too_many_inputs")
    _error(server.post("/v1/embeddings", {"input": ["ok", "b" * 60_000]}), 413, "input_too_long")
    _error(server.post("/v1/rank", {"query": "q" * 60_000, "documents": ["a"]}), 413)


def test_unknown_route_and_method_are_json(server: ServerProcess) -> None:
    _error(server.get("/v1/nothing"), 404, "not_found")
    _error(server.get("/v1/embeddings"), 405, "method_not_allowed")
    # ... and after all the bad requests above, the server is still healthy.
    assert server.get("/ready").status_code == 200
    assert server.post("/v1/embeddings", {"input": ["still", "fine"]}).status_code == 200


def test_queue_full_is_503_with_retry_after(start_server: object) -> None:
    srv = start_server("--max-queue", "4")  # type: ignore[operator]
    texts = ["a sentence of a few words to keep the model busy"] * 64

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=srv.headers, timeout=60) as client:
            calls = [
                client.post(srv.url + "/v1/embeddings", json={"input": texts[:4]})
                for _ in range(48)
            ]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(burst())
    statuses = {r.status_code for r in answers}
    assert statuses <= {200, 503} and 503 in statuses and 200 in statuses
    refused = next(r for r in answers if r.status_code == 503)
    err = _error(refused, 503, "overloaded")
    assert err["type"] == "server_overloaded"
    assert int(refused.headers["retry-after"]) >= 1
    assert srv.post("/v1/embeddings", {"input": "after the burst"}).status_code == 200


def test_clients_that_disconnect_leak_nothing(server: ServerProcess) -> None:
    body = b'{"input": [' + b",".join([b'"words words words words"'] * 512) + b"]}"
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    before = server.answered("embeddings")
    for i in range(20):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            # Half leave mid-body, half right after sending the whole request.
            s.sendall(head + (body[: len(body) // 2] if i % 2 else body))
    deadline = time.monotonic() + 30
    while server.answered("embeddings") < before + 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.answered("embeddings") == before + 20
    assert server.metric("bertrec_requests_in_flight") == 0
    assert server.metric("bertrec_queue_depth") == 0
    assert server.post("/v1/embeddings", {"input": "still here"}).status_code == 200
