"""bertrec's HTTP service: an OpenAI-shaped embeddings API (plus ranking and
recommendations) that merges concurrent requests into token-budget batches.

``create_app(model_dir, ...)`` returns the ASGI app (uvicorn or gunicorn workers, Ray
Serve); ``bertrec serve MODEL_DIR`` runs it. It needs the ``serve`` extra
(``pip install 'bertrec[serve]'``); importing this package without it works, and
``create_app`` then says what to install.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from bertrec.errors import ProviderError

if TYPE_CHECKING:
    from starlette.applications import Starlette

# The serve extra's modules, by import name.
REQUIRED = ("starlette", "uvicorn", "orjson", "prometheus_client")


def require_serve_extra() -> None:
    """Raise a one-line ``ProviderError`` when the ``serve`` extra is not installed."""
    missing = [name for name in REQUIRED if importlib.util.find_spec(name) is None]
    if missing:
        raise ProviderError(
            f"bertrec serve needs {', '.join(missing)}, which is not installed: "
            "pip install 'bertrec[serve]'"
        )


def create_app(model_dir: str | os.PathLike[str], **settings: Any) -> Starlette:
    """The ASGI app serving ``model_dir``: see ``bertrec.serve.app.create_app`` for the
    settings.

    Raises:
        ProviderError: the ``serve`` extra is not installed.
    """
    require_serve_extra()
    from bertrec.serve.app import create_app as build

    return build(model_dir, **settings)


__all__ = ["REQUIRED", "create_app", "require_serve_extra"]
