"""Batch jobs (`bertrec encode`, `bertrec recommend-batch`): formats, rejects, resume after a
crash, clear errors, and the same results in this process and on a local Ray."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch jobs need pyarrow (pip install 'bertrec[batch]')")
import pyarrow.parquet as pq  # noqa: E402

from bertrec.cli import main  # noqa: E402
from bertrec.runtime.batch import encode_dataset, part_name  # noqa: E402
from bertrec.runtime.encoder import Encoder  # noqa: E402
from bertrec.runtime.errors import ConfigError, OutputExistsError  # noqa: E402
from bertrec.runtime.texts import default_sentences  # noqa: E402

N_ROWS = 600
SHARD_ROWS = 128  # 5 shards, the last one short


# -- inputs ---------------------------------------------------------------------------------


def _texts(n: int = N_ROWS) -> list[str]:
    base = default_sentences()
    return [f"{base[i % len(base)]} {i}" for i in range(n)]


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
def clean_rows() -> list[dict[str, Any]]:
    return [{"id": i, "text": t} for i, t in enumerate(_texts())]


@pytest.fixture(scope="module")
def jsonl_input(tmp_path_factory: pytest.TempPathFactory, clean_rows: list[dict[str, Any]]) -> Path:
    return write_input(tmp_path_factory.mktemp("in") / "items.jsonl", clean_rows)


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path) -> tuple[Encoder, np.ndarray]:
    """The Encoder's own vectors for the clean rows: what every job must reproduce."""
    enc = Encoder(tiny_model_dir, device="cpu")
    return enc, enc.encode(_texts())


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


