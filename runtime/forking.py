"""Backend runners after ``fork``: a forked process (multiprocessing's default on Linux)
starts with one thread, the one that forked. A lock another thread of the parent held at
that moment stays held in the child, where no thread will ever let it go, and pools of
the parent's threads are gone. Each registered runner's ``_after_fork`` renews its locks
and drops such pools, in the child, before any of the child's code runs."""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class _Forkable(Protocol):
    def _after_fork(self) -> None: ...


_LIVE: weakref.WeakSet[_Forkable] = weakref.WeakSet()


def renew_after_fork(runner: _Forkable) -> None:
    """Call ``runner._after_fork()`` in every child forked while ``runner`` lives."""
    _LIVE.add(runner)


def _after_fork_in_child() -> None:
    for runner in list(_LIVE):
        runner._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
