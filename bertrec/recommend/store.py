"""A saved Recommender: its catalog's directory (``ItemCatalog.save``) plus
``recommender.json`` with the scoring settings and, for a hybrid, the fitted model's
arrays (``cf_<model>_<name>.npy``, listed under ``collab``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.core import json_bytes
from bertrec.errors import FileFormatError, NotFoundError
from bertrec.recommend import collab as cf
from bertrec.recommend.catalog import ItemCatalog, read_json

SCHEMA_VERSION = 3
READS = (2, 3)  # version 2: content-only, no "collab" entry
CONFIG_NAME = "recommender.json"


def save(
    catalog: ItemCatalog,
    settings: dict[str, Any],
    model: cf.CollabModel | None,
    path: str | os.PathLike[str],
    overwrite: bool,
) -> Path:
    """Write the catalog, ``recommender.json`` and the model's arrays, atomically."""
    config: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "settings": settings}
    arrays = {}
    if model is not None:
        names = file_names(model)
        config["collab"] = {**model.meta(), "files": names}
        arrays = {names[k]: v for k, v in model.arrays().items()}
    extra = {CONFIG_NAME: json_bytes(config)}
    return catalog.save(path, overwrite, extra=extra, arrays=arrays)


def read_config(root: Path, known: Sequence[str]) -> tuple[dict[str, Any], object]:
    """(settings, the ``collab`` entry or None) of a saved Recommender, checked.

    Raises:
        NotFoundError: no ``recommender.json``.
        FileFormatError: malformed, of an unknown schema, or naming an unknown setting.
    """
    config = read_json(root / CONFIG_NAME, "is this a saved Recommender?")
    if not isinstance(config, dict) or config.get("schema_version") not in READS:
        version = config.get("schema_version") if isinstance(config, dict) else None
        raise FileFormatError(
            f"{str(root / CONFIG_NAME)!r} has schema_version {version!r}; this bertrec reads "
            f"{SCHEMA_VERSION}: save the Recommender again with this version"
        )
    settings = config.get("settings")
    if not isinstance(settings, dict) or set(settings) - set(known):
        raise FileFormatError(
            f"{str(root / CONFIG_NAME)!r} settings must be an object with keys from "
            f"{tuple(known)}, got {settings!r}; save the Recommender again"
        )
    return settings, config.get("collab")


FILE_PREFIX = "cf_"
ARRAYS = {"ease": ("warm", "b", "r"), "als": ("warm", "y", "gram", "w")}


def file_names(model: cf.CollabModel) -> dict[str, str]:
    return {name: f"{FILE_PREFIX}{model.kind}_{name}.npy" for name in model.arrays()}


def load_model(
    root: Path, meta: object, n_items: int, vector_dim: int, mmap: bool = True
) -> cf.CollabModel:
    """The model ``meta`` (from recommender.json) describes, from its .npy files in ``root``.

    Raises:
        NotFoundError: a listed file is missing.
        FileFormatError: ``meta`` or a file is malformed.
    """
    try:
        kind, files = meta["model"], meta["files"]  # type: ignore[index]
        settings = cf.CollabSettings(**meta["settings"])  # type: ignore[index]
        scale = float(meta["scale"])  # type: ignore[index]
        names = ARRAYS[kind]
        if set(files) != set(names):
            raise ValueError(f"files {sorted(files)} are not {sorted(names)}")
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(
            f"the collaborative model in {str(root)!r} is malformed ({exc!r}); save it again"
        ) from exc
    arrays = {}
    for name in names:
        path = root / os.path.basename(str(files[name]))
        if not path.is_file():
            raise NotFoundError(f"{str(path)!r} is missing; save the Recommender again")
        try:
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise FileFormatError(f"{str(path)!r} is not a readable .npy array ({exc})") from exc
    warm = np.asarray(arrays["warm"], dtype=np.int64)
    nw, dim = len(warm), settings.factors
    shapes = {
        "ease": {"b": (nw, nw), "r": (nw, vector_dim)},
        "als": {"y": (n_items, dim), "gram": (dim, dim), "w": (vector_dim, dim)},
    }[kind]
    bad = [n for n, shape in shapes.items() if arrays[n].shape != shape]
    if warm.ndim != 1 or (nw and (warm.min() < 0 or warm.max() >= n_items)) or bad:
        raise FileFormatError(
            f"the collaborative model in {str(root)!r} does not fit its catalog of {n_items} "
            f"items ({', '.join(bad) or 'warm rows'}); save the Recommender again"
        )
    if kind == "ease":
        return cf.EASE(settings, warm, scale, arrays["b"], arrays["r"])
    return cf.ALS(settings, warm, scale, arrays["y"], arrays["gram"], arrays["w"])
