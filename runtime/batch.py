"""Batch jobs over files: encode a table of texts, or recommend for a file of users, in this
process or on a Ray cluster, in deterministic shards that a rerun resumes.

Both jobs write OUTPUT as a directory::

    _job.json                    the job's settings and model fingerprint (written first)
    part-00000.parquet ...       one file per shard of ``shard_rows`` input rows
    _rejects/part-00000.parquet  the shard's unusable rows: row, id, reason (only if any)
    _SUCCESS                     written last: totals and each part's sha256

The input is first copied into ``OUTPUT/_staging/input.parquet`` with one row group per
shard, so every format shards the same way and a worker reads exactly its rows. Each shard
file is written under a temporary name and renamed, so a part either exists whole or not
at all; a rerun skips the shards whose part exists and the final files are byte-identical
to an uninterrupted run. Ray is imported only when a job asks for it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import pickle
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "bertrec batch jobs read and write Parquet with pyarrow; install it with "
        "pip install 'bertrec[batch]' (or 'bertrec[ray]' for Ray)"
    ) from exc

from .encoder import Encoder
from .errors import ConfigError, OutputExistsError, OutputNotWritableError, ProviderError
from .manifest import default_mode

log = logging.getLogger("bertrec.batch")

FORMAT_VERSION = 1
JOB_NAME = "_job.json"
SUCCESS_NAME = "_SUCCESS"
STAGING_DIR = "_staging"
STAGED_NAME = "input.parquet"
# Leading underscore: Arrow and Spark skip it, so pq.read_table(OUTPUT) reads the parts only.
REJECTS_DIR = "_rejects"

# Rows per shard. A shard is the unit of retry and of resume: at ~400 texts/s for a
# one-CPU MiniLM worker (bench/ray_overhead.py) 4,096 rows is ~10 s of work, long enough
# to hide Ray's per-task cost (milliseconds) and short enough that a crash loses little.
DEFAULT_SHARD_ROWS = 4096
# Texts per Encoder.encode call inside a shard: bounds memory and paces the progress bar.
ENCODE_CHUNK = 1024
# Parquet settings are fixed so that the same rows always give the same bytes.
COMPRESSION = "zstd"

SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
BATCH_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BatchResult:
    """What a batch job did.

    Attributes:
        output: the output directory.
        rows: input rows (rejected ones included).
        written: rows in the part files.
        rejected: rows in ``_rejects/`` (each with its reason).
        shards: shards in the job.
        resumed: shards found finished by an earlier run and skipped.
        seconds: wall time of this call.
        engine: ``"in-process"`` or ``"ray"``.
    """

    output: Path
    rows: int
    written: int
    rejected: int
    shards: int
    resumed: int
    seconds: float
    engine: str

    def summary(self) -> str:
        """One line for a terminal."""
        rejects = f" (reasons in {self.output / REJECTS_DIR})" if self.rejected else ""
        return (
            f"{self.output}: {self.rows} rows -> {self.written} written, {self.rejected} "
            f"rejected{rejects}; {self.shards} shards ({self.resumed} done before) in "
            f"{self.seconds:.1f} s, {self.engine}"
        )


# -- small file helpers -------------------------------------------------------------------


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # fsync before rename: after a power loss the rename must not point at empty data.
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _write_parquet_atomic(table: pa.Table, path: Path) -> None:
    # One row group, fixed compression, no timestamps: equal tables give equal bytes.
    rows = max(1, table.num_rows)
    _atomic_write(
        path,
        lambda tmp: pq.write_table(table, tmp, row_group_size=rows, compression=COMPRESSION),
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _parquet_complete(path: Path) -> bool:
    """Whether ``path`` is a readable Parquet file (renamed into place, so whole)."""
    if not path.is_file():
        return False
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def part_name(shard: int) -> str:
    """File name of a shard's part (five digits, more past 99,999 shards)."""
    return f"part-{shard:05d}.parquet"


# -- input reading --------------------------------------------------------------------------


