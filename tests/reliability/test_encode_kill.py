"""``encode_dataset`` killed with SIGKILL in a shard, at seeded random filesystem calls and
after seeded delays: every file left is whole, and the rerun resumes to output that is
byte-identical to an uninterrupted run, no row lost or repeated."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from faultkit import FsCalls, files_of, run_child

from bertrec.jobs import encode_dataset
from bertrec.runtime.texts import default_sentences

N_ROWS, SHARD_ROWS = 600, 128
EMPTY_ROWS = {5, 200, 450}  # rejected: no text
REPEATED = {300: 7, 590: 100}  # row -> the earlier row whose id it repeats

CHILD = """
import os, signal
from bertrec.jobs import encode_dataset
import bertrec.runtime.encoder, onnxruntime, pyarrow.parquet, tqdm.auto

def hook(shard):
    if shard == {hook_shard!r}:
        os.kill(os.getpid(), signal.SIGKILL)

faultkit.arm()
encode_dataset({source!r}, {output!r}, {model!r}, shard_rows={shard_rows}, shard_hook=hook)
"""


def _rows() -> list[dict[str, Any]]:
    base = default_sentences()
    rows: list[dict[str, Any]] = []
    for i in range(N_ROWS):
        text = "" if i in EMPTY_ROWS else f"{base[i % len(base)]} {i}"
        rows.append({"id": REPEATED.get(i, i), "text": text})
    return rows


@pytest.fixture(scope="module")
def job(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The input, an uninterrupted run's files, and the filesystem calls of one run."""
    root = tmp_path_factory.mktemp("encode-kill")
    source = root / "items.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    clean = root / "clean"
    result = encode_dataset(source, clean, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert (result.written, result.rejected) == (N_ROWS - 5, 5)
    with pytest.MonkeyPatch.context() as mp:
        calls = FsCalls().install(mp.setattr)
        encode_dataset(source, root / "counted", tiny_model_dir, shard_rows=SHARD_ROWS)
    return {"source": source, "clean": files_of(clean), "total": calls.count}


def _kill_point(case: str, total: int) -> dict[str, Any]:
    rng = random.Random(f"encode-{case}")
    if case.startswith("shard"):
        return {"hook_shard": int(case.split("-")[1])}
    if case.startswith("call"):
        return {"kill_at": rng.randint(1, total)}
    return {"kill_after": rng.uniform(0.0, 0.5)}  # the whole job takes about a second


CASES = ["shard-0", "shard-3", *[f"call-{i}" for i in range(8)], "delay"]


@pytest.mark.parametrize("case", CASES)
def test_killed_encode_resumes_byte_identical(
    case: str, job: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    point = _kill_point(case, job["total"])
    body = CHILD.format(
        hook_shard=point.pop("hook_shard", None),
        source=str(job["source"]),
        output=str(out),
        model=str(tiny_model_dir),
        shard_rows=SHARD_ROWS,
    )
    child = run_child(body, **point)
    assert child.killed or "kill_after" in point
    clean: dict[str, bytes] = job["clean"]
    if out.exists():
        left = files_of(out)
        for name, data in left.items():
            if name.endswith(".parquet") and not name.startswith("_staging"):
                assert data == clean[name], f"{name} was left half-written"
        if "_SUCCESS" in left:  # killed while removing the lock file or the staging copy
            kept = {k: v for k, v in left.items() if k != "_lock" and "_staging" not in k}
            assert kept == clean
    result = encode_dataset(job["source"], out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert files_of(out) == clean  # no temp file, lock or staging copy survives the rerun
    assert (result.written, result.rejected) == (N_ROWS - 5, 5)
    ids = pq.read_table(out).column("id").to_pylist()
    assert ids == [i for i in range(N_ROWS) if i not in EMPTY_ROWS and i not in REPEATED]
