"""Servers started as real processes (``python -m bertrec.serve``) on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from servekit import ITEM_IDS, ITEM_TEXTS, KEY, POPULARITY, ServerProcess


@pytest.fixture(scope="session")
def store_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Recommender over ``ITEM_TEXTS``, saved with ``Recommender.save``."""
    from bertrec import Encoder
    from bertrec.recommend.recommender import Recommender

    rec = Recommender(Encoder(tiny_model_dir), ITEM_TEXTS, ITEM_IDS, popularity=POPULARITY)
    return rec.save(tmp_path_factory.mktemp("store") / "store")


@pytest.fixture(scope="session")
def server(
    tiny_model_dir: Path, store_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The tiny model with a store and an API key; shared by the tests that leave it as
    they found it."""
    proc = ServerProcess(tiny_model_dir, tmp_path_factory.mktemp("logs"), "--store", str(store_dir))
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


@pytest.fixture()
def start_server(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Start more servers of the tiny model (stopped at the end of the test)."""
    started: list[ServerProcess] = []

    def start(*args: str, key: str | None = KEY, wait: bool = True) -> ServerProcess:
        proc = ServerProcess(tiny_model_dir, tmp_path, *args, key=key)
        started.append(proc)
        return proc.wait_ready() if wait else proc

    yield start
    for proc in started:
        proc.stop()
