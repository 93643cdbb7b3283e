"""The model-directory format: a manifest that disagrees with its model, names files outside
its directory, or is malformed in any way is a one-line FileFormatError at load."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bertrec
from bertrec.cli import main
from bertrec.runtime.manifest import Manifest, is_plain_file_name


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(d: Path, **changes: Any) -> None:
    data = json.loads((d / "manifest.json").read_text())
    data.update(changes)
    (d / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    "name", ["../../other/model.onnx", "/etc/passwd", "sub/model.onnx", "..", ".", "", "a\\b"]
)
def test_variant_files_must_be_plain_names_inside_the_directory(
    tiny_model_dir: Path, tmp_path: Path, name: str
) -> None:
    assert not is_plain_file_name(name)
    d = _copy(tiny_model_dir, tmp_path / "m")
    data = json.loads((d / "manifest.json").read_text())
    data["variants"]["fp32"]["file"] = name
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(bertrec.FileFormatError, match="not a plain file name"):
        bertrec.Encoder(d)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dim": 7}, "outputs vectors of 32 dimensions, the manifest says 7"),
        ({"output_name": "pooled"}, "has no output 'pooled'"),
        ({"input_names": ["input_ids", "attention_mask"]}, "takes inputs"),
        ({"pad_token_id": 10**6}, "outside the tokenizer's vocabulary"),
        ({"pad_token_id": -1}, "pad_token_id -1"),
        ({"max_length": 600, "position_limit": 130}, "exceeds the model's position limit"),
        ({"variants": {}}, "lists no variants"),
    ],
)
def test_manifest_that_disagrees_with_the_model(
    tiny_model_dir: Path, tmp_path: Path, changes: dict[str, Any], match: str
) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    _edit(d, **changes)
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(bertrec.FileFormatError, match=match):
            bertrec.Encoder(d, backend=backend, precision="fp32")


def test_variant_under_another_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    data = json.loads((d / "manifest.json").read_text())
    data["variants"]["int8"] = data["variants"].pop("fp32")
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(bertrec.FileFormatError, match="under its own name"):
        bertrec.read_manifest(d)


def test_garbage_tokenizer_is_one_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    (d / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    with pytest.raises(bertrec.FileFormatError, match="not a valid tokenizer"):
        bertrec.Encoder(d)
    (d / "tokenizer.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(bertrec.FileFormatError, match="not a valid tokenizer"):
        bertrec.Encoder(d)


def test_info_with_optional_fields_missing(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = _copy(tiny_model_dir, tmp_path / "m")
    data = json.loads((d / "manifest.json").read_text())
    for key in ("versions", "runtime_checks", "output_name", "position_limit"):
        data.pop(key, None)
    data["variants"]["fp32"].pop("validation")
    data["variants"]["fp32"].pop("recipe")
    (d / "manifest.json").write_text(json.dumps(data))
    assert main(["info", str(d)]) == 0
    assert "not validated" in capsys.readouterr().out


# Any JSON at all: the loader gives a Manifest or a FileFormatError, never anything else.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_json)
def test_manifest_loader_never_raises_anything_but_file_format_error(data: Any) -> None:
    with contextlib.suppress(bertrec.FileFormatError):
        Manifest.from_dict(data)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(
        [
            "dim",
            "max_length",
            "pooling",
            "input_names",
            "pad_token_id",
            "opset",
            "variants",
            "normalize",
            "source",
            "schema_version",
            "runtime_checks",
            "output_name",
        ]
    ),
    value=_json,
)
def test_mutated_real_manifest_loads_or_fails_cleanly(field: str, value: Any) -> None:
    base = {
        "schema_version": 1,
        "source": "s",
        "architecture": "BertModel",
        "model_type": "bert",
        "dim": 32,
        "pooling": "mean",
        "normalize": True,
        "max_length": 64,
        "input_names": ["input_ids", "attention_mask"],
        "pad_token_id": 0,
        "opset": 17,
        "variants": {
            "fp32": {
                "precision": "fp32",
                "file": "model.fp32.onnx",
                "sha256": "0" * 64,
                "size_bytes": 10,
            }
        },
    }
    try:
        m = Manifest.from_dict({**base, field: value})
    except bertrec.FileFormatError:
        return
    assert m.dim > 0 and m.max_length > 0 and m.variants
