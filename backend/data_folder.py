"""The backend's data folder: private to its user, held by one backend at a time, and the
ready file that tells a launcher where that backend listens."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from .files import atomic_write

log = logging.getLogger("framesmith.server")

# Everything the backend creates is private from its first byte (the process's umask).
PRIVATE_UMASK = 0o077
READY_FILE = "backend.json"
# Exit status when another backend holds the data folder: the add-on's launcher then connects
# to that one (client/launcher.py keeps the same number).
ALREADY_RUNNING_EXIT = 3


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framesmith"


def make_private(path: Path) -> None:
    """Owner-only access to a folder (0700) or file (0600) made by an older version or by hand."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    except OSError as exc:
        log.warning("could not make %s private to its owner: %s", path, exc)


class ReadyFile:
    """Tells a launcher where we are: pid, port, token. Private to the user (mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, info: dict[str, Any]) -> None:
        atomic_write(self.path, json.dumps(info, indent=2).encode())
        os.chmod(self.path, 0o600)

    def remove(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def hold_data_lock(data_dir: Path) -> TextIO:
    """One backend per data folder; the OS drops the lock when the process dies, even by kill -9."""
    lock = open(data_dir / "backend.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:  # pid and address only: the ready file also holds the token, never printed
            info = json.loads((data_dir / READY_FILE).read_text())
            where = f"pid {info.get('pid')} at {info.get('url')}"
        except (OSError, ValueError, AttributeError):
            where = "still starting"
        print(
            f"another Framesmith backend is already running on {data_dir}: {where}",
            file=sys.stderr,
        )
        raise SystemExit(ALREADY_RUNNING_EXIT) from None
    return lock
