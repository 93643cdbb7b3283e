"""MovieLens (ml-latest-small layout) loading, item texts and the per-user temporal split.

Shared by ``bertrec demo``, ``bench/`` and the tests, so all build the same item texts
(``item_text``, the one place that does) and score the same protocol. Reads the CSV files
in place with the standard library; the data is never copied.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bertrec.errors import ConfigError, InputValueError, NotFoundError

ENV_VAR = "BERTREC_MOVIELENS"
FILES = ("movies.csv", "ratings.csv")

# Tags per item in its text. Tagged films have a median of 2 distinct tags, a few have
# hundreds; the most frequent dozen carry the signal and keep texts inside max_length.
MAX_TAGS = 12


@dataclass(frozen=True)
class MovieLens:
    """One MovieLens dataset in memory.

    Attributes:
        item_ids: movieId of every film, in ``movies.csv`` order.
        titles: title with year, e.g. ``"Toy Story (1995)"``.
        genres: genre names per film (empty for ``(no genres listed)``).
        tags: distinct user tags per film, most frequent first.
        users / items / ratings / timestamps: the ratings table as parallel arrays,
            in file order (``items`` holds movieIds).
    """

    item_ids: list[int]
    titles: list[str]
    genres: list[list[str]]
    tags: list[list[str]]
    users: NDArray[np.int64]
    items: NDArray[np.int64]
    ratings: NDArray[np.float32]
    timestamps: NDArray[np.int64]


@dataclass(frozen=True)
class UserSplit:
    """One user's temporal split.

    Attributes:
        user: the userId.
        history: movieIds rated and not held out, oldest first.
        history_ratings: the ratings of ``history``, same order.
        test: the held-out movieIds (the last ``n_test`` liked ratings), oldest first.
    """

    user: int
    history: list[int]
    history_ratings: list[float]
    test: list[int]


def default_data_dir() -> Path:
    """The ml-latest-small folder named by ``$BERTREC_MOVIELENS``.

    Raises:
        ConfigError: the variable is not set (pass the folder explicitly instead).
    """
    env = os.environ.get(ENV_VAR)
    if not env:
        raise ConfigError(
            f"no MovieLens folder given: pass --data DIR (the ml-latest-small folder) or set "
            f"{ENV_VAR}"
        )
    return Path(env)


def load_movielens(data_dir: str | os.PathLike[str] | None = None) -> MovieLens:
    """Read ``movies.csv``, ``ratings.csv`` and (when present) ``tags.csv``.

    Args:
        data_dir: the ml-latest-small folder; None means ``$BERTREC_MOVIELENS``.

    Raises:
        ConfigError: no folder given and ``$BERTREC_MOVIELENS`` not set.
        NotFoundError: the folder or one of the required files is missing.
        InputValueError: a file lacks an expected column or has an unparsable value.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    for name in FILES:
        if not (root / name).is_file():
            raise NotFoundError(
                f"MovieLens file {str(root / name)!r} not found; pass the ml-latest-small "
                f"folder (--data) or set {ENV_VAR}"
            )
    tag_counts: dict[int, Counter[str]] = defaultdict(Counter)
    tag_spelling: dict[str, str] = {}
    if (root / "tags.csv").is_file():
        for row in _rows(root / "tags.csv", ("movieId", "tag")):
            tag = " ".join(row["tag"].split())
            if tag:
                # Users write "Pixar" and "pixar"; count them as one tag, keep the first spelling.
                key = tag.lower()
                tag_spelling.setdefault(key, tag)
                tag_counts[_int(row, "movieId")][key] += 1
    item_ids: list[int] = []
    titles: list[str] = []
    genres: list[list[str]] = []
    tags: list[list[str]] = []
    for row in _rows(root / "movies.csv", ("movieId", "title", "genres")):
        mid = _int(row, "movieId")
        item_ids.append(mid)
        titles.append(row["title"].strip())
        g = row["genres"].strip()
        genres.append([] if g == "(no genres listed)" else [x for x in g.split("|") if x])
        ranked = sorted(tag_counts[mid].items(), key=lambda kv: (-kv[1], kv[0]))
        tags.append([tag_spelling[k] for k, _ in ranked])
    cols: dict[str, list[float]] = {k: [] for k in ("userId", "movieId", "rating", "timestamp")}
    for row in _rows(root / "ratings.csv", tuple(cols)):
        for k, values in cols.items():
            try:
                values.append(float(row[k]))
            except ValueError as exc:
                raise InputValueError(f"ratings.csv: {k}={row[k]!r} is not a number") from exc
    return MovieLens(
        item_ids=item_ids,
        titles=titles,
        genres=genres,
        tags=tags,
        users=np.asarray(cols["userId"], dtype=np.int64),
        items=np.asarray(cols["movieId"], dtype=np.int64),
        ratings=np.asarray(cols["rating"], dtype=np.float32),
        timestamps=np.asarray(cols["timestamp"], dtype=np.int64),
    )


