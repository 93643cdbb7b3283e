"""Faulty batch-job inputs: repeated ids are rejected with the first row they came from, a
repeated header column and a corrupted Parquet file are one clear error each."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="batch jobs need pyarrow (pip install 'bertrec[batch]')")
import pyarrow.parquet as pq  # noqa: E402

from bertrec.errors import ConfigError, FileFormatError  # noqa: E402
from bertrec.jobs import encode_dataset, recommend_dataset  # noqa: E402
from bertrec.recommend import ItemCatalog, Recommender  # noqa: E402


def test_repeated_ids_are_rejected_naming_the_first_row(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    rows = [
        {"id": 1, "text": "first one"},
        {"id": 2, "text": "second one"},
        {"id": 1, "text": "the first id again"},
        {"id": 3, "text": "   "},  # rejected for its text: does not claim id 3
        {"id": 3, "text": "id three, usable"},
        {"id": 2, "text": "the second id again"},
        {"id": 1, "text": "and the first once more"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = encode_dataset(src, tmp_path / "out", tiny_model_dir, shard_rows=3)
    assert (result.rows, result.written, result.rejected) == (7, 3, 4)
    assert pq.read_table(tmp_path / "out").column("id").to_pylist() == [1, 2, 3]
    rejects = pq.read_table(tmp_path / "out" / "_rejects").to_pylist()
    assert [(r["row"], r["id"], r["reason"]) for r in rejects] == [
        (2, 1, "duplicate id 1 (first at row 0)"),
        (3, 3, "text is empty or whitespace only"),
        (5, 2, "duplicate id 2 (first at row 1)"),
        (6, 1, "duplicate id 1 (first at row 0)"),
    ]


def test_repeated_string_ids_in_csv(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,text\na,one\nb,two\na,three\n", encoding="utf-8")
    result = encode_dataset(src, tmp_path / "out", tiny_model_dir)
    assert (result.written, result.rejected) == (2, 1)
    reasons = pq.read_table(tmp_path / "out" / "_rejects").column("reason").to_pylist()
    assert reasons == ["duplicate id 'a' (first at row 0)"]


def test_csv_header_with_a_repeated_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("id,text,text\n1,one,uno\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="column 'text' appears 2 times") as info:
        encode_dataset(src, tmp_path / "out", tiny_model_dir)
    assert str(src) in str(info.value)
    assert not (tmp_path / "out").exists()
    # A repeated column the job does not read is no ambiguity.
    other = tmp_path / "other.csv"
    other.write_text("id,text,note,note\n1,one,x,y\n", encoding="utf-8")
    assert encode_dataset(other, tmp_path / "out2", tiny_model_dir).written == 1


def test_parquet_with_a_repeated_column(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    ids, texts = pa.array([1]), pa.array(["one"])
    pq.write_table(pa.Table.from_arrays([ids, texts, texts], ["id", "text", "text"]), src)
    with pytest.raises(ConfigError, match="column 'text' appears 2 times"):
        encode_dataset(src, tmp_path / "out", tiny_model_dir)


def _good_parquet(path: Path, rows: int = 2000) -> Path:
    table = pa.table({"id": list(range(rows)), "text": [f"text number {i}" for i in range(rows)]})
    pq.write_table(table, path, compression="zstd")
    return path


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "corrupted pages"])
def test_corrupted_parquet_input(damage: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    if damage == "random bytes":
        src.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        data = bytearray(_good_parquet(src).read_bytes())
        if damage == "truncated":
            data = data[: len(data) // 2]
        else:  # the footer is intact, a page header behind it is not
            page = pq.read_metadata(src).row_group(0).column(1).data_page_offset
            data[page : page + 16] = b"\xff" * 16
        src.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="not a readable Parquet file") as info:
        encode_dataset(src, tmp_path / "out", tiny_model_dir)
    assert str(src) in str(info.value)
    assert "\n" not in str(info.value)
    # Even a corruption found only while staging leaves no output to block a rerun.
    assert not (tmp_path / "out").exists()
    _good_parquet(src, rows=10)
    assert encode_dataset(src, tmp_path / "out", tiny_model_dir).written == 10


def test_corrupted_parquet_users(tmp_path: Path) -> None:
    store = Recommender.from_catalog(ItemCatalog(np.eye(3), [1, 2, 3])).save(tmp_path / "s")
    users = tmp_path / "users.parquet"
    users.write_bytes(b"PAR1 but nothing of a Parquet file after it")
    with pytest.raises(FileFormatError, match="not a readable Parquet file"):
        recommend_dataset(users, tmp_path / "out", store)