def input_format(path: str | os.PathLike[str]) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file suffix.

    Raises:
        ConfigError: the suffix is not one bertrec reads.
    """
    fmt = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"cannot tell the format of {str(path)!r} from its suffix; use one of "
            f"{', '.join(SUFFIX_FORMATS)} (Parquet, CSV with a header row, or JSON Lines)"
        )
    return fmt


def _check_input(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"input file {str(p)!r} does not exist")
    if not p.is_file():
        raise ConfigError(f"input {str(p)!r} is not a file")
    return p


def _missing_columns(wanted: Sequence[str], have: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ConfigError(
            f"column {missing[0]!r} is not in {where} (it has: {', '.join(map(str, have))}); "
            "name the right one with the --*-column options"
        )


# A record is the row's values by column, or None with the reason it could not be read.
Record = tuple[dict[str, Any] | None, str | None]


def _iter_parquet(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    pf = pq.ParquetFile(path)
    _missing_columns(columns, pf.schema_arrow.names, str(path))
    for batch in pf.iter_batches(batch_size=65536, columns=list(columns)):
        values = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            yield {c: values[c][i] for c in columns}, None


def _iter_csv(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    # surrogateescape keeps a bad byte as a lone surrogate, so that one row is rejected
    # instead of the whole file failing to decode.
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        _missing_columns(columns, list(reader.fieldnames or []), str(path))
        for row in reader:
            yield {c: row.get(c) for c in columns}, None


def _iter_jsonl(path: Path, columns: Sequence[str]) -> Iterator[Record]:
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                yield None, "blank line"
                continue
            try:
                obj = json.loads(line)
            except UnicodeDecodeError:
                yield None, "line is not valid UTF-8"
                continue
            except json.JSONDecodeError as exc:
                yield None, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(obj, dict):
                yield None, f"line is a JSON {type(obj).__name__}, not an object"
                continue
            yield {c: obj.get(c) for c in columns}, None


def _check_columns(path: Path, fmt: str, columns: Sequence[str]) -> None:
    """Fail before any output is written when a column is not in the input.

    JSON Lines has no header: its first object stands for the file, since a column missing
    there is almost surely a wrong name rather than a bad row.
    """
    if fmt == "parquet":
        _missing_columns(columns, pq.read_schema(path).names, str(path))
    elif fmt == "csv":
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            header = next(csv.reader(f), [])
        _missing_columns(columns, header, str(path))
    else:
        with open(path, "rb") as f:
            first = next((o for line in f if isinstance(o := _json_or_none(line), dict)), None)
        if first is not None:
            _missing_columns(columns, list(first), f"the first record of {str(path)!r}")


def _json_or_none(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        return None


def _iter_records(path: Path, fmt: str, columns: Sequence[str]) -> Iterator[Record]:
    readers = {"parquet": _iter_parquet, "csv": _iter_csv, "jsonl": _iter_jsonl}
    return readers[fmt](path, columns)


def _key_type(path: Path, fmt: str, column: str) -> pa.DataType:
    """The Arrow type of an id column: int64 or string, fixed for the whole file.

    CSV has no types, so its ids stay strings. JSON Lines takes the type of the first
    usable id; Parquet the column's type.
    """
    if fmt == "csv":
        return pa.string()
    if fmt == "parquet":
        schema = pq.read_schema(path)
        _missing_columns([column], schema.names, str(path))
        t = schema.field(column).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_integer(t):
            return pa.int64()
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return pa.string()
        raise ConfigError(
            f"id column {column!r} of {str(path)!r} has type {t}; ids must be integers or strings"
        )
    with open(path, "rb") as f:
        for line in f:
            obj = _json_or_none(line)
            v = obj.get(column) if isinstance(obj, dict) else None  # bad lines: rejects later
            if isinstance(v, str):
                return pa.string()
            if isinstance(v, int) and not isinstance(v, bool):
                return pa.int64()
    return pa.string()


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_key(value: Any, kind: pa.DataType, what: str) -> tuple[Any, str | None]:
    """``(value, None)`` when ``value`` is a usable id of Arrow type ``kind``, else a reason."""
    if value is None or value == "":
        return None, f"missing {what}"
    if kind == pa.int64():
        if isinstance(value, bool) or not isinstance(value, int):
            return (
                None,
                f"{what} {value!r} is {type(value).__name__}, not an integer like the others",
            )
        if not INT64_MIN <= value <= INT64_MAX:
            return None, f"{what} {value} does not fit in 64 bits"
        return value, None
    if not isinstance(value, str):
        return None, f"{what} {value!r} is {type(value).__name__}, not a string like the others"
    if not _valid_unicode(value):
        return None, f"{what} is not valid Unicode"
    return value, None


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text_reason(text: Any) -> str | None:
    """Why ``text`` cannot be encoded, or None when it can."""
    if text is None:
        return "missing text"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if not _valid_unicode(text):
        return "text is not valid Unicode (lone surrogate or undecodable bytes)"
    if not text.strip():
        return "text is empty or whitespace only"
    return None


# -- staging --------------------------------------------------------------------------------


class _StagingWriter:
    """Writes staged rows as row groups of exactly ``shard_rows`` (the last may be shorter)."""

    def __init__(self, path: Path, schema: pa.Schema, shard_rows: int) -> None:
        self.schema = schema
        self.shard_rows = shard_rows
        self.rows = 0
        self._buffer: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._writer = pq.ParquetWriter(path, schema, compression=COMPRESSION)

    def add(self, row: dict[str, Any]) -> None:
        for name, column in self._buffer.items():
            column.append(row.get(name))
        self.rows += 1
        if len(self._buffer["_row"]) == self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer["_row"]:
            return
        table = pa.table(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=self.shard_rows)
        self._buffer = {name: [] for name in self.schema.names}

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _stage(
    staged: Path,
    schema: pa.Schema,
    shard_rows: int,
    rows: Iterable[dict[str, Any]],
) -> int:
    """Write ``rows`` to ``staged`` atomically, one row group per shard; the row count."""
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        writer = _StagingWriter(Path(tmp), schema, shard_rows)
        try:
            for row in rows:
                writer.add(row)
        finally:
            writer.close()
        count = writer.rows

    _atomic_write(staged, write)
    return count


# -- the job directory ----------------------------------------------------------------------


def _prepare_output(output: Path, record: dict[str, Any]) -> bool:
    """Create OUTPUT or check it holds this same job; True when ``_SUCCESS`` is there.

    Raises:
        OutputExistsError: OUTPUT is a file, a foreign directory, or another job's output.
        OutputNotWritableError: OUTPUT cannot be created.
    """
    job_path = output / JOB_NAME
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"output {str(output)!r} exists and is a file; choose a directory")
    if output.is_dir():
        if job_path.is_file():
            try:
                old = json.loads(job_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise OutputExistsError(
                    f"{str(job_path)!r} cannot be read ({exc}); delete {str(output)!r} to "
                    "start over"
                ) from exc
            _check_same_job(output, old, record)
            return (output / SUCCESS_NAME).is_file()
        if any(output.iterdir()):
            raise OutputExistsError(
                f"output {str(output)!r} is a non-empty directory that no bertrec batch job "
                f"wrote (it has no {JOB_NAME}); choose a new OUTPUT or empty it"
            )
    try:
        (output / REJECTS_DIR).mkdir(parents=True, exist_ok=True)
        (output / STAGING_DIR).mkdir(exist_ok=True)
        _write_bytes_atomic(job_path, _json_bytes(record))
    except (PermissionError, NotADirectoryError, FileExistsError) as exc:
        raise OutputNotWritableError(f"cannot create output {str(output)!r}: {exc}") from exc
    return False


def _check_same_job(output: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    old_fp = old.get("model", {}).get("fingerprint")
    new_fp = new.get("model", {}).get("fingerprint")
    if old_fp != new_fp:
        raise OutputExistsError(
            f"output {str(output)!r} holds results of another model (fingerprint "
            f"{str(old_fp)[:12]}..., this job's model is {str(new_fp)[:12]}...); choose a new "
            "OUTPUT or delete it"
        )
    if old != new:
        diffs = [
            f"{k}: {old.get(k)!r} then, {new.get(k)!r} now"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        raise OutputExistsError(
            f"output {str(output)!r} was started by a different job ({'; '.join(diffs)}); "
            "rerun with the same input and settings to resume it, or choose a new OUTPUT"
        )


def _remove_temporaries(output: Path) -> None:
    # A worker killed mid-write leaves its temporary file; the shard is redone anyway.
    for folder in (output, output / REJECTS_DIR, output / STAGING_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def _finish(output: Path, record: dict[str, Any], shards: int) -> dict[str, Any]:
    """Check every part is there, write ``_SUCCESS`` and drop the staging copy."""
    parts = []
    totals = {"written": 0, "rejected": 0}
    for s in range(shards):
        path = output / part_name(s)
        if not _parquet_complete(path):
            raise OutputNotWritableError(
                f"shard {s} has no complete part file {str(path)!r} after the job ran; rerun to "
                "finish it"
            )
        rejects = output / REJECTS_DIR / part_name(s)
        n_rejects = pq.read_metadata(rejects).num_rows if rejects.is_file() else 0
        n = pq.read_metadata(path).num_rows
        totals["written"] += n
        totals["rejected"] += n_rejects
        parts.append({"file": path.name, "rows": n, "rejects": n_rejects, "sha256": _sha256(path)})
    summary = {
        **record,
        "rows": totals["written"] + totals["rejected"],
        **totals,
        "shards": shards,
        "parts": parts,
    }
    _write_bytes_atomic(output / SUCCESS_NAME, _json_bytes(summary))
    shutil.rmtree(output / STAGING_DIR, ignore_errors=True)
    return summary


# -- shard workers --------------------------------------------------------------------------


class ShardWorker(Protocol):
    """Computes and writes one shard; built once per process or Ray actor."""

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        """Write shard ``shard``'s part (and rejects) and return its input row count."""
        ...


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
    dim: int
    shard_hook: Callable[[int], None] | None


