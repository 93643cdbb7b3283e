"""``export_model`` killed with SIGKILL at seeded random points: the output is absent (first
export) or the complete old or new model, and the next export cleans up and succeeds."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import FsCalls, files_of, leftovers, run_child

import bertrec
from bertrec.export import export_model

CHILD = """
from bertrec.export import export_model
import bertrec.export.exporter, bertrec.quantize.checks, bertrec.runtime.encoder
import onnx, onnxruntime, torch, transformers, tqdm.auto
faultkit.arm()
export_model({source!r}, {target!r}, precision="fp32", max_length=24, overwrite=True)
"""
OLD_LENGTH, NEW_LENGTH = 16, 24


@pytest.fixture(scope="module")
def versions(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The old and the new export, and how many filesystem calls the new one makes (in all,
    and before it starts publishing)."""
    root = tmp_path_factory.mktemp("export-versions")
    old = export_model(tiny_bert_dir, root / "old", precision="fp32", max_length=OLD_LENGTH)
    new = export_model(tiny_bert_dir, root / "new", precision="fp32", max_length=NEW_LENGTH)
    counts = {}
    for existing, target in ((True, new), (False, root / "first")):
        with pytest.MonkeyPatch.context() as mp:
            calls = FsCalls().install(mp.setattr)
            export_model(
                tiny_bert_dir, target, precision="fp32", max_length=NEW_LENGTH, overwrite=True
            )
        assert calls.publish_at is not None
        counts[existing] = (calls.publish_at, calls.count)
    return {"old": files_of(old), "new": files_of(new), "old_dir": old, "counts": counts}


def _kill_point(case: str, counts: tuple[int, int]) -> dict[str, Any]:
    """Where to kill: a seeded filesystem call in the build or in the publish, or a seeded
    delay after the child's imports."""
    rng = random.Random(f"export-{case}")
    publish_at, total = counts
    if case.startswith("build"):
        return {"kill_at": rng.randint(1, publish_at)}
    if case.startswith("publish"):
        return {"kill_at": rng.randint(publish_at + 1, total)}
    return {"kill_after": rng.uniform(0.0, 1.5)}


@pytest.mark.parametrize(
    ("case", "existing"),
    [
        ("build", True),
        ("publish-a", True),
        ("publish-b", True),
        ("delay", True),
        ("publish-first", False),
    ],
)
def test_killed_export(
    case: str, existing: bool, versions: dict[str, Any], tiny_bert_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "m"
    if existing:
        shutil.copytree(versions["old_dir"], target)
    before = versions["old"] if existing else None
    body = CHILD.format(source=str(tiny_bert_dir), target=str(target))
    point = _kill_point(case, versions["counts"][existing])
    child = run_child(body, **point)
    assert child.killed or "kill_after" in point, f"{point} was not reached"
    state = files_of(target) if target.exists() else None
    assert state in (before, versions["new"]), "the output is neither the old nor the new model"
    if state is not None:  # complete: it loads and encodes
        vec = bertrec.Encoder(target, precision="fp32").encode(["a long enough text " * 20])
        assert np.isfinite(vec).all()
    export_model(tiny_bert_dir, target, precision="fp32", max_length=NEW_LENGTH, overwrite=True)
    assert files_of(target) == versions["new"]
    assert leftovers(tmp_path, "m", child.pid) == []
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
