"""``Recommender``: an ``ItemCatalog``, a history ``Scorer``, optionally a collaborative
model fitted on interactions (the hybrid), and, for free texts and new items, an encoder.

A user's history scores every item by its similarity to the user's most recent items
(item-to-item, not one mean vector: measured better on MovieLens, see
bench/recsys_eval.py), plus a log-popularity prior, plus, given interactions, the
collaborative model's score (``scorer.py`` has the formula). One user or many go through
the same blocked top-k (``bertrec.rank.blocked_topk``).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bertrec.core import check_bool, check_int
from bertrec.errors import ConfigError, FileFormatError, InputTypeError, InputValueError
from bertrec.rank.mmr import DEFAULT_CANDIDATES, check_diversity, diverse_picks
from bertrec.rank.topk import block_rows_for, blocked_topk
from bertrec.recommend import collab as cf
from bertrec.recommend import store
from bertrec.recommend.catalog import (
    ItemCatalog,
    TextEncoder,
    encode_texts,
    id_list,
    text_list,
)
from bertrec.recommend.explain import Explanation
from bertrec.recommend.explain import explain as explain_items
from bertrec.recommend.interactions import parse_interactions
from bertrec.recommend.scorer import (
    DEFAULT_CF_WARMUP,
    DEFAULT_CF_WEIGHT,
    DEFAULT_COLD_WEIGHT,
    DEFAULT_HALF_LIFE,
    DEFAULT_TOP_M,
    History,
    Scorer,
    make_history,
    resolve_scorer,
    user_chunks,
)
from bertrec.recommend.scorer import ON_UNKNOWN as ON_UNKNOWN  # bertrec.jobs imports it here

SETTINGS = (
    "popularity_weight",
    "profile",
    "recent",
    "top_m",
    "half_life",
    "cf_weight",
    "cold_weight",
    "cf_warmup",
    "content_min_weight",
    "candidates",
)


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

    Hybrid: given ``interactions``, a collaborative model (``CollabSettings``: EASE up to
    20,000 items with interactions, ALS beyond) is fitted on them and blended in (the
    formula is in ``bertrec.recommend.scorer``); popularity is then counted from them
    unless given. Items with no interactions get a collaborative score predicted from
    their text, so ``add_items`` makes new items recommendable with no refit. Without
    interactions the Recommender is content and popularity only, as before.

    Args:
        encoder: a ``bertrec.Encoder`` (anything with ``encode``, ``dim``, ``fingerprint``).
        item_texts: one text per item.
        item_ids: one distinct hashable id per item (int or str to be saved).
        popularity: non-negative interaction counts per item, or None (no prior, or
            counted from ``interactions``).
        interactions: None, an iterable of ``(user_id, item_id)`` or ``(user_id, item_id,
            weight)`` (e.g. a rating), or a pandas / pyarrow table with columns
            ``user_id``, ``item_id`` and optionally ``weight``. A pair given twice counts
            once with the summed weight; zero weights are dropped; an empty set gives a
            content-only Recommender with a warning.
        collab: how the collaborative model is fitted (``CollabSettings`` or its keywords).
        on_unknown: ``"error"`` (default) or ``"skip"`` interactions naming unknown items.
        popularity_weight: weight of the log-popularity prior (None: 1.0, or the hybrid's
            default with interactions).
        profile: ``"knn"`` (item-to-item) or ``"mean"`` (one user vector).
        recent: history entries that count, the latest ones (None: the mode's default).
        top_m: similarities averaged per item in the knn profile.
        half_life: recency half-life of ``user_vector``, in history entries.
        cf_weight / cold_weight / cf_warmup: the hybrid blend (``scorer.py``).
        content_min_weight: history entries weighted below it do not shape the content
            score (with ratings as weights, 4.0 lets only liked items; the collaborative
            part takes every entry).
        candidates: pool re-ranked when ``diversity > 0``.
        show_progress: show a progress bar while encoding the catalog.

    Raises:
        ConfigError: a setting out of range.
        InputTypeError / InputValueError: texts, ids, popularity or interactions unusable
            (lengths differ, duplicate ids, non-string texts, negative counts or weights,
            unknown items in interactions).
        ProviderError: interactions given without the ``cf`` extra (scipy; implicit for ALS).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        item_texts: Sequence[str],
        item_ids: Sequence[Hashable] | NDArray[Any],
        popularity: ArrayLike | None = None,
        *,
        interactions: object = None,
        collab: cf.CollabSettings | dict[str, Any] | None = None,
        on_unknown: str = "error",
        popularity_weight: float | None = None,
        profile: str = "knn",
        recent: int | None = None,
        top_m: int = DEFAULT_TOP_M,
        half_life: float = DEFAULT_HALF_LIFE,
        cf_weight: float = DEFAULT_CF_WEIGHT,
        cold_weight: float = DEFAULT_COLD_WEIGHT,
        cf_warmup: float = DEFAULT_CF_WARMUP,
        content_min_weight: float = 0.0,
        candidates: int = DEFAULT_CANDIDATES,
        show_progress: bool = False,
    ) -> None:
        # Settings and interactions first, so a bad one fails before the (slow) encoding.
        settings = {
            "popularity_weight": popularity_weight,
            "profile": profile,
            "recent": recent,
            "top_m": top_m,
            "half_life": half_life,
            "cf_weight": cf_weight,
            "cold_weight": cold_weight,
            "cf_warmup": cf_warmup,
            "content_min_weight": content_min_weight,
        }
        fit = cf.settings_of(collab)
        candidates = check_int(candidates, "candidates")
        keys = id_list(item_ids, "item_ids")
        probe = ItemCatalog(np.ones((len(keys), 1)), keys) if keys else None
        found = None if probe is None or interactions is None else (
            parse_interactions(interactions, probe, on_unknown)
        )  # fmt: skip
        scorer = resolve_scorer(settings, found is not None)
        if popularity is None and found is not None:
            popularity = found.counts()
        catalog = ItemCatalog.encode(encoder, item_texts, keys, popularity, show_progress)
        model = None if found is None else cf.fit(found, catalog.vectors, fit)
        self._setup(catalog, encoder, scorer, candidates, model)

    @classmethod
    def from_catalog(
        cls,
        catalog: ItemCatalog,
        encoder: TextEncoder | None = None,
        interactions: object = None,
        *,
        collab: cf.CollabSettings | dict[str, Any] | None = None,
        on_unknown: str = "error",
        **settings: Any,
    ) -> Recommender:
        """A Recommender over a catalog; ``encoder`` (of the catalog's model) is needed only
        for free ``texts`` and ``add_items``. ``interactions`` (and ``collab``,
        ``on_unknown``) make it a hybrid, as in the constructor; a catalog without
        popularity then gets the interaction counts.

        Raises:
            ConfigError: an unknown or out-of-range setting.
            ModelMismatchError: the encoder is another model than the catalog's.
            InputTypeError / InputValueError / ProviderError: as the constructor.
        """
        if not isinstance(catalog, ItemCatalog):
            raise InputTypeError(f"catalog must be an ItemCatalog, got {type(catalog).__name__}")
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are {SETTINGS}")
        candidates = check_int(settings.pop("candidates", DEFAULT_CANDIDATES), "candidates")
        fit = cf.settings_of(collab)
        found = None
        if interactions is not None:
            found = parse_interactions(interactions, catalog, on_unknown)
        scorer = resolve_scorer(settings, found is not None)
        model = None
        if found is not None:
            if catalog.popularity is None:
                catalog = catalog.with_popularity(found.counts())
            model = cf.fit(found, catalog.vectors, fit)
        self = cls.__new__(cls)
        self._setup(catalog, encoder, scorer, candidates, model)
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
        model: cf.CollabModel | None = None,
    ) -> None:
        if encoder is not None:
            catalog.check_encoder(encoder)
        self.catalog = catalog
        self.encoder = encoder
        self.scorer = scorer
        self.candidates = candidates
        self.model = model
        self._prior = catalog.prior()

    def replace(self, **settings: Any) -> Recommender:
        """This Recommender with other scoring settings (``settings()`` keys), sharing its
        catalog, encoder and fitted collaborative model (no refit).

        Raises:
            ConfigError: an unknown or out-of-range setting.
        """
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown}; the settings are {SETTINGS}")
        candidates = check_int(settings.pop("candidates", self.candidates), "candidates")
        out = type(self).__new__(type(self))
        out._setup(self.catalog, None, replace(self.scorer, **settings), candidates, self.model)
        out.encoder = self.encoder
        return out

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
        model = "" if self.model is None else f", collab={self.model.kind!r}"
        return (
            f"Recommender(n={len(self)}, dim={self.catalog.dim}, "
            f"profile={self.scorer.profile!r}, popularity_weight={self.scorer.popularity_weight}"
            f"{model})"
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
        return make_history(self.catalog, self.encoder, history, weights, texts, on_unknown)

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

    @overload
    def recommend(
        self,
        history: Sequence[Hashable],
        k: int = ...,
        exclude_seen: bool = ...,
        exclude: Sequence[Hashable] | None = ...,
        diversity: float = ...,
        *,
        weights: ArrayLike | None = ...,
        texts: Sequence[str] | None = ...,
        on_unknown: str = ...,
        explain: Literal[False] = ...,
    ) -> list[tuple[Any, float]]: ...

    @overload
    def recommend(
        self,
        history: Sequence[Hashable],
        k: int = ...,
        exclude_seen: bool = ...,
        exclude: Sequence[Hashable] | None = ...,
        diversity: float = ...,
        *,
        weights: ArrayLike | None = ...,
        texts: Sequence[str] | None = ...,
        on_unknown: str = ...,
        explain: Literal[True],
    ) -> list[Explanation]: ...

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
        explain: bool = False,
    ) -> list[tuple[Any, float]] | list[Explanation]:
        """The ``k`` best items for one user, best first, as ``(item_id, score)``; with
        ``explain=True`` as ``Explanation`` objects instead (``item``, ``score``, ``prior``
        and ``contributions``: the history items or texts behind the score, each with
        ``via`` "content" or "collaborative" and its ``share``; the shares add up to
        ``score - prior``).

        Args:
            history: item ids the user interacted with, oldest first (may be empty).
            k: items to return (fewer when the catalog, less exclusions, is smaller).
            exclude_seen: leave out the history's items.
            exclude: more ids to leave out; ids not in the catalog are ignored.
            diversity: weight in [0, 1] of diversity against relevance; 0 is the plain
                score order. Above 0, ``k`` of the ``candidates`` best items are picked by
                ``bertrec.rank.diverse_picks`` and listed in score order;
                ``bertrec.rank.SUGGESTED_DIVERSITY`` is the trade measured on MovieLens
                (``SUGGESTED_HYBRID_DIVERSITY`` with interactions).
            weights: optional non-negative weight per history id (e.g. its rating); an
                entry of weight 0 is still seen (left out) but does not shape the scores,
                and all-zero weights fall back to popularity like an empty history.
                For a hybrid they weigh the collaborative part too, on the scale of the
                interactions' weights (None: each entry an average interaction).
            texts: optional free texts describing the user's taste (latest entries).
            on_unknown: ``"error"`` (default) or ``"skip"`` history ids not in the catalog.
            explain: return ``Explanation`` objects (see above) instead of tuples.

        Raises:
            ConfigError: k not a positive int, diversity outside [0, 1].
            InputTypeError / InputValueError: unknown history ids, bad weights, empty
                history with no popularity to fall back on.
        """
        check_bool(explain, "explain")
        user = self.history(history, weights, texts, on_unknown)
        found = self.rank(
            [user], k, exclude_seen, None if exclude is None else [exclude], diversity
        )
        if not explain:
            return found[0]
        items = found[0]
        rows = self.catalog.rows_of([i for i, _ in items])
        sources = self.catalog.ids[user.rows].tolist() + (
            text_list(texts, "texts") if texts is not None else []
        )
        scorer = self._collab_users([user])
        return explain_items(
            self.scorer, user, sources, items, rows, self.vectors, self._prior, scorer
        )

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
            collab = self._collab_users(group)
            score = self.scorer.block_scores(group, catalog.vectors, self._prior, collab)
            # The largest GEMM of a block (one group of users) stays about BLOCK_BYTES.
            block = block_rows_for(max(len(group), self.scorer.peak_entries(group)))
            scores, rows = blocked_topk(score, len(catalog), len(group), width, excluded, block)
            for s, r in zip(scores, rows, strict=True):
                best = r[r >= 0]
                s = s[: len(best)]
                if mmr:
                    keep = diverse_picks(catalog.vectors[best], k, diversity)
                    best, s = best[keep], s[keep]
                out.append(list(zip(catalog.ids[best].tolist(), s.tolist(), strict=True)))
        return out

    def _collab_users(self, users: Sequence[History]) -> cf.UserScorer | None:
        if self.model is None:
            return None
        entries = [(u.rows, u.weights[: len(u.rows)]) for u in users]
        return self.model.users(entries, self.catalog.vectors)

    # -- growing the catalog --------------------------------------------------------------

    def add_items(
        self,
        texts: Sequence[str],
        ids: Sequence[Hashable],
        popularity: ArrayLike | None = None,
    ) -> None:
        """Add items to the catalog; only the new texts are encoded. In a hybrid they are
        cold items: their collaborative score is predicted from their text at once, with
        no refit.

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
        model = (
            None if self.model is None else self.model.with_rows(catalog.vectors[-len(new_ids) :])
        )
        self._setup(catalog, self.encoder, self.scorer, self.candidates, model)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the catalog and the settings to a directory, atomically (``ItemCatalog.save``
        plus ``recommender.json``); a hybrid's fitted model goes next to them as
        ``cf_<model>_<name>.npy`` files (EASE: ``warm``, ``b``, ``r``; ALS: ``warm``,
        ``y``, ``gram``, ``w``), listed under ``collab`` in ``recommender.json``.

        Raises:
            OutputError: ``path`` exists and ``overwrite`` is False, or cannot be written.
            InputTypeError: an id is neither int nor str.
        """
        return store.save(self.catalog, self.settings(), self.model, path, overwrite)

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
            mmap: memory-map the item vectors (and a hybrid's model) instead of reading them.

        Raises:
            NotFoundError: the directory or a file in it is missing.
            FileFormatError: a file is malformed, of an unknown schema, or names an unknown
                setting.
            ModelMismatchError: the encoder is another model than the one saved with.
        """
        root = Path(path)
        settings, collab = store.read_config(root, SETTINGS)
        catalog = ItemCatalog.load(root, mmap=mmap)
        try:
            self = cls.from_catalog(catalog, encoder, **settings)
        except ConfigError as exc:
            raise FileFormatError(f"{str(root / store.CONFIG_NAME)!r}: {exc}") from exc
        if collab is not None:
            model = store.load_model(root, collab, len(catalog), catalog.dim, mmap)
            self._setup(catalog, encoder, self.scorer, self.candidates, model)
        return self
