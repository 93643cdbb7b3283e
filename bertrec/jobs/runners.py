"""Running a job's shards: the shared driver ``run_job``, in this process or as Ray Data
actors, with a failed shard reported back to the driver instead of aborting the others.

Ray is imported only inside the functions that run on it.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow.parquet as pq
from numpy.typing import NDArray

from bertrec.core import check_int
from bertrec.errors import ConfigError, OutputError, ProviderError
from bertrec.jobs.jobdir import (
    JOB_NAME,
    STAGING_DIR,
    JobResult,
    check_output,
    finish,
    lock_output,
    pending_shards,
    prepare_output,
    read_success,
    remove_temporaries,
    staged_path,
    staged_rows,
    tidy_finished,
    unstart,
)

log = logging.getLogger("bertrec.jobs")


class ShardWorker(Protocol):
    """Computes and writes one shard; built once per process or Ray actor."""

    def run_shard(self, shard: int, on_rows: Callable[[int], None] | None = None) -> int:
        """Write shard ``shard``'s part (and rejects) and return its input row count."""
        ...


# A Ray actor class (a ShardWorker whose __call__ is ``run_batch``) and its constructor's
# keyword arguments.
RayActor = tuple[type, dict[str, Any]]


@dataclass(frozen=True)
class Engine:
    """Where a job's shards run.

    Attributes:
        ray_address: None for this process; ``"local"`` or a Ray address for Ray.
        workers: Ray actors, or None for the cluster's CPUs over ``cpus_per_worker``.
        cpus_per_worker: CPUs per Ray actor.
        gpus_per_worker: GPUs per Ray actor (0 for none).
    """

    ray_address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0

    @property
    def name(self) -> str:
        """``"in-process"`` or ``"ray"``, as ``JobResult.engine`` reports it."""
        return "in-process" if self.ray_address is None else "ray"


def check_engine(
    ray_address: str | None,
    workers: int | None,
    cpus_per_worker: int,
    gpus_per_worker: float = 0.0,
) -> Engine:
    """The engine a job's arguments ask for.

    Raises:
        ConfigError: a bad address, worker count or CPU count, or ``workers`` without Ray.
    """
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address):
        raise ConfigError(
            f"ray_address must be None (this process), 'local' or a Ray address, got "
            f"{ray_address!r}"
        )
    check_int(cpus_per_worker, "cpus_per_worker")
    if workers is not None:
        check_int(workers, "workers")
        if ray_address is None:
            raise ConfigError(
                "workers applies to Ray jobs; without Ray the job runs in this process on all "
                "its CPUs (pass ray_address='local' or --ray)"
            )
    return Engine(ray_address, workers, cpus_per_worker, gpus_per_worker)


# -- the driver -----------------------------------------------------------------------------


def run_job(
    output: Path,
    record: dict[str, Any],
    stage: Callable[[], int],
    make_worker: Callable[[], ShardWorker],
    ray_actor: Callable[[], RayActor],
    engine: Engine,
    progress: bool,
    desc: str,
) -> JobResult:
    """Prepare OUTPUT, stage the input, run the pending shards, write ``_SUCCESS``.

    Args:
        output: the job directory.
        record: the job's ``_job.json``; a rerun must match it.
        stage: stages the input (unless an earlier run did) and returns the shard count.
        make_worker: the worker for this process (called only when shards are pending).
        ray_actor: the Ray actor class and its keywords (called once Ray is up).
        engine: where the shards run.
        progress: show a progress bar over rows.
        desc: the job's name in logs and the progress bar.

    OUTPUT is locked (``lock_output``) from before it is first written until ``_SUCCESS``
    is; a finished job's OUTPUT is only read.

    Raises:
        OutputError / ModelMismatchError: as ``prepare_output`` and ``finish``.
        OutputError: another job holds OUTPUT's lock; a part cannot be written (full disk,
            permissions): the message says how many shards are written.
        ProviderError: Ray asked for but not installed.
        Exception: a shard's own error (the other shards are written; rerun to resume).
    """
    start = time.perf_counter()
    # A finished job returns at once, without the lock: nothing of it is written again.
    if check_output(output, record):
        tidy_finished(output)
        return _finished(output, engine, start)
    existed = output.exists()
    try:
        with lock_output(output):
            fresh = not (output / JOB_NAME).is_file()
            if prepare_output(output, record):  # another run finished it since the check
                shutil.rmtree(output / STAGING_DIR, ignore_errors=True)
                return _finished(output, engine, start)
            remove_temporaries(output)
            try:
                shards = stage()
            except BaseException:
                if fresh:  # e.g. a corrupted input: leave OUTPUT as it was found
                    unstart(output)
                raise
            pending = pending_shards(output, shards)
            if pending:
                _run_pending(
                    output, ray_actor, make_worker, engine, pending, shards, progress, desc
                )
            summary = finish(output, record, shards)
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                output.rmdir()  # only if nothing is in it
        raise
    return JobResult(
        output,
        summary["rows"],
        summary["written"],
        summary["rejected"],
        shards,
        shards - len(pending),
        time.perf_counter() - start,
        engine.name,
    )


