"""Atomic files and safe paths inside the data folder."""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

TMP_MARK = ".tmp-"

# Fault injection for the crash tests only: the process kills itself (SIGKILL) once the temp file
# for a file of this name is written and synced, just before the rename that would publish it.
DIE_BEFORE_RENAME_ENV = "FRAMESMITH_FAULT_DIE_BEFORE_RENAME"
_DIE_BEFORE_RENAME = os.environ.get(DIE_BEFORE_RENAME_ENV)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _DIE_BEFORE_RENAME is not None and path.name == _DIE_BEFORE_RENAME:
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sweep_temp_files(root: Path) -> int:
    """Remove temp files left by a crash between write and rename. Returns how many."""
    count = 0
    if not root.exists():
        return 0
    for p in root.rglob(f"*{TMP_MARK}*"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            count += 1
    return count


def inside(root: Path, candidate: Path) -> bool:
    """True if candidate (symlinks resolved) lies within root (resolved)."""
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