def _arrow_key_type(name: str) -> pa.DataType:
    return pa.int64() if name == "int64" else pa.string()


def _write_rejects(
    output: Path,
    shard: int,
    rows: list[int],
    keys: list[Any],
    reasons: list[str],
    key: str,
    key_type: pa.DataType,
) -> None:
    # Written before the part: once the part exists, its rejects are already on disk.
    if not rows:
        return
    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            key: pa.array(keys, key_type),
            "reason": pa.array(reasons, pa.string()),
        }
    )
    _write_parquet_atomic(table, output / REJECTS_DIR / part_name(shard))


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
        if self.encoder.fingerprint != spec.fingerprint:
            raise ConfigError(
                f"the model at {spec.model_dir!r} on this worker has fingerprint "
                f"{self.encoder.fingerprint[:12]}..., the job's is {spec.fingerprint[:12]}...; "
                "every node must see the same model directory"
            )
        self._output = Path(spec.output)
        self._key_type = _arrow_key_type(spec.id_type)

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        spec = self.spec
        # Opened per shard, not in __init__: Ray may start a spare actor after the last
        # shard, when the staging folder is already gone.
        with pq.ParquetFile(self._output / STAGING_DIR / STAGED_NAME) as staged:
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
        _write_rejects(
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
                "bertrec.dim": str(spec.dim),
            },
        )
        part = pa.Table.from_arrays(
            [pa.array([keys[i] for i in good], self._key_type), embedding], schema=schema
        )
        _write_parquet_atomic(part, self._output / part_name(shard))
        return len(rows)

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return _run_batch(self, batch)


