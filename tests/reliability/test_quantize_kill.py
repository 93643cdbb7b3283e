"""``add_variant`` killed with SIGKILL at seeded random points: the model directory is the
complete old one (no int8) or the complete new one (int8 listed and verified), never a
variant file the manifest does not list; the next quantize cleans up and succeeds."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from faultkit import FsCalls, files_of, leftovers, run_child

import bertrec
from bertrec.quantize import add_variant

CHILD = """
from bertrec.quantize import add_variant
import bertrec.quantize.quantizer, bertrec.runtime.encoder, onnx, onnxruntime
faultkit.arm()
add_variant({target!r}, "int8")
"""


@pytest.fixture(scope="module")
def counts(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """How many filesystem calls a quantize makes, and the directory it produces."""
    d = Path(shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("q") / "m"))
    with pytest.MonkeyPatch.context() as mp:
        calls = FsCalls().install(mp.setattr)
        add_variant(d, "int8")
    return {"total": calls.count, "new": files_of(d)}


@pytest.mark.parametrize("seed", range(4))
def test_killed_quantize(
    seed: int, counts: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    target = Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))
    before = files_of(target)
    kill_at = random.Random(f"quantize-{seed}").randint(1, counts["total"])
    child = run_child(CHILD.format(target=str(target)), kill_at=kill_at)
    assert child.killed, f"call {kill_at} was not reached"
    state = files_of(target)
    manifest = bertrec.read_manifest(target)
    if "int8" in manifest.variants:
        assert state == counts["new"]  # complete: the manifest lists a verified file
        bertrec.Encoder(target, precision="int8").encode(["still works"])
    else:
        assert state == before, "a killed quantize changed the model directory"
    add_variant(target, "int8")
    assert files_of(target) == counts["new"]
    assert leftovers(tmp_path, "m", child.pid) == []
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
