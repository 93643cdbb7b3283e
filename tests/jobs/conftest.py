"""Fixtures shared by the batch-job tests: item texts, a local Ray, shard hooks that inject
failures, and a byte-for-byte view of an output directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bertrec.runtime.texts import default_sentences

N_TEXTS = 600


class FailOnShard:
    """A shard hook that raises in one shard, as a crash in the middle of a job would."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.seen: list[int] = []

    def __call__(self, shard: int) -> None:
        self.seen.append(shard)
        if shard == self.shard:
            raise RuntimeError(f"injected failure in shard {shard}")


class ExitOnceInShard:
    """Kills the Ray worker process the first time it reaches ``shard`` (marker file)."""

    def __init__(self, shard: int, marker: str) -> None:
        self.shard = shard
        self.marker = marker

    def __call__(self, shard: int) -> None:
        if shard == self.shard and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)


def _files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def item_texts() -> list[str]:
    """600 distinct texts: the encode job's rows, and the recommend store's items."""
    base = default_sentences()
    return [f"{base[i % len(base)]} {i}" for i in range(N_TEXTS)]


@pytest.fixture(scope="session")
def files_of() -> Callable[[Path], dict[str, bytes]]:
    """Every file under an output directory, by relative path: equal means byte-identical."""
    return _files_of


@pytest.fixture(scope="session")
def fail_on_shard() -> type[FailOnShard]:
    return FailOnShard


@pytest.fixture(scope="session")
def exit_once_in_shard() -> type[ExitOnceInShard]:
    return ExitOnceInShard


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bertrec[ray]')")
    # The shard hooks above must reach the workers, which cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
