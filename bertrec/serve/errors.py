"""HTTP errors of the server, each answered as JSON in OpenAI's error shape:
``{"error": {"message", "type", "code"}}`` with one line saying what was wrong."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from bertrec.errors import (
    BertrecError,
    ConfigError,
    InputTypeError,
    InputValueError,
    ModelMismatchError,
)

# OpenAI's error types: what a client branches on (the official client maps status codes
# to exception classes, and shows the message).
INVALID = "invalid_request_error"
AUTH = "authentication_error"
OVERLOADED = "server_overloaded"
SERVER = "server_error"


class ApiError(BertrecError):
    """A request the server answers with an error status instead of a result.

    Args:
        status: the HTTP status.
        message: one line: what was wrong, with the value, and what to do.
        code: a short machine-readable reason (``invalid_json``, ``too_many_inputs`` ...).
        kind: OpenAI's error ``type``.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        kind: str = INVALID,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.kind = kind
        self.headers = headers or {}


class Overloaded(ApiError):
    """The queue is full or the server is shutting down: try again later (503)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(
            503, message, "overloaded", OVERLOADED, {"Retry-After": str(retry_after_s)}
        )


def error_body(message: str, kind: str, code: str | None) -> bytes:
    """The JSON body of an error: OpenAI's shape, ``param`` always null."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def error_response(err: ApiError) -> Response:
    return Response(
        error_body(err.message, err.kind, err.code),
        status_code=err.status,
        headers=err.headers,
        media_type="application/json",
    )


def from_bertrec(exc: BertrecError) -> ApiError:
    """The HTTP answer to an error the library raised for a request's content (bad ids, a
    setting out of range, invalid Unicode): 422, the library's one-line message."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (InputTypeError, InputValueError, ConfigError, ModelMismatchError)):
        return ApiError(422, str(exc), "invalid_value")
    return ApiError(500, f"{type(exc).__name__}: {exc}", "internal_error", SERVER)


def status_error(status: int, detail: Any) -> ApiError:
    """Starlette's own HTTP errors (unknown route, wrong method) in the same JSON shape."""
    codes = {404: "not_found", 405: "method_not_allowed"}
    return ApiError(status, str(detail), codes.get(status, f"http_{status}"))
