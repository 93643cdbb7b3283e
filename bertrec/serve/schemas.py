"""Request bodies read, size-checked and validated by hand (one line per mistake, naming the
field and the value), and response bodies written with orjson straight from NumPy."""

from __future__ import annotations

import base64
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from starlette.requests import Request

from bertrec.serve.errors import ApiError

ENCODING_FORMATS = ("float", "base64")
ON_UNKNOWN = ("error", "skip")


@dataclass(frozen=True)
class Limits:
    """What one request may hold; past these it is refused before any work is done.

    Attributes:
        max_body_bytes: request body size (413 past it).
        max_inputs: texts in one request (413 past it).
        max_chars: characters in one text (413 past it); a text is truncated to the
            model's ``max_length`` tokens anyway, this bounds the tokenizer's work.
    """

    max_body_bytes: int = 8 << 20
    max_inputs: int = 2048
    max_chars: int = 50_000


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str]
    base64: bool
    model: str | None


@dataclass(frozen=True)
class RankRequest:
    query: str
    documents: list[str]
    top_k: int | None
    model: str | None


@dataclass(frozen=True)
class RecommendRequest:
    history: list[Hashable]
    texts: list[str] | None
    k: int
    exclude: list[Hashable] | None
    diversity: float
    exclude_seen: bool
    on_unknown: str


def _invalid(message: str, code: str = "invalid_type") -> ApiError:
    return ApiError(422, message, code)


async def read_json(request: Request, limits: Limits) -> dict[str, Any]:
    """The request's JSON object; 413 past the body limit (checked on Content-Length before
    reading, and while reading a body sent without one), 400 for what is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, f"Content-Length {declared!r} is not a number", "bad_request")
        if int(declared) > limits.max_body_bytes:
            raise _too_large(int(declared), limits)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(size, limits)
        chunks.append(chunk)
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "invalid_json") from exc
    if not isinstance(body, dict):
        raise ApiError(
            400, f"the body must be a JSON object, got {_json_type(body)}", "invalid_json"
        )
    return body


def _too_large(size: int, limits: Limits) -> ApiError:
    return ApiError(
        413,
        f"the request body has {size} bytes or more; the limit is {limits.max_body_bytes}: "
        "send fewer or shorter texts per request",
        "body_too_large",
    )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def texts_field(value: object, name: str, limits: Limits, allow_str: bool = True) -> list[str]:
    """A list of texts (or one text where ``allow_str``), within the limits."""
    if isinstance(value, str) and allow_str:
        items: list[Any] = [value]
    elif isinstance(value, list):
        items = value
    else:
        want = "a string or an array of strings" if allow_str else "an array of strings"
        raise _invalid(f"{name} must be {want}, got {_json_type(value)}")
    if not items:
        raise _invalid(f"{name} is empty; send at least one text", "empty_input")
    if len(items) > limits.max_inputs:
        raise ApiError(
            413,
            f"{name} has {len(items)} texts; the limit is {limits.max_inputs} per request: "
            "split it over several requests",
            "too_many_inputs",
        )
    for i, text in enumerate(items):
        if not isinstance(text, str):
            hint = " (token ids are not accepted: send the text)" if isinstance(text, int) else ""
            raise _invalid(f"{name}[{i}] is {_json_type(text)}, not a string{hint}")
        if len(text) > limits.max_chars:
            raise ApiError(
                413,
                f"{name}[{i}] has {len(text)} characters; the limit is {limits.max_chars}",
                "input_too_long",
            )
    return items


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{name} must be a string, got {_json_type(value)}")
    return value


def _int(body: dict[str, Any], name: str, default: int | None) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{name} must be a positive integer, got {orjson.dumps(value).decode()}")
    return value


def _ids(value: object, name: str, limits: Limits) -> list[Hashable]:
    if not isinstance(value, list):
        raise _invalid(f"{name} must be an array of item ids, got {_json_type(value)}")
    if len(value) > limits.max_inputs:
        raise ApiError(
            413, f"{name} has {len(value)} ids; the limit is {limits.max_inputs}", "too_many_inputs"
        )
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise _invalid(f"{name}[{i}] is {_json_type(item)}; item ids are integers or strings")
    return value


def embeddings_request(body: dict[str, Any], limits: Limits) -> EmbeddingsRequest:
    """OpenAI's embeddings request: ``input``, ``model``, ``encoding_format``
    (``dimensions`` only when it is the model's own; ``user`` is ignored)."""
    if "input" not in body:
        raise _invalid("input is missing; send a string or an array of strings", "missing_field")
    texts = texts_field(body["input"], "input", limits)
    fmt = body.get("encoding_format") or "float"
    if fmt not in ENCODING_FORMATS:
        raise _invalid(f"encoding_format must be 'float' or 'base64', got {fmt!r}")
    return EmbeddingsRequest(texts, fmt == "base64", _optional_str(body, "model"))


def rank_request(body: dict[str, Any], limits: Limits) -> RankRequest:
    """``query`` (a text), ``documents`` (texts), optional ``top_k`` and ``model``."""
    query = body.get("query")
    if not isinstance(query, str):
        raise _invalid(f"query must be a string, got {_json_type(query)}")
    if len(query) > limits.max_chars:
        raise ApiError(
            413,
            f"query has {len(query)} characters; the limit is {limits.max_chars}",
            "input_too_long",
        )
    documents = texts_field(body.get("documents"), "documents", limits, allow_str=False)
    return RankRequest(query, documents, _int(body, "top_k", None), _optional_str(body, "model"))


def recommend_request(body: dict[str, Any], limits: Limits) -> RecommendRequest:
    """``history`` (ids, oldest first), optional ``texts``, ``k``, ``exclude``,
    ``diversity``, ``exclude_seen``, ``on_unknown``: ``Recommender.recommend``'s arguments."""
    history = _ids(body.get("history", []), "history", limits)
    texts = body.get("texts")
    text_list = None if texts is None else texts_field(texts, "texts", limits, allow_str=False)
    exclude = body.get("exclude")
    exclude_ids = None if exclude is None else _ids(exclude, "exclude", limits)
    diversity = body.get("diversity", 0.0)
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float)):
        raise _invalid(f"diversity must be a number in [0, 1], got {_json_type(diversity)}")
    exclude_seen = body.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise _invalid(f"exclude_seen must be true or false, got {_json_type(exclude_seen)}")
    on_unknown = body.get("on_unknown", "error")
    if on_unknown not in ON_UNKNOWN:
        raise _invalid(f"on_unknown must be 'error' or 'skip', got {on_unknown!r}")
    k = _int(body, "k", 10)
    return RecommendRequest(
        history, text_list, k or 10, exclude_ids, float(diversity), exclude_seen, on_unknown
    )


# -- responses ----------------------------------------------------------------------------


def embeddings_body(
    vectors: NDArray[np.float32], tokens: int, model: str, as_base64: bool
) -> bytes:
    """OpenAI's embeddings response. Floats are written by orjson from the float32 rows
    (shortest form that reads back to the same float32); base64 is the rows' little-endian
    float32 bytes, as OpenAI sends them."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    if as_base64:
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row).decode()}
            for i, row in enumerate(rows)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
