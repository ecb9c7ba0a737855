"""Promise 17: the data folder is private from the first byte.

After a job has run, every folder the backend made or uses in its data folder is 0700 and every
file it wrote is 0600: the database (prompts), its WAL files, the logs, the lock, job folders,
inputs and frames (renders). The ready file's temporary copy (it holds the token) is private
from its creation: a backend killed just before renaming it into place leaves it 0600.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from backend.files import DIE_BEFORE_RENAME_ENV
from tests.backend.server import Backend, start_and_finish
from tests.promises.support import create_inbetween, square_keys

HARNESS_FILES = {"stdout.log"}  # written by the test's launcher, not by the backend


def readable_by_others(root: Path) -> list[str]:
    """Paths under root (root included) that anyone but the owner may read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        if path.name in HARNESS_FILES:
            continue
        mode = os.lstat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return found


def test_everything_the_backend_writes_is_private(make_backend) -> None:
    b: Backend = make_backend("private")
    b.data.mkdir(mode=0o755)  # as a user's own folder may be: the backend makes it private
    b.start()
    with b.client() as c:
        job = create_inbetween(c, square_keys({0: 4.0, 4: 20.0}), range(0, 5))
        start_and_finish(c, job["id"])
        assert c.get(f"/v1/jobs/{job['id']}/outputs/2").status_code == 200
        wal = sorted(p.name for p in b.data.glob("framesmith.db*"))
        written = sorted(p.name for p in (b.data / "jobs" / job["id"]).rglob("*.png"))
    assert len(written) == 7, written  # two keyframes in, five frames out
    assert "framesmith.db-wal" in wal, wal  # checked while the backend runs and holds it
    assert readable_by_others(b.data) == []
    b.stop()
    assert readable_by_others(b.data) == []


def test_the_ready_files_temp_copy_is_private_from_creation(make_backend) -> None:
    b: Backend = make_backend("killed-at-ready", env={DIE_BEFORE_RENAME_ENV: "backend.json"})
    with pytest.raises(RuntimeError, match="exited"):
        b.start()
    temps = list(b.data.glob("backend.json.tmp-*"))
    assert len(temps) == 1, "the backend did not die holding its ready file's temp copy"
    assert "token" in temps[0].read_text()
    assert readable_by_others(b.data) == []
