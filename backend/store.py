"""Jobs in SQLite (WAL) plus one folder per job; inputs and outputs are atomic files.

The database (store_schema) holds each job's request, state and progress; the files
(store_files) are the truth for what was uploaded and what has finished, so a frame renamed into
place before a crash is never lost and never recomputed. Store is the one object over both: job
rows and their states, uploads committed under its lock, and the damage found at start.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import TMP_MARK, _fsync_dir, sweep_temp_files
from .jobs import JobSpec, Pass
from .store_files import JOB_ID_RE, JobFiles, UnsafePath
from .store_schema import DB_NAME, DamagedStore, open_database

log = logging.getLogger("framesmith.store")

QUARANTINE = "quarantine"
# A job whose runs ended this many times in a row with the backend dying (and no new finished
# frame) is not resumed again: it would most likely take the backend down once more.
MAX_CRASHED_RUNS = 2
# Uploads are written here first and moved into their job's folder only while the job still
# takes inputs (checked under the store's lock, which start, cancel and delete also hold).
INCOMING = "incoming"
DELETED_MARK = ".deleted-"  # a deleted job's folder, renamed so, before it is removed
DEFAULT_MAX_AWAITING = 256  # jobs that may wait for inputs at once (the idlest expire)


class JobState(enum.StrEnum):
    AWAITING_INPUTS = "awaiting_inputs"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELED)


@dataclass(frozen=True)
class Progress:
    stage: str = ""
    done: int = 0  # within the current stage of the current chunk
    total: int = 0
    chunk: int = 0  # chunks finished before the current one
    chunks: int = 0

    @property
    def fraction(self) -> float:
        if self.chunks <= 0:
            return 0.0
        within = self.done / self.total if self.total > 0 else 0.0
        return min(1.0, (self.chunk + within) / self.chunks)


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str
    state: JobState
    width: int
    height: int
    frames: tuple[int, ...]
    keyframes: tuple[int, ...]
    params: dict[str, Any]
    created_at: float
    updated_at: float
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    idempotency_key: str | None = None
    request_hash: str = ""
    cancel_requested: bool = False
    seq: int = 0  # creation order: the cursor of GET /v1/jobs

    def spec(self) -> JobSpec:
        return JobSpec(
            id=self.id,
            kind=self.kind,
            width=self.width,
            height=self.height,
            frames=self.frames,
            keyframes=self.keyframes,
            params=self.params,
        )


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class InputsClosed(Exception):
    """An upload arrived for a job that no longer takes inputs (started, canceled, deleted)."""

    def __init__(self, job_id: str, state: JobState | None) -> None:
        self.state = state
        super().__init__(
            f"job {job_id} was deleted while this input was being uploaded; nothing was saved"
            if state is None
            else f"job {job_id} is {state.value}; inputs are closed (it changed while this"
            " input was being uploaded, and the upload was not saved)"
        )


class Store(JobFiles):
    def __init__(self, data_dir: Path) -> None:
        """Open (or create) the jobs of `data_dir`. DamagedStore when the database cannot be
        used safely; unreadable rows and job folders are quarantined and the rest served."""
        self.root = data_dir.resolve()
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.quarantine_dir = self.root / QUARANTINE
        self._lock = threading.RLock()
        self._db = open_database(self.root / DB_NAME, self.jobs_dir)
        try:
            self._quarantine_unreadable_rows()
            self._quarantine_broken_folders()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise DamagedStore(
                f"the job database {self.root / DB_NAME} is damaged inside ({exc}); restore it"
                " from a backup, or move it and the jobs folder beside it aside to start with no"
                " jobs"
            ) from None
        swept = sweep_temp_files(self.jobs_dir) + sweep_temp_files(self.root / INCOMING)
        for folder in self.jobs_dir.glob(DELETED_MARK + "*"):
            shutil.rmtree(folder, ignore_errors=True)  # a delete the process died in
        if swept:
            log.info("swept %d temp file(s) left by an interrupted write", swept)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- damage found at start ------------------------------------------------------------

    def _quarantine_unreadable_rows(self) -> None:
        """A row that cannot be read as a job moves to quarantined_jobs (its folder to
        DATA/quarantine/) so that it cannot break every list; the other jobs are served."""
        bad: list[tuple[sqlite3.Row, str]] = []
        for row in self._db.execute("SELECT * FROM jobs"):
            try:
                _record(row)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                bad.append((row, f"{type(exc).__name__}: {exc}"[:300]))
        for row, problem in bad:
            raw = json.dumps({k: repr(v)[:2000] for k, v in zip(row.keys(), row, strict=True)})
            with self._tx() as db:
                db.execute(
                    "INSERT INTO quarantined_jobs (seq, id, reason, row, quarantined_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (row["seq"], str(row["id"]), problem, raw, time.time()),
                )
                db.execute("DELETE FROM jobs WHERE seq = ?", (row["seq"],))
            moved = self._move_aside(str(row["id"]))
            log.error(
                "job %r could not be read from the database (%s); it was moved to the table"
                " quarantined_jobs%s and the other jobs are served",
                row["id"],
                problem,
                f" and its folder to {moved}" if moved else "",
            )

    def _quarantine_broken_folders(self) -> None:
        """A job whose folder is not a folder (a file put in its place) fails with a sentence;
        what was there is moved to DATA/quarantine/ for a person to look at."""
        rows = self._db.execute("SELECT id FROM jobs").fetchall()
        for row in rows:
            folder = self.jobs_dir / row["id"]
            if not JOB_ID_RE.match(row["id"]) or folder.is_symlink():
                continue  # symlinks are refused where they are used (UnsafePath)
            if not folder.exists() or folder.is_dir():
                continue
            moved = self._move_aside(row["id"])
            error = (
                f"this job's folder {folder} had been replaced by a file (moved to {moved});"
                " its inputs and frames are lost: create the job again"
            )
            with self._tx() as db:
                db.execute(
                    "UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                    (JobState.FAILED.value, error, time.time(), row["id"]),
                )
            log.error("job %s: %s", row["id"], error)

    def _move_aside(self, job_id: str) -> Path | None:
        folder = self.jobs_dir / job_id
        if not JOB_ID_RE.match(job_id) or not (folder.exists() or folder.is_symlink()):
            return None
        self.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
        target = self.quarantine_dir / f"{job_id}-{int(time.time())}"
        os.replace(folder, target)
        return target

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- jobs -----------------------------------------------------------------------------

    def create_job(
        self,
        *,
        kind: str,
        width: int,
        height: int,
        frames: tuple[int, ...],
        keyframes: tuple[int, ...],
        params: dict[str, Any],
        idempotency_key: str | None,
        request_hash: str,
    ) -> tuple[JobRecord, bool]:
        """Create a job, or return the one made earlier with the same Idempotency-Key.

        Returns (job, created).
        """
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row is not None:
                    if row["request_hash"] != request_hash:
                        raise IdempotencyConflict(idempotency_key)
                    return _record(row), False
            job_id = uuid.uuid4().hex
            now = time.time()
            db.execute(
                "INSERT INTO jobs (id, kind, state, width, height, frames, keyframes, params,"
                " created_at, updated_at, idempotency_key, request_hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    kind,
                    JobState.AWAITING_INPUTS.value,
                    width,
                    height,
                    json.dumps(list(frames)),
                    json.dumps(list(keyframes)),
                    json.dumps(params, sort_keys=True),
                    now,
                    now,
                    idempotency_key,
                    request_hash,
                ),
            )
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        log.info("job %s created: %s, %d frame(s)", job_id, kind, len(frames))
        job = self.get(job_id)
        assert job is not None
        return job, True

    def get(self, job_id: str) -> JobRecord | None:
        if not JOB_ID_RE.match(job_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def list(
        self, limit: int = 100, state: JobState | None = None, before: int | None = None
    ) -> list[JobRecord]:
        """Newest first; `before`: only jobs created before the job with this seq (a cursor)."""
        where, args = self._list_filter(state, before)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ?", (*args, limit)
            ).fetchall()
        out = []
        for r in rows:
            try:
                out.append(_record(r))
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                log.error("job %r cannot be read (%s); left out of the list", r["id"], exc)
        return out

    def any_before(self, before: int, state: JobState | None = None) -> bool:
        where, args = self._list_filter(state, before)
        with self._lock:
            return (
                self._db.execute(f"SELECT 1 FROM jobs{where} LIMIT 1", args).fetchone() is not None
            )

    @staticmethod
    def _list_filter(state: JobState | None, before: int | None) -> tuple[str, tuple]:
        clauses, args = [], []
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        if before is not None:
            clauses.append("seq < ?")
            args.append(before)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)

    def count_awaiting_active(self, since: float) -> int:
        """Jobs waiting for inputs that were created or got an input at `since` or later."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND updated_at >= ?",
                (JobState.AWAITING_INPUTS.value, since),
            ).fetchone()[0]

    def expire_awaiting(self, keep: int) -> list[str]:
        """Fail the jobs waiting for inputs longest without a new input, beyond the `keep`
        most recently active ones; returns their ids."""
        error = (
            f"this job waited for its inputs while {keep} more recently active jobs did too, so"
            f" it expired (at most {keep} jobs wait for inputs at once); create it again"
        )
        with self._tx() as db:
            rows = db.execute(
                "SELECT id FROM jobs WHERE state = ? ORDER BY updated_at DESC, seq DESC"
                " LIMIT -1 OFFSET ?",
                (JobState.AWAITING_INPUTS.value, keep),
            ).fetchall()
            for r in rows:
                db.execute(
                    "UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                    (JobState.FAILED.value, error, time.time(), r["id"]),
                )
        for r in rows:
            log.info("job %s: awaiting_inputs -> failed (%s)", r["id"], error)
        return [r["id"] for r in rows]

    def count(self, state: JobState) -> int:
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ?", (state.value,)
            ).fetchone()[0]

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        allowed_from: tuple[JobState, ...],
        error: str | None = None,
    ) -> JobRecord | None:
        """Move a job to `to` if it is in one of `allowed_from`; returns the job after, or None."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobState(row["state"]) not in allowed_from:
                return None
            if to is JobState.QUEUED:
                db.execute(
                    "UPDATE jobs SET state = ?, updated_at = ?, queued_at = COALESCE(queued_at, ?)"
                    " WHERE id = ?",
                    (to.value, now, now, job_id),
                )
            else:
                db.execute(
                    "UPDATE jobs SET state = ?, updated_at = ?, error = COALESCE(?, error)"
                    " WHERE id = ?",
                    (to.value, now, error, job_id),
                )
        log.info(
            "job %s: %s -> %s%s", job_id, row["state"], to.value, f" ({error})" if error else ""
        )
        return self.get(job_id)

    def set_params(self, job_id: str, params: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET params = ?, updated_at = ? WHERE id = ?",
                (json.dumps(params, sort_keys=True), time.time(), job_id),
            )

    def request_cancel(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                (time.time(), job_id),
            )

    def set_progress(self, job_id: str, p: Progress) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET stage = ?, done = ?, total = ?, chunk = ?, chunks = ?,"
                " updated_at = ? WHERE id = ?",
                (p.stage, p.done, p.total, p.chunk, p.chunks, time.time(), job_id),
            )

    def next_queued(self) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM jobs WHERE state = ? ORDER BY queued_at, seq LIMIT 1",
                (JobState.QUEUED.value,),
            ).fetchone()
        return _record(row) if row else None

    def begin_run(self, job_id: str) -> None:
        """Note how many frames were finished when a run began: a run the backend died in is
        told apart from one that made progress before it died."""
        finished = len(self.finished_frames(job_id))
        with self._tx() as db:
            db.execute("UPDATE jobs SET run_start_frames = ? WHERE id = ?", (finished, job_id))

    def requeue_interrupted(self) -> list[str]:
        """After a crash or restart: jobs left running go back to the head of the queue, unless
        their runs ended with the backend dying MAX_CRASHED_RUNS times in a row without a new
        finished frame: those fail, so one job cannot crash the backend on every start."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT id, cancel_requested, crashed_runs, run_start_frames FROM jobs"
                " WHERE state = ?",
                (JobState.RUNNING.value,),
            ).fetchall()
            resumed: list[str] = []
            for r in rows:
                progressed = len(self.finished_frames(r["id"])) > r["run_start_frames"]
                crashed = 1 if progressed else r["crashed_runs"] + 1
                error = None
                if r["cancel_requested"]:
                    new = JobState.CANCELED
                elif crashed >= MAX_CRASHED_RUNS:
                    new, error = JobState.FAILED, _crashed_error(crashed)
                else:
                    new = JobState.QUEUED
                    resumed.append(r["id"])
                db.execute(
                    "UPDATE jobs SET state = ?, crashed_runs = ?, error = COALESCE(?, error),"
                    " updated_at = ? WHERE id = ?",
                    (new.value, crashed, error, time.time(), r["id"]),
                )
                if error:
                    log.error("job %s not resumed: %s", r["id"], error)
        for job_id in resumed:
            log.info("job %s was interrupted; it resumes from its first missing frame", job_id)
        return resumed

    def delete(self, job_id: str, allowed_from: tuple[JobState, ...]) -> JobState | None:
        """Delete a job if it is in one of `allowed_from`, in one step with respect to start
        and uploads; returns the state it was in (deleted only if that is allowed), or None if
        there is no such job."""
        folder = self.job_dir(job_id)
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = JobState(row["state"])
            if state not in allowed_from:
                return state
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            if folder.is_symlink():
                folder.unlink()  # the link only, never what it points to
                folder = None
            elif folder.exists():
                # renamed under the lock: no upload can move a file into it after this point
                gone = self.jobs_dir / f"{DELETED_MARK}{job_id}-{secrets.token_hex(4)}"
                os.replace(folder, gone)
                folder = gone
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)  # does not follow symlinks inside
        log.info("job %s deleted", job_id)
        return state

    def save_input(
        self, job_id: str, pass_: Pass, frame: int, ext: str, data: bytes | bytearray
    ) -> Path:
        """Save an uploaded input, atomically, if the job still takes inputs when the file is
        committed (InputsClosed otherwise, and nothing is left behind)."""
        path = self.input_path(job_id, pass_, frame, ext)
        incoming = self.root / INCOMING
        incoming.mkdir(mode=0o700, exist_ok=True)
        if not self._real(incoming):
            raise UnsafePath(incoming)
        tmp = incoming / f"{job_id}-{path.name}{TMP_MARK}{secrets.token_hex(4)}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            other = self.input_path(job_id, pass_, frame, "exr" if ext == "png" else "png")
            self._commit_input(job_id, tmp, path, other)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _commit_input(self, job_id: str, tmp: Path, path: Path, other: Path) -> None:
        with self._lock:
            row = self._db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            state = JobState(row["state"]) if row is not None else None
            if state is not JobState.AWAITING_INPUTS:
                raise InputsClosed(job_id, state)
            self._check_folder(job_id)
            if not self._real(path.parent):
                raise UnsafePath(path.parent)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
            other.unlink(missing_ok=True)
            with self._tx() as db:  # an input is activity: the job is not idle (expiry)
                db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))
        _fsync_dir(path.parent)


