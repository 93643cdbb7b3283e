"""Primitives every room uses: atomic file and directory writes, sha256, the cache
directory and argument checks. Written once here; look here before writing a helper."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
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
    umask-respecting permissions (mkdtemp alone gives 0700).

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


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``temp_dir_beside``/``replace_dir`` leftovers of ``target`` whose writing
    process is gone (killed mid-write). Returns what was removed."""
    out = Path(target)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for prefix in (f".{out.name}.tmp-", f".{out.name}.old-"):
        for p in out.parent.glob(f"{prefix}*"):
            pid = p.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def replace_dir(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Move the finished directory ``tmp`` to ``target``.

    Every file in ``tmp`` is fsynced first. An existing ``target`` is set aside, the new
    one renamed in, and the old one removed; if the second rename fails the old one is put
    back, so ``target`` is the complete old or the complete new directory.

    Raises:
        OutputError: a rename failed (the old directory is back in place).
    """
    src, out = Path(tmp), Path(target)
    try:
        for f in src.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        fsync_dir(src)
        if not out.exists():
            os.replace(src, out)
        else:
            old = out.with_name(f".{out.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
            os.replace(out, old)
            try:
                os.replace(src, out)
            except OSError:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        fsync_dir(out.parent)
    except OSError as exc:
        raise output_error(out, exc, "replace") from exc
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
