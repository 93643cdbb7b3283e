"""``Recommender``: an ``ItemCatalog``, a history ``Scorer`` and, for free texts and new
items, an encoder.

A user's history scores every item by its similarity to the user's most recent items
(item-to-item, not one mean vector: measured better on MovieLens, see
bench/recsys_eval.py), plus a log-popularity prior. One user or many go through the same
blocked top-k (``bertrec.rank.blocked_topk``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bertrec.core import check_bool, check_choice, check_int, json_bytes
from bertrec.errors import ConfigError, FileFormatError, InputTypeError, InputValueError
from bertrec.rank.mmr import DEFAULT_CANDIDATES, check_diversity, diverse_picks
from bertrec.rank.topk import block_rows_for, blocked_topk
from bertrec.recommend.catalog import (
    ItemCatalog,
    TextEncoder,
    encode_texts,
    id_list,
    read_json,
    text_list,
)
from bertrec.recommend.scorer import (
    DEFAULT_HALF_LIFE,
    DEFAULT_POPULARITY_WEIGHT,
    DEFAULT_RECENT,
    DEFAULT_TOP_M,
    History,
    Scorer,
    user_chunks,
)

SCHEMA_VERSION = 2
CONFIG_NAME = "recommender.json"
ON_UNKNOWN = ("error", "skip")
SETTINGS = ("popularity_weight", "profile", "recent", "top_m", "half_life", "candidates")


class Recommender:
    """Recommend catalog items for a user history of item ids (and/or free texts).

    Scoring (``profile="knn"``, the default): each item's content score is the mean of
    its ``top_m`` highest cosine similarities to the user's ``recent`` latest history
    entries (each similarity scaled by the entry's weight when weights are given).
    ``profile="mean"`` scores by cosine to ``user_vector`` instead. Either way a
    recommendation's score is ``content + popularity_weight * log1p(count) / log1p(max
    count)``: the popularity prior is part of it.

    An empty history falls back to the popularity prior alone (a cold-start user gets
    the most popular items); without popularity that is an error. Ids in a history that
    are not in the catalog are an error naming them (``on_unknown="skip"`` leaves them out).

    Args:
        encoder: a ``bertrec.Encoder`` (anything with ``encode``, ``dim``, ``fingerprint``).
        item_texts: one text per item.
        item_ids: one distinct hashable id per item (int or str to be saved).
        popularity: non-negative interaction counts per item, or None (no prior).
        popularity_weight: weight of the log-popularity prior.
        profile: ``"knn"`` (item-to-item) or ``"mean"`` (one user vector).
        recent: history entries that count, the latest ones.
        top_m: similarities averaged per item in the knn profile.
        half_life: recency half-life of ``user_vector``, in history entries.
        candidates: pool re-ranked when ``diversity > 0``.
        show_progress: show a progress bar while encoding the catalog.

    Raises:
        ConfigError: a setting out of range.
        InputTypeError / InputValueError: texts, ids or popularity unusable (lengths
            differ, duplicate ids, non-string texts, negative counts).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        item_texts: Sequence[str],
        item_ids: Sequence[Hashable] | NDArray[Any],
        popularity: ArrayLike | None = None,
        *,
        popularity_weight: float = DEFAULT_POPULARITY_WEIGHT,
        profile: str = "knn",
        recent: int = DEFAULT_RECENT,
        top_m: int = DEFAULT_TOP_M,
        half_life: float = DEFAULT_HALF_LIFE,
        candidates: int = DEFAULT_CANDIDATES,
        show_progress: bool = False,
    ) -> None:
        # Settings first, so a bad one fails before the (slow) encoding.
        scorer = Scorer(popularity_weight, profile, recent, top_m, half_life)
        candidates = check_int(candidates, "candidates")
        catalog = ItemCatalog.encode(encoder, item_texts, item_ids, popularity, show_progress)
        self._setup(catalog, encoder, scorer, candidates)

    @classmethod
    def from_catalog(
        cls, catalog: ItemCatalog, encoder: TextEncoder | None = None, **settings: Any
    ) -> Recommender:
        """A Recommender over a catalog; ``encoder`` (of the catalog's model) is needed only
        for free ``texts`` and ``add_items``.

        Raises:
            ConfigError: an unknown or out-of-range setting.
            ModelMismatchError: the encoder is another model than the catalog's.
        """
        if not isinstance(catalog, ItemCatalog):
            raise InputTypeError(f"catalog must be an ItemCatalog, got {type(catalog).__name__}")
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are {SETTINGS}")
        candidates = check_int(settings.pop("candidates", DEFAULT_CANDIDATES), "candidates")
        self = cls.__new__(cls)
        self._setup(catalog, encoder, Scorer(**settings), candidates)
        return self

    @classmethod
    def from_vectors(
        cls,
        encoder: TextEncoder,
        vectors: ArrayLike,
        item_ids: Sequence[Hashable] | NDArray[Any],
        popularity: ArrayLike | None = None,
        **settings: Any,
    ) -> Recommender:
        """A Recommender over item vectors already encoded with ``encoder``.

        Raises:
            InputValueError: vectors do not match the encoder's dimension (and as the
                constructor).
        """
        catalog = ItemCatalog(
            vectors,
            item_ids,
            popularity,
            fingerprint=encoder.fingerprint,
            variant=str(getattr(encoder, "variant", "") or ""),
        )
        return cls.from_catalog(catalog, encoder, **settings)

    def _setup(
        self,
        catalog: ItemCatalog,
        encoder: TextEncoder | None,
        scorer: Scorer,
        candidates: int,
    ) -> None:
        if encoder is not None:
            catalog.check_encoder(encoder)
        self.catalog = catalog
        self.encoder = encoder
        self.scorer = scorer
        self.candidates = candidates
        self._prior = catalog.prior()

    # -- properties -----------------------------------------------------------------------

    @property
    def item_ids(self) -> NDArray[Any]:
        """Item ids, in catalog order."""
        return self.catalog.ids

    @property
    def vectors(self) -> NDArray[np.float32]:
        """Unit-norm item vectors, (n, dim) float32, read-only."""
        return self.catalog.vectors

    @property
    def popularity(self) -> NDArray[np.float64] | None:
        """Interaction counts per item, or None."""
        return self.catalog.popularity

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model that encoded the items."""
        return self.catalog.fingerprint

    def settings(self) -> dict[str, Any]:
        """The scoring settings, as constructor keywords."""
        return {**asdict(self.scorer), "candidates": self.candidates}

    def __len__(self) -> int:
        return len(self.catalog)

    def __repr__(self) -> str:
        return (
            f"Recommender(n={len(self)}, dim={self.catalog.dim}, "
            f"profile={self.scorer.profile!r}, popularity_weight={self.scorer.popularity_weight})"
        )

    # -- user histories ---------------------------------------------------------------------

    def history(
        self,
        history: Sequence[Hashable],
        weights: ArrayLike | None = None,
        texts: Sequence[str] | None = None,
        on_unknown: str = "error",
    ) -> History:
        """A user's history checked and ready to score (see ``recommend`` for the args).

        Raises:
            InputTypeError / InputValueError: bad ids, weights or texts; unknown ids unless
                ``on_unknown="skip"``; no usable entry and no popularity to fall back on.
            ConfigError: free texts without an encoder.
        """
        user = self._entries(history, weights, texts, on_unknown)
        if user.cold and self.catalog.popularity is None:
            raise InputValueError(
                "history is empty and this recommender has no popularity to fall back on; "
                "give a history or build the Recommender with popularity counts"
            )
        return user

    def _entries(
        self, history: object, weights: object, texts: object, on_unknown: str = "error"
    ) -> History:
        check_choice(on_unknown, "on_unknown", ON_UNKNOWN)
        ids = id_list(history, "history")
        w = _weights(weights, len(ids))
        if on_unknown == "skip":
            found = self.catalog.ranker.find(ids)
            rows, w = found[found >= 0], w[found >= 0]
        else:
            rows = self.catalog.rows_of(ids)
        vecs = self.catalog.vectors[rows]
        if texts is not None and (extra := text_list(texts, "texts")):
            if self.encoder is None:
                raise ConfigError(
                    "free texts need an encoder: build the Recommender with one "
                    "(Recommender.load(path, encoder=...))"
                )
            # Free texts count as the most recent entries, with the largest weight.
            vecs = np.concatenate([vecs, encode_texts(self.encoder, extra)])
            w = np.concatenate([w, np.full(len(extra), w.max() if len(w) else 1.0)])
        return History(rows=rows, vectors=np.asarray(vecs, np.float32), weights=w)

    def user_vector(
        self,
        history: Sequence[Hashable],
        weights: ArrayLike | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> NDArray[np.float32]:
        """One unit vector for a user: the recency-weighted mean of the history's vectors.

        Entry ``i`` of ``n`` (oldest first) counts ``weights[i] * 0.5 ** ((n - 1 - i) /
        half_life)``. Free ``texts`` are encoded and count as the latest entries.

        Raises:
            InputValueError: empty history (and no texts), unknown ids, weights that do
                not match, all-zero weights, or vectors that cancel out.
        """
        return self.scorer.user_vector(self._entries(history, weights, texts))

    # -- recommending ---------------------------------------------------------------------

    def recommend(
        self,
        history: Sequence[Hashable],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Hashable] | None = None,
        diversity: float = 0.0,
        *,
        weights: ArrayLike | None = None,
        texts: Sequence[str] | None = None,
        on_unknown: str = "error",
    ) -> list[tuple[Any, float]]:
        """The ``k`` best items for one user, best first, as ``(item_id, score)``.

        Args:
            history: item ids the user interacted with, oldest first (may be empty).
            k: items to return (fewer when the catalog, less exclusions, is smaller).
            exclude_seen: leave out the history's items.
            exclude: more ids to leave out; ids not in the catalog are ignored.
            diversity: weight in [0, 1] of diversity against relevance; 0 is the plain
                score order. Above 0, ``k`` of the ``candidates`` best items are picked by
                ``bertrec.rank.diverse_picks`` and listed in score order;
                ``bertrec.rank.SUGGESTED_DIVERSITY`` is the trade measured on MovieLens.
            weights: optional non-negative weight per history id (e.g. its rating); an
                entry of weight 0 is still seen (left out) but does not shape the scores,
                and all-zero weights fall back to popularity like an empty history.
            texts: optional free texts describing the user's taste (latest entries).
            on_unknown: ``"error"`` (default) or ``"skip"`` history ids not in the catalog.

        Raises:
            ConfigError: k not a positive int, diversity outside [0, 1].
            InputTypeError / InputValueError: unknown history ids, bad weights, empty
                history with no popularity to fall back on.
        """
        user = self.history(history, weights, texts, on_unknown)
        return self.rank(
            [user], k, exclude_seen, None if exclude is None else [exclude], diversity
        )[0]

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Hashable]],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[Hashable] | None] | None = None,
        diversity: float = 0.0,
        *,
        weights: Sequence[ArrayLike | None] | None = None,
        on_unknown: str = "error",
    ) -> list[list[tuple[Any, float]]]:
        """``recommend`` for many users at once: one list per history, in input order.

        Users are scored together, a chunk of users against a block of items per GEMM,
        which is faster than one ``recommend`` call per user (bench/recommend_batch.py).

        Args:
            histories: one history (item ids, oldest first) per user.
            exclude: None, or one collection of ids (or None) per user.
            weights: None, or one weights array (or None) per user.
            k / exclude_seen / diversity / on_unknown: as ``recommend``.

        Raises:
            InputValueError: ``exclude`` or ``weights`` not one per history (and as
                ``recommend``, naming the user's position).
        """
        users = id_list(histories, "histories")
        for name, value in (("exclude", exclude), ("weights", weights)):
            if value is not None and len(value) != len(users):
                raise InputValueError(
                    f"{name} has {len(value)} entries for {len(users)} histories; give one each"
                )
        prepared = []
        for i, h in enumerate(users):
            try:
                prepared.append(
                    self.history(h, None if weights is None else weights[i], None, on_unknown)  # type: ignore[arg-type]
                )
            except (InputTypeError, InputValueError) as exc:
                raise type(exc)(f"histories[{i}]: {exc}") from exc
        return self.rank(prepared, k, exclude_seen, exclude, diversity)

    def rank(
        self,
        users: Sequence[History],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[Hashable] | None] | None = None,
        diversity: float = 0.0,
    ) -> list[list[tuple[Any, float]]]:
        """Top-k lists for prepared histories (``history(...)``): the path every
        recommendation takes, one user or many."""
        k = check_int(k, "k")
        check_bool(exclude_seen, "exclude_seen")
        mmr = check_diversity(diversity) > 0
        width = min(len(self), max(k, self.candidates) if mmr else k)
        catalog = self.catalog
        out: list[list[tuple[Any, float]]] = []
        for chunk in user_chunks(users, self.scorer):
            group = users[chunk]
            excluded = []
            for j, u in enumerate(group):
                parts = [u.rows] if exclude_seen and len(u.rows) else []
                extra = None if exclude is None else exclude[chunk.start + j]
                if extra is not None:
                    parts.append(catalog.rows_of(id_list(extra, "exclude"), skip_unknown=True))
                excluded.append(np.unique(np.concatenate(parts)) if parts else None)
            score = self.scorer.block_scores(group, catalog.vectors, self._prior)
            # One block of similarities per scored entry stays about BLOCK_BYTES.
            block = block_rows_for(sum(max(1, self.scorer.entries(u)) for u in group))
            scores, rows = blocked_topk(score, len(catalog), len(group), width, excluded, block)
            for s, r in zip(scores, rows, strict=True):
                best = r[r >= 0]
                s = s[: len(best)]
                if mmr:
                    keep = diverse_picks(catalog.vectors[best], k, diversity)
                    best, s = best[keep], s[keep]
                out.append(list(zip(catalog.ids[best].tolist(), s.tolist(), strict=True)))
        return out

    # -- growing the catalog --------------------------------------------------------------

    def add_items(
        self,
        texts: Sequence[str],
        ids: Sequence[Hashable],
        popularity: ArrayLike | None = None,
    ) -> None:
        """Add items to the catalog; only the new texts are encoded.

        Raises:
            ConfigError: the recommender has no encoder.
            InputValueError: lengths differ, an id exists already or repeats, or
                popularity given to a recommender without it.
        """
        new_texts, new_ids = text_list(texts, "texts"), id_list(ids, "ids")
        if len(new_texts) != len(new_ids):
            raise InputValueError(f"got {len(new_texts)} texts and {len(new_ids)} ids")
        if not new_texts:
            return
        if self.encoder is None:
            raise ConfigError("add_items encodes texts: build the Recommender with an encoder")
        # Checks ids and popularity before encoding.
        self.catalog.with_items(np.ones((len(new_ids), self.catalog.dim)), new_ids, popularity)
        vectors = encode_texts(self.encoder, new_texts)
        catalog = self.catalog.with_items(vectors, new_ids, popularity)
        self._setup(catalog, self.encoder, self.scorer, self.candidates)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the catalog and the settings to a directory, atomically (``ItemCatalog.save``
        plus ``recommender.json``).

        Raises:
            OutputError: ``path`` exists and ``overwrite`` is False, or cannot be written.
            InputTypeError: an id is neither int nor str.
        """
        config = {"schema_version": SCHEMA_VERSION, "settings": self.settings()}
        return self.catalog.save(path, overwrite, extra={CONFIG_NAME: json_bytes(config)})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        encoder: TextEncoder | None = None,
        mmap: bool = True,
    ) -> Recommender:
        """Read a directory written by ``save``.

        Args:
            path: the saved directory.
            encoder: the encoder of the same model, for free texts and new items (checked by
                fingerprint); None for item-id histories only.
            mmap: memory-map the item vectors instead of reading them into memory.

        Raises:
            NotFoundError: the directory or a file in it is missing.
            FileFormatError: a file is malformed, of an unknown schema, or names an unknown
                setting.
            ModelMismatchError: the encoder is another model than the one saved with.
        """
        root = Path(path)
        config = read_json(root / CONFIG_NAME, "is this a saved Recommender?")
        if not isinstance(config, dict) or config.get("schema_version") != SCHEMA_VERSION:
            version = config.get("schema_version") if isinstance(config, dict) else None
            raise FileFormatError(
                f"{str(root / CONFIG_NAME)!r} has schema_version {version!r}; this bertrec reads "
                f"{SCHEMA_VERSION}: save the Recommender again with this version"
            )
        settings = config.get("settings")
        if not isinstance(settings, dict) or set(settings) - set(SETTINGS):
            raise FileFormatError(
                f"{str(root / CONFIG_NAME)!r} settings must be an object with keys from "
                f"{SETTINGS}, got {settings!r}; save the Recommender again"
            )
        catalog = ItemCatalog.load(root, mmap=mmap)
        try:
            return cls.from_catalog(catalog, encoder, **settings)
        except ConfigError as exc:
            raise FileFormatError(f"{str(root / CONFIG_NAME)!r}: {exc}") from exc


def _weights(weights: object, n: int) -> NDArray[np.float64]:
    if weights is None:
        return np.ones(n, dtype=np.float64)
    if isinstance(weights, (str, bytes, bytearray, dict)):
        raise InputTypeError("weights must be a list of numbers, one per history id")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"weights must be a list of numbers: {exc}") from exc
    if w.shape != (n,):
        raise InputValueError(f"weights has shape {w.shape} for {n} history ids; give one each")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputValueError("weights must be finite and >= 0")
    return w