def _crashed_error(runs: int) -> str:
    return (
        f"the backend stopped unexpectedly during {runs} runs of this job in a row without"
        " finishing a new frame, so it was not resumed again (it would most likely stop the"
        " backend once more); see the backend log, then create the job again with a lower"
        " resolution or fewer frames"
    )


def _ints(text: str, what: str) -> tuple[int, ...]:
    values = json.loads(text)
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ValueError(f"{what} is not a list of frame numbers")
    return tuple(values)


def _record(row: sqlite3.Row) -> JobRecord:
    """A job from its row; ValueError (or TypeError) when the row does not hold one."""
    params = json.loads(row["params"])
    if not isinstance(params, dict):
        raise ValueError("params is not an object")
    if not (isinstance(row["id"], str) and JOB_ID_RE.match(row["id"])):
        raise ValueError(f"id {row['id']!r} is not a job id")
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        state=JobState(row["state"]),
        width=int(row["width"]),
        height=int(row["height"]),
        frames=_ints(row["frames"], "frames"),
        keyframes=_ints(row["keyframes"], "keyframes"),
        params=params,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        progress=Progress(row["stage"], row["done"], row["total"], row["chunk"], row["chunks"]),
        error=row["error"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        cancel_requested=bool(row["cancel_requested"]),
        seq=int(row["seq"]),
    )
