"""``Recommender``: content-based recommendations from item texts, blended with popularity.

Items are encoded once. A user's history scores every item by its similarity to the
user's most recent items (item-to-item, not one mean vector: measured better on
MovieLens, see bench/recsys_eval.py), plus a log-popularity prior.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import tempfile
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import (
    ConfigError,
    InputTypeError,
    InputValueError,
    ManifestError,
    ModelMismatchError,
    ModelNotFoundError,
    OutputExistsError,
    OutputNotWritableError,
)
from .ranker import CosineRanker, mmr_select, select_topk

SCHEMA_VERSION = 1
CONFIG_NAME = "recommender.json"
VECTORS_NAME = "vectors.npy"
IDS_NAME = "ids.json"
POPULARITY_NAME = "popularity.npy"
PROFILES = ("knn", "mean")

# Defaults measured with bench/recsys_eval.py on MovieLens ml-latest-small (all-MiniLM-L6-v2,
# last 10 liked ratings held out per user; the record lists the whole sweep):
# item-to-item over the 50 latest items, mean of the 2 best similarities, plus 1.0 x the
# log-popularity prior, gave NDCG@10 0.085 against 0.070 for popularity alone and 0.075
# for the best mean-vector profile.
DEFAULT_POPULARITY_WEIGHT = 1.0
DEFAULT_RECENT = 50
DEFAULT_TOP_M = 2
# Half-life, in items, of the recency decay of ``user_vector`` (the "mean" profile).
DEFAULT_HALF_LIFE = 10.0
# Diversity re-ranking (``recommend(diversity=...)``): MMR over the ``candidates`` best
# items with relevance ``rank ** -RANK_DECAY`` (the hit rate of a candidate rank falls as
# rank ** -0.56 on the MovieLens validation split, -0.51 on test, whatever the score gaps:
# bench/results/diversity-20261128T161725Z.json) and mean cosine as redundancy; the picked
# items are listed in score order. On the validation split SUGGESTED_DIVERSITY is the
# largest weight that loses <= 5% NDCG@10 (-4.3%, +20.2% intra-list diversity); on the
# test split it gives +18.1% diversity for -6.4% NDCG@10 (bench/results/recsys-*.json),
# where textbook MMR (max cosine, raw scores) gives +10.9% for -6.6% at 0.4 (diversity-*).
DEFAULT_CANDIDATES = 300
RANK_DECAY = 0.5
SUGGESTED_DIVERSITY = 0.7
# Catalog rows scored per block, so scoring a large catalog keeps memory bounded.
SCORE_BLOCK_ROWS = 65536


class TextEncoder(Protocol):
    """What a Recommender needs from an encoder (``bertrec.Encoder`` is one)."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _non_negative_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _texts(texts: object, name: str) -> list[str]:
    if texts is None or isinstance(texts, (str, bytes, bytearray)):
        raise InputTypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    items = list(texts)  # type: ignore[call-overload]
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputTypeError(f"{name}[{i}] is {type(t).__name__}, not str")
    return items


def _id_list(ids: object, name: str) -> list[Hashable]:
    if ids is None or isinstance(ids, (str, bytes, bytearray)):
        raise InputTypeError(f"{name} must be a list of item ids, got {type(ids).__name__}")
    if isinstance(ids, np.ndarray):
        return list(ids.tolist())
    try:
        return list(ids)  # type: ignore[call-overload]
    except TypeError as exc:
        raise InputTypeError(
            f"{name} must be a list of item ids, got {type(ids).__name__}"
        ) from exc


def _popularity(values: object, n: int, name: str = "popularity") -> NDArray[np.float64]:
    if isinstance(values, (str, bytes, bytearray)):
        raise InputTypeError(f"{name} must be a list of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputTypeError(f"{name} must be a list of numbers: {exc}") from exc
    if arr.shape != (n,):
        raise InputValueError(f"{name} has shape {arr.shape}; give one number per item ({n})")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise InputValueError(f"{name} must be finite and >= 0 (e.g. interaction counts)")
    return arr


def _prior(popularity: NDArray[np.float64] | None, n: int) -> NDArray[np.float32]:
    """log1p(count) / log1p(max count), in [0, 1]: counts span orders of magnitude and the
    log keeps the head from swamping the content score."""
    if popularity is None:
        return np.zeros(n, dtype=np.float32)
    top = np.log1p(popularity.max()) if len(popularity) else 0.0
    if top == 0:
        return np.zeros(n, dtype=np.float32)
    return (np.log1p(popularity) / top).astype(np.float32)


def _json_id(item: object) -> int | str:
    if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, str, np.integer)):
        raise InputTypeError(
            f"item id {item!r} ({type(item).__name__}) cannot be saved; save supports int and "
            "str ids"
        )
    return int(item) if isinstance(item, (int, np.integer)) else item


