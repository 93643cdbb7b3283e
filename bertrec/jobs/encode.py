"""The encode job: a Parquet, CSV or JSON Lines file of texts into Parquet parts of vectors,
one ``Encoder`` per process or Ray actor."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from bertrec.core import check_choice, check_int, sha256_file
from bertrec.errors import ConfigError, ModelMismatchError
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
    FirstRows,
    check_columns,
    check_input,
    check_key,
    check_text_type,
    csv_key,
    iter_records,
    key_type,
    text_reason,
)
from bertrec.jobs.runners import check_engine, run_batch, run_job
from bertrec.runtime.encoder import Encoder

# No "auto": a job's vectors must come from one known device on every worker.
BATCH_DEVICES = ("cpu", "cuda")
# Texts per Encoder.encode call inside a shard: bounds memory and paces the progress bar.
ENCODE_CHUNK = 1024


@dataclass(frozen=True)
class _EncodeSpec:
    """Everything an encode worker needs; small and picklable, so it travels to Ray actors."""

    output: str
    id_column: str
    id_type: str
    model_dir: str
    precision: str
    device: str
    backend: str
    fingerprint: str
    variant: str
    dim: int
    shard_hook: Callable[[int], None] | None


class _EncodeWorker:
    """Encodes shards with one Encoder; also the Ray Data actor (``__call__``)."""

    def __init__(
        self, spec: _EncodeSpec, threads: int | None = None, encoder: Encoder | None = None
    ) -> None:
        self.spec = spec
        self.encoder = encoder or Encoder(
            spec.model_dir,
            precision=spec.precision,
            device=spec.device,
            backend=spec.backend,
            threads=threads,
        )
        if (self.encoder.fingerprint, self.encoder.variant) != (spec.fingerprint, spec.variant):
            raise ModelMismatchError(
                f"the model at {spec.model_dir!r} on this worker is "
                f"{self.encoder.fingerprint[:12]}... ({self.encoder.variant}), the job's is "
                f"{spec.fingerprint[:12]}... ({spec.variant}); every node must see the same "
                "model directory"
            )
        self._output = Path(spec.output)
        self._key_type = arrow_key_type(spec.id_type)

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        spec = self.spec
        # Opened per shard, not in __init__: Ray may start a spare actor after the last
        # shard, when the staging folder is already gone.
        with pq.ParquetFile(staged_path(self._output), page_checksum_verification=True) as staged:
            table = staged.read_row_group(shard)
        rows = table.column("_row").to_pylist()
        keys = table.column("id").to_pylist()
        texts = table.column("text").to_pylist()
        reasons = table.column("_reason").to_pylist()
        good = [i for i, r in enumerate(reasons) if r is None]
        bad = [i for i, r in enumerate(reasons) if r is not None]
        if spec.shard_hook is not None:
            spec.shard_hook(shard)
        vectors = np.empty((len(good), spec.dim), dtype=np.float32)
        done = 0
        for chunk in self.encoder.encode_iter((texts[i] for i in good), chunk_size=ENCODE_CHUNK):
            vectors[done : done + len(chunk)] = chunk
            done += len(chunk)
            if on_rows is not None:
                on_rows(len(chunk))
        if on_rows is not None and bad:
            on_rows(len(bad))
        write_rejects(
            self._output,
            shard,
            [rows[i] for i in bad],
            [keys[i] for i in bad],
            [reasons[i] for i in bad],
            spec.id_column,
            self._key_type,
        )
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), spec.dim)
        schema = pa.schema(
            [pa.field(spec.id_column, self._key_type), pa.field("embedding", embedding.type)],
            metadata={
                "bertrec.fingerprint": spec.fingerprint,
                "bertrec.precision": spec.precision,
                "bertrec.variant": spec.variant,
                "bertrec.dim": str(spec.dim),
            },
        )
        part = pa.Table.from_arrays(
            [pa.array([keys[i] for i in good], self._key_type), embedding], schema=schema
        )
        write_parquet_atomic(part, self._output / part_name(shard))
        return len(rows)

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return run_batch(self, batch)


def encode_dataset(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    text_column: str = "text",
    id_column: str | None = "id",
    precision: str = "auto",
    device: str = "cpu",
    backend: str = "auto",
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = False,
    threads: int | None = None,
    shard_hook: Callable[[int], None] | None = None,
) -> JobResult:
    """Encode the text column of a Parquet, CSV or JSON Lines file into Parquet parts.

    Each part holds the id column (int64 or string, as in the input; CSV ids are int64 when
    every one is a decimal integer) and ``embedding`` (``fixed_size_list<float32>[dim]``);
    the file metadata carries ``bertrec.fingerprint``, ``bertrec.precision``,
    ``bertrec.variant`` and ``bertrec.dim``.
    Rows without a usable text or id go to ``OUTPUT/_rejects/`` with their 0-based row
    number (JSON Lines: line number - 1; CSV: record after the header) and the reason.
    Ids are unique in the output: a usable row whose id an earlier written row has is
    rejected with the reason ``duplicate id X (first at row N)`` (remembering every id
    costs the driver 100-130 bytes an id while the input is staged). Rerunning the
    same call after a crash finishes the missing shards only; one job writes OUTPUT at a
    time, and a second one started meanwhile refuses at once.

    Args:
        input: ``.parquet``/``.pq``, ``.csv`` (header row) or ``.jsonl``/``.ndjson`` file.
        output: directory to create (or the same job's directory, to resume it).
        model_dir: a bertrec model directory.
        text_column: column with the texts.
        id_column: column with each row's id, copied to the output; None numbers the rows
            instead (0-based, int64, in a column named ``id``).
        precision: model variant (``auto`` is resolved once, here, for every worker).
        device: ``cpu`` or ``cuda`` (each Ray worker then takes one GPU).
        backend: ``auto``, ``onnxruntime`` or ``openvino`` (resolved once, here).
        ray_address: None runs in this process; ``"local"`` uses the running Ray, or
            ``RAY_ADDRESS``, or starts one on this machine; else a Ray address
            (``"auto"``, ``"ray://head:10001"``). INPUT, OUTPUT and the model directory
            must be at the same path on every node.
        workers: Ray actors, each with its own Encoder (default: cluster CPUs divided by
            ``cpus_per_worker``).
        cpus_per_worker: CPUs (and Encoder threads) per Ray actor.
        shard_rows: rows per shard, the unit of retry and resume; fixed for a job.
        progress: show a progress bar over rows.
        threads: Encoder threads in this process (default: all the CPUs it may use); Ray
            workers use ``cpus_per_worker`` instead.
        shard_hook: called with the shard index before the shard is encoded (a seam for
            fault-injection tests and logging); must be picklable for Ray.

    Returns:
        A ``JobResult`` with the row, reject and shard counts.

    Raises:
        ConfigError: unknown or repeated column, unknown format, bad argument values.
        NotFoundError: the input file or the model directory does not exist.
        FileFormatError: the input cannot be read (permissions, a corrupted Parquet file).
        OutputError: OUTPUT is a file, a foreign folder or another job's output; another
            job is writing it; it cannot be written (permissions, a full disk).
        ModelMismatchError: OUTPUT holds another model's results.
        ProviderError: Ray asked for but not installed.
    """
    numbered = id_column is None
    out_id = "id" if id_column is None else id_column
    in_path, fmt = check_input(input, text_column, out_id if not numbered else "_row")
    check_int(shard_rows, "shard_rows")
    check_choice(device, "device", BATCH_DEVICES)
    engine = check_engine(ray_address, workers, cpus_per_worker)
    if out_id == "embedding":
        raise ConfigError("id_column cannot be 'embedding': the output names its vectors that")
    out = Path(output)
    # Opening the Encoder here resolves precision/backend once for all workers and fails
    # fast on a bad model directory, before any cluster work starts.
    encoder = Encoder(
        model_dir, precision=precision, device=device, backend=backend, threads=threads
    )
    engine = replace(engine, gpus_per_worker=1.0 if encoder.device == "cuda" else 0.0)
    read = [text_column] if numbered else [out_id, text_column]
    check_columns(in_path, fmt, read)
    kind = pa.int64() if numbered else key_type(in_path, fmt, out_id)
    if fmt == "parquet":
        check_text_type(in_path, text_column)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "encode",
        "input": {"format": fmt, "sha256": sha256_file(in_path)},
        "columns": {"text": text_column, "id": id_column},
        "shard_rows": shard_rows,
        "model": {
            "fingerprint": encoder.fingerprint,
            "variant": encoder.variant,
            "precision": encoder.precision,
            "backend": encoder.backend,
            "device": encoder.device,
            "dim": encoder.dim,
        },
    }
    spec = _EncodeSpec(
        output=str(out.resolve()),
        id_column=out_id,
        id_type=key_type_name(kind),
        model_dir=str(Path(model_dir).resolve()),
        precision=encoder.precision,
        device=encoder.device,
        backend=encoder.backend,
        fingerprint=encoder.fingerprint,
        variant=encoder.variant,
        dim=encoder.dim,
        shard_hook=shard_hook,
    )
    schema = pa.schema(
        [("_row", pa.int64()), ("id", kind), ("text", pa.string()), ("_reason", pa.string())]
    )

    def rows() -> Iterator[dict[str, Any]]:
        records = iter_records(in_path, fmt, read)
        first = FirstRows()
        for row, (values, reason) in enumerate(records):
            key, text = None, None
            if values is not None:
                raw = row if numbered else values[out_id]
                if fmt == "csv":
                    raw = csv_key(raw, kind)
                key, reason = check_key(raw, kind, "id")
                text = values[text_column]
                reason = reason or text_reason(text)
                # Only rows that would be written claim their id.
                if reason is None:
                    reason = first.duplicate(key, row)
            yield {
                "_row": row,
                "id": key,
                "text": text if reason is None else None,
                "_reason": reason,
            }

    return run_job(
        out,
        record,
        lambda: stage_input(out, schema, shard_rows, rows()),
        lambda: _EncodeWorker(spec, encoder=encoder),  # reuses the Encoder opened above
        lambda: (_EncodeWorker, {"spec": spec, "threads": cpus_per_worker}),
        engine,
        progress,
        "encode",
    )
