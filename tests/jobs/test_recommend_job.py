"""The recommend job (`bertrec recommend-batch`): each user's row equals
``Recommender.recommend``, unusable users are rejected with their reason, the settings pass
through, stores and outputs are checked, and a local Ray gives the same bytes."""

from __future__ import annotations

import json
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
)
from bertrec.jobs import recommend_dataset  # noqa: E402
from bertrec.recommend import ItemCatalog, Recommender  # noqa: E402
from bertrec.runtime.encoder import Encoder  # noqa: E402

N_ITEMS = 300
N_USERS = 200
K = 5
SHARD_ROWS = 64  # 4 shards, the last one short
BAD_USERS = {"u5", "u9", "u11", "u13"}

FilesOf = Callable[[Path], dict[str, bytes]]


@pytest.fixture(scope="module")
def store(
    tiny_model_dir: Path, item_texts: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A saved Recommender over 300 items with popularity (so empty histories work)."""
    enc = Encoder(tiny_model_dir, device="cpu")
    rec = Recommender(
        enc,
        item_texts[:N_ITEMS],
        list(range(1000, 1000 + N_ITEMS)),
        popularity=[i % 7 for i in range(N_ITEMS)],
    )
    return rec.save(tmp_path_factory.mktemp("store") / "rec")


@pytest.fixture(scope="module")
def rec(store: Path) -> Recommender:
    """The saved Recommender, opened without a model: the reference for every job."""
    return Recommender.load(store)


def save_variant(
    rec: Recommender, path: Path, popularity: bool = True, fingerprint: str | None = None
) -> Path:
    """``rec``'s catalog saved again, without popularity or as another model's."""
    catalog = ItemCatalog(
        rec.catalog.vectors,
        rec.catalog.ids,
        rec.catalog.popularity if popularity else None,
        fingerprint=rec.catalog.fingerprint if fingerprint is None else fingerprint,
        variant=rec.catalog.variant,
    )
    return Recommender.from_catalog(catalog, None, **rec.settings()).save(path)


@pytest.fixture(scope="module")
def users_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    users: list[dict[str, Any]] = []
    for u in range(N_USERS):
        size = int(rng.integers(0, 12))  # 0: a cold user, served by popularity
        history = [1000 + int(i) for i in rng.choice(N_ITEMS, size, replace=False)]
        users.append({"user_id": f"u{u}", "history": history})
    users[5]["history"] = [1000, 99999]
    users[9]["history"] = "1000 1001"
    del users[11]["history"]
    users[13]["history"] = [1000, "1001"]
    path = tmp_path_factory.mktemp("users") / "users.jsonl"
    path.write_text("".join(json.dumps(u) + "\n" for u in users), encoding="utf-8")
    return path


def user_rows(users_input: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in users_input.read_text().splitlines()]


def read_recs(out: Path) -> dict[str, tuple[list[int], list[float]]]:
    table = pq.read_table(out)
    assert table.schema.names == ["user_id", "items", "scores"]
    return {r["user_id"]: (r["items"], r["scores"]) for r in table.to_pylist()}


def read_reasons(out: Path) -> dict[str, str]:
    if not (out / "_rejects").is_dir() or not any((out / "_rejects").iterdir()):
        return {}
    return {r["user_id"]: r["reason"] for r in pq.read_table(out / "_rejects").to_pylist()}


def assert_same_as_recommender(
    got: dict[str, tuple[list[int], list[float]]],
    rec: Recommender,
    users: list[dict[str, Any]],
    **kw: Any,
) -> None:
    """Each written user's row equals ``rec.recommend(history, k=K, **kw)``."""
    assert got
    for user in users:
        if user["user_id"] in got:
            expect = rec.recommend(user["history"], k=K, **kw)
            items, scores = got[user["user_id"]]
            assert items == [item for item, _ in expect]
            np.testing.assert_allclose(scores, [s for _, s in expect], rtol=1e-6)


@pytest.fixture(scope="module")
def recs_in_process(
    store: Path, users_input: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("recs") / "out"
    result = recommend_dataset(users_input, out, store, k=K, shard_rows=SHARD_ROWS)
    assert (result.rows, result.written, result.rejected, result.shards) == (200, 196, 4, 4)
    return out


def test_recommend_matches_the_recommender(
    rec: Recommender, users_input: Path, recs_in_process: Path
) -> None:
    got = read_recs(recs_in_process)
    users = user_rows(users_input)
    assert set(got) == {u["user_id"] for u in users} - BAD_USERS
    assert_same_as_recommender(got, rec, users)
    reasons = read_reasons(recs_in_process)
    assert set(reasons) == BAD_USERS
    assert "not in the catalog" in reasons["u5"] and "99999" in reasons["u5"]
    assert reasons["u9"] == "history is str, not a list of item ids"
    assert reasons["u11"] == "missing history"
    assert reasons["u13"].startswith("history[1]: item id '1001' is str")
    meta = pq.read_metadata(recs_in_process / "part-00000.parquet").metadata
    assert meta[b"bertrec.fingerprint"] == rec.fingerprint.encode()
    job = json.loads((recs_in_process / "_job.json").read_text())
    assert (job["on_unknown"], job["diversity"]) == ("error", 0.0)
    assert job["model"]["variant"] == rec.catalog.variant


def test_on_unknown_skip_leaves_unknown_ids_out(
    rec: Recommender, store: Path, users_input: Path, tmp_path: Path
) -> None:
    out = tmp_path / "skip"
    result = recommend_dataset(
        users_input, out, store, k=K, shard_rows=SHARD_ROWS, on_unknown="skip"
    )
    assert (result.written, result.rejected) == (197, 3)
    got = read_recs(out)
    assert set(read_reasons(out)) == BAD_USERS - {"u5"}
    # u5's history [1000, 99999] is scored as [1000].
    assert got["u5"][0] == [item for item, _ in rec.recommend([1000], k=K)]
    assert_same_as_recommender(got, rec, user_rows(users_input), on_unknown="skip")
    with pytest.raises(ConfigError, match="on_unknown"):
        recommend_dataset(users_input, tmp_path / "o", store, on_unknown="ignore")


def test_cold_user_without_popularity_is_rejected(
    rec: Recommender, users_input: Path, tmp_path: Path
) -> None:
    no_pop = save_variant(rec, tmp_path / "no-pop", popularity=False)
    out = tmp_path / "out"
    recommend_dataset(users_input, out, no_pop, k=K, shard_rows=SHARD_ROWS)
    cold = {u["user_id"] for u in user_rows(users_input) if u.get("history") == []}
    assert cold
    reasons = read_reasons(out)
    assert set(reasons) == BAD_USERS | cold
    assert all("no popularity" in reasons[u] for u in cold)
    assert_same_as_recommender(read_recs(out), Recommender.load(no_pop), user_rows(users_input))


def test_diversity_is_passed_through(
    rec: Recommender, store: Path, users_input: Path, recs_in_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "diverse"
    recommend_dataset(users_input, out, store, k=K, shard_rows=SHARD_ROWS, diversity=0.7)
    got = read_recs(out)
    assert_same_as_recommender(got, rec, user_rows(users_input), diversity=0.7)
    assert got != read_recs(recs_in_process)  # the setting changed some lists
    assert json.loads((out / "_job.json").read_text())["diversity"] == 0.7
    with pytest.raises(ConfigError, match="diversity"):
        recommend_dataset(users_input, tmp_path / "o", store, diversity=1.5)


def test_recommend_bad_arguments(store: Path, users_input: Path, tmp_path: Path) -> None:
    csv_users = tmp_path / "users.csv"
    csv_users.write_text("user_id,history\n1,2\n")
    with pytest.raises(ConfigError, match="CSV cannot hold"):
        recommend_dataset(csv_users, tmp_path / "o", store)
    with pytest.raises(NotFoundError, match="does not exist"):
        recommend_dataset(tmp_path / "nobody.jsonl", tmp_path / "o", store)
    with pytest.raises(NotFoundError, match="store .* does not exist"):
        recommend_dataset(users_input, tmp_path / "o", tmp_path / "no-store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="recommender.json"):
        recommend_dataset(users_input, tmp_path / "o", tmp_path / "empty")
    with pytest.raises(ConfigError, match="column 'items' is not in"):
        recommend_dataset(users_input, tmp_path / "o", store, history_column="items")
    with pytest.raises(ConfigError, match="user_column cannot be"):
        recommend_dataset(users_input, tmp_path / "o", store, user_column="items")
    with pytest.raises(ConfigError, match="k must be"):
        recommend_dataset(users_input, tmp_path / "o", store, k=0)
    with pytest.raises(ConfigError, match="exclude_seen"):
        recommend_dataset(users_input, tmp_path / "o", store, exclude_seen=1)  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()


def test_output_of_another_model_or_job_is_refused(
    rec: Recommender, store: Path, users_input: Path, recs_in_process: Path, tmp_path: Path
) -> None:
    other = save_variant(rec, tmp_path / "other", fingerprint="0" * 64)
    with pytest.raises(ModelMismatchError, match="another model"):
        recommend_dataset(users_input, recs_in_process, other, k=K, shard_rows=SHARD_ROWS)
    with pytest.raises(OutputError, match="different job.*k: 5 then, 6 now"):
        recommend_dataset(users_input, recs_in_process, store, k=6, shard_rows=SHARD_ROWS)
    # Same model, another store (no popularity): another job, not another model.
    no_pop = save_variant(rec, tmp_path / "no-pop", popularity=False)
    with pytest.raises(OutputError, match="different job.*store"):
        recommend_dataset(users_input, recs_in_process, no_pop, k=K, shard_rows=SHARD_ROWS)


def test_recommend_crash_then_rerun_is_byte_identical(
    store: Path,
    users_input: Path,
    recs_in_process: Path,
    tmp_path: Path,
    fail_on_shard: Any,
    files_of: FilesOf,
) -> None:
    out = tmp_path / "out"
    kw: dict[str, Any] = {"k": K, "shard_rows": SHARD_ROWS}
    with pytest.raises(RuntimeError, match="injected failure in shard 1"):
        recommend_dataset(users_input, out, store, shard_hook=fail_on_shard(1), **kw)
    result = recommend_dataset(users_input, out, store, **kw)
    assert (result.resumed, result.written, result.rejected) == (1, 196, 4)
    assert files_of(out) == files_of(recs_in_process)


def test_cli_recommend_batch(
    store: Path,
    users_input: Path,
    recs_in_process: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files_of: FilesOf,
) -> None:
    out = tmp_path / "recs"
    args = ["recommend-batch", str(users_input), str(out), "--store", str(store), "--k", str(K)]
    assert main([*args, "--shard-rows", str(SHARD_ROWS), "--no-progress"]) == 0
    assert "200 rows -> 196 written, 4 rejected" in capsys.readouterr().out
    assert files_of(out) == files_of(recs_in_process)


def test_recommend_on_ray_matches_in_process(
    local_ray: Any,
    store: Path,
    users_input: Path,
    recs_in_process: Path,
    tmp_path: Path,
    files_of: FilesOf,
) -> None:
    out = tmp_path / "recs"
    result = recommend_dataset(
        users_input, out, store, k=K, shard_rows=SHARD_ROWS, ray_address="local", workers=2
    )
    assert (result.engine, result.written, result.rejected) == ("ray", 196, 4)
    # A Ray actor runs BLAS on its own CPU count, which can move a float32 score by its
    # last bit: the same users get the same lists, with scores equal to 1e-6.
    ray_rows = pq.read_table(out).to_pylist()
    local_rows = pq.read_table(recs_in_process).to_pylist()
    assert [r["user_id"] for r in ray_rows] == [r["user_id"] for r in local_rows]
    for a, b in zip(ray_rows, local_rows, strict=True):
        assert a["items"] == b["items"]
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-6)
    assert sorted(files_of(out)) == sorted(files_of(recs_in_process))


def test_hybrid_store_on_ray_keeps_its_collaborative_model(
    local_ray: Any,
    tiny_model_dir: Path,
    item_texts: list[str],
    users_input: Path,
    tmp_path: Path,
) -> None:
    """A store with a fitted collaborative model: in-process and Ray jobs both score with it
    (Ray actors load the store itself, not only its catalog)."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(1)
    ids = list(range(1000, 1000 + N_ITEMS))
    interactions = [(u, ids[int(i)]) for u in range(60) for i in rng.choice(N_ITEMS, 8)]
    hybrid = Recommender(
        Encoder(tiny_model_dir, device="cpu"),
        item_texts[:N_ITEMS],
        ids,
        interactions=interactions,
    )
    store = hybrid.save(tmp_path / "hybrid")
    local = recommend_dataset(users_input, tmp_path / "a", store, k=K, shard_rows=SHARD_ROWS)
    ray_run = recommend_dataset(
        users_input, tmp_path / "b", store, k=K, shard_rows=SHARD_ROWS, ray_address="local"
    )
    assert local.written == ray_run.written > 0
    a = pq.read_table(tmp_path / "a").to_pylist()
    b = pq.read_table(tmp_path / "b").to_pylist()
    loaded = Recommender.load(store)
    for x, y in zip(a, b, strict=True):
        assert x["items"] == y["items"]
        np.testing.assert_allclose(x["scores"], y["scores"], atol=1e-6)
    first = next(r for r in a if r["items"])
    history = next(
        json.loads(line)["history"]
        for line in users_input.read_text().splitlines()
        if json.loads(line)["user_id"] == first["user_id"]
    )
    assert [i for i, _ in loaded.recommend(history, k=K)] == first["items"]