# -- running shards -------------------------------------------------------------------------


def _run_batch(worker: ShardWorker, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """A Ray Data batch of shard numbers: run each, report its rows or its error.

    A failing shard is reported as data rather than raised: the other shards then still
    finish (a rerun redoes only the failed ones), and the job avoids Ray Data's abort
    path, which could hang while other actors' tasks were still in flight.
    """
    shards = [int(s) for s in batch["shard"]]
    counts: list[int] = []
    errors: list[bytes] = []
    for s in shards:
        try:
            counts.append(worker.run_shard(s))
            errors.append(b"")
        except Exception as exc:  # any failure of this shard; the driver raises it
            counts.append(0)
            errors.append(_pickle_error(exc, s))
    return {
        "shard": np.asarray(shards, np.int64),
        "rows": np.asarray(counts, np.int64),
        "error": np.asarray(errors, dtype=object),
    }


def _pickle_error(exc: Exception, shard: int) -> bytes:
    text = "".join(traceback.format_exception(exc))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt
    except Exception:  # unpicklable: keep its text
        blob = pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
    return pickle.dumps((shard, blob, text))


def _raise_shard_errors(errors: list[bytes], shards: int, desc: str) -> None:
    """Raise the first failed shard's exception (as on the worker), naming all failures."""
    failures = [pickle.loads(e) for e in errors]
    for shard, _, text in failures:
        log.error("%s: shard %d failed on a Ray worker:\n%s", desc, shard, text)
    shard, blob, _ = failures[0]
    exc = pickle.loads(blob)
    failed = ", ".join(str(s) for s, _, _ in failures)
    exc.add_note(
        f"{desc}: shard(s) {failed} of {shards} failed on Ray workers (tracebacks logged); the "
        "other shards are written; run the same job again to redo the failed ones"
    )
    raise exc


def _pending(output: Path, shards: int) -> list[int]:
    return [s for s in range(shards) if not _parquet_complete(output / part_name(s))]


def _shard_rows_of(staged: Path, shards: Sequence[int]) -> int:
    meta = pq.read_metadata(staged)
    return sum(meta.row_group(s).num_rows for s in shards)


def _run_in_process(
    worker: ShardWorker, pending: Sequence[int], total_rows: int, progress: bool, desc: str
) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=total_rows, desc=desc, unit="row", disable=not progress) as bar:
        for s in pending:
            worker.run_shard(s, on_rows=bar.update)


def _ray_init(address: str) -> bool:
    """Connect to (or start) Ray; True when this call started it and should shut it down."""
    try:
        import ray
    except ImportError as exc:
        raise ProviderError(
            "Ray jobs need Ray: pip install 'bertrec[ray]' (on every node of the cluster)"
        ) from exc
    if ray.is_initialized():
        return False
    # "local" leaves the address to Ray: RAY_ADDRESS (set by `ray job submit`) or a new
    # single-machine instance.
    ray.init(
        address=None if address == "local" else address,
        include_dashboard=False,
        log_to_driver=True,
    )
    return True


def _ray_cpus() -> int:
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def _run_on_ray(
    actor: type,
    constructor: dict[str, Any],
    pending: Sequence[int],
    total_rows: int,
    staged: Path,
    workers: int,
    cpus_per_worker: int,
    gpus_per_worker: float,
    progress: bool,
    desc: str,
) -> None:
    import ray
    from tqdm.auto import tqdm

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own bar counts rows, Ray's counts blocks
    ray_log = logging.getLogger("ray.data")
    level = ray_log.level
    if not log.isEnabledFor(logging.INFO):
        ray_log.setLevel(logging.ERROR)  # Ray Data's per-run notices, unless -v
    # One item per block, so each shard is its own task and load balances across actors.
    items = ray.data.from_items([{"shard": s} for s in pending], override_num_blocks=len(pending))
    ds = items.map_batches(
        actor,
        batch_size=1,
        batch_format="numpy",
        fn_constructor_kwargs=constructor,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker or None,
    )
    meta = pq.read_metadata(staged)
    errors: list[bytes] = []
    try:
        with tqdm(total=total_rows, desc=desc, unit="row", disable=not progress) as bar:
            for row in ds.iter_rows():
                if row["error"]:
                    errors.append(row["error"])
                else:
                    bar.update(meta.row_group(int(row["shard"])).num_rows)
    finally:
        ray_log.setLevel(level)
    if errors:
        _raise_shard_errors(errors, meta.num_row_groups, desc)


