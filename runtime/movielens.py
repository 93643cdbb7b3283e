"""MovieLens (ml-latest-small layout) loading, item texts and the per-user temporal split.

Shared by ``bertrec demo`` and ``bench/recsys_eval.py`` so both build the same item
texts and score the same protocol. Reads the CSV files in place with the standard
library; the data is never copied.
"""

from __future__ import annotations

import csv
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError, InputValueError, ModelNotFoundError

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
    """Where the data is looked for: ``$BERTREC_MOVIELENS``, else the checkout's sibling
    ``shared/data/movielens-small`` (the repository lives next to ``shared/``)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "movielens-small"


def load_movielens(data_dir: str | os.PathLike[str] | None = None) -> MovieLens:
    """Read ``movies.csv``, ``ratings.csv`` and (when present) ``tags.csv``.

    Args:
        data_dir: the ml-latest-small folder; None means ``default_data_dir()``.

    Raises:
        ModelNotFoundError: the folder or one of the required files is missing.
        InputValueError: a file lacks an expected column or has an unparsable value.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    for name in FILES:
        if not (root / name).is_file():
            raise ModelNotFoundError(
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
    they are seen items (left out of the ranking) and count towards popularity, which
    is how the popularity baseline of the issue (NDCG@10 0.0699) was measured. A user
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


# -- the evaluation protocol ------------------------------------------------------------------

HISTORY_MODES = ("liked", "all", "none")


@dataclass(frozen=True)
class Metrics:
    """Averages over users of one recommender run.

    Attributes:
        ndcg: NDCG@k with binary relevance (held-out items are relevant), averaged over
            every user (a user with no held-out item counts 0).
        recall: held-out items in the top k over held-out items, averaged the same way.
        diversity: intra-list diversity, 1 - mean pairwise cosine of a top-k list,
            averaged over lists of at least two items.
        coverage: distinct recommended items over catalog size.
        users: users averaged over.
        k: list length.
        user_ndcg: each user's NDCG@k, in the order of the splits (for paired
            comparisons of two recommenders on the same users).
    """

    ndcg: float
    recall: float
    diversity: float
    coverage: float
    users: int
    k: int
    user_ndcg: tuple[float, ...] = ()


def ndcg_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """Binary-relevance NDCG@k: DCG of ``ranked[:k]`` over the best DCG possible."""
    if not relevant:
        return 0.0
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = sum(g for g, item in zip(gains, ranked[:k], strict=False) if item in relevant)
    return float(dcg / gains[: min(k, len(relevant))].sum())


def recall_at_k(ranked: Sequence[object], relevant: Collection[object], k: int = 10) -> float:
    """Share of ``relevant`` found in ``ranked[:k]`` (0 when nothing is relevant)."""
    if not relevant:
        return 0.0
    return sum(1 for item in ranked[:k] if item in relevant) / len(relevant)


def intra_list_diversity(vectors: NDArray[np.float32]) -> float | None:
    """1 - mean pairwise cosine of unit-norm ``vectors`` (None for fewer than two)."""
    n = len(vectors)
    if n < 2:
        return None
    sims = np.asarray(vectors, dtype=np.float64) @ np.asarray(vectors, dtype=np.float64).T
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def popularity_counts(splits: Sequence[UserSplit], item_ids: Sequence[int]) -> NDArray[np.float64]:
    """Ratings per item counted over the histories only (no held-out rating leaks in)."""
    row = {m: i for i, m in enumerate(item_ids)}
    counts = np.zeros(len(item_ids), dtype=np.float64)
    for s in splits:
        for m in s.history:
            if m in row:
                counts[row[m]] += 1
    return counts


def user_history(
    split: UserSplit, mode: str = "liked", like_threshold: float = 4.0
) -> tuple[list[int], list[int]]:
    """(history to recommend from, items to leave out) for one user.

    ``mode`` picks the history: ``"liked"`` its ratings >= ``like_threshold``, ``"all"``
    every rating, ``"none"`` nothing (the popularity baseline). Every rated item is left
    out of the ranking either way, and nothing else.
    """
    if mode not in HISTORY_MODES:
        raise ConfigError(f"unknown history mode {mode!r}; choose from {HISTORY_MODES}")
    if mode == "none":
        history = []
    elif mode == "all":
        history = list(split.history)
    else:
        history = [
            m
            for m, r in zip(split.history, split.history_ratings, strict=True)
            if r >= like_threshold
        ]
    return history, list(split.history)


class _Recommends(Protocol):
    def recommend(
        self,
        history: Sequence[Hashable],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Hashable] | None = None,
        diversity: float = 0.0,
    ) -> list[tuple[Any, float]]: ...


def evaluate(
    recommender: _Recommends,
    splits: Sequence[UserSplit],
    item_vectors: NDArray[np.float32],
    item_ids: Sequence[int],
    k: int = 10,
    diversity: float = 0.0,
    history: str = "liked",
) -> Metrics:
    """Score a recommender on the temporal split: NDCG@k, Recall@k, diversity, coverage.

    Args:
        recommender: anything with ``Recommender.recommend``'s signature.
        splits: per-user splits (``temporal_split``).
        item_vectors: unit-norm vectors in ``item_ids`` order (for the diversity figure).
        item_ids: the catalog ids.
        k: list length.
        diversity: passed to ``recommend`` (MMR weight).
        history: which ratings form the history, see ``user_history``.
    """
    row = {m: i for i, m in enumerate(item_ids)}
    ndcgs, recalls, ilds = [], [], []
    shown: set[int] = set()
    for s in splits:
        hist, seen = user_history(s, history)
        recs = [
            item for item, _ in recommender.recommend(hist, k=k, exclude=seen, diversity=diversity)
        ]
        relevant = set(s.test)
        ndcgs.append(ndcg_at_k(recs, relevant, k))
        recalls.append(recall_at_k(recs, relevant, k))
        rows = [row[m] for m in recs]
        shown.update(rows)
        ild = intra_list_diversity(item_vectors[rows])
        if ild is not None:
            ilds.append(ild)
    return Metrics(
        ndcg=float(np.mean(ndcgs)) if ndcgs else 0.0,
        recall=float(np.mean(recalls)) if recalls else 0.0,
        diversity=float(np.mean(ilds)) if ilds else 0.0,
        coverage=len(shown) / len(item_ids) if len(item_ids) else 0.0,
        users=len(splits),
        k=k,
        user_ndcg=tuple(ndcgs),
    )
