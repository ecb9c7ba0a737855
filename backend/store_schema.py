"""The job database: its schema, the columns added since the first release, and opening it
safely (never started empty beside existing job folders)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .store_files import JOB_ID_RE

DB_NAME = "framesmith.db"


class DamagedStore(Exception):
    """The database cannot be used as it is; the message says what is wrong and what to do."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    frames TEXT NOT NULL,
    keyframes TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    queued_at REAL,
    stage TEXT NOT NULL DEFAULT '',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    chunk INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT NOT NULL DEFAULT '',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    crashed_runs INTEGER NOT NULL DEFAULT 0,
    run_start_frames INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, queued_at);
CREATE TABLE IF NOT EXISTS quarantined_jobs (
    seq INTEGER,
    id TEXT,
    reason TEXT NOT NULL,
    row TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
"""
# Columns added after the first release: ALTER TABLE adds them to an older database.
ADDED_COLUMNS = {
    "crashed_runs": "INTEGER NOT NULL DEFAULT 0",
    "run_start_frames": "INTEGER NOT NULL DEFAULT 0",
}


def open_database(path: Path, jobs_dir: Path) -> sqlite3.Connection:
    """Connect, create the schema where there is none, and refuse what cannot be used safely:
    a database SQLite cannot read, or one with no jobs table beside existing job folders (a
    truncated or deleted database would otherwise start empty and orphan every job)."""
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        had_jobs = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
        folders = sum(1 for d in jobs_dir.iterdir() if JOB_ID_RE.match(d.name))
        if had_jobs is None and folders:
            size = path.stat().st_size
            raise DamagedStore(
                f"the job database {path} holds no jobs ({size} bytes) but {jobs_dir} holds"
                f" {folders} job folder(s), so it was truncated, replaced or deleted; restore it"
                " from a backup, or move the jobs folder aside to start with no jobs"
            )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        have = {r["name"] for r in db.execute("PRAGMA table_info(jobs)")}
        for column, decl in ADDED_COLUMNS.items():
            if column not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {decl}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise DamagedStore(
            f"the job database {path} cannot be read ({exc}); restore it from a backup, or move"
            " it and the jobs folder beside it aside to start with no jobs"
        ) from None
    except BaseException:
        db.close()
        raise
    return db