def _run_ray_job(
    ray_actor: Callable[[], tuple[type, dict[str, Any]]],
    ray_address: str,
    pending: Sequence[int],
    rows: int,
    staged: Path,
    workers: int | None,
    cpus_per_worker: int,
    gpus_per_worker: float,
    progress: bool,
    desc: str,
) -> None:
    started = _ray_init(ray_address)
    try:
        plan = _ray_plan(workers, cpus_per_worker)
        actor, constructor = ray_actor()
        _run_on_ray(
            actor,
            constructor,
            pending,
            rows,
            staged,
            min(plan.workers, len(pending)),
            plan.cpus_per_worker,
            gpus_per_worker,
            progress,
            desc,
        )
    finally:
        if started:
            import ray

            ray.shutdown()


@dataclass(frozen=True)
class _RayPlan:
    workers: int
    cpus_per_worker: int


def _ray_plan(workers: int | None, cpus_per_worker: int) -> _RayPlan:
    cpus = _ray_cpus()
    n = workers if workers is not None else max(1, cpus // cpus_per_worker)
    return _RayPlan(workers=n, cpus_per_worker=cpus_per_worker)


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_engine(ray_address: str | None, workers: int | None) -> None:
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address):
        raise ConfigError(
            f"ray_address must be None (this process), 'local' or a Ray address, got "
            f"{ray_address!r}"
        )
    if workers is not None:
        _check_int("workers", workers)
        if ray_address is None:
            raise ConfigError(
                "workers applies to Ray jobs; without Ray the job runs one Encoder in this "
                "process on all its CPUs (pass ray_address='local' or --ray)"
            )


def _run_job(
    output: Path,
    record: dict[str, Any],
    shards_of: Callable[[], int],
    make_worker: Callable[[], ShardWorker],
    ray_actor: Callable[[], tuple[type, dict[str, Any]]],
    ray_address: str | None,
    workers: int | None,
    cpus_per_worker: int,
    gpus_per_worker: float,
    progress: bool,
    desc: str,
) -> BatchResult:
    """The shared driver: prepare OUTPUT, stage, run what is pending, write ``_SUCCESS``."""
    start = time.perf_counter()
    engine = "in-process" if ray_address is None else "ray"
    if _prepare_output(output, record):
        summary = json.loads((output / SUCCESS_NAME).read_text(encoding="utf-8"))
        return BatchResult(
            output,
            summary["rows"],
            summary["written"],
            summary["rejected"],
            summary["shards"],
            summary["shards"],
            time.perf_counter() - start,
            engine,
        )
    _remove_temporaries(output)
    shards = shards_of()
    staged = output / STAGING_DIR / STAGED_NAME
    pending = _pending(output, shards)
    if pending:
        rows = _shard_rows_of(staged, pending)
        log.info("%s: %d of %d shards to run (%d rows)", desc, len(pending), shards, rows)
        try:
            if ray_address is None:
                _run_in_process(make_worker(), pending, rows, progress, desc)
            else:
                _run_ray_job(
                    ray_actor,
                    ray_address,
                    pending,
                    rows,
                    staged,
                    workers,
                    cpus_per_worker,
                    gpus_per_worker,
                    progress,
                    desc,
                )
        except BaseException:
            done = shards - len(_pending(output, shards))
            log.error(
                "%s stopped with %d of %d shards written to %s; run the same job again to "
                "finish the rest",
                desc,
                done,
                shards,
                output,
            )
            raise
    summary = _finish(output, record, shards)
    return BatchResult(
        output,
        summary["rows"],
        summary["written"],
        summary["rejected"],
        shards,
        shards - len(pending),
        time.perf_counter() - start,
        engine,
    )


def _staged_shards(staged: Path, build: Callable[[], int], shard_rows: int) -> int:
    """Stage the input unless an earlier run did; the number of shards."""
    if not _parquet_complete(staged):
        build()
    meta = pq.read_metadata(staged)
    expected = math.ceil(meta.num_rows / shard_rows)
    if meta.num_row_groups != expected:
        raise OutputNotWritableError(
            f"staged input {str(staged)!r} has {meta.num_row_groups} row groups, expected "
            f"{expected}; delete it and rerun"
        )
    return expected


# -- encode ---------------------------------------------------------------------------------


