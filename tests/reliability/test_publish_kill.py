"""``core.replace_dir``: one atomic swap where Linux has renameat2, two renames with rollback
elsewhere; a SIGKILL at every filesystem call of a publish leaves the old or the new tree,
and the next writer removes what the dead one left."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest
from faultkit import FsCalls, files_of, leftovers, run_child

import bertrec.core as core
from bertrec.errors import OutputError

OLD = {"a.txt": b"old a", "only-old.txt": b"not in the new version"}
NEW = {"a.txt": b"new a", "sub/b.bin": b"new b" * 1000, "c.json": b"{}\n"}

CHILD = """
from pathlib import Path
import bertrec.core as core
if {no_exchange!r}:
    core._renameat2 = lambda: None
target = Path({target!r})
tmp = core.temp_dir_beside(target)
for name, data in {files!r}.items():
    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp / name).write_bytes(data)
faultkit.arm()
core.replace_dir(tmp, target)
"""


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def publish(target: Path, files: dict[str, bytes]) -> Path:
    return core.replace_dir(write_tree(core.temp_dir_beside(target), files), target)


needs_exchange = pytest.mark.skipif(
    core._renameat2() is None, reason="renameat2 is not in this C library (not Linux/glibc)"
)


@needs_exchange
def test_existing_target_is_swapped_in_one_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_tree(tmp_path / "t", OLD)
    renames: list[tuple[str, str]] = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: renames.append((a, b)) or real(a, b))
    publish(target, NEW)
    assert files_of(target) == NEW
    assert renames == []  # no rename of target aside: it was never missing
    assert list(tmp_path.iterdir()) == [target]  # the old tree is deleted


@pytest.mark.parametrize("why", ["no renameat2", "EINVAL", "ENOSYS"])
def test_falls_back_to_two_renames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    def refuses(*args: object) -> int:
        ctypes.set_errno(getattr(errno, why))
        return -1

    monkeypatch.setattr(core, "_renameat2", lambda: None if why == "no renameat2" else refuses)
    target = write_tree(tmp_path / "t", OLD)
    publish(target, NEW)
    assert files_of(target) == NEW
    assert list(tmp_path.iterdir()) == [target]


def test_fallback_puts_the_old_tree_back_when_the_second_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core, "_renameat2", lambda: None)
    target = write_tree(tmp_path / "t", OLD)
    tmp = write_tree(core.temp_dir_beside(target), NEW)
    real = os.replace

    def second_fails(a: str, b: str) -> None:
        if Path(a) == tmp:
            raise OSError(errno.EIO, "I/O error")
        real(a, b)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(OutputError, match="cannot replace"):
        core.replace_dir(tmp, target)
    assert files_of(target) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == [tmp.name, "t"]  # the caller's tmp


def test_a_new_target_is_one_rename(tmp_path: Path) -> None:
    target = publish(tmp_path / "t", NEW)
    assert files_of(target) == NEW
    assert list(tmp_path.iterdir()) == [target]


def test_stale_temps_of_live_writers_are_kept(tmp_path: Path) -> None:
    target = write_tree(tmp_path / "t", OLD)
    mine = tmp_path / f".t.tmp-{os.getpid()}-abc"
    mine.mkdir()
    assert core.remove_stale_temps(target) == []
    assert mine.is_dir()


def _calls_of_one_publish(tmp_path: Path, no_exchange: bool, existing: bool) -> int:
    """How many FS_CALLS a publish makes, counted here the way the child counts them."""
    target = tmp_path / "count" / "t"
    target.parent.mkdir()
    if existing:
        write_tree(target, OLD)
    tmp = write_tree(core.temp_dir_beside(target), NEW)
    with pytest.MonkeyPatch.context() as mp:
        if no_exchange:
            mp.setattr(core, "_renameat2", lambda: None)
        calls = FsCalls().install(mp.setattr)
        core.replace_dir(tmp, target)
    assert files_of(target) == NEW
    return calls.count


@pytest.mark.parametrize(
    ("no_exchange", "existing"),
    [
        pytest.param(False, True, id="swap", marks=needs_exchange),
        pytest.param(True, True, id="two-renames"),
        pytest.param(False, False, id="first-write"),
    ],
)
def test_killed_at_every_step_of_a_publish(
    tmp_path: Path, no_exchange: bool, existing: bool
) -> None:
    total = _calls_of_one_publish(tmp_path, no_exchange, existing)
    assert total >= 8  # fsyncs of 3 files and 2 folders, the rename, the old tree's removal
    before = OLD if existing else None
    for k in range(1, total + 1):
        parent = tmp_path / f"kill-{k}"
        parent.mkdir()
        target = parent / "t"
        if existing:
            write_tree(target, OLD)
        body = CHILD.format(no_exchange=no_exchange, target=str(target), files=NEW)
        child = run_child(body, kill_at=k)
        assert child.killed, f"call {k} of {total} was not reached"
        state = files_of(target) if target.exists() else None
        if state is None and no_exchange and existing:
            # Killed between the two renames: the old tree is set aside, to be put back.
            assert any(p.name.startswith(".t.old-") for p in parent.iterdir())
        else:
            assert state in (before, NEW), f"killed at call {k}: target is neither version"
        # The next writer of target cleans up first (temp_dir_beside), then publishes.
        core.remove_stale_temps(target)
        assert (files_of(target) if target.exists() else None) in (before, NEW)
        assert leftovers(parent, "t", child.pid) == []
        publish(target, NEW)
        assert files_of(target) == NEW
        assert [p.name for p in parent.iterdir()] == ["t"]
