"""Permission faults: an output folder that cannot be written and an input that cannot be
read are one clear error each, and leave nothing behind. They skip where the process is
root, which writes and reads regardless of the mode bits."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertrec.errors import FileFormatError, OutputError
from bertrec.export import export_model
from bertrec.jobs import encode_dataset
from bertrec.recommend import ItemCatalog


@pytest.fixture
def read_only_parent(tmp_path: Path) -> Iterator[Path]:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: a folder of mode 0o500 is still writable")
        yield parent
    finally:
        parent.chmod(0o700)


def test_export_into_an_unwritable_folder(tiny_bert_dir: Path, read_only_parent: Path) -> None:
    with pytest.raises(OutputError, match="check the permissions") as info:
        export_model(tiny_bert_dir, read_only_parent / "m", precision="fp32")
    assert str(read_only_parent) in str(info.value)
    assert list(read_only_parent.iterdir()) == []


def test_encode_into_an_unwritable_folder(
    tiny_model_dir: Path, read_only_parent: Path, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "text": "a film"}) + "\n", encoding="utf-8")
    with pytest.raises(OutputError, match="check the permissions") as info:
        encode_dataset(src, read_only_parent / "out", tiny_model_dir)
    assert str(read_only_parent / "out") in str(info.value)
    assert list(read_only_parent.iterdir()) == []


def test_catalog_into_an_unwritable_folder(read_only_parent: Path) -> None:
    with pytest.raises(OutputError, match="check the permissions"):
        ItemCatalog(np.eye(3), [1, 2, 3]).save(read_only_parent / "cat")
    assert list(read_only_parent.iterdir()) == []


def test_encode_an_unreadable_input(tiny_model_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "text": "a film"}) + "\n", encoding="utf-8")
    src.chmod(0)
    try:
        if os.access(src, os.R_OK):
            pytest.skip("running as root: a file of mode 0o000 is still readable")
        with pytest.raises(FileFormatError, match="cannot read input file.*permissions") as info:
            encode_dataset(src, tmp_path / "out", tiny_model_dir)
        assert str(src) in str(info.value)
        assert not (tmp_path / "out").exists()
    finally:
        src.chmod(0o600)