def encode_dataset(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    text_column: str = "text",
    id_column: str = "id",
    precision: str = "auto",
    device: str = "cpu",
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = False,
    threads: int | None = None,
    shard_hook: Callable[[int], None] | None = None,
) -> BatchResult:
    """Encode the text column of a Parquet, CSV or JSON Lines file into Parquet parts.

    Each part holds the id column (int64 or string, as in the input; CSV ids are strings)
    and ``embedding`` (``fixed_size_list<float32>[dim]``); the file metadata carries
    ``bertrec.fingerprint``, ``bertrec.precision`` and ``bertrec.dim``. Rows without a usable
    text or id go to ``OUTPUT/_rejects/`` with their 0-based row number (JSON Lines: line
    number - 1; CSV: record after the header) and the reason. Rerunning the same call
    after a crash finishes the missing shards only.

    Args:
        input: ``.parquet``/``.pq``, ``.csv`` (header row) or ``.jsonl``/``.ndjson`` file.
        output: directory to create (or the same job's directory, to resume it).
        model_dir: a bertrec model directory.
        text_column: column with the texts.
        id_column: column with each row's id, copied to the output.
        precision: model variant (``auto`` is resolved once, here, for every worker).
        device: ``cpu`` or ``cuda`` (each Ray worker then takes one GPU).
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
        A ``BatchResult`` with the row, reject and shard counts.

    Raises:
        ConfigError: missing input, unknown column or format, bad argument values.
        OutputExistsError: OUTPUT holds something else, another model's or another job's
            results.
        ProviderError: Ray asked for but not installed.
    """
    in_path, fmt = _check_args(input, text_column, id_column, shard_rows, cpus_per_worker, device)
    _check_engine(ray_address, workers)
    if id_column == "embedding":
        raise ConfigError("id_column cannot be 'embedding': the output names its vectors that")
    out = Path(output)
    # Opening the Encoder here resolves precision/backend once for all workers and fails
    # fast on a bad model directory, before any cluster work starts.
    encoder = Encoder(model_dir, precision=precision, device=device, threads=threads)
    _check_columns(in_path, fmt, [id_column, text_column])
    key_type = _key_type(in_path, fmt, id_column)
    if fmt == "parquet":
        _check_text_type(in_path, text_column)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "encode",
        "input": {"format": fmt, "sha256": _sha256(in_path)},
        "columns": {"text": text_column, "id": id_column},
        "shard_rows": shard_rows,
        "model": {
            "fingerprint": encoder.fingerprint,
            "precision": encoder.precision,
            "backend": encoder.backend,
            "device": encoder.device,
            "dim": encoder.dim,
        },
    }
    spec = _EncodeSpec(
        output=str(out.resolve()),
        id_column=id_column,
        id_type="int64" if key_type == pa.int64() else "string",
        model_dir=str(Path(model_dir).resolve()),
        precision=encoder.precision,
        device=encoder.device,
        backend=encoder.backend,
        fingerprint=encoder.fingerprint,
        dim=encoder.dim,
        shard_hook=shard_hook,
    )
    staged = out / STAGING_DIR / STAGED_NAME
    schema = pa.schema(
        [("_row", pa.int64()), ("id", key_type), ("text", pa.string()), ("_reason", pa.string())]
    )

    def rows() -> Iterator[dict[str, Any]]:
        for row, (values, reason) in enumerate(
            _iter_records(in_path, fmt, [id_column, text_column])
        ):
            key, text = None, None
            if values is not None:
                key, reason = _check_key(values[id_column], key_type, "id")
                text = values[text_column]
                reason = reason or _text_reason(text)
            yield {
                "_row": row,
                "id": key,
                "text": text if reason is None else None,
                "_reason": reason,
            }

    return _run_job(
        out,
        record,
        lambda: _staged_shards(
            staged, lambda: _stage(staged, schema, shard_rows, rows()), shard_rows
        ),
        lambda: _EncodeWorker(spec, encoder=encoder),  # reuses the Encoder opened above
        lambda: (_EncodeWorker, {"spec": spec, "threads": cpus_per_worker}),
        ray_address,
        workers,
        cpus_per_worker,
        1.0 if encoder.device == "cuda" else 0.0,
        progress,
        "encode",
    )


def _check_args(
    input: str | os.PathLike[str],
    first_column: str,
    second_column: str,
    shard_rows: int,
    cpus_per_worker: int,
    device: str = "cpu",
) -> tuple[Path, str]:
    for col in (first_column, second_column):
        if not isinstance(col, str) or not col:
            raise ConfigError(f"column names must be non-empty strings, got {col!r}")
    if first_column == second_column:
        raise ConfigError(f"the two columns must differ, both are {first_column!r}")
    _check_int("shard_rows", shard_rows)
    _check_int("cpus_per_worker", cpus_per_worker)
    if device not in BATCH_DEVICES:
        # No "auto": a job's vectors must come from one known device on every worker.
        raise ConfigError(f"device must be one of {', '.join(BATCH_DEVICES)}, got {device!r}")
    fmt = input_format(input)
    return _check_input(input), fmt


