"""The job directory: its file names, the ``_job.json`` record that a rerun must match, the
staged input, part and reject files written whole or not at all, and ``_SUCCESS``."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bertrec.core import atomic_write, atomic_write_bytes, json_bytes, output_error, sha256_file
from bertrec.errors import ModelMismatchError, OutputError

log = logging.getLogger("bertrec.jobs")

FORMAT_VERSION = 1
JOB_NAME = "_job.json"
SUCCESS_NAME = "_SUCCESS"
STAGING_DIR = "_staging"
STAGED_NAME = "input.parquet"
# Leading underscore: Arrow and Spark skip it, so pq.read_table(OUTPUT) reads the parts only.
REJECTS_DIR = "_rejects"
# Held (flock) by the job writing OUTPUT, removed when it ends.
LOCK_NAME = "_lock"

# Rows per shard. A shard is the unit of retry and of resume: seconds of work for a
# one-CPU MiniLM worker (bench/ray_overhead.py measures its rate), long enough to hide
# Ray's per-task cost (milliseconds) and short enough that a crash loses little.
DEFAULT_SHARD_ROWS = 4096
# Parquet settings are fixed so that the same rows always give the same bytes; page
# checksums let a reader catch silent corruption of a staged file or a part.
COMPRESSION = "zstd"


@dataclass(frozen=True)
class JobResult:
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


def part_name(shard: int) -> str:
    """File name of a shard's part (five digits, more past 99,999 shards)."""
    return f"part-{shard:05d}.parquet"


def staged_path(output: Path) -> Path:
    """Where the job's input is staged, one row group per shard."""
    return output / STAGING_DIR / STAGED_NAME


def key_type_name(kind: pa.DataType) -> str:
    """``"int64"`` or ``"string"``: an id type in a form that pickles for Ray workers."""
    return "int64" if kind == pa.int64() else "string"


def arrow_key_type(name: str) -> pa.DataType:
    """The Arrow type ``key_type_name`` named."""
    return pa.int64() if name == "int64" else pa.string()


