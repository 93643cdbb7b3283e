"""``ItemCatalog``: the items a recommender ranks, as ids, unit vectors and popularity, with
the identity of the model (and precision variant) that made the vectors.

A catalog is saved as a self-describing directory and loads without an encoder, memory
mapped, so a batch job or a server replica opens it in milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bertrec.core import (
    atomic_write_bytes,
    json_bytes,
    output_error,
    replace_dir,
    temp_dir_beside,
)
from bertrec.errors import (
    FileFormatError,
    InputTypeError,
    InputValueError,
    ModelMismatchError,
    NotFoundError,
    OutputError,
)
from bertrec.rank.topk import CosineRanker

log = logging.getLogger("bertrec.recommend")

SCHEMA_VERSION = 1
CATALOG_NAME = "catalog.json"
VECTORS_NAME = "vectors.npy"
IDS_NAME = "ids.json"
POPULARITY_NAME = "popularity.npy"


class TextEncoder(Protocol):
    """What a catalog or recommender needs from an encoder (``bertrec.Encoder`` is one)."""

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


def encoder_variant(encoder: object) -> str:
    """The precision variant an encoder runs (``Encoder.variant``), or "" when it has none."""
    return str(getattr(encoder, "variant", "") or "")


def text_list(texts: object, name: str) -> list[str]:
    """``texts`` as a list of str, or an error naming the first bad element."""
    if texts is None or isinstance(texts, (str, bytes, bytearray, dict)):
        raise InputTypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError as exc:
        raise InputTypeError(
            f"{name} must be a list of strings, got {type(texts).__name__}"
        ) from exc
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputTypeError(f"{name}[{i}] is {type(t).__name__}, not str")
    return items


def id_list(ids: object, name: str) -> list[Hashable]:
    """``ids`` as a list (a str, a dict or None is refused: they are not lists of ids)."""
    if ids is None or isinstance(ids, (str, bytes, bytearray, dict)):
        raise InputTypeError(f"{name} must be a list of item ids, got {type(ids).__name__}")
    if isinstance(ids, np.ndarray):
        return list(ids.tolist())
    try:
        return list(ids)  # type: ignore[call-overload]
    except TypeError as exc:
        raise InputTypeError(
            f"{name} must be a list of item ids, got {type(ids).__name__}"
        ) from exc


def check_popularity(values: object, n: int, name: str = "popularity") -> NDArray[np.float64]:
    """Non-negative finite counts, one per item, as float64."""
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


def encode_texts(
    encoder: TextEncoder, texts: list[str], show_progress: bool = False
) -> NDArray[np.float32]:
    """``encoder.encode(texts)`` checked for shape; a progress bar when the encoder has one."""
    kwargs = {"show_progress": True} if show_progress else {}
    out = encoder.encode(texts, **kwargs)
    arr = np.asarray(out, dtype=np.float32)
    if arr.shape != (len(texts), encoder.dim):
        raise InputValueError(
            f"the encoder returned shape {arr.shape} for {len(texts)} texts; expected "
            f"({len(texts)}, {encoder.dim})"
        )
    return arr


def _json_id(item: object) -> int | str:
    if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, str, np.integer)):
        raise InputTypeError(
            f"item id {item!r} ({type(item).__name__}) cannot be saved; save supports int and "
            "str ids"
        )
    return int(item) if isinstance(item, (int, np.integer)) else item


class ItemCatalog:
    """Item ids, their unit vectors and (optionally) popularity counts.

    Args:
        vectors: (n, dim) item vectors, any real dtype; normalized here (an already
            normalized float32 array, e.g. a memory-mapped ``.npy``, is used without a copy).
        ids: n distinct hashable ids (int or str to be saved).
        popularity: non-negative interaction counts per item, or None.
        fingerprint: the model that made the vectors (``Encoder.fingerprint``).
        variant: the precision variant that made them (``Encoder.variant``, e.g. ``int8``).

    Raises:
        InputTypeError / InputValueError: vectors, ids or popularity unusable (NaN or zero
            rows, ids not one per row or repeated, negative counts).
    """

    def __init__(
        self,
        vectors: ArrayLike,
        ids: Sequence[Hashable] | NDArray[Any],
        popularity: ArrayLike | None = None,
        *,
        fingerprint: str = "",
        variant: str = "",
    ) -> None:
        self._ranker = CosineRanker(vectors, id_list(ids, "ids"))
        n = len(self._ranker)
        self._popularity = None if popularity is None else check_popularity(popularity, n)
        self.fingerprint = str(fingerprint)
        self.variant = str(variant)

    @classmethod
    def encode(
        cls,
        encoder: TextEncoder,
        texts: Sequence[str],
        ids: Sequence[Hashable] | NDArray[Any],
        popularity: ArrayLike | None = None,
        show_progress: bool = False,
    ) -> ItemCatalog:
        """Encode item texts into a catalog; ids and popularity are checked before encoding.

        Raises:
            InputTypeError / InputValueError: texts and ids differ in number, an id repeats,
                a text is not a str, the catalog is empty.
        """
        items, keys = text_list(texts, "item_texts"), id_list(ids, "item_ids")
        if len(items) != len(keys):
            raise InputValueError(
                f"got {len(items)} item_texts and {len(keys)} item_ids; give one id per text"
            )
        if not items:
            raise InputValueError("the catalog is empty; give at least one item")
        CosineRanker(np.ones((len(keys), 1), dtype=np.float32), keys)  # ids: unique, hashable
        pop = None if popularity is None else check_popularity(popularity, len(keys))
        vectors = encode_texts(encoder, items, show_progress)
        return cls(
            vectors,
            keys,
            pop,
            fingerprint=encoder.fingerprint,
            variant=encoder_variant(encoder),
        )

    # -- what it holds --------------------------------------------------------------------

    @property
    def ids(self) -> NDArray[Any]:
        """Item ids, in catalog order (int64, str or object array), read-only."""
        return self._ranker.ids

    @property
    def vectors(self) -> NDArray[np.float32]:
        """Unit-norm item vectors, (n, dim) float32, read-only."""
        return self._ranker.vectors

    @property
    def popularity(self) -> NDArray[np.float64] | None:
        """Interaction counts per item (a copy), or None."""
        return None if self._popularity is None else self._popularity.copy()

    @property
    def ranker(self) -> CosineRanker:
        """A ``CosineRanker`` over the catalog (shares its vectors)."""
        return self._ranker

    @property
    def dim(self) -> int:
        return self._ranker.dim

    def __len__(self) -> int:
        return len(self._ranker)

    def __repr__(self) -> str:
        return (
            f"ItemCatalog(n={len(self)}, dim={self.dim}, variant={self.variant!r}, "
            f"popularity={self._popularity is not None})"
        )

    def rows_of(self, ids: Iterable[Hashable], *, skip_unknown: bool = False) -> NDArray[np.int64]:
        """Catalog rows of ``ids`` (see ``CosineRanker.rows_of``)."""
        return self._ranker.rows_of(ids, skip_unknown=skip_unknown)

    def prior(self) -> NDArray[np.float32]:
        """log1p(count) / log1p(max count), in [0, 1] (zeros without popularity): counts span
        orders of magnitude and the log keeps the head from swamping a content score."""
        pop = self._popularity
        top = np.log1p(pop.max()) if pop is not None and len(pop) else 0.0
        if pop is None or top == 0:
            return np.zeros(len(self), dtype=np.float32)
        return (np.log1p(pop) / top).astype(np.float32)

    def with_items(
        self,
        vectors: ArrayLike,
        ids: Sequence[Hashable],
        popularity: ArrayLike | None = None,
    ) -> ItemCatalog:
        """A new catalog with items appended (this one is unchanged).

        Raises:
            InputValueError: an id exists already or repeats, lengths differ, or popularity
                given to a catalog without it.
        """
        new_ids = id_list(ids, "ids")
        known = self.rows_of(new_ids, skip_unknown=True)
        if len(known):
            clash = self.ids[known[:5]].tolist()
            raise InputValueError(f"{len(known)} id(s) already in the catalog: {clash}")
        if popularity is not None and self._popularity is None:
            raise InputValueError(
                "this catalog has no popularity; build it with popularity counts first"
            )
        pop = None
        if self._popularity is not None:
            extra = (
                np.zeros(len(new_ids))
                if popularity is None
                else check_popularity(popularity, len(new_ids))
            )
            pop = np.concatenate([self._popularity, extra])
        added = CosineRanker(vectors, new_ids)  # checks rows and ids before concatenating
        if added.dim != self.dim:
            raise InputValueError(f"new vectors have dimension {added.dim}, the catalog {self.dim}")
        return ItemCatalog(
            np.concatenate([self.vectors, added.vectors]),
            self.ids.tolist() + new_ids,
            pop,
            fingerprint=self.fingerprint,
            variant=self.variant,
        )

    def with_popularity(self, popularity: ArrayLike) -> ItemCatalog:
        """This catalog (sharing its vectors) with other popularity counts."""
        return ItemCatalog(
            self.vectors,
            self.ids,
            popularity,
            fingerprint=self.fingerprint,
            variant=self.variant,
        )

    def check_encoder(self, encoder: TextEncoder) -> None:
        """Refuse an encoder of another model; warn when it runs another precision variant
        (its vectors are close to the catalog's, not equal).

        Raises:
            ModelMismatchError: the encoder's model is not the one that made the vectors.
            InputValueError: the encoder's dimension differs from the catalog's.
        """
        if self.fingerprint and encoder.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"the catalog was encoded with model {self.fingerprint[:12]}..., the encoder "
                f"given is {str(encoder.fingerprint)[:12]}...; use the same model or rebuild the "
                "catalog with this one"
            )
        if encoder.dim != self.dim:
            raise InputValueError(
                f"item vectors have dimension {self.dim}, the encoder {encoder.dim}; they must "
                "come from the same model"
            )
        variant = encoder_variant(encoder)
        if self.variant and variant and variant != self.variant:
            log.warning(
                "the catalog's vectors were made by the %s variant, the encoder runs %s: "
                "similarities shift slightly; encode both with one variant for exact scores",
                self.variant,
                variant,
            )

    # -- persistence ----------------------------------------------------------------------

    def save(
        self,
        path: str | os.PathLike[str],
        overwrite: bool = False,
        extra: dict[str, bytes] | None = None,
        arrays: dict[str, NDArray[Any]] | None = None,
    ) -> Path:
        """Write the catalog to a directory, atomically.

        The directory holds ``catalog.json`` (schema, size, model fingerprint and variant),
        ``vectors.npy`` (unit-norm float32, memory-mappable), ``ids.json`` and
        ``popularity.npy`` (when there is popularity), plus any ``extra`` files and
        ``arrays`` (as ``.npy``; the Recommender adds its settings and fitted model). It is
        built beside ``path`` and renamed into place, so ``path`` is the complete old or the
        complete new directory.

        Raises:
            OutputError: ``path`` exists and ``overwrite`` is False, or it cannot be written.
            InputTypeError: an id is neither int nor str.
        """
        target = Path(path)
        if target.exists() and not overwrite:
            raise OutputError(f"{str(target)!r} exists; pass overwrite=True to replace it")
        ids = [_json_id(i) for i in self.ids.tolist()]
        meta = {
            "schema_version": SCHEMA_VERSION,
            "n_items": len(self),
            "dim": self.dim,
            "fingerprint": self.fingerprint,
            "variant": self.variant,
            "has_popularity": self._popularity is not None,
        }
        tmp = temp_dir_beside(target)
        try:
            try:
                np.save(tmp / VECTORS_NAME, np.ascontiguousarray(self.vectors))
                if self._popularity is not None:
                    np.save(tmp / POPULARITY_NAME, self._popularity)
                for name, arr in (arrays or {}).items():
                    np.save(tmp / name, np.ascontiguousarray(arr))
            except OSError as exc:
                raise output_error(target, exc) from exc
            atomic_write_bytes(tmp / IDS_NAME, json.dumps(ids).encode("utf-8"))
            for name, data in (extra or {}).items():
                atomic_write_bytes(tmp / name, data)
            atomic_write_bytes(tmp / CATALOG_NAME, json_bytes(meta))
            replace_dir(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool = True) -> ItemCatalog:
        """Read a directory written by ``save``; no encoder needed.

        Args:
            path: the saved directory.
            mmap: memory-map the vectors instead of reading them into memory.

        Raises:
            NotFoundError: the directory or one of its files is missing.
            FileFormatError: a file is malformed (bad JSON, unknown schema, vectors of the
                wrong dtype or shape, ids that do not match).
        """
        root = Path(path)
        meta = read_json(root / CATALOG_NAME, "is this a saved catalog or Recommender?")
        if not isinstance(meta, dict) or meta.get("schema_version") != SCHEMA_VERSION:
            version = meta.get("schema_version") if isinstance(meta, dict) else None
            raise FileFormatError(
                f"{str(root / CATALOG_NAME)!r} has schema_version {version!r}; this bertrec "
                f"reads {SCHEMA_VERSION}: save the catalog again with this version"
            )
        try:
            n, dim = int(meta["n_items"]), int(meta["dim"])
            has_pop = bool(meta["has_popularity"])
            fingerprint, variant = str(meta["fingerprint"]), str(meta.get("variant", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise FileFormatError(
                f"{str(root / CATALOG_NAME)!r} lacks or mistypes a field ({exc!r}); save it again"
            ) from exc
        vectors = _load_array(root / VECTORS_NAME, (n, dim), np.float32, mmap)
        ids = read_json(root / IDS_NAME, "save the catalog again")
        if not isinstance(ids, list) or len(ids) != n:
            raise FileFormatError(
                f"{str(root / IDS_NAME)!r} must be a list of {n} ids; save the catalog again"
            )
        pop = _load_array(root / POPULARITY_NAME, (n,), np.float64, False) if has_pop else None
        try:
            return cls(vectors, ids, pop, fingerprint=fingerprint, variant=variant)
        except (InputTypeError, InputValueError) as exc:
            raise FileFormatError(f"{str(root)!r} holds an unusable catalog: {exc}") from exc


def read_json(path: Path, fix: str) -> Any:
    """A JSON file's content, or ``NotFoundError`` / ``FileFormatError`` naming it."""
    if not path.is_file():
        raise NotFoundError(f"{str(path)!r} not found; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{str(path)!r} is not valid JSON ({exc}); {fix}") from exc
    except OSError as exc:
        raise FileFormatError(f"{str(path)!r} cannot be read ({exc.strerror}); {fix}") from exc


def _load_array(
    path: Path, shape: tuple[int, ...], dtype: type[np.generic], mmap: bool
) -> NDArray[Any]:
    if not path.is_file():
        raise NotFoundError(f"{str(path)!r} is missing; save the catalog again")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FileFormatError(
            f"{str(path)!r} is not a readable .npy array ({exc}); save the catalog again"
        ) from exc
    if arr.dtype != dtype or arr.shape != shape:
        raise FileFormatError(
            f"{str(path)!r} holds {arr.dtype} {arr.shape}, expected {np.dtype(dtype)} {shape}; "
            "save the catalog again"
        )
    return arr
