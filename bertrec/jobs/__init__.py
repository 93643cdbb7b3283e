"""Batch jobs over files: encode a table of texts, or recommend for a file of users, in this
process or on a Ray cluster, in deterministic shards that a rerun resumes.

Both jobs write OUTPUT as a directory::

    _job.json                    the job's settings and model fingerprint (written first)
    part-00000.parquet ...       one file per shard of ``shard_rows`` input rows
    _rejects/part-00000.parquet  the shard's unusable rows: row, id, reason (only if any)
    _SUCCESS                     written last: totals and each part's sha256
    _lock                        held by the job writing OUTPUT; gone when it ends

The input is first copied into ``OUTPUT/_staging/input.parquet`` with one row group per
shard, so every format shards the same way and a worker reads exactly its rows. Each shard
file is written under a temporary name and renamed, so a part either exists whole or not
at all; a rerun skips the shards whose part exists and the final files are byte-identical
to an uninterrupted run. Ray is imported only when a job asks for it.

One job writes OUTPUT at a time: the driver holds an exclusive ``flock`` on ``OUTPUT/_lock``
from before it writes anything until ``_SUCCESS`` is written (the kernel drops it when the
process dies, kill -9 included), and a second job into the same OUTPUT stops at once with
an ``OutputError`` (wait for the first, or choose another OUTPUT). A finished OUTPUT is
only read, so rerunning a finished job returns at once even while the lock is held. A full
disk or a permission fault is an ``OutputError`` naming the file and the fix; the shards
written before it stay, and the same job run again finishes the rest.

Modules: ``readers`` (input formats and row checks), ``jobdir`` (this layout),
``runners`` (in this process or on Ray), ``encode`` and ``recommend`` (the two jobs).
"""

from __future__ import annotations

from bertrec.errors import ProviderError

try:
    import pyarrow  # noqa: F401  (only to fail here, once, with the fix)
except ImportError as exc:  # pragma: no cover - depends on the install
    # A ProviderError, so the CLI reports it in one line like every other bertrec error.
    raise ProviderError(
        "bertrec batch jobs read and write Parquet with pyarrow, which is not installed; "
        "pip install 'bertrec[batch]' (or 'bertrec[ray]' for Ray)"
    ) from exc

from bertrec.jobs.encode import encode_dataset  # noqa: E402
from bertrec.jobs.jobdir import JobResult, part_name  # noqa: E402
from bertrec.jobs.recommend import recommend_dataset  # noqa: E402

__all__ = ["JobResult", "encode_dataset", "part_name", "recommend_dataset"]
