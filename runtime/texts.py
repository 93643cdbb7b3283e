"""Text helpers: the packaged sentence set and reading user-supplied text files."""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from bertrec.errors import InputValueError, NotFoundError


@lru_cache(maxsize=1)
def _packaged() -> tuple[str, ...]:
    text = resources.files("bertrec.runtime").joinpath("data/sentences.txt").read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def default_sentences() -> list[str]:
    """Real English sentences of varied length (queries, titles, reviews, paragraphs).

    Used to validate exports and calibrate quantization when the caller gives no text.
    """
    return list(_packaged())


def read_text_file(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty lines of a UTF-8 text file.

    Raises:
        NotFoundError: the file does not exist.
        InputValueError: the file is not UTF-8 or has no non-empty line.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"text file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputValueError(
            f"{str(p)!r} is not UTF-8 ({exc}); convert it, e.g. `iconv -t UTF-8`"
        ) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputValueError(f"{str(p)!r} has no non-empty line; give one sentence per line")
    return lines
