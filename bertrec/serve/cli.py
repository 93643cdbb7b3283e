"""``bertrec serve``: the command line of the server. Importable without the ``serve``
extra (``bertrec --help`` must work anywhere); the server's modules load in ``run``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from bertrec.errors import BertrecError, ConfigError

DESCRIPTION = (
    "Serve a model directory over HTTP: OpenAI-shaped POST /v1/embeddings, GET /v1/models, "
    "POST /v1/rank, POST /v1/recommend (with --store), GET /health, /ready, /metrics. "
    "Concurrent requests are merged into token-budget batches. SIGTERM or Ctrl+C stops "
    "accepting, answers every request already received, and exits 0."
)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``bertrec serve`` (and of ``python -m bertrec.serve``)."""
    p.add_argument("model_dir", help="directory written by `bertrec export`")
    p.add_argument("--store", default=None, help="directory written by Recommender.save")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--precision", default="auto", help="fp32, int8, fp16, bf16 or auto")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "openvino"), default="auto")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="padded tokens per batch")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per model run (default: half the CPUs)"
    )
    p.add_argument("--workers", type=int, default=None, help="model runs at once (default: 2)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="longest the engine waits after a batch for the clients it answered to come "
        "back, so they share the next batch (never when idle)",
    )
    p.add_argument(
        "--max-queue", type=int, default=8192, help="answer 503 while this many texts wait"
    )
    p.add_argument(
        "--shape-cache",
        type=int,
        default=1024,
        metavar="N",
        help="OpenVINO: input shapes whose compiled kernels are kept; more is faster and "
        "takes more memory (roughly 1 MB each for MiniLM; default: %(default)s)",
    )
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="VAR",
        help="require 'Authorization: Bearer <key>' on every route but /health, the key "
        "read from this environment variable",
    )
    p.add_argument("--model-name", default=None, help="name in /v1/models (default: the dir's)")
    p.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        help="seconds to finish requests already received after SIGTERM",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")


def add_serve_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``bertrec`` command's subcommands."""
    p = subparsers.add_parser("serve", help="serve a model over HTTP", description=DESCRIPTION)
    add_serve_arguments(p)
    p.set_defaults(func=run)
    return p


def _api_key(var: str | None) -> str | None:
    if var is None:
        return None
    key = os.environ.get(var, "")
    if not key:
        raise ConfigError(f"--api-key-env {var}: the environment variable is not set or empty")
    return key


def _ignore(signum: int, frame: Any) -> None:
    """uvicorn re-raises the stop signal once it has shut down; caught here, the process
    exits with its own status (0) instead of dying by the signal."""


def run(args: argparse.Namespace) -> int:
    """Load the model, then serve until SIGTERM/SIGINT; 0 after a clean shutdown.

    Raises:
        ProviderError: the ``serve`` extra is not installed.
        BertrecError: the model or store cannot be loaded (one line, before binding).
    """
    from bertrec.serve import require_serve_extra

    require_serve_extra()
    import uvicorn

    from bertrec.serve.app import create_app

    app = create_app(
        args.model_dir,
        store_dir=args.store,
        precision=args.precision,
        device=args.device,
        backend=args.backend,
        max_batch_tokens=args.max_batch_tokens,
        threads=args.threads,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        workers=args.workers,
        api_key=_api_key(args.api_key_env),
        model_name=args.model_name,
        shape_cache=args.shape_cache,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        lifespan="on",
        access_log=args.access_log,
        log_level="info" if args.access_log else "warning",
        timeout_graceful_shutdown=args.grace_period,
        server_header=False,
    )
    server = uvicorn.Server(config)
    encoder = app.state.server.encoder
    print(
        f"bertrec serve: http://{args.host}:{args.port} ({encoder.describe()}); "
        "SIGTERM or Ctrl+C stops",
        file=sys.stderr,
        flush=True,
    )
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bertrec.serve``: errors as one line and exit status 2, like ``bertrec``."""
    parser = argparse.ArgumentParser(prog="python -m bertrec.serve", description=DESCRIPTION)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except BertrecError as exc:
        print(f"bertrec serve: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"bertrec serve: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2
