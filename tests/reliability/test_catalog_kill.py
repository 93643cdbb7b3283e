"""``ItemCatalog.save`` and ``Recommender.save`` killed with SIGKILL at seeded random
filesystem calls: the store is absent (first save) or the complete old or new one, and the
next save removes what the dead one left."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faultkit import FsCalls, files_of, leftovers, run_child

from bertrec.recommend import ItemCatalog, Recommender

N_ITEMS, DIM = 300, 16

CHILD = """
import numpy as np
from bertrec.recommend import ItemCatalog, Recommender
rng = np.random.default_rng({version})
catalog = ItemCatalog(
    rng.standard_normal(({n}, {dim})), [f"item-{{i}}" for i in range({n})], rng.random({n}),
    fingerprint="f" * 64, variant="fp32",
)
store = Recommender.from_catalog(catalog) if {recommender!r} else catalog
faultkit.arm()
store.save({target!r}, overwrite=True)
"""


def make_store(version: int, recommender: bool) -> Any:
    rng = np.random.default_rng(version)
    catalog = ItemCatalog(
        rng.standard_normal((N_ITEMS, DIM)),
        [f"item-{i}" for i in range(N_ITEMS)],
        rng.random(N_ITEMS),
        fingerprint="f" * 64,
        variant="fp32",
    )
    return Recommender.from_catalog(catalog) if recommender else catalog


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, dict[str, Any]]:
    """Per kind of store: the old and new versions' files and the calls of one save."""
    out = {}
    for recommender in (False, True):
        root = tmp_path_factory.mktemp("stores")
        old = make_store(1, recommender).save(root / "old")
        new = make_store(2, recommender).save(root / "new")
        counts = {}
        for existing, target in ((True, new), (False, root / "first")):
            with pytest.MonkeyPatch.context() as mp:
                calls = FsCalls().install(mp.setattr)
                make_store(2, recommender).save(target, overwrite=True)
            counts[existing] = (calls.publish_at, calls.count)
        out[recommender] = {"old": files_of(old), "new": files_of(new), "counts": counts}
    return out


CASES = ["anywhere", "publish-a", "publish-b", "publish-first"]


@pytest.mark.parametrize("kind", ["catalog", "recommender"])
@pytest.mark.parametrize("case", CASES)
def test_killed_save(
    kind: str, case: str, saved: dict[bool, dict[str, Any]], tmp_path: Path
) -> None:
    existing = case != "publish-first"
    recommender = kind == "recommender"
    info = saved[recommender]
    target = tmp_path / "store"
    if existing:
        make_store(1, recommender).save(target)
    before = info["old"] if existing else None
    rng = random.Random(f"{kind}-{case}")
    publish_at, total = info["counts"][existing]
    kill_at = rng.randint(1 if case == "anywhere" else publish_at + 1, total)
    body = CHILD.format(version=2, n=N_ITEMS, dim=DIM, recommender=recommender, target=str(target))
    child = run_child(body, kill_at=kill_at)
    assert child.killed, f"call {kill_at} of {total} was not reached"
    state = files_of(target) if target.exists() else None
    assert state in (before, info["new"]), f"killed at call {kill_at}: neither version"
    if state is not None:  # complete: it loads
        loaded = (Recommender if recommender else ItemCatalog).load(target)
        assert loaded is not None
    make_store(2, recommender).save(target, overwrite=True)
    assert files_of(target) == info["new"]
    assert leftovers(tmp_path, "store", child.pid) == []
    assert [p.name for p in tmp_path.iterdir()] == ["store"]