class Recommender:
    """Recommend catalog items for a user history of item ids (and/or free texts).

    Scoring (``profile="knn"``, the default): each item's content score is the mean of
    its ``top_m`` highest cosine similarities to the user's ``recent`` latest history
    entries (each similarity scaled by the entry's weight when weights are given). The
    window is the recency rule: only the latest entries count. ``profile="mean"`` scores
    by cosine to ``user_vector`` instead. Either way the final score is
    ``content + popularity_weight * log1p(count) / log1p(max count)``.

    An empty history falls back to the popularity prior alone (a cold-start user gets
    the most popular items); without popularity that is an error. Ids in a history that
    are not in the catalog are an error (``InputValueError`` naming them): a history is
    usually built from the same catalog, so an unknown id means a mismatch to fix.

    Args:
        encoder: a ``bertrec.Encoder`` (or anything with ``encode``, ``dim``, ``fingerprint``).
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
        texts = _texts(item_texts, "item_texts")
        ids = _id_list(item_ids, "item_ids")
        if len(texts) != len(ids):
            raise InputValueError(
                f"got {len(texts)} item_texts and {len(ids)} item_ids; give one id per text"
            )
        if not texts:
            raise InputValueError("the catalog is empty; give at least one item")
        self._configure(popularity_weight, profile, recent, top_m, half_life, candidates)
        # Check ids and popularity before the (slow) encoding, so bad input fails fast.
        CosineRanker(np.ones((len(ids), 1), dtype=np.float32), ids)
        pop = None if popularity is None else _popularity(popularity, len(ids))
        vectors = _encode(encoder, texts, show_progress)
        self._init(encoder, vectors, ids, pop)

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

        Args:
            encoder: the encoder that made ``vectors`` (used for free texts and new items).
            vectors: (n, dim) item vectors.
            item_ids / popularity / settings: as for the constructor.

        Raises:
            InputValueError: vectors do not match the encoder's dimension (and as the
                constructor).
        """
        self = cls.__new__(cls)
        self._configure(**settings)
        ids = _id_list(item_ids, "item_ids")
        pop = None if popularity is None else _popularity(popularity, len(ids))
        self._init(encoder, vectors, ids, pop)
        return self

    def _configure(
        self,
        popularity_weight: float = DEFAULT_POPULARITY_WEIGHT,
        profile: str = "knn",
        recent: int = DEFAULT_RECENT,
        top_m: int = DEFAULT_TOP_M,
        half_life: float = DEFAULT_HALF_LIFE,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> None:
        if profile not in PROFILES:
            raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
        self.popularity_weight = _non_negative_float(popularity_weight, "popularity_weight")
        self.profile = profile
        self.recent = _positive_int(recent, "recent")
        self.top_m = _positive_int(top_m, "top_m")
        self.half_life = _non_negative_float(half_life, "half_life")
        if self.half_life == 0:
            raise ConfigError("half_life must be > 0 (in history entries)")
        self.candidates = _positive_int(candidates, "candidates")

    def _init(
        self,
        encoder: TextEncoder,
        vectors: ArrayLike,
        ids: list[Hashable],
        popularity: NDArray[np.float64] | None,
    ) -> None:
        self.encoder = encoder
        self._ranker = CosineRanker(vectors, ids)
        if self._ranker.dim != encoder.dim:
            raise InputValueError(
                f"item vectors have dimension {self._ranker.dim}, the encoder {encoder.dim}; "
                "they must come from the same model"
            )
        self._popularity = popularity
        self._prior = _prior(popularity, len(ids))

    # -- properties -----------------------------------------------------------------------

    @property
    def item_ids(self) -> NDArray[Any]:
        """Item ids, in catalog order."""
        return self._ranker.ids

    @property
    def vectors(self) -> NDArray[np.float32]:
        """Unit-norm item vectors, (n, dim) float32, read-only."""
        return self._ranker.vectors

    @property
    def popularity(self) -> NDArray[np.float64] | None:
        """Interaction counts per item, or None."""
        return None if self._popularity is None else self._popularity.copy()

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the model that encoded the items."""
        return str(self.encoder.fingerprint)

    def __len__(self) -> int:
        return len(self._ranker)

    def __repr__(self) -> str:
        return (
            f"Recommender(n={len(self)}, dim={self._ranker.dim}, profile={self.profile!r}, "
            f"popularity_weight={self.popularity_weight})"
        )

    # -- user profiles ----------------------------------------------------------------------

    def _history(
        self, history: object, weights: object, texts: object
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float64]]:
        """(catalog rows of the id entries, vectors of all entries oldest first, weights)."""
        ids = _id_list(history, "history")
        rows = self._ranker.rows_of(ids)
        extra = [] if texts is None else _texts(texts, "texts")
        if weights is None:
            w = np.ones(len(ids), dtype=np.float64)
        else:
            if isinstance(weights, (str, bytes, bytearray)):
                raise InputTypeError("weights must be a list of numbers, one per history id")
            try:
                w = np.asarray(weights, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InputTypeError(f"weights must be a list of numbers: {exc}") from exc
            if w.shape != (len(ids),):
                raise InputValueError(
                    f"weights has shape {w.shape} for {len(ids)} history ids; give one each"
                )
            if not np.isfinite(w).all() or (w < 0).any():
                raise InputValueError("weights must be finite and >= 0")
        vecs = self._ranker.vectors[rows]
        if extra:
            # Free texts count as the most recent entries, with the largest weight.
            text_vecs = _encode(self.encoder, extra, False)
            vecs = np.concatenate([vecs, text_vecs])
            w = np.concatenate([w, np.full(len(extra), w.max() if len(w) else 1.0)])
        return rows, vecs, w

    def user_vector(
        self,
        history: Sequence[Hashable],
        weights: ArrayLike | None = None,
        *,
        texts: Sequence[str] | None = None,
    ) -> NDArray[np.float32]:
        """One unit vector for a user: the weighted mean of the history's item vectors.

        Entry ``i`` of ``n`` (oldest first) counts ``weights[i] * 0.5 ** ((n - 1 - i) /
        half_life)``: the latest entry counts fully, one ``half_life`` entries older counts
        half. Free ``texts`` are encoded and count as the latest entries.

        Args:
            history: item ids, oldest first.
            weights: optional non-negative weight per id (e.g. a rating); None means 1.
            texts: optional free texts describing the user's taste.

        Raises:
            InputValueError: empty history (and no texts), unknown ids, weights that do
                not match, or weights that are all zero.
        """
        _, vecs, w = self._history(history, weights, texts)
        if len(vecs) == 0:
            raise InputValueError("history is empty; a user vector needs at least one item")
        age = np.arange(len(vecs))[::-1]
        w = w * 0.5 ** (age / self.half_life)
        u = (w[:, None] * vecs.astype(np.float64)).sum(axis=0)
        norm = np.linalg.norm(u)
        if norm == 0:
            raise InputValueError("the history's weights are all zero (or its vectors cancel)")
        return (u / norm).astype(np.float32)

    def _scores(self, vecs: NDArray[np.float32], w: NDArray[np.float64]) -> NDArray[np.float32]:
        """Hybrid score of every catalog item for one history."""
        if len(vecs) == 0 or not w.any():
            # Cold start: the popularity order, whatever popularity_weight is.
            return self._prior.copy()
        prior = self.popularity_weight * self._prior
        if self.profile == "mean":
            age = np.arange(len(vecs))[::-1]
            u = ((w * 0.5 ** (age / self.half_life))[:, None] * vecs).sum(axis=0)
            u = (u / np.linalg.norm(u)).astype(np.float32)
            return self._ranker.vectors @ u + prior
        keep = w > 0
        vecs, w = vecs[keep][-self.recent :], w[keep][-self.recent :]
        scale = (w / w.max()).astype(np.float32)
        m = min(self.top_m, len(vecs))
        out = np.empty(len(self), dtype=np.float32)
        catalog = self._ranker.vectors
        for start in range(0, len(self), SCORE_BLOCK_ROWS):
            sims = vecs @ catalog[start : start + SCORE_BLOCK_ROWS].T
            if not np.all(scale == 1):
                sims *= scale[:, None]
            if m < len(vecs):
                sims = np.partition(sims, len(vecs) - m, axis=0)[len(vecs) - m :]
            out[start : start + sims.shape[1]] = sims.mean(axis=0)
        return out + prior

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
    ) -> list[tuple[Any, float]]:
        """The ``k`` best items for one user, best first, as ``(item_id, score)``.

        Args:
            history: item ids the user interacted with, oldest first (may be empty).
            k: items to return (fewer when the catalog, less exclusions, is smaller).
            exclude_seen: leave out the history's items.
            exclude: more ids to leave out; ids not in the catalog are ignored.
            diversity: weight in [0, 1] of diversity against relevance; 0 is the plain
                score order. Above 0, ``k`` of the ``candidates`` best items are picked by
                MMR on rank (``diverse_picks``) and listed in score order;
                ``SUGGESTED_DIVERSITY`` (0.7) is the trade measured on MovieLens.
            weights: optional non-negative weight per history id (e.g. its rating); an
                entry of weight 0 is still seen (left out) but does not shape the scores,
                and all-zero weights fall back to popularity like an empty history.
            texts: optional free texts describing the user's taste (latest entries).

        Raises:
            ConfigError: k not a positive int, diversity outside [0, 1].
            InputTypeError / InputValueError: unknown history ids, bad weights, empty
                history with no popularity to fall back on.
        """
        k = _positive_int(k, "k")
        rows, vecs, w = self._history(history, weights, texts)
        if (len(vecs) == 0 or not w.any()) and self._popularity is None:
            raise InputValueError(
                "history is empty and this recommender has no popularity to fall back on; "
                "give a history or build the Recommender with popularity counts"
            )
        scores = self._scores(vecs, w)
        if exclude_seen and len(rows):
            scores[rows] = -np.inf
        if exclude is not None:
            scores[self._ranker.rows_of(_id_list(exclude, "exclude"), skip_unknown=True)] = -np.inf
        mmr = _check_diversity(diversity) > 0
        best = select_topk(scores, max(k, self.candidates) if mmr else k)
        if mmr:
            best = best[diverse_picks(self._ranker.vectors[best], k, diversity)]
        ids = self._ranker.ids[best].tolist()
        return list(zip(ids, scores[best].tolist(), strict=True))

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Hashable]],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[Hashable] | None] | None = None,
        diversity: float = 0.0,
        *,
        weights: Sequence[ArrayLike | None] | None = None,
    ) -> list[list[tuple[Any, float]]]:
        """``recommend`` for many users: one list per history, in input order.

        Args:
            histories: one history (item ids, oldest first) per user.
            exclude: None, or one collection of ids (or None) per user.
            weights: None, or one weights array (or None) per user.
            k / exclude_seen / diversity: as ``recommend``.

        Raises:
            InputValueError: ``exclude`` or ``weights`` not one per history (and as
                ``recommend``, naming the user's position).
        """
        users = _id_list(histories, "histories")
        per_user = {"exclude": exclude, "weights": weights}
        for name, value in per_user.items():
            if value is not None and len(value) != len(users):
                raise InputValueError(
                    f"{name} has {len(value)} entries for {len(users)} histories; give one each"
                )
        out = []
        for i, history in enumerate(users):
            try:
                out.append(
                    self.recommend(
                        history,  # type: ignore[arg-type]
                        k=k,
                        exclude_seen=exclude_seen,
                        exclude=None if exclude is None else exclude[i],
                        diversity=diversity,
                        weights=None if weights is None else weights[i],
                    )
                )
            except (InputTypeError, InputValueError) as exc:
                raise type(exc)(f"histories[{i}]: {exc}") from exc
        return out

    # -- growing the catalog --------------------------------------------------------------

    def add_items(
        self,
        texts: Sequence[str],
        ids: Sequence[Hashable],
        popularity: ArrayLike | None = None,
    ) -> None:
        """Add items to the catalog; only the new texts are encoded.

        Args:
            texts: one text per new item.
            ids: new, distinct ids (none already in the catalog).
            popularity: counts of the new items; None means 0 each. Only allowed when
                the recommender has popularity.

        Raises:
            InputValueError: lengths differ, an id exists already or repeats, or
                popularity given to a recommender without it.
        """
        new_texts = _texts(texts, "texts")
        new_ids = _id_list(ids, "ids")
        if len(new_texts) != len(new_ids):
            raise InputValueError(f"got {len(new_texts)} texts and {len(new_ids)} ids")
        if not new_texts:
            return
        known = self._ranker.rows_of(new_ids, skip_unknown=True)
        if len(known):
            clash = self._ranker.ids[known[:5]].tolist()
            raise InputValueError(f"{len(known)} id(s) already in the catalog: {clash}")
        if popularity is not None and self._popularity is None:
            raise InputValueError(
                "this recommender has no popularity; build it with popularity counts first"
            )
        pop = None
        if self._popularity is not None:
            extra = (
                np.zeros(len(new_ids))
                if popularity is None
                else _popularity(popularity, len(new_ids))
            )
            pop = np.concatenate([self._popularity, extra])
        # Checks the new ids for repeats before encoding.
        CosineRanker(np.ones((len(new_ids), 1), dtype=np.float32), new_ids)
        new_vecs = _encode(self.encoder, new_texts, False)
        all_ids = self._ranker.ids.tolist() + new_ids
        self._init(self.encoder, np.concatenate([self._ranker.vectors, new_vecs]), all_ids, pop)

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the recommender to a directory, atomically.

        The directory holds ``vectors.npy`` (unit-norm float32, memory-mappable),
        ``ids.json``, ``popularity.npy`` (when there is popularity) and
        ``recommender.json`` (settings and the encoder's fingerprint). It is written
        under a temporary name beside ``path`` and renamed into place, so ``path`` is
        either the old or the complete new directory.

        Raises:
            OutputExistsError: ``path`` exists and ``overwrite`` is False.
            OutputNotWritableError: the parent cannot be written.
            InputTypeError: an id is neither int nor str.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{str(target)!r} exists; pass overwrite=True to replace it")
        ids = [_json_id(i) for i in self._ranker.ids.tolist()]
        config = {
            "schema_version": SCHEMA_VERSION,
            "fingerprint": self.fingerprint,
            "dim": self._ranker.dim,
            "n_items": len(self),
            "has_popularity": self._popularity is not None,
            "settings": self.settings(),
        }
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        except OSError as exc:
            raise OutputNotWritableError(f"cannot write beside {str(target)!r}: {exc}") from exc
        try:
            np.save(tmp / VECTORS_NAME, np.ascontiguousarray(self._ranker.vectors))
            (tmp / IDS_NAME).write_text(json.dumps(ids), encoding="utf-8")
            if self._popularity is not None:
                np.save(tmp / POPULARITY_NAME, self._popularity)
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=1), encoding="utf-8")
            _replace_dir(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OutputNotWritableError(f"cannot save to {str(target)!r}: {exc}") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def settings(self) -> dict[str, Any]:
        """The scoring settings, as constructor keywords."""
        return {
            "popularity_weight": self.popularity_weight,
            "profile": self.profile,
            "recent": self.recent,
            "top_m": self.top_m,
            "half_life": self.half_life,
            "candidates": self.candidates,
        }

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], encoder: TextEncoder, mmap: bool = True
    ) -> Recommender:
        """Read a directory written by ``save``.

        Args:
            path: the saved directory.
            encoder: the encoder of the same model (checked by fingerprint).
            mmap: memory-map the item vectors instead of reading them into memory.

        Raises:
            ModelNotFoundError: the directory or a file in it is missing.
            ManifestError: ``recommender.json`` is unreadable or of an unknown schema.
            ModelMismatchError: the encoder is another model than the one saved with.
        """
        root = Path(path)
        config_path = root / CONFIG_NAME
        if not config_path.is_file():
            raise ModelNotFoundError(
                f"{str(config_path)!r} not found; is this a saved Recommender?"
            )
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
            version = config["schema_version"]
            fingerprint = config["fingerprint"]
            settings = config["settings"]
            has_pop = bool(config["has_popularity"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"{str(config_path)!r} is unreadable: {exc!r}") from exc
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"{str(config_path)!r} has schema_version {version!r}; this bertrec reads "
                f"{SCHEMA_VERSION}"
            )
        if fingerprint != encoder.fingerprint:
            raise ModelMismatchError(
                f"{str(root)!r} was encoded with model {fingerprint[:12]}..., the encoder "
                f"given is {str(encoder.fingerprint)[:12]}...; load it with the same model or "
                "rebuild the Recommender with this one"
            )
        for name in (VECTORS_NAME, IDS_NAME) + ((POPULARITY_NAME,) if has_pop else ()):
            if not (root / name).is_file():
                raise ModelNotFoundError(f"{str(root / name)!r} is missing; save it again")
        vectors = np.load(root / VECTORS_NAME, mmap_mode="r" if mmap else None)
        try:
            ids = json.loads((root / IDS_NAME).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ManifestError(f"{str(root / IDS_NAME)!r} is not valid JSON: {exc}") from exc
        pop = np.load(root / POPULARITY_NAME) if has_pop else None
        return cls.from_vectors(encoder, vectors, ids, pop, **settings)


def diverse_picks(
    vectors: ArrayLike, k: int, diversity: float, rank_decay: float = RANK_DECAY
) -> NDArray[np.intp]:
    """Which ``k`` of a best-first candidate list to show, in their list order.

    MMR (``mmr_select`` with mean-cosine redundancy) on relevance ``rank ** -rank_decay``
    instead of the raw scores: what a rank is worth is measured in hits, which fall with
    rank the same way whatever the score gaps of a user. The picks are returned sorted, so
    the shown list keeps the candidates' score order (the most relevant first) and only
    its membership changes.

    Args:
        vectors: (p, dim) unit-norm vectors of the candidates, best first.
        k: items to pick.
        diversity: weight in [0, 1] of novelty against relevance.
        rank_decay: exponent of the rank relevance (>= 0; 0 ignores rank).

    Raises:
        ConfigError: k <= 0, diversity outside [0, 1], rank_decay negative or not finite.
        InputTypeError / InputValueError: vectors not a finite (p, dim) number array.
    """
    if (
        isinstance(rank_decay, bool)
        or not isinstance(rank_decay, (int, float, np.floating))
        or not math.isfinite(rank_decay)
        or rank_decay < 0
    ):
        raise ConfigError(f"rank_decay must be a finite float >= 0, got {rank_decay!r}")
    vecs = np.asarray(vectors)  # mmr_select checks the values
    p = vecs.shape[0] if vecs.ndim else 0
    relevance = np.arange(1, p + 1, dtype=np.float64) ** -float(rank_decay)
    return np.sort(mmr_select(relevance, vecs, k, diversity, redundancy="mean"))


def _check_diversity(diversity: object) -> float:
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float, np.floating)):
        raise ConfigError(f"diversity must be a float in [0, 1], got {diversity!r}")
    if not 0.0 <= float(diversity) <= 1.0:
        raise ConfigError(f"diversity must be in [0, 1], got {diversity}")
    return float(diversity)


def _encode(encoder: TextEncoder, texts: list[str], show_progress: bool) -> NDArray[np.float32]:
    # Only bertrec.Encoder-like encoders take show_progress; the protocol does not need it.
    takes_progress = "show_progress" in inspect.signature(encoder.encode).parameters
    if show_progress and takes_progress:
        out = encoder.encode(texts, show_progress=True)  # type: ignore[call-arg]
    else:
        out = encoder.encode(texts)
    arr = np.asarray(out, dtype=np.float32)
    if arr.shape != (len(texts), encoder.dim):
        raise InputValueError(
            f"the encoder returned shape {arr.shape} for {len(texts)} texts; expected "
            f"({len(texts)}, {encoder.dim})"
        )
    return arr


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing ``target`` is set aside first and removed
    after, so a failure leaves the old directory in place."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
