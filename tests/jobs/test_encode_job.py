"""The encode job (`bertrec encode`): formats, rejects, resume after a crash, clear errors,
and the same results in this process and on a local Ray."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch jobs need pyarrow (pip install 'bertrec[batch]')")
import pyarrow.parquet as pq  # noqa: E402

from bertrec.cli import main  # noqa: E402
from bertrec.errors import (  # noqa: E402
    ConfigError,
    ModelMismatchError,
    NotFoundError,
    OutputError,
    ProviderError,
)
from bertrec.jobs import JobResult, encode_dataset, part_name  # noqa: E402
from bertrec.runtime.encoder import Encoder  # noqa: E402

N_ROWS = 600
SHARD_ROWS = 128  # 5 shards, the last one short

FilesOf = Callable[[Path], dict[str, bytes]]


# -- inputs ---------------------------------------------------------------------------------


def write_input(path: Path, rows: list[dict[str, Any]]) -> Path:
    """``rows`` as Parquet, CSV or JSON Lines by ``path``'s suffix."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["id", "text"])
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clean_rows(item_texts: list[str]) -> list[dict[str, Any]]:
    return [{"id": i, "text": t} for i, t in enumerate(item_texts[:N_ROWS])]


@pytest.fixture(scope="module")
def jsonl_input(tmp_path_factory: pytest.TempPathFactory, clean_rows: list[dict[str, Any]]) -> Path:
    return write_input(tmp_path_factory.mktemp("in") / "items.jsonl", clean_rows)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, item_texts: list[str]) -> tuple[Encoder, np.ndarray]:
    """The Encoder's own vectors for the clean rows: what every job must reproduce."""
    enc = Encoder(tiny_model_dir, device="cpu")
    return enc, enc.encode(item_texts[:N_ROWS])


@pytest.fixture(scope="module")
def clean_run(
    tiny_model_dir: Path, jsonl_input: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    encode_dataset(jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    return out


def read_output(out: Path) -> tuple[list[Any], np.ndarray]:
    table = pq.read_table(out)
    dim = table.schema.field("embedding").type.list_size
    vectors = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, dim)
    return table.column(table.schema.names[0]).to_pylist(), vectors


# -- in this process ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_formats_match_the_encoder(
    suffix: str,
    tiny_model_dir: Path,
    clean_rows: list[dict[str, Any]],
    reference: tuple[Encoder, np.ndarray],
    tmp_path: Path,
) -> None:
    src = write_input(tmp_path / f"items{suffix}", clean_rows)
    result = encode_dataset(src, tmp_path / "out", tiny_model_dir, shard_rows=SHARD_ROWS)
    assert isinstance(result, JobResult)
    assert (result.rows, result.written, result.rejected, result.shards) == (600, 600, 0, 5)
    ids, vectors = read_output(tmp_path / "out")
    # CSV has no types: its ids come back as strings.
    assert ids == list(range(N_ROWS))  # CSV integer ids come back as integers too
    enc, ref = reference
    np.testing.assert_allclose(vectors, ref, atol=1e-6)
    meta = pq.read_metadata(tmp_path / "out" / part_name(0)).metadata
    assert meta[b"bertrec.fingerprint"] == enc.fingerprint.encode()
    assert meta[b"bertrec.variant"] == enc.variant.encode()
    assert pq.read_schema(tmp_path / "out" / part_name(0)).field("embedding").type == pa.list_(
        pa.float32(), enc.dim
    )
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert [p["rows"] for p in success["parts"]] == [128, 128, 128, 128, 88]
    assert success["model"]["variant"] == enc.variant
    assert not (tmp_path / "out" / "_staging").exists()


def test_rejects_are_reported_not_dropped(tiny_model_dir: Path, tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 0, "text": "a good film"}),
        json.dumps({"id": 1, "text": "   "}),
        json.dumps({"id": 2, "text": None}),
        json.dumps({"id": 3, "text": 42}),
        json.dumps({"id": 4}),
        "",
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": "five", "text": "a string id among ints"}),
        json.dumps({"id": 6, "text": "\ud800 lone surrogate"}),
        json.dumps({"id": 7, "text": "another good film"}),
    ]
    src = tmp_path / "bad.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = encode_dataset(src, tmp_path / "out", tiny_model_dir, shard_rows=4)
    assert (result.rows, result.written, result.rejected) == (12, 2, 10)
    assert read_output(tmp_path / "out")[0] == [0, 7]
    rejects = pq.read_table(tmp_path / "out" / "_rejects").to_pylist()
    got = {r["row"]: (r["id"], r["reason"]) for r in rejects}
    assert sorted(got) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert got[1] == (1, "text is empty or whitespace only")
    assert got[2] == (2, "missing text")
    assert got[3] == (3, "text is int, not a string")
    assert got[4] == (4, "missing text")
    assert got[5] == (None, "blank line")
    assert got[6][1].startswith("invalid JSON")
    assert got[7][1] == "line is a JSON list, not an object"
    assert got[8] == (None, "missing id")
    assert "not an integer" in got[9][1]
    assert "not valid Unicode" in got[10][1]


