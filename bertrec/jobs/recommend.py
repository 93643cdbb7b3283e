"""The recommend job: top-k items for every user of a file of item-id histories, scored by a
saved ``Recommender`` (no model needed), a shard of users at a time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from bertrec.core import check_bool, check_choice, check_int, sha256_file
from bertrec.errors import ConfigError, InputTypeError, InputValueError, NotFoundError
from bertrec.jobs.jobdir import (
    DEFAULT_SHARD_ROWS,
    FORMAT_VERSION,
    JobResult,
    arrow_key_type,
    key_type_name,
    part_name,
    stage_input,
    staged_path,
    write_parquet_atomic,
    write_rejects,
)
from bertrec.jobs.readers import (
    check_columns,
    check_history,
    check_input,
    check_key,
    check_list_type,
    iter_records,
    key_type,
)
from bertrec.jobs.runners import check_engine, run_batch, run_job
from bertrec.rank.mmr import check_diversity
from bertrec.recommend import ItemCatalog, Recommender
from bertrec.recommend.recommender import ON_UNKNOWN


@dataclass(frozen=True)
class _RecommendSpec:
    """What a recommend worker needs besides the catalog; small and picklable."""

    output: str
    user_column: str
    user_type: str
    item_type: str
    k: int
    exclude_seen: bool
    on_unknown: str
    diversity: float
    fingerprint: str
    variant: str
    settings: dict[str, Any]
    shard_hook: Callable[[int], None] | None


class _RecommendWorker:
    """Scores shards of users with one Recommender; also the Ray Data actor (``__call__``).

    On Ray, ``catalog`` is a one-element list holding the ``ray.put`` reference of the
    catalog's vectors, ids, popularity and identity: every actor on a node maps the same
    object-store copy (read-only, zero-copy) instead of reading the store from disk. A
    hybrid store (a fitted collaborative model) is loaded from ``store`` instead, which must
    then be at the same path on every node, like the input and the output.
    """

    def __init__(
        self,
        spec: _RecommendSpec,
        catalog: list[Any] | None = None,
        recommender: Recommender | None = None,
        store: str | None = None,
    ) -> None:
        self.spec = spec
        if recommender is None and store is not None:
            recommender = Recommender.load(store)
        if recommender is None:
            if not catalog:
                raise ConfigError("a recommend worker needs a catalog or a recommender")
            import ray

            data = ray.get(catalog[0])
            items = ItemCatalog(
                data["vectors"],
                data["ids"],
                data["popularity"],
                fingerprint=data["fingerprint"],
                variant=data["variant"],
            )
            recommender = Recommender.from_catalog(items, None, **spec.settings)
        self.recommender = recommender
        self._output = Path(spec.output)
        self._user_type = arrow_key_type(spec.user_type)
        self._item_type = arrow_key_type(spec.item_type)

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        spec = self.spec
        rec = self.recommender
        # Opened per shard: Ray may start a spare actor after the staging folder is gone.
        with pq.ParquetFile(staged_path(self._output), page_checksum_verification=True) as staged:
            table = staged.read_row_group(shard)
        rows = table.column("_row").to_pylist()
        users = table.column("user").to_pylist()
        histories = table.column("history").to_pylist()
        reasons = table.column("_reason").to_pylist()
        if spec.shard_hook is not None:
            spec.shard_hook(shard)
        good, prepared = [], []
        for i, reason in enumerate(reasons):
            if reason is not None:
                continue
            try:
                prepared.append(rec.history(histories[i], on_unknown=spec.on_unknown))
            except (InputTypeError, InputValueError) as exc:
                reasons[i] = str(exc)  # e.g. ids not in the catalog, cold user
            else:
                good.append(i)
        # One rank call for the shard: users are scored together, a chunk per GEMM.
        recs = (
            rec.rank(prepared, k=spec.k, exclude_seen=spec.exclude_seen, diversity=spec.diversity)
            if prepared
            else []
        )
        if on_rows is not None:
            on_rows(len(rows))
        bad = [i for i, r in enumerate(reasons) if r is not None]
        write_rejects(
            self._output,
            shard,
            [rows[i] for i in bad],
            [users[i] for i in bad],
            [reasons[i] for i in bad],
            spec.user_column,
            self._user_type,
        )
        schema = pa.schema(
            [
                pa.field(spec.user_column, self._user_type),
                pa.field("items", pa.list_(self._item_type)),
                pa.field("scores", pa.list_(pa.float32())),
            ],
            metadata={
                "bertrec.fingerprint": spec.fingerprint,
                "bertrec.variant": spec.variant,
                "bertrec.k": str(spec.k),
            },
        )
        part = pa.table(
            [
                pa.array([users[i] for i in good], self._user_type),
                pa.array([[item for item, _ in r] for r in recs], pa.list_(self._item_type)),
                pa.array([[score for _, score in r] for r in recs], pa.list_(pa.float32())),
            ],
            schema=schema,
        )
        write_parquet_atomic(part, self._output / part_name(shard))
        return len(rows)

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return run_batch(self, batch)


def recommend_dataset(
    users: str | os.PathLike[str],
    output: str | os.PathLike[str],
    store: str | os.PathLike[str],
    k: int = 10,
    exclude_seen: bool = True,
    user_column: str = "user_id",
    history_column: str = "history",
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = False,
    shard_hook: Callable[[int], None] | None = None,
    on_unknown: str = "error",
    diversity: float = 0.0,
) -> JobResult:
    """Top-k items for every user of a Parquet or JSON Lines file of histories.

    The users file has one row per user: ``user_column`` (int or string) and
    ``history_column``, a list of catalog item ids, oldest first, e.g.
    ``{"user_id": 7, "history": [1, 50, 1210]}``. Each part holds the user column,
    ``items`` (list of item ids, best first, at most ``k``) and ``scores`` (list of
    float32), what ``Recommender.recommend`` returns for that history with the same
    settings. Users whose row or history cannot be scored (missing or non-list history,
    ids not in the catalog unless skipped, an empty history without popularity to fall
    back on) go to ``OUTPUT/_rejects/`` with the reason. Rerunning after a crash
    finishes the missing shards only.

    Args:
        users: ``.parquet``/``.pq`` or ``.jsonl``/``.ndjson`` file of user histories.
        output: directory to create (or the same job's directory, to resume it).
        store: directory written by ``Recommender.save``.
        k: items per user.
        exclude_seen: leave out the items already in the history.
        user_column: column with the user ids.
        history_column: column with the lists of item ids.
        ray_address: None runs in this process; ``"local"`` or a Ray address as for
            ``encode_dataset``. On Ray the catalog goes into the object store once and
            every actor scores from that shared, read-only copy.
        workers: Ray actors (default: cluster CPUs divided by ``cpus_per_worker``).
        cpus_per_worker: CPUs per Ray actor.
        shard_rows: users per shard, the unit of retry and resume; fixed for a job.
        progress: show a progress bar over users.
        shard_hook: called with the shard index before the shard is scored (a seam for
            fault-injection tests); must be picklable for Ray.
        on_unknown: ``"error"`` rejects a user whose history has ids not in the catalog,
            naming them; ``"skip"`` leaves those ids out of the history.
        diversity: weight in [0, 1] of diversity against relevance, as for
            ``Recommender.recommend``; 0 is the plain score order.

    Returns:
        A ``JobResult`` with the user, reject and shard counts.

    Raises:
        ConfigError: unknown or repeated column, CSV input, bad argument values.
        NotFoundError: the users file or the store does not exist, or the store is not a
            saved Recommender.
        FileFormatError: the store is malformed; the users file cannot be read
            (permissions, a corrupted Parquet file).
        InputValueError: the store mixes int and str item ids.
        OutputError: OUTPUT is a file, a foreign folder or another job's output; another
            job is writing it; it cannot be written (permissions, a full disk).
        ModelMismatchError: OUTPUT holds another model's results.
        ProviderError: Ray asked for but not installed.
    """
    in_path, fmt = check_input(users, user_column, history_column)
    check_int(shard_rows, "shard_rows")
    if fmt == "csv":
        raise ConfigError(
            f"{str(users)!r}: a history is a list, which CSV cannot hold; write the users as "
            'JSON Lines ({"user_id": 7, "history": [1, 50]}) or Parquet'
        )
    check_int(k, "k")
    check_bool(exclude_seen, "exclude_seen")
    check_choice(on_unknown, "on_unknown", ON_UNKNOWN)
    diversity = check_diversity(diversity)
    engine = check_engine(ray_address, workers, cpus_per_worker)
    if user_column in ("items", "scores"):
        raise ConfigError(f"user_column cannot be {user_column!r}: the output uses that name")
    store_path = Path(store)
    if not store_path.is_dir():
        raise NotFoundError(
            f"recommender store {str(store_path)!r} does not exist; give a directory written "
            "by Recommender.save"
        )
    rec = Recommender.load(store_path)
    store_sha = _store_sha256(store_path)
    catalog = rec.catalog
    item_type = _item_type(catalog.ids, store_path)
    check_columns(in_path, fmt, [user_column, history_column])
    user_type = key_type(in_path, fmt, user_column)
    if fmt == "parquet":
        check_list_type(in_path, history_column)
    out = Path(output)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "recommend",
        "input": {"format": fmt, "sha256": sha256_file(in_path)},
        "columns": {"user": user_column, "history": history_column},
        "shard_rows": shard_rows,
        "k": k,
        "exclude_seen": exclude_seen,
        "on_unknown": on_unknown,
        "diversity": diversity,
        "model": {
            "fingerprint": catalog.fingerprint,
            "variant": catalog.variant,
            "dim": catalog.dim,
        },
        "store": {"sha256": store_sha, "items": len(catalog), "settings": rec.settings()},
    }
    spec = _RecommendSpec(
        output=str(out.resolve()),
        user_column=user_column,
        user_type=key_type_name(user_type),
        item_type=key_type_name(item_type),
        k=k,
        exclude_seen=exclude_seen,
        on_unknown=on_unknown,
        diversity=diversity,
        fingerprint=catalog.fingerprint,
        variant=catalog.variant,
        settings=rec.settings(),
        shard_hook=shard_hook,
    )
    schema = pa.schema(
        [
            ("_row", pa.int64()),
            ("user", user_type),
            ("history", pa.list_(item_type)),
            ("_reason", pa.string()),
        ]
    )

    def rows() -> Iterator[dict[str, Any]]:
        records = iter_records(in_path, fmt, [user_column, history_column])
        for row, (values, reason) in enumerate(records):
            user, history = None, None
            if values is not None:
                user, reason = check_key(values[user_column], user_type, "user id")
                history, history_reason = check_history(values[history_column], item_type)
                reason = reason or history_reason
            yield {
                "_row": row,
                "user": user,
                "history": history if reason is None else None,
                "_reason": reason,
            }

    def ray_catalog() -> list[Any]:
        # Called once Ray is up. Inside a list so Ray hands the actor the reference, not a
        # private copy; NumPy arrays come back from the object store without a copy.
        import ray

        data = {
            "vectors": np.ascontiguousarray(catalog.vectors),
            "ids": catalog.ids.tolist(),
            "popularity": catalog.popularity,
            "fingerprint": catalog.fingerprint,
            "variant": catalog.variant,
        }
        return [ray.put(data)]

    return run_job(
        out,
        record,
        lambda: stage_input(out, schema, shard_rows, rows()),
        lambda: _RecommendWorker(spec, recommender=rec),
        lambda: (
            (_RecommendWorker, {"spec": spec, "store": str(Path(store).resolve())})
            if rec.model is not None
            else (_RecommendWorker, {"spec": spec, "catalog": ray_catalog()})
        ),
        engine,
        progress,
        "recommend",
    )


def _store_sha256(store: Path) -> str:
    """One sha256 over all the store's files (names and contents): its identity in the job
    record, so a rerun against a changed store is refused instead of mixing results."""
    h = hashlib.sha256()
    for path in sorted(p for p in store.iterdir() if p.is_file()):
        h.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    return h.hexdigest()


def _item_type(ids: NDArray[Any], store: Path) -> pa.DataType:
    if ids.dtype.kind in "iu":
        return pa.int64()
    if ids.dtype.kind == "U":
        return pa.string()
    raise InputValueError(
        f"the catalog in {str(store)!r} mixes int and str item ids; batch output needs one "
        "type: save the Recommender with ids of one type"
    )
