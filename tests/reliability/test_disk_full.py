"""A full disk (ENOSPC) while exporting, encoding or saving a catalog: one ``OutputError``
that names the path and says to free disk space, and nothing half-written left behind.
Writers are made to fail by monkeypatching, and, where this process may mount one, on a
real tiny tmpfs."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from faultkit import ROOT, files_of

from bertrec.errors import OutputError
from bertrec.export import export_model
from bertrec.jobs import encode_dataset
from bertrec.recommend import ItemCatalog
from bertrec.runtime.texts import default_sentences

N_ROWS, SHARD_ROWS = 600, 128
FREE = "free disk space"


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def temps(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def texts_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = default_sentences()
    path = tmp_path_factory.mktemp("disk-full-in") / "items.jsonl"
    rows = [{"id": i, "text": f"{base[i % len(base)]} {i}"} for i in range(N_ROWS)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clean_files(
    texts_input: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("disk-full-clean") / "out"
    encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    return files_of(out)


# -- export ---------------------------------------------------------------------------------


def _rust_disk_full(*args: object, **kwargs: object) -> None:
    # What the tokenizers library raises for a failed write of tokenizer.json.
    raise Exception("No space left on device (os error 28)")


@pytest.mark.parametrize("writer", ["torch.onnx.export", "onnx.save", "tokenizer"])
def test_export_disk_full(
    writer: str,
    tiny_bert_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx
    import torch
    import transformers

    target = tmp_path / "m"
    shutil.copytree(tiny_model_dir, target)
    before = files_of(target)
    if writer == "torch.onnx.export":
        monkeypatch.setattr(torch.onnx, "export", disk_full)
    elif writer == "onnx.save":
        monkeypatch.setattr(onnx, "save", disk_full)
    else:
        monkeypatch.setattr(
            transformers.PreTrainedTokenizerFast, "save_pretrained", _rust_disk_full
        )
    with pytest.raises(OutputError, match=FREE) as info:
        export_model(tiny_bert_dir, target, precision="fp32", overwrite=True)
    assert str(target) in str(info.value)
    assert "\n" not in str(info.value)
    assert files_of(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


# -- encode ---------------------------------------------------------------------------------


def test_encode_disk_full_in_a_part_then_resume(
    texts_input: Path,
    tiny_model_dir: Path,
    clean_files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        mp.setattr(pq, "write_table", disk_full)
        with pytest.raises(OutputError, match=FREE) as info:
            encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    message = str(info.value)
    assert "part-00000.parquet" in message and "run the same job again" in message
    assert temps(out) == []
    assert not list(out.glob("part-*"))
    encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert files_of(out) == clean_files


def test_encode_disk_full_while_staging(
    texts_input: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    monkeypatch.setattr(pq.ParquetWriter, "write_table", disk_full)
    with pytest.raises(OutputError, match=FREE) as info:
        encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
    assert "input.parquet" in str(info.value)
    assert temps(out) == []
    assert not (out / "_staging" / "input.parquet").exists()


def test_cli_encode_disk_full_is_one_line(
    texts_input: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    code = (
        "import errno, sys\n"
        "import pyarrow.parquet as pq\n"
        "def full(*a, **k):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "pq.write_table = full\n"
        "from bertrec.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["encode", str(texts_input), str(tmp_path / "out"), "--model", str(tiny_model_dir)]
    args.append("--no-progress")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert FREE in lines[0] and "Traceback" not in proc.stderr


# -- catalog --------------------------------------------------------------------------------


def _catalog(version: int) -> ItemCatalog:
    rng = np.random.default_rng(version)
    return ItemCatalog(rng.standard_normal((50, 8)), list(range(50)), rng.random(50))


@pytest.mark.parametrize("writer", ["numpy.save", "Path.write_bytes"])
def test_catalog_disk_full_leaves_the_old_store(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _catalog(1).save(tmp_path / "cat")
    before = files_of(target)
    if writer == "numpy.save":
        monkeypatch.setattr(np, "save", disk_full)
    else:
        monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OutputError, match="cat"):
        _catalog(2).save(target, overwrite=True)
    assert files_of(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["cat"]


def test_catalog_disk_full_says_free_disk_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(np, "save", disk_full)
    with pytest.raises(OutputError, match=FREE):
        _catalog(2).save(tmp_path / "cat")


# -- a real full disk -----------------------------------------------------------------------


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder``; skips where mounting is not allowed."""
    folder.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command here to make a small tmpfs")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def test_encode_on_a_full_tmpfs_then_resume(
    texts_input: Path, tiny_model_dir: Path, clean_files: dict[str, bytes], tmp_path: Path
) -> None:
    with small_disk(tmp_path / "disk", "64k") as disk:
        out = disk / "out"
        with pytest.raises(OutputError, match=FREE):
            encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
        assert temps(out) == []
        written = sorted(p.name for p in out.glob("part-*"))
        assert written != [f"part-{s:05d}.parquet" for s in range(5)]
        resize(disk, "4m")  # the space is freed
        encode_dataset(texts_input, out, tiny_model_dir, shard_rows=SHARD_ROWS)
        assert files_of(out) == clean_files


def test_export_on_a_full_tmpfs(tiny_bert_dir: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "128k") as disk:
        with pytest.raises(OutputError, match=FREE) as info:
            export_model(tiny_bert_dir, disk / "m", precision="fp32")
        assert str(disk / "m") in str(info.value)
        assert list(disk.iterdir()) == []