def _check_text_type(path: Path, column: str) -> None:
    schema = pq.read_schema(path)
    _missing_columns([column], schema.names, str(path))
    t = schema.field(column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        raise ConfigError(
            f"text column {column!r} of {str(path)!r} has type {t}, not string; name the text "
            "column with --text-column"
        )


# -- recommend ------------------------------------------------------------------------------


class _IdsOnlyEncoder:
    """Stands in for the model when histories are item ids only: nothing to encode.

    ``Recommender.load`` checks the encoder's fingerprint; this one carries the store's
    own, so a recommend job needs no model directory on any node.
    """

    def __init__(self, fingerprint: str, dim: int) -> None:
        self.fingerprint = fingerprint
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        raise ConfigError("batch recommendation scores item-id histories; it encodes no text")


def _store_identity(store: Path) -> tuple[dict[str, Any], str]:
    """The store's ``recommender.json`` and one sha256 over all its files (the catalog)."""
    from .recommender import CONFIG_NAME

    config_path = store / CONFIG_NAME
    if not config_path.is_file():
        raise ConfigError(
            f"{str(store)!r} is not a saved Recommender (no {CONFIG_NAME}); write one with "
            "Recommender.save(dir)"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{str(config_path)!r} is not valid JSON: {exc}") from exc
    h = hashlib.sha256()
    for path in sorted(p for p in store.iterdir() if p.is_file()):
        h.update(f"{path.name}\0{_sha256(path)}\0".encode())
    return config, h.hexdigest()


def _item_type(ids: NDArray[Any]) -> pa.DataType:
    if ids.dtype.kind in "iu":
        return pa.int64()
    if ids.dtype.kind == "U":
        return pa.string()
    raise ConfigError(
        "the catalog mixes int and str item ids; batch output needs one type (save the "
        "Recommender with ids of one type)"
    )


def _check_history(value: Any, item_type: pa.DataType) -> tuple[list[Any] | None, str | None]:
    if value is None:
        return None, "missing history"
    if not isinstance(value, list):
        return None, f"history is {type(value).__name__}, not a list of item ids"
    for j, item in enumerate(value):
        _, reason = _check_key(item, item_type, "item id")
        if reason is not None:
            return None, f"history[{j}]: {reason}"
    return value, None


@dataclass(frozen=True)
class _RecommendSpec:
    """What a recommend worker needs besides the catalog; small and picklable."""

    output: str
    user_column: str
    user_type: str
    item_type: str
    k: int
    exclude_seen: bool
    fingerprint: str
    dim: int
    settings: dict[str, Any]
    shard_hook: Callable[[int], None] | None


class _RecommendWorker:
    """Scores shards of users with one Recommender; also the Ray Data actor (``__call__``).

    On Ray, ``catalog`` is a one-element list holding the ``ray.put`` reference of the
    item vectors, ids and popularity: every actor on a node maps the same object-store
    copy (read-only, zero-copy) instead of reading the store from disk.
    """

    def __init__(
        self,
        spec: _RecommendSpec,
        catalog: list[Any] | None = None,
        recommender: Any = None,
    ) -> None:
        from .recommender import Recommender

        self.spec = spec
        if recommender is None:
            if not catalog:
                raise ConfigError("a recommend worker needs a catalog or a recommender")
            import ray

            data = ray.get(catalog[0])
            recommender = Recommender.from_vectors(
                _IdsOnlyEncoder(spec.fingerprint, spec.dim),
                data["vectors"],
                data["ids"],
                data["popularity"],
                **spec.settings,
            )
        self.recommender = recommender
        self._output = Path(spec.output)
        self._user_type = _arrow_key_type(spec.user_type)
        self._item_type = _arrow_key_type(spec.item_type)

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        from .errors import InputTypeError, InputValueError

        spec = self.spec
        with pq.ParquetFile(self._output / STAGING_DIR / STAGED_NAME) as staged:
            table = staged.read_row_group(shard)
        rows = table.column("_row").to_pylist()
        users = table.column("user").to_pylist()
        histories = table.column("history").to_pylist()
        reasons = table.column("_reason").to_pylist()
        if spec.shard_hook is not None:
            spec.shard_hook(shard)
        good: list[int] = []
        items: list[list[Any]] = []
        scores: list[list[float]] = []
        for i, reason in enumerate(reasons):
            if reason is None:
                try:
                    recs = self.recommender.recommend(
                        histories[i], k=spec.k, exclude_seen=spec.exclude_seen
                    )
                except (InputTypeError, InputValueError) as exc:
                    reasons[i] = str(exc)  # e.g. ids not in the catalog, cold user
                else:
                    good.append(i)
                    items.append([item for item, _ in recs])
                    scores.append([score for _, score in recs])
            if on_rows is not None and i % 256 == 255:
                on_rows(256)
        if on_rows is not None:
            on_rows(len(rows) % 256)
        bad = [i for i, r in enumerate(reasons) if r is not None]
        _write_rejects(
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
            metadata={"bertrec.fingerprint": spec.fingerprint, "bertrec.k": str(spec.k)},
        )
        part = pa.table(
            [
                pa.array([users[i] for i in good], self._user_type),
                pa.array(items, pa.list_(self._item_type)),
                pa.array(scores, pa.list_(pa.float32())),
            ],
            schema=schema,
        )
        _write_parquet_atomic(part, self._output / part_name(shard))
        return len(rows)

    def __call__(self, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        return _run_batch(self, batch)


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
) -> BatchResult:
    """Top-k items for every user of a Parquet or JSON Lines file of histories.

    The users file has one row per user: ``user_column`` (int or string) and
    ``history_column``, a list of catalog item ids, oldest first, e.g.
    ``{"user_id": 7, "history": [1, 50, 1210]}``. Each part holds the user column,
    ``items`` (list of item ids, best first, at most ``k``) and ``scores`` (list of
    float32), exactly what ``Recommender.recommend`` returns for that history. Users
    whose row or history cannot be scored (missing or non-list history, ids not in the
    catalog, an empty history without popularity to fall back on) go to
    ``OUTPUT/_rejects/`` with the reason. Rerunning after a crash finishes the missing
    shards only.

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

    Returns:
        A ``BatchResult`` with the user, reject and shard counts.

    Raises:
        ConfigError: missing users file or store, unknown column, CSV input, bad values.
        OutputExistsError: OUTPUT holds something else, another model's or another job's
            results.
        ProviderError: Ray asked for but not installed.
    """
    from .recommender import Recommender

    in_path, fmt = _check_args(users, user_column, history_column, shard_rows, cpus_per_worker)
    if fmt == "csv":
        raise ConfigError(
            f"{str(users)!r}: a history is a list, which CSV cannot hold; write the users as "
            'JSON Lines ({"user_id": 7, "history": [1, 50]}) or Parquet'
        )
    _check_int("k", k)
    if not isinstance(exclude_seen, bool):
        raise ConfigError(f"exclude_seen must be a bool, got {exclude_seen!r}")
    _check_engine(ray_address, workers)
    if user_column in ("items", "scores"):
        raise ConfigError(f"user_column cannot be {user_column!r}: the output uses that name")
    store_path = Path(store)
    if not store_path.is_dir():
        raise ConfigError(f"recommender store {str(store_path)!r} does not exist")
    config, store_sha = _store_identity(store_path)
    stand_in = _IdsOnlyEncoder(str(config.get("fingerprint")), int(config.get("dim", 0)))
    rec = Recommender.load(store_path, stand_in)
    item_type = _item_type(rec.item_ids)
    _check_columns(in_path, fmt, [user_column, history_column])
    user_type = _key_type(in_path, fmt, user_column)
    if fmt == "parquet":
        _check_list_type(in_path, history_column)
    out = Path(output)
    record = {
        "format_version": FORMAT_VERSION,
        "kind": "recommend",
        "input": {"format": fmt, "sha256": _sha256(in_path)},
        "columns": {"user": user_column, "history": history_column},
        "shard_rows": shard_rows,
        "k": k,
        "exclude_seen": exclude_seen,
        "model": {"fingerprint": stand_in.fingerprint, "dim": stand_in.dim},
        "store": {"sha256": store_sha, "items": len(rec), "settings": rec.settings()},
    }
    spec = _RecommendSpec(
        output=str(out.resolve()),
        user_column=user_column,
        user_type="int64" if user_type == pa.int64() else "string",
        item_type="int64" if item_type == pa.int64() else "string",
        k=k,
        exclude_seen=exclude_seen,
        fingerprint=stand_in.fingerprint,
        dim=stand_in.dim,
        settings=rec.settings(),
        shard_hook=shard_hook,
    )
    staged = out / STAGING_DIR / STAGED_NAME
    schema = pa.schema(
        [
            ("_row", pa.int64()),
            ("user", user_type),
            ("history", pa.list_(item_type)),
            ("_reason", pa.string()),
        ]
    )

    def rows() -> Iterator[dict[str, Any]]:
        records = _iter_records(in_path, fmt, [user_column, history_column])
        for row, (values, reason) in enumerate(records):
            user, history = None, None
            if values is not None:
                user, reason = _check_key(values[user_column], user_type, "user id")
                history, history_reason = _check_history(values[history_column], item_type)
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
            "vectors": np.ascontiguousarray(rec.vectors),
            "ids": rec.item_ids.tolist(),
            "popularity": rec.popularity,
        }
        return [ray.put(data)]

    return _run_job(
        out,
        record,
        lambda: _staged_shards(
            staged, lambda: _stage(staged, schema, shard_rows, rows()), shard_rows
        ),
        lambda: _RecommendWorker(spec, recommender=rec),
        lambda: (_RecommendWorker, {"spec": spec, "catalog": ray_catalog()}),
        ray_address,
        workers,
        cpus_per_worker,
        0.0,
        progress,
        "recommend",
    )


def _check_list_type(path: Path, column: str) -> None:
    t = pq.read_schema(path).field(column).type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise ConfigError(
            f"history column {column!r} of {str(path)!r} has type {t}, not a list of item ids"
        )