def test_csv_and_parquet_rejects(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": ""}, {"id": "", "text": "no id"}]
    result = encode_dataset(write_input(tmp_path / "x.csv", rows), tmp_path / "c", tiny_model_dir)
    assert (result.written, result.rejected) == (1, 2)
    rows2: list[dict[str, Any]] = [{"id": 1, "text": "fine"}, {"id": 2, "text": None}]
    rows2.append({"id": None, "text": "x"})
    src = write_input(tmp_path / "x.parquet", rows2)
    result = encode_dataset(src, tmp_path / "p", tiny_model_dir)
    assert (result.written, result.rejected) == (1, 2)
    reasons = pq.read_table(tmp_path / "p" / "_rejects").column("reason").to_pylist()
    assert reasons == ["missing text", "missing id"]


def test_crash_then_rerun_is_byte_identical(
    tiny_model_dir: Path,
    jsonl_input: Path,
    clean_run: Path,
    tmp_path: Path,
    fail_on_shard: Any,
    files_of: FilesOf,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected failure in shard 2"):
        encode_dataset(
            jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS, shard_hook=fail_on_shard(2)
        )
    assert sorted(p.name for p in out.glob("part-*")) == [part_name(0), part_name(1)]
    assert not (out / "_SUCCESS").exists()
    # A temporary file left by a writer killed mid-write must not survive or count.
    (out / ".part-00002.parquet.abc.tmp").write_bytes(b"half a file")
    hook = fail_on_shard(-1)
    result = encode_dataset(
        jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS, shard_hook=hook
    )
    assert hook.seen == [2, 3, 4]
    assert (result.resumed, result.written) == (2, N_ROWS)
    ids, _ = read_output(out)
    assert ids == list(range(N_ROWS))
    assert files_of(out) == files_of(clean_run)
    # A finished job is not redone.
    again = encode_dataset(jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert (again.resumed, again.written) == (5, N_ROWS)


def test_bad_arguments_are_clear_errors(
    tiny_model_dir: Path, jsonl_input: Path, clean_run: Path, tmp_path: Path
) -> None:
    def run(src: Any = jsonl_input, out: Any = None, **kw: Any) -> None:
        encode_dataset(src, out or tmp_path / "o", tiny_model_dir, **kw)

    with pytest.raises(NotFoundError, match="does not exist"):
        run(tmp_path / "missing.jsonl")
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(NotFoundError, match="is not a file"):
        run(tmp_path / "folder.jsonl")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        run(tmp_path / "items.txt")
    with pytest.raises(ConfigError, match="column 'body' is not in"):
        run(text_column="body")
    with pytest.raises(ConfigError, match="columns must differ"):
        run(text_column="id")
    csv_src = write_input(tmp_path / "x.csv", [{"id": 1, "text": "x"}])
    with pytest.raises(ConfigError, match="column 'key' is not in"):
        run(csv_src, id_column="key")
    pq_src = write_input(tmp_path / "x.parquet", [{"id": 1, "text": 5}])
    with pytest.raises(ConfigError, match="has type int64, not string"):
        run(pq_src)
    with pytest.raises(ConfigError, match="shard_rows"):
        run(shard_rows=0)
    with pytest.raises(ConfigError, match="cpus_per_worker"):
        run(cpus_per_worker=True)
    with pytest.raises(ConfigError, match="device"):
        run(device="auto")
    with pytest.raises(ConfigError, match="workers applies to Ray"):
        run(workers=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        run(out=tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="no bertrec batch job wrote"):
        run(out=tmp_path / "foreign")
    with pytest.raises(OutputError, match="different job.*shard_rows"):
        run(out=clean_run, shard_rows=SHARD_ROWS * 2)
    other = tmp_path / "other-model"
    other.mkdir()
    job = json.loads((clean_run / "_job.json").read_text())
    job["model"]["fingerprint"] = "0" * 64
    (other / "_job.json").write_text(json.dumps(job))
    with pytest.raises(ModelMismatchError, match="another model"):
        run(out=other, shard_rows=SHARD_ROWS)


def test_missing_pyarrow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "bertrec.jobs" or m.startswith("bertrec.jobs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without it looks like
    with pytest.raises(ProviderError, match=r"pip install 'bertrec\[batch\]'"):
        importlib.import_module("bertrec.jobs")


def test_cli_encode(
    tiny_model_dir: Path, jsonl_input: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["encode", str(jsonl_input), str(out), "--model", str(tiny_model_dir)]
    assert main([*args, "--shard-rows", "256"]) == 0
    assert "600 rows" in capsys.readouterr().out
    assert len(read_output(out)[0]) == N_ROWS
    assert (
        main(["encode", str(tmp_path / "nope.csv"), str(out), "--model", str(tiny_model_dir)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_cli_ray_option() -> None:
    from bertrec.cli import build_parser

    base = ["encode", "in.csv", "out", "--model", "m"]
    assert build_parser().parse_args(base).ray is None
    assert build_parser().parse_args([*base, "--ray"]).ray == "local"
    assert build_parser().parse_args([*base, "--ray", "auto", "--workers", "8"]).ray == "auto"


# -- on a local Ray -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_run(
    local_ray: Any,
    tiny_model_dir: Path,
    jsonl_input: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    out = tmp_path_factory.mktemp("ray") / "out"
    result = encode_dataset(
        jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS, ray_address="local", workers=2
    )
    assert (result.engine, result.written, result.shards) == ("ray", N_ROWS, 5)
    return out


def test_ray_matches_in_process(ray_run: Path, clean_run: Path) -> None:
    ids, vectors = read_output(ray_run)
    ref_ids, ref_vectors = read_output(clean_run)
    assert ids == ref_ids
    np.testing.assert_allclose(vectors, ref_vectors, atol=1e-6)
    assert (ray_run / "_job.json").read_bytes() == (clean_run / "_job.json").read_bytes()


def test_ray_killed_worker_loses_and_repeats_nothing(
    ray_run: Path,
    tiny_model_dir: Path,
    jsonl_input: Path,
    tmp_path: Path,
    exit_once_in_shard: Any,
    files_of: FilesOf,
) -> None:
    marker = tmp_path / "killed"
    out = tmp_path / "out"
    encode_dataset(
        jsonl_input,
        out,
        tiny_model_dir,
        shard_rows=SHARD_ROWS,
        ray_address="local",
        workers=2,
        shard_hook=exit_once_in_shard(3, str(marker)),
    )
    assert marker.exists()  # the worker really died; Ray restarted it and retried shard 3
    ids, _ = read_output(out)
    assert ids == list(range(N_ROWS))
    assert files_of(out) == files_of(ray_run)


def test_ray_job_that_fails_resumes_on_rerun(
    ray_run: Path,
    tiny_model_dir: Path,
    jsonl_input: Path,
    tmp_path: Path,
    fail_on_shard: Any,
    files_of: FilesOf,
) -> None:
    out = tmp_path / "out"
    kw: dict[str, Any] = {"shard_rows": SHARD_ROWS, "ray_address": "local", "workers": 2}
    # An error in a shard is not retried (it would fail again); the other shards finish
    # and the job raises the shard's own exception.
    with pytest.raises(RuntimeError, match="injected failure in shard 2") as info:
        encode_dataset(jsonl_input, out, tiny_model_dir, shard_hook=fail_on_shard(2), **kw)
    assert "run the same job again" in str(info.value.__notes__)
    assert not (out / "_SUCCESS").exists()
    assert sorted(p.name for p in out.glob("part-*")) == [part_name(s) for s in (0, 1, 3, 4)]
    result = encode_dataset(jsonl_input, out, tiny_model_dir, **kw)
    assert (result.written, result.resumed) == (N_ROWS, 4)
    assert files_of(out) == files_of(ray_run)


def test_csv_ids_are_integers_only_when_all_are(tiny_model_dir: Path, tmp_path: Path) -> None:
    ints = write_input(tmp_path / "i.csv", [{"id": 7, "text": "a"}, {"id": -3, "text": "b"}])
    encode_dataset(ints, tmp_path / "oi", tiny_model_dir)
    assert pq.read_table(tmp_path / "oi").column("id").to_pylist() == [7, -3]
    mixed = write_input(tmp_path / "m.csv", [{"id": 7, "text": "a"}, {"id": "x7", "text": "b"}])
    encode_dataset(mixed, tmp_path / "om", tiny_model_dir)
    assert pq.read_table(tmp_path / "om").column("id").to_pylist() == ["7", "x7"]


def test_rows_are_numbered_without_an_id_column(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "a"}\n{"text": ""}\n{"text": "c"}\n')
    result = encode_dataset(src, tmp_path / "o", tiny_model_dir, id_column=None)
    assert (result.written, result.rejected) == (2, 1)
    assert pq.read_table(tmp_path / "o").column("id").to_pylist() == [0, 2]
    out = tmp_path / "cli"
    assert (
        main(["encode", str(src), str(out), "--model", str(tiny_model_dir), "--no-progress"]) == 0
    )
    assert "numbering the rows" in capsys.readouterr().err
    assert pq.read_table(out).column("id").to_pylist() == [0, 2]