def _rows(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputValueError(f"{str(path)!r} lacks column(s) {missing}")
        return list(reader)


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(row[key])
    except ValueError as exc:
        raise InputValueError(f"{key}={row[key]!r} is not an integer") from exc


def item_text(title: str, genres: Sequence[str], tags: Sequence[str]) -> str:
    """One film as text: ``"<title>. Genres: a, b. Tags: x, y."`` (parts left out when empty).

    The year stays inside the title: it is a strong signal of era and taste.
    """
    text = f"{title}."
    if genres:
        text += f" Genres: {', '.join(genres)}."
    if tags:
        text += f" Tags: {', '.join(tags[:MAX_TAGS])}."
    return text


def item_texts(data: MovieLens) -> list[str]:
    """``item_text`` of every film, in ``data.item_ids`` order."""
    parts = zip(data.titles, data.genres, data.tags, strict=True)
    return [item_text(title, genres, tags) for title, genres, tags in parts]


def temporal_split(
    users: NDArray[np.int64],
    items: NDArray[np.int64],
    ratings: NDArray[np.float32],
    timestamps: NDArray[np.int64],
    n_test: int = 10,
    like_threshold: float = 4.0,
) -> list[UserSplit]:
    """Hold out each user's last ``n_test`` liked ratings; what comes before is history.

    Ratings are ordered by timestamp (equal timestamps keep file order, so the split
    is deterministic). The test set is the last ``n_test`` ratings with
    ``rating >= like_threshold``; every other rating of the user is history, in time
    order. That includes the few disliked ratings interleaved with the held-out ones:
    they are seen items (left out of the ranking) and count towards popularity, as in
    the popularity baseline that bench/recsys_eval.py reports. A user
    with fewer liked ratings holds out all of them; a user with none gets an empty
    test set (and scores zero in the averages).

    Args:
        users / items / ratings / timestamps: the ratings table as parallel arrays.
        n_test: held-out liked ratings per user.
        like_threshold: the rating that counts as liked (binary relevance).

    Returns:
        One ``UserSplit`` per user, by ascending userId.

    Raises:
        ConfigError: ``n_test`` is not a positive int.
        InputValueError: the arrays differ in length.
    """
    if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test <= 0:
        raise ConfigError(f"n_test must be a positive int, got {n_test!r}")
    n = len(users)
    if not (len(items) == len(ratings) == len(timestamps) == n):
        raise InputValueError(
            f"ratings arrays differ in length: users={n}, items={len(items)}, "
            f"ratings={len(ratings)}, timestamps={len(timestamps)}"
        )
    # lexsort's last key is primary: by user, then time; stable, so ties keep file order.
    order = np.lexsort((timestamps, users))
    users, items, ratings = users[order], items[order], ratings[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    splits = []
    for start, stop in zip(np.r_[0, bounds], np.r_[bounds, n], strict=True):
        if start == stop:
            continue
        u_items, u_ratings = items[start:stop], ratings[start:stop]
        liked = np.flatnonzero(u_ratings >= like_threshold)[-n_test:]
        keep = np.ones(len(u_items), dtype=bool)
        keep[liked] = False
        splits.append(
            UserSplit(
                user=int(users[start]),
                history=[int(x) for x in u_items[keep]],
                history_ratings=[float(x) for x in u_ratings[keep]],
                test=[int(x) for x in u_items[liked]],
            )
        )
    return splits


def split_movielens(data: MovieLens, n_test: int = 10) -> list[UserSplit]:
    """``temporal_split`` of ``data``'s ratings with the evaluation defaults."""
    return temporal_split(data.users, data.items, data.ratings, data.timestamps, n_test=n_test)
