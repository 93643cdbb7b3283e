"""Two encode jobs into one OUTPUT: the second refuses at once with one line (also from the
CLI), and the first finishes as if it had run alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import ROOT, files_of

from bertrec.errors import OutputError
from bertrec.jobs import encode_dataset
from bertrec.jobs.jobdir import LOCK_NAME, lock_output
from bertrec.runtime.texts import default_sentences

N_ROWS, SHARD_ROWS = 300, 64
BUSY = "being written by another bertrec job"
WAIT_S = 120


@pytest.fixture(scope="module")
def texts_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = default_sentences()
    path = tmp_path_factory.mktemp("concurrent-in") / "items.jsonl"
    rows = [{"id": i, "text": f"{base[i % len(base)]} {i}"} for i in range(N_ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


class Paused:
    """A shard hook that stops the job in shard 1 until released."""

    def __init__(self) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()

    def __call__(self, shard: int) -> None:
        if shard == 1:
            self.inside.set()
            assert self.release.wait(WAIT_S), "the test never released the first job"


def test_second_job_refuses_at_once_and_the_first_finishes(
    texts_input: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    clean = tmp_path / "clean"
    encode_dataset(texts_input, clean, tiny_model_dir, shard_rows=SHARD_ROWS)
    out = tmp_path / "out"
    hook = Paused()
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            results["first"] = encode_dataset(
                texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS, shard_hook=hook
            )
        except BaseException as exc:  # reported by the main thread
            results["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert hook.inside.wait(WAIT_S), f"the first job never reached shard 1: {results}"
        start = time.perf_counter()
        with pytest.raises(OutputError, match=BUSY) as info:
            encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
        assert time.perf_counter() - start < 30  # it did not wait for the first job
        message = str(info.value)
        assert str(out) in message and "choose another OUTPUT" in message
        assert "\n" not in message

        # The same from the command line: exit status 2 and one line on stderr.
        cli = [sys.executable, "-m", "bertrec.cli", "encode", str(texts_input), str(out)]
        cli += ["--model", str(tiny_model_dir), "--shard-rows", str(SHARD_ROWS), "--no-progress"]
        proc = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, timeout=WAIT_S)
        assert proc.returncode == 2
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert BUSY in proc.stderr and "Traceback" not in proc.stderr
    finally:
        hook.release.set()
        thread.join(WAIT_S)
    assert "error" not in results, results
    assert results["first"].written == N_ROWS
    assert files_of(out) == files_of(clean)  # the lock file is gone too


def test_a_finished_job_returns_at_once_while_locked(
    texts_input: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    with lock_output(out):
        again = encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert (again.resumed, again.written) == (again.shards, N_ROWS)
    assert not (out / LOCK_NAME).exists()


def test_lock_file_left_by_a_killed_job_is_no_obstacle(
    texts_input: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).touch()  # what a job killed before writing anything else leaves
    result = encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert result.written == N_ROWS
    assert not (out / LOCK_NAME).exists()
