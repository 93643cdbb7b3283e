"""Primitives every room uses: atomic file and directory writes, sha256, the cache
directory and argument checks. Written once here; look here before writing a helper."""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np

from bertrec.errors import ConfigError, OutputError

CACHE_ENV = "BERTREC_CACHE"

# -- files ----------------------------------------------------------------------------------


def default_mode(base: int = 0o666) -> int:
    """``base`` with the process umask applied (mkstemp/mkdtemp create owner-only files)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a rename inside it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def output_error(path: str | os.PathLike[str], exc: OSError, action: str = "write") -> OutputError:
    """An ``OutputError`` naming ``path`` and the likely fix for an ``OSError``."""
    if exc.errno == errno.ENOSPC:
        fix = "free disk space or choose another location"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "check the permissions or choose a writable location"
    else:
        fix = "check the path"
    reason = exc.strerror or str(exc)
    return OutputError(f"cannot {action} {str(path)!r}: {reason}; {fix}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Run ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it.

    Readers see the old file or the whole new one, never a part; after a power loss the
    rename never points at unflushed data. Permissions follow the umask.

    Raises:
        OutputError: the file cannot be written (permissions, disk full); nothing is left.
    """
    target = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise output_error(target, exc) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def json_bytes(data: Any) -> bytes:
    """Stable JSON (sorted keys, indented, trailing newline) as UTF-8."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as stable JSON to ``path`` atomically."""
    return atomic_write_bytes(path, json_bytes(data))


def temp_dir_beside(target: str | os.PathLike[str]) -> Path:
    """A new empty directory beside ``target`` to build it in, named
    ``.NAME.tmp-PID-XXXX`` (so ``remove_stale_temps`` can tell a dead writer's), with
    umask-respecting permissions (mkdtemp alone gives 0700). The leftovers of writers of
    ``target`` that were killed are removed first.

    Raises:
        OutputError: the parent cannot be created or written.
    """
    out = Path(target)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-{os.getpid()}-"))
        os.chmod(tmp, default_mode(0o777))
    except OSError as exc:
        raise output_error(out.parent, exc, "write to") from exc
    return tmp


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _remove_path(path: Path) -> bool:
    """Delete a file or tree; False when (some of) it could not be removed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return not os.path.lexists(path)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``temp_dir_beside``/``replace_dir`` leftovers of ``target`` whose writing
    process is gone (killed mid-write). Returns what was removed.

    One case is repaired rather than removed: a writer killed between the two renames of
    ``replace_dir``'s fallback leaves ``target`` missing and the old version set aside;
    that old version is put back.
    """
    out = Path(target)
    removed: list[Path] = []
    try:
        entries = list(out.parent.iterdir())
    except OSError:
        return removed
    stale: dict[str, list[Path]] = {"tmp": [], "old": []}
    for p in entries:
        for kind, items in stale.items():
            prefix = f".{out.name}.{kind}-"
            if p.name.startswith(prefix):
                pid = p.name[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    items.append(p)
    if stale["old"] and not os.path.lexists(out):
        try:
            newest = max(stale["old"], key=lambda p: p.lstat().st_mtime)
            os.replace(newest, out)
            fsync_dir(out.parent)
            stale["old"].remove(newest)
        except OSError:
            pass  # left as it is; the next writer of target publishes over it
    for p in stale["tmp"] + stale["old"]:
        if _remove_path(p):  # False: not ours to remove (permissions), left as it is
            removed.append(p)
    return removed


# renameat2(2) swaps two existing paths in one step with this flag (linux/fs.h).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.lru_cache(maxsize=1)
def _renameat2() -> Any:
    """libc's ``renameat2``, or None where there is none (not Linux, glibc before 2.28)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange_paths(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False, having changed nothing, where the OS, C
    library, kernel or filesystem cannot.

    Raises:
        OSError: the swap was possible but failed (permissions, ...).
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False  # old kernel, or a filesystem without RENAME_EXCHANGE
    raise OSError(err, os.strerror(err), os.fspath(b))


def _replace_by_renames(src: Path, out: Path) -> Path:
    """Set ``out`` aside, rename ``src`` in, put ``out`` back if that fails; the set-aside
    name. A crash between the renames leaves ``out`` missing until ``remove_stale_temps``
    puts the old version back."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
    os.replace(out, old)
    try:
        os.replace(src, out)
    except OSError:
        os.replace(old, out)
        raise
    return old


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_file(os.path.join(folder, name))
        fsync_dir(folder)


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Publish the finished directory ``tmp`` as ``target`` in one atomic step.

    Every file and folder in ``tmp`` is fsynced first. A missing ``target`` is a plain
    rename. An existing one is swapped with ``tmp`` by one ``renameat2(RENAME_EXCHANGE)``
    on Linux, so ``target`` is never absent, and the old tree, now at ``tmp``'s name, is
    deleted (by ``remove_stale_temps`` on the next write if this process dies first).
    Where the swap is not available (another OS, an old kernel, a filesystem without it)
    the old directory is set aside, the new one renamed in, and the old one put back if
    that fails. Either way ``target`` is the complete old or the complete new directory.

    Raises:
        OutputError: a rename failed (the old directory is back in place).
    """
    src, out = Path(tmp), Path(target)
    try:
        _fsync_tree(src)
        if not os.path.lexists(out):
            os.replace(src, out)
            old = None
        elif _exchange_paths(src, out):
            old = src
        else:
            old = _replace_by_renames(src, out)
        fsync_dir(out.parent)
    except OSError as exc:
        raise output_error(out, exc, "replace") from exc
    if old is not None:
        # Published already; what cannot be removed now, remove_stale_temps removes once
        # this process is gone.
        _remove_path(old)
    return out


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """bertrec's cache: ``$BERTREC_CACHE``, else ``$XDG_CACHE_HOME/bertrec``, else
    ``~/.cache/bertrec``; ``parts`` name a folder inside it (not created here)."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "bertrec")
    return Path(base).joinpath(*parts)


# -- argument checks --------------------------------------------------------------------------


def check_int(value: object, name: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (bools and floats are refused).

    Raises:
        ConfigError: naming ``name``, the value and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ConfigError(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {v}")
    return v


def check_optional_int(value: object, name: str, minimum: int | None = 1) -> int | None:
    """``check_int`` that lets None through."""
    return None if value is None else check_int(value, name, minimum)


def check_float(
    value: object,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a finite float in ``[minimum, maximum]`` (bools are refused).

    Raises:
        ConfigError: naming ``name``, the value and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number, got {v}")
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        lo = "" if minimum is None else f">= {minimum:g}"
        hi = "" if maximum is None else f"<= {maximum:g}"
        raise ConfigError(f"{name} must be {' and '.join(x for x in (lo, hi) if x)}, got {v:g}")
    return v


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is a bool (1, "yes" and None are refused)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value: object, name: str, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
    return value