def files_of(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


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
    assert (result.rows, result.written, result.rejected, result.shards) == (600, 600, 0, 5)
    ids, vectors = read_output(tmp_path / "out")
    # CSV has no types: its ids come back as strings.
    assert ids == [str(i) if suffix == ".csv" else i for i in range(N_ROWS)]
    enc, ref = reference
    np.testing.assert_allclose(vectors, ref, atol=1e-6)
    meta = pq.read_metadata(tmp_path / "out" / "part-00000.parquet").metadata
    assert meta[b"bertrec.fingerprint"] == enc.fingerprint.encode()
    assert pq.read_schema(tmp_path / "out" / "part-00000.parquet").field(
        "embedding"
    ).type == pa.list_(pa.float32(), enc.dim)
    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    assert [p["rows"] for p in success["parts"]] == [128, 128, 128, 128, 88]
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


class FailOnShard:
    """A shard hook that raises in one shard, as a crash in the middle of a job would."""

    def __init__(self, shard: int) -> None:
        self.shard = shard
        self.seen: list[int] = []

    def __call__(self, shard: int) -> None:
        self.seen.append(shard)
        if shard == self.shard:
            raise RuntimeError(f"injected failure in shard {shard}")


def test_crash_then_rerun_is_byte_identical(
    tiny_model_dir: Path, jsonl_input: Path, clean_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="injected failure in shard 2"):
        encode_dataset(
            jsonl_input, out, tiny_model_dir, shard_rows=SHARD_ROWS, shard_hook=FailOnShard(2)
        )
    assert sorted(p.name for p in out.glob("part-*")) == [
        "part-00000.parquet",
        "part-00001.parquet",
    ]
    assert not (out / "_SUCCESS").exists()
    # A temporary file left by a writer killed mid-write must not survive or count.
    (out / ".part-00002.parquet.abc.tmp").write_bytes(b"half a file")
    hook = FailOnShard(-1)
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

    with pytest.raises(ConfigError, match="does not exist"):
        run(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        run(tmp_path / "items.txt")
    with pytest.raises(ConfigError, match="column 'body' is not in"):
        run(text_column="body")
    csv_src = write_input(tmp_path / "x.csv", [{"id": 1, "text": "x"}])
    with pytest.raises(ConfigError, match="column 'key' is not in"):
        run(csv_src, id_column="key")
    pq_src = write_input(tmp_path / "x.parquet", [{"id": 1, "text": 5}])
    with pytest.raises(ConfigError, match="has type int64, not string"):
        run(pq_src)
    with pytest.raises(ConfigError, match="shard_rows"):
        run(shard_rows=0)
    with pytest.raises(ConfigError, match="device"):
        run(device="auto")
    with pytest.raises(ConfigError, match="workers applies to Ray"):
        run(workers=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        run(out=tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="no bertrec batch job wrote"):
        run(out=tmp_path / "foreign")
    with pytest.raises(OutputExistsError, match="different job.*shard_rows"):
        run(out=clean_run, shard_rows=SHARD_ROWS * 2)
    other = tmp_path / "other-model"
    other.mkdir()
    job = json.loads((clean_run / "_job.json").read_text())
    job["model"]["fingerprint"] = "0" * 64
    (other / "_job.json").write_text(json.dumps(job))
    with pytest.raises(OutputExistsError, match="another model"):
        run(out=other, shard_rows=SHARD_ROWS)


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
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'bertrec[ray]')")
    # Hooks defined in this file must reach the workers, which cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


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


class ExitOnceInShard:
    """Kills the Ray worker process the first time it reaches ``shard`` (marker file)."""

    def __init__(self, shard: int, marker: str) -> None:
        self.shard = shard
        self.marker = marker

    def __call__(self, shard: int) -> None:
        if shard == self.shard and not os.path.exists(self.marker):
            Path(self.marker).write_text("killed")
            os._exit(1)


def test_ray_killed_worker_loses_and_repeats_nothing(
    ray_run: Path, tiny_model_dir: Path, jsonl_input: Path, tmp_path: Path
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
        shard_hook=ExitOnceInShard(3, str(marker)),
    )
    assert marker.exists()  # the worker really died; Ray restarted it and retried shard 3
    ids, _ = read_output(out)
    assert ids == list(range(N_ROWS))
    assert files_of(out) == files_of(ray_run)


# -- recommend-batch ------------------------------------------------------------------------

BAD_USERS = {"u5", "u9", "u11", "u13"}


@pytest.fixture(scope="module")
def store(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved Recommender over 300 items with popularity (so empty histories work)."""
    from bertrec.runtime.recommender import Recommender

    enc = Encoder(tiny_model_dir, device="cpu")
    rec = Recommender(
        enc, _texts(300), list(range(1000, 1300)), popularity=[i % 7 for i in range(300)]
    )
    return rec.save(tmp_path_factory.mktemp("store") / "rec")


@pytest.fixture(scope="module")
def users_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    users: list[dict[str, Any]] = []
    for u in range(200):
        size = int(rng.integers(0, 12))  # 0: a cold user, served by popularity
        history = [1000 + int(i) for i in rng.choice(300, size, replace=False)]
        users.append({"user_id": f"u{u}", "history": history})
    users[5]["history"] = [1000, 99999]
    users[9]["history"] = "1000 1001"
    del users[11]["history"]
    users[13]["history"] = [1000, "1001"]
    path = tmp_path_factory.mktemp("users") / "users.jsonl"
    path.write_text("".join(json.dumps(u) + "\n" for u in users), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def recs_in_process(
    store: Path, users_input: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from bertrec.runtime.batch import recommend_dataset

    out = tmp_path_factory.mktemp("recs") / "out"
    result = recommend_dataset(users_input, out, store, k=5, shard_rows=64)
    assert (result.rows, result.written, result.rejected, result.shards) == (200, 196, 4, 4)
    return out


def test_recommend_matches_the_recommender(
    tiny_model_dir: Path, store: Path, users_input: Path, recs_in_process: Path
) -> None:
    from bertrec.runtime.recommender import Recommender

    table = pq.read_table(recs_in_process)
    assert table.schema.names == ["user_id", "items", "scores"]
    got = {r["user_id"]: (r["items"], r["scores"]) for r in table.to_pylist()}
    rec = Recommender.load(store, Encoder(tiny_model_dir, device="cpu"))
    for line in users_input.read_text().splitlines():
        user = json.loads(line)
        if user["user_id"] in BAD_USERS:
            assert user["user_id"] not in got
            continue
        expect = rec.recommend(user["history"], k=5)
        assert got[user["user_id"]][0] == [item for item, _ in expect]
        np.testing.assert_allclose(got[user["user_id"]][1], [s for _, s in expect], rtol=1e-6)
    rejects = pq.read_table(recs_in_process / "_rejects").to_pylist()
    reasons = {r["user_id"]: r["reason"] for r in rejects}
    assert set(reasons) == BAD_USERS
    assert "not in the catalog" in reasons["u5"]
    assert reasons["u9"] == "history is str, not a list of item ids"
    assert reasons["u11"] == "missing history"
    assert reasons["u13"].startswith("history[1]: item id '1001' is str")


def test_recommend_bad_arguments(store: Path, users_input: Path, tmp_path: Path) -> None:
    from bertrec.runtime.batch import recommend_dataset

    csv_users = tmp_path / "users.csv"
    csv_users.write_text("user_id,history\n1,2\n")
    with pytest.raises(ConfigError, match="CSV cannot hold"):
        recommend_dataset(csv_users, tmp_path / "o", store)
    with pytest.raises(ConfigError, match="is not a saved Recommender"):
        recommend_dataset(users_input, tmp_path / "o", tmp_path)
    with pytest.raises(ConfigError, match="column 'items' is not in"):
        recommend_dataset(users_input, tmp_path / "o", store, history_column="items")
    with pytest.raises(ConfigError, match="k must be"):
        recommend_dataset(users_input, tmp_path / "o", store, k=0)


def test_cli_recommend_batch(
    store: Path,
    users_input: Path,
    recs_in_process: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "recs"
    args = ["recommend-batch", str(users_input), str(out), "--store", str(store), "--k", "5"]
    assert main([*args, "--shard-rows", "64", "--no-progress"]) == 0
    assert "200 rows -> 196 written, 4 rejected" in capsys.readouterr().out
    assert files_of(out) == files_of(recs_in_process)


def test_recommend_on_ray_matches_in_process(
    local_ray: Any, store: Path, users_input: Path, recs_in_process: Path, tmp_path: Path
) -> None:
    from bertrec.runtime.batch import recommend_dataset

    out = tmp_path / "recs"
    result = recommend_dataset(
        users_input, out, store, k=5, shard_rows=64, ray_address="local", workers=2
    )
    assert (result.engine, result.written, result.rejected) == ("ray", 196, 4)
    assert pq.read_table(out).equals(pq.read_table(recs_in_process))
    assert files_of(out) == files_of(recs_in_process)


def test_ray_job_that_fails_resumes_on_rerun(
    ray_run: Path, tiny_model_dir: Path, jsonl_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    kw: dict[str, Any] = {"shard_rows": SHARD_ROWS, "ray_address": "local", "workers": 2}
    # An error in a shard is not retried (it would fail again); the other shards finish
    # and the job raises the shard's own exception.
    with pytest.raises(RuntimeError, match="injected failure in shard 2") as info:
        encode_dataset(jsonl_input, out, tiny_model_dir, shard_hook=FailOnShard(2), **kw)
    assert "run the same job again" in str(info.value.__notes__)
    assert not (out / "_SUCCESS").exists()
    assert sorted(p.name for p in out.glob("part-*")) == [part_name(s) for s in (0, 1, 3, 4)]
    result = encode_dataset(jsonl_input, out, tiny_model_dir, **kw)
    assert (result.written, result.resumed) == (N_ROWS, 4)
    assert files_of(out) == files_of(ray_run)
