"""Fault injection for tests/reliability: count a process's filesystem calls and SIGKILL it
at the Nth, run a writer in a child Python, and read a directory back for comparison."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The os functions a writer's temp files, fsyncs, renames and deletes go through
# (tempfile, shutil.rmtree and pathlib call them as attributes of os).
FS_CALLS = ("open", "mkdir", "rmdir", "unlink", "replace", "rename", "fsync")
KILL_ENV = "FAULTKIT_KILL_AT"
ARMED = "FAULTKIT ARMED"
CHILD_TIMEOUT_S = 180


class FsCalls:
    """Counts calls of ``FS_CALLS``; SIGKILLs this process at call ``kill_at`` (1-based).

    ``publish_at`` is the count when ``bertrec.core.replace_dir`` started publishing (its
    fsync of the new tree), or None if it never did.
    """

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.count = 0
        self.publish_at: int | None = None

    def hit(self) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self, set_attr: Callable[[Any, str, Any], None] = setattr) -> FsCalls:
        """Patch the counters in, with ``set_attr`` (``monkeypatch.setattr`` in a test)."""
        import bertrec.core as core

        for name in FS_CALLS:
            set_attr(os, name, self._counted(getattr(os, name)))
        fsync_tree = core._fsync_tree

        def marked(root: Path) -> None:
            if self.publish_at is None:
                self.publish_at = self.count
            fsync_tree(root)

        set_attr(core, "_fsync_tree", marked)
        return self

    def _counted(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.hit()
            return real(*args, **kwargs)

        return call


def arm() -> None:
    """In a child: count filesystem calls from here on, dying at ``$FAULTKIT_KILL_AT``, and
    tell the parent (for kills after a delay)."""
    kill_at = os.environ.get(KILL_ENV)
    FsCalls(int(kill_at) if kill_at else None).install()
    print(ARMED, flush=True)


@dataclass(frozen=True)
class Child:
    """How a child run ended."""

    pid: int
    returncode: int
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


def run_child(
    body: str,
    *,
    kill_at: int | None = None,
    kill_after: float | None = None,
    env: dict[str, str] | None = None,
) -> Child:
    """Run ``body`` (Python that calls ``faultkit.arm()`` once its imports are done) in a new
    interpreter; SIGKILL it at its ``kill_at``-th filesystem call after arming, or
    ``kill_after`` seconds after arming. A child that ends in any other way than killed or
    exit 0 fails the test."""
    code = f"import sys\nsys.path.insert(0, {str(HERE)!r})\nimport faultkit\n" + textwrap.dedent(
        body
    )
    child_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if kill_at is not None:
        child_env[KILL_ENV] = str(kill_at)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    if kill_after is not None:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        line = proc.stdout.readline()
        while line and line.strip() != ARMED and time.monotonic() < deadline:
            line = proc.stdout.readline()
        time.sleep(kill_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=CHILD_TIMEOUT_S)  # also reaps it: no zombie pid
    child = Child(proc.pid, proc.returncode, stderr)
    assert child.killed or child.returncode == 0, f"child failed:\n{stderr[-3000:]}"
    return child


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path: equal means identical."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def leftovers(parent: Path, name: str, pid: int) -> list[str]:
    """The temp and set-aside names of ``parent/name`` that process ``pid`` left."""
    prefixes = (f".{name}.tmp-{pid}-", f".{name}.old-{pid}-")
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(prefixes))