# -- whole files ----------------------------------------------------------------------------


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` atomically, as one row group with fixed settings.

    Raises:
        OutputError: the file cannot be written.
    """
    # One row group, fixed compression, no timestamps: equal tables give equal bytes.
    rows = max(1, table.num_rows)
    atomic_write(
        path,
        lambda tmp: pq.write_table(
            table, tmp, row_group_size=rows, compression=COMPRESSION, write_page_checksum=True
        ),
    )


def parquet_complete(path: Path) -> bool:
    """Whether ``path`` is a readable Parquet file (renamed into place, so whole)."""
    if not path.is_file():
        return False
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def write_rejects(
    output: Path,
    shard: int,
    rows: list[int],
    keys: list[Any],
    reasons: list[str],
    key: str,
    key_type: pa.DataType,
) -> None:
    """Write a shard's unusable rows (row number, id, reason), if it has any.

    Called before the shard's part is written: once the part exists, its rejects are on
    disk too.
    """
    if not rows:
        return
    table = pa.table(
        {
            "row": pa.array(rows, pa.int64()),
            key: pa.array(keys, key_type),
            "reason": pa.array(reasons, pa.string()),
        }
    )
    write_parquet_atomic(table, output / REJECTS_DIR / part_name(shard))


def pending_shards(output: Path, shards: int) -> list[int]:
    """The shards that have no complete part yet."""
    return [s for s in range(shards) if not parquet_complete(output / part_name(s))]


def staged_rows(staged: Path, shards: Sequence[int]) -> int:
    """Input rows in ``shards`` of the staged input."""
    meta = pq.read_metadata(staged)
    return sum(meta.row_group(s).num_rows for s in shards)


# -- staging --------------------------------------------------------------------------------


class _StagingWriter:
    """Writes staged rows as row groups of exactly ``shard_rows`` (the last may be shorter)."""

    def __init__(self, path: Path, schema: pa.Schema, shard_rows: int) -> None:
        self.schema = schema
        self.shard_rows = shard_rows
        self.rows = 0
        self._buffer: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._writer = pq.ParquetWriter(
            path, schema, compression=COMPRESSION, write_page_checksum=True
        )

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


def stage_input(
    output: Path,
    schema: pa.Schema,
    shard_rows: int,
    rows: Iterable[dict[str, Any]],
) -> int:
    """Stage ``rows`` (each with a ``_row`` number) unless an earlier run did; the number of
    shards.

    The staged copy has one row group per shard, so every input format shards the same way
    and a worker reads exactly its rows. ``rows`` is only iterated when staging is needed.

    Raises:
        OutputError: the staged file cannot be written, or an earlier one does not match
            ``shard_rows``.
    """
    staged = staged_path(output)
    if not parquet_complete(staged):

        def write(tmp: Path) -> None:
            writer = _StagingWriter(tmp, schema, shard_rows)
            try:
                for row in rows:
                    writer.add(row)
            finally:
                writer.close()

        atomic_write(staged, write)
    meta = pq.read_metadata(staged)
    expected = math.ceil(meta.num_rows / shard_rows)
    if meta.num_row_groups != expected:
        raise OutputError(
            f"staged input {str(staged)!r} has {meta.num_row_groups} row groups, expected "
            f"{expected}; delete it and rerun"
        )
    return expected


# -- start and finish -----------------------------------------------------------------------


def check_output(output: Path, record: dict[str, Any]) -> bool:
    """Check, without writing anything, that OUTPUT is new or holds this same job; True when
    that job is finished (``_SUCCESS`` is there).

    Raises:
        OutputError: OUTPUT is a file, a foreign non-empty directory or another job's output.
        ModelMismatchError: OUTPUT holds another model's results.
    """
    job_path = output / JOB_NAME
    if output.exists() and not output.is_dir():
        raise OutputError(f"output {str(output)!r} exists and is a file; choose a directory")
    if not output.is_dir():
        return False
    if job_path.is_file():
        try:
            old = json.loads(job_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OutputError(
                f"{str(job_path)!r} cannot be read ({exc}); delete {str(output)!r} to start over"
            ) from exc
        _check_same_job(output, old, record)
        return (output / SUCCESS_NAME).is_file()
    # A lock file alone is what a job killed before writing _job.json leaves.
    if any(p.name != LOCK_NAME for p in output.iterdir()):
        raise OutputError(
            f"output {str(output)!r} is a non-empty directory that no bertrec batch job "
            f"wrote (it has no {JOB_NAME}); choose a new OUTPUT or empty it"
        )
    return False


def prepare_output(output: Path, record: dict[str, Any]) -> bool:
    """Create OUTPUT or check it holds this same job; True when ``_SUCCESS`` is there.

    Called with OUTPUT locked (``lock_output``).

    Raises:
        OutputError: as ``check_output``, or OUTPUT cannot be created.
        ModelMismatchError: OUTPUT holds another model's results.
    """
    if check_output(output, record):
        return True
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(output, exc, "create") from exc
    job_path = output / JOB_NAME
    # _job.json first: a directory of ours is never without it, beyond the lock file.
    if not job_path.is_file():
        atomic_write_bytes(job_path, json_bytes(record))
    try:
        (output / REJECTS_DIR).mkdir(exist_ok=True)
        (output / STAGING_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise output_error(output, exc, "create") from exc
    return False


@contextlib.contextmanager
def lock_output(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on OUTPUT (``flock`` on ``OUTPUT/_lock``) for the block, so
    that a second job into the same OUTPUT refuses at once instead of racing this one.

    The lock dies with its process (kill -9 included); the file is removed on the way out.

    Raises:
        OutputError: another process holds the lock, or OUTPUT cannot be created.
    """
    if sys.platform == "win32":  # no flock; one writer per OUTPUT is then up to the user
        yield
        return
    import fcntl

    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(output, exc, "create") from exc
    path = output / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise output_error(path, exc, "create") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"output {str(output)!r} is being written by another bertrec job (it holds "
                f"{str(path)!r}); wait for that job to finish, or choose another OUTPUT"
            ) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise output_error(path, exc, "lock") from exc
            log.warning(
                "cannot lock %s (%s); make sure no other job writes %s",
                path,
                exc.strerror,
                output,
            )
        # The holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a removed file, and must lock the one at the path now.
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (
            held.st_dev,
            held.st_ino,
        ):
            break
        os.close(fd)
    try:
        yield
    finally:
        # Removed while still held, so that no one can lock the removed file after us.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _check_same_job(output: Path, old: Any, new: dict[str, Any]) -> None:
    if not isinstance(old, dict):
        raise OutputError(
            f"{str(output / JOB_NAME)!r} is not a job record; delete {str(output)!r} to start over"
        )
    old_model, new_model = old.get("model"), new.get("model", {})
    old_fp = old_model.get("fingerprint") if isinstance(old_model, dict) else None
    new_fp = new_model.get("fingerprint")
    if old_fp != new_fp:
        raise ModelMismatchError(
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
        raise OutputError(
            f"output {str(output)!r} was started by a different job ({'; '.join(diffs)}); "
            "rerun with the same input and settings to resume it, or choose a new OUTPUT"
        )


def unstart(output: Path) -> None:
    """Remove what ``prepare_output`` wrote for a job that failed before its input was
    staged, so that a rerun (with the input fixed) is a new job and not a different one."""
    (output / JOB_NAME).unlink(missing_ok=True)
    for folder in (STAGING_DIR, REJECTS_DIR):
        shutil.rmtree(output / folder, ignore_errors=True)


def tidy_finished(output: Path) -> None:
    """Remove what a job killed after writing ``_SUCCESS`` left behind (the staging copy, the
    lock file); nothing is done while another job holds the lock, or where OUTPUT cannot be
    written."""
    if not ((output / STAGING_DIR).exists() or (output / LOCK_NAME).exists()):
        return
    with contextlib.suppress(OSError), lock_output(output):  # OutputError is an OSError
        shutil.rmtree(output / STAGING_DIR, ignore_errors=True)


def remove_temporaries(output: Path) -> None:
    """Delete the temporary files of writers killed mid-write; their shards are redone."""
    for folder in (output, output / REJECTS_DIR, output / STAGING_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


def read_success(output: Path) -> dict[str, Any]:
    """The totals ``finish`` wrote to ``_SUCCESS``.

    Raises:
        OutputError: ``_SUCCESS`` cannot be read.
    """
    path = output / SUCCESS_NAME
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise OutputError(
            f"{str(path)!r} cannot be read ({exc}); delete it and rerun to finish the job again"
        ) from exc
    return summary


def finish(output: Path, record: dict[str, Any], shards: int) -> dict[str, Any]:
    """Check every part is there, write ``_SUCCESS`` and drop the staging copy.

    Raises:
        OutputError: a shard has no complete part file.
    """
    parts = []
    totals = {"written": 0, "rejected": 0}
    for s in range(shards):
        path = output / part_name(s)
        if not parquet_complete(path):
            raise OutputError(
                f"shard {s} has no complete part file {str(path)!r} after the job ran; rerun to "
                "finish it"
            )
        rejects = output / REJECTS_DIR / part_name(s)
        n_rejects = pq.read_metadata(rejects).num_rows if rejects.is_file() else 0
        n = pq.read_metadata(path).num_rows
        totals["written"] += n
        totals["rejected"] += n_rejects
        parts.append(
            {"file": path.name, "rows": n, "rejects": n_rejects, "sha256": sha256_file(path)}
        )
    summary = {
        **record,
        "rows": totals["written"] + totals["rejected"],
        **totals,
        "shards": shards,
        "parts": parts,
    }
    atomic_write_bytes(output / SUCCESS_NAME, json_bytes(summary))
    shutil.rmtree(output / STAGING_DIR, ignore_errors=True)
    return summary
