"""The naive server of bench/serve_load.py: the same stack as ``bertrec serve`` (Starlette
on uvicorn, orjson) but no batching: every request runs ``Encoder.encode(texts)`` in a
worker thread on its own.

    python -m bench.serve_peers.naive MODEL_DIR --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bertrec import Encoder
from bertrec.serve.schemas import embeddings_body


def build(
    model_dir: str, threads: int | None, precision: str = "auto", device: str = "auto"
) -> Starlette:
    encoder = Encoder(model_dir, precision=precision, device=device, threads=threads)

    async def embeddings(request: Request) -> Response:
        body = orjson.loads(await request.body())
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = await asyncio.to_thread(encoder.encode, texts)
        # No token count: it would tokenize a second time, a cost bertrec does not pay.
        body = embeddings_body(vectors, 0, "naive", False)
        return Response(body, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    routes = [
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/ready", ready, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    app = build(args.model_dir, args.threads, args.precision, args.device)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
