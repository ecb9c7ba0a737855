"""Promise 22: a damaged database is named in a sentence, never silently started empty.

On a copy of a data folder holding two finished jobs: a database truncated to 0 bytes, or with
a garbage header, stops the backend at start with a non-zero exit and one sentence naming the
file and what to do (no traceback), and the job folders are left untouched. One unreadable row
is quarantined and the other job served; a job folder replaced by a file fails that job with a
sentence, its output fetch is a 404, and the other job is served.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.backend.server import Backend, start_and_finish
from tests.promises.support import create_inbetween, square_keys

DB = "framesmith.db"


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A stopped backend's data folder with two finished jobs (read-only: copy it)."""
    root = tmp_path_factory.mktemp("damaged")
    (root / "models").mkdir()
    b = Backend(data=root / "data", models=root / "models").start()
    try:
        with b.client() as c:
            ids = []
            for x in (4.0, 12.0):
                job = create_inbetween(c, square_keys({0: x, 2: x + 8}), range(0, 3))
                start_and_finish(c, job["id"])
                ids.append(job["id"])
    finally:
        b.stop()
    return root / "data", ids


def copy_of(source: Path, make_backend, name: str) -> Backend:
    b: Backend = make_backend(name)
    shutil.copytree(source, b.data)
    (b.data / "stdout.log").unlink()
    return b


def refused_at_start(b: Backend) -> str:
    """The backend must exit non-zero; returns the last line it printed."""
    with pytest.raises(RuntimeError, match=r"exited with [1-9]"):
        b.start()
    out = b.output()
    assert "Traceback" not in out, out
    return out.strip().splitlines()[-1]


def test_an_emptied_database_stops_the_start_and_keeps_the_job_folders(
    two_jobs, make_backend
) -> None:
    b = copy_of(two_jobs[0], make_backend, "truncated")
    (b.data / DB).write_bytes(b"")
    line = refused_at_start(b)
    assert str(b.data / DB) in line and "2 job folder(s)" in line, line
    assert "restore it from a backup" in line, line
    assert (b.data / DB).stat().st_size == 0, "the damaged database was overwritten"
    assert sorted(p.name for p in (b.data / "jobs").iterdir()) == sorted(two_jobs[1])


def test_a_garbage_header_stops_the_start_with_a_sentence(two_jobs, make_backend) -> None:
    b = copy_of(two_jobs[0], make_backend, "garbage")
    db = b.data / DB
    db.write_bytes(b"this is no database header" * 8 + db.read_bytes()[208:])
    line = refused_at_start(b)
    assert str(db) in line and "cannot be read" in line, line


def test_one_unreadable_row_is_quarantined_and_the_rest_served(two_jobs, make_backend) -> None:
    bad, good = two_jobs[1]
    b = copy_of(two_jobs[0], make_backend, "bad-row")
    with sqlite3.connect(b.data / DB) as db:
        db.execute("UPDATE jobs SET frames = 'not json' WHERE id = ?", (bad,))
    db.close()
    b.start()
    with b.client() as c:
        listed = c.get("/v1/jobs")
        assert listed.status_code == 200, listed.text
        assert [j["id"] for j in listed.json()] == [good]
        assert c.get(f"/v1/jobs/{bad}").status_code == 404
        assert c.get(f"/v1/jobs/{good}/outputs/1").status_code == 200
    assert "could not be read from the database" in b.output()
    assert any(p.name.startswith(bad) for p in (b.data / "quarantine").iterdir())


def test_a_job_folder_replaced_by_a_file_fails_that_job_only(two_jobs, make_backend) -> None:
    broken, good = two_jobs[1]
    b = copy_of(two_jobs[0], make_backend, "folder-file")
    shutil.rmtree(b.data / "jobs" / broken)
    (b.data / "jobs" / broken).write_text("not a folder")
    b.start()
    with b.client() as c:
        listed = c.get("/v1/jobs")
        assert listed.status_code == 200, listed.text
        job = c.get(f"/v1/jobs/{broken}").json()
        assert job["state"] == "failed" and "replaced by a file" in job["error"], job
        r = c.get(f"/v1/jobs/{broken}/outputs/1")
        assert r.status_code == 404, r.text
        assert c.get(f"/v1/jobs/{good}/outputs/1").status_code == 200