def _finished(output: Path, engine: Engine, start: float) -> JobResult:
    summary = read_success(output)
    return JobResult(
        output,
        summary["rows"],
        summary["written"],
        summary["rejected"],
        summary["shards"],
        summary["shards"],
        time.perf_counter() - start,
        engine.name,
    )


def _run_pending(
    output: Path,
    ray_actor: Callable[[], RayActor],
    make_worker: Callable[[], ShardWorker],
    engine: Engine,
    pending: Sequence[int],
    shards: int,
    progress: bool,
    desc: str,
) -> None:
    rows = staged_rows(staged_path(output), pending)
    log.info("%s: %d of %d shards to run (%d rows)", desc, len(pending), shards, rows)
    try:
        if engine.ray_address is None:
            _run_in_process(make_worker(), pending, rows, progress, desc)
        else:
            address = engine.ray_address
            _run_ray_job(ray_actor, address, engine, pending, rows, output, progress, desc)
    except OutputError as exc:
        # A full disk or a permission fault: one line (the CLI prints only this) that
        # also says how to go on.
        done = shards - len(pending_shards(output, shards))
        raise OutputError(
            f"{exc}; {desc} stopped with {done} of {shards} shards written, run the same job "
            "again to finish the rest"
        ) from exc
    except BaseException:
        done = shards - len(pending_shards(output, shards))
        log.error(
            "%s stopped with %d of %d shards written to %s; run the same job again to "
            "finish the rest",
            desc,
            done,
            shards,
            output,
        )
        raise


def _run_in_process(
    worker: ShardWorker, pending: Sequence[int], total_rows: int, progress: bool, desc: str
) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=total_rows, desc=desc, unit="row", disable=not progress) as bar:
        for s in pending:
            worker.run_shard(s, on_rows=bar.update)


# -- shard errors ---------------------------------------------------------------------------


def run_batch(worker: ShardWorker, batch: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
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


def raise_shard_errors(errors: list[bytes], shards: int, desc: str) -> None:
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


# -- Ray ------------------------------------------------------------------------------------


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


def _run_ray_job(
    ray_actor: Callable[[], RayActor],
    address: str,
    engine: Engine,
    pending: Sequence[int],
    rows: int,
    output: Path,
    progress: bool,
    desc: str,
) -> None:
    started = _ray_init(address)
    try:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = engine.workers or max(1, cpus // engine.cpus_per_worker)
        actor, constructor = ray_actor()
        _run_on_ray(
            actor,
            constructor,
            pending,
            rows,
            staged_path(output),
            min(workers, len(pending)),
            engine,
            progress,
            desc,
        )
    finally:
        if started:
            import ray

            ray.shutdown()


def _run_on_ray(
    actor: type,
    constructor: dict[str, Any],
    pending: Sequence[int],
    total_rows: int,
    staged: Path,
    workers: int,
    engine: Engine,
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
        num_cpus=engine.cpus_per_worker,
        num_gpus=engine.gpus_per_worker or None,
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
        raise_shard_errors(errors, meta.num_row_groups, desc)
