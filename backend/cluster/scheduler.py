"""The head's bookkeeping for the cluster: which piece of which job runs on which worker.

Ray-free: the slots (slots.py) ask for pieces, run them on their actors and report back; this
module moves jobs through the store's states, writes the frames that come back, and decides
what runs next. A free worker takes a piece of the running job with the fewest pieces in
flight, and starts the next queued job instead when every running job already has a worker:
different jobs go to different workers first, then the pieces of a job spread out.

A job ends (done, failed, canceled, or back to the queue on stop) in one step under its lock:
no frame or progress of it is written after that, so a cancel is honest across the cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import pipelines
from ..jobs import InputError, PipelineError, shortened_list
from ..store import JobRecord, JobState, Progress, Store
from .messages import Outcome, PieceEnd
from .pieces import Piece, plan_pieces

log = logging.getLogger("framesmith.cluster")

INTERNAL_ERROR = "internal error in the backend; see the backend log"
# A piece whose worker died this many times is not run again: its job fails instead, so one job
# cannot take every worker of the cluster down in turn.
MAX_PIECE_LOSSES = 2


def _lost_error(losses: int, piece: Piece) -> str:
    return (
        f"the cluster worker running chunk {piece.chunk.index + 1} of this job died {losses}"
        " times, so it was not run again (the job may be what ends the worker: see the"
        " backend log and the workers' logs); create the job again with a lower resolution or"
        " fewer frames"
    )


@dataclass(eq=False)
class JobRun:
    """One running job: its pieces and where each stands."""

    record: JobRecord
    pieces: list[Piece]
    todo: list[int]  # pieces not started (or lost with their worker), in plan order
    running: dict[int, str] = field(default_factory=dict)  # piece -> slot
    done: set[int] = field(default_factory=set)
    memory_level: int = 0  # raised by a piece that ran out of GPU memory, kept for the rest
    losses: dict[int, int] = field(default_factory=dict)  # piece -> workers that died running it
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)  # frames vs. the job's end
    frames: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        self.frames = frozenset(self.record.frames)

    @property
    def job_id(self) -> str:
        return self.record.id

    def ready_piece(self) -> int | None:
        for index in self.todo:
            after = self.pieces[index].after
            if after is None or after in self.done:
                return index
        return None


@dataclass(frozen=True, eq=False)
class Assignment:
    run: JobRun
    piece: Piece
    slot: str


class Scheduler:
    def __init__(self, store: Store, cancel_on_worker: Callable[[str, str], None]) -> None:
        """cancel_on_worker(slot, job_id) tells a worker to stop its piece of that job."""
        self.store = store
        self._cancel_on_worker = cancel_on_worker
        self._cond = threading.Condition()
        self._runs: dict[str, JobRun] = {}  # in the order the jobs started
        self._stopping = False
        self._no_workers: str | None = None

    # --- asked by the slots --------------------------------------------------------------

    def next_piece(self, slot: str) -> Assignment | None:
        """The next piece for `slot`, waiting until there is one; None once stopping."""
        with self._cond:
            while not self._stopping:
                assignment = self._choose(slot)
                if assignment is not None:
                    return assignment
                self._cond.wait()
            return None

    def piece_ended(self, a: Assignment, end: PieceEnd) -> None:
        run = a.run
        with self._cond:
            run.running.pop(a.piece.index, None)
            run.memory_level = max(run.memory_level, end.memory_level)
            self._cond.notify_all()
            if run.ended:
                return
            if end.outcome is Outcome.DONE:
                self._piece_done(run, a.piece)
            elif end.outcome is Outcome.FAILED:
                self._end(run, JobState.FAILED, end.error or INTERNAL_ERROR)
            elif end.outcome is Outcome.ERROR:
                log.error(
                    "job %s: unexpected error on worker %s:\n%s", run.job_id, a.slot, end.error
                )
                self._end(run, JobState.FAILED, INTERNAL_ERROR)
            else:  # canceled though nobody canceled the job: as if its worker were lost
                self._lose(a)

    def piece_lost(self, a: Assignment) -> None:
        """Its worker died: the piece runs again, on the next free worker, unless workers died
        running it MAX_PIECE_LOSSES times: then the job fails (it may be what kills them)."""
        with self._cond:
            a.run.running.pop(a.piece.index, None)
            if not a.run.ended:
                self._lose(a)
            self._cond.notify_all()

    def write_frame(self, a: Assignment, frame: int, png: bytes) -> None:
        """Write a frame that came back, atomically, unless the job has ended meanwhile."""
        run, problem = a.run, None
        with run.lock:
            if run.ended:
                return
            if frame not in run.frames:  # the worker checked it too
                problem = f"a worker sent frame {frame}, which the job did not ask for"
            elif not self.store.has_output(run.job_id, frame):  # first write wins
                try:
                    self.store.write_output(run.job_id, frame, png)
                except PipelineError as exc:  # the job's folder cannot take it (UnsafePath)
                    problem = str(exc)
        if problem is not None:
            self.fail(run, problem)

    def note_progress(self, a: Assignment, stage: str, done: int, total: int) -> None:
        run = a.run
        with run.lock:
            if not run.ended:
                progress = Progress(stage, done, total, len(run.done), len(run.pieces))
                self.store.set_progress(run.job_id, progress)

    def memory_level(self, run: JobRun) -> int:
        with self._cond:
            return run.memory_level

    # --- asked by the head -----------------------------------------------------------------

    def notify(self) -> None:
        with self._cond:
            if self._no_workers is not None:
                self._fail_queued(self._no_workers)
            self._cond.notify_all()

    def cancel(self, job_id: str) -> None:
        """The job ends canceled now; the workers running its pieces are told to stop."""
        with self._cond:
            run = self._runs.get(job_id)
            if run is not None:
                self._end(run, JobState.CANCELED)
            self._cond.notify_all()

    def fail(self, run: JobRun, error: str) -> None:
        with self._cond:
            if not run.ended:
                self._end(run, JobState.FAILED, error)
            self._cond.notify_all()

    def no_workers_left(self, reason: str) -> None:
        """Every worker was taken out: running and queued jobs fail saying why."""
        with self._cond:
            self._no_workers = reason
            for run in list(self._runs.values()):
                self._end(run, JobState.FAILED, reason)
            self._fail_queued(reason)
            self._cond.notify_all()

    def stop(self) -> None:
        """Running jobs go back to the queue (canceled ones end canceled); nothing new starts."""
        with self._cond:
            self._stopping = True
            for run in list(self._runs.values()):
                latest = self.store.get(run.job_id)
                canceled = latest is not None and latest.cancel_requested
                self._end(run, JobState.CANCELED if canceled else JobState.QUEUED)
            self._cond.notify_all()

    def running_jobs(self) -> list[str]:
        with self._cond:
            return list(self._runs)

    # --- inside, under the condition's lock --------------------------------------------------

    def _choose(self, slot: str) -> Assignment | None:
        while True:
            candidates = [r for r in self._runs.values() if r.ready_piece() is not None]
            best = min(candidates, key=lambda r: len(r.running), default=None)
            if (best is None or best.running) and self._start_next_job():
                continue  # a job was taken from the queue (or ended at once): look again
            if best is None:
                return None
            index = best.ready_piece()
            assert index is not None
            best.todo.remove(index)
            best.running[index] = slot
            return Assignment(best, best.pieces[index], slot)

    def _start_next_job(self) -> bool:
        """Take the next queued job into a run; False when the queue is empty."""
        record = self.store.next_queued()
        if record is None:
            return False
        if self._no_workers is not None:
            self._fail_queued(self._no_workers)
            return True
        running = self.store.transition(
            record.id, JobState.RUNNING, allowed_from=(JobState.QUEUED,)
        )
        if running is None:
            return True
        self.store.begin_run(record.id)
        if running.cancel_requested:
            self.store.transition(record.id, JobState.CANCELED, allowed_from=(JobState.RUNNING,))
            return True
        try:
            pieces = self._plan(running)
        except (PipelineError, InputError, LookupError) as exc:
            self.store.transition(
                record.id, JobState.FAILED, allowed_from=(JobState.RUNNING,), error=str(exc)
            )
            return True
        except Exception:
            log.exception("job %s: unexpected error planning it", record.id)
            self.store.transition(
                record.id, JobState.FAILED, allowed_from=(JobState.RUNNING,), error=INTERNAL_ERROR
            )
            return True
        finished = set(self.store.finished_frames(record.id))
        run = JobRun(running, pieces, todo=[])
        run.done = {p.index for p in pieces if all(f in finished for f in p.chunk.frames)}
        run.todo = [p.index for p in pieces if p.index not in run.done]
        self._runs[record.id] = run
        log.info("job %s: %d piece(s), %d already finished", record.id, len(pieces), len(run.done))
        self.store.set_progress(record.id, Progress("", 0, 0, len(run.done), len(pieces)))
        if not run.todo:
            self._finish(run)
        return True

    def _plan(self, record: JobRecord) -> list[Piece]:
        spec = record.spec()
        pipeline: Any = pipelines.get(record.kind)
        return plan_pieces(spec, pipeline.plan(spec))

    def _piece_done(self, run: JobRun, piece: Piece) -> None:
        missing = self._missing(run.job_id, piece.chunk.frames)
        if missing:
            self._end(
                run,
                JobState.FAILED,
                f"the {run.record.kind} pipeline did not produce frame(s) {shortened_list(missing)}",
            )
            return
        run.done.add(piece.index)
        self.store.set_progress(run.job_id, Progress("", 0, 0, len(run.done), len(run.pieces)))
        if len(run.done) == len(run.pieces):
            self._finish(run)

    def _finish(self, run: JobRun) -> None:
        missing = self._missing(run.job_id, run.record.frames)
        if missing:
            error = f"frames {shortened_list(missing)} are missing after the last chunk"
            self._end(run, JobState.FAILED, error)
        else:
            self._end(run, JobState.DONE)

    def _lose(self, a: Assignment) -> None:
        run, index = a.run, a.piece.index
        losses = run.losses.get(index, 0) + 1
        run.losses[index] = losses
        if losses >= MAX_PIECE_LOSSES:
            self._end(run, JobState.FAILED, _lost_error(losses, a.piece))
            return
        log.warning(
            "job %s: worker %s was lost mid-piece; chunk %d runs again on the next free worker",
            run.job_id,
            a.slot,
            a.piece.chunk.index + 1,
        )
        run.todo.append(index)
        run.todo.sort()

    def _end(self, run: JobRun, state: JobState, error: str | None = None) -> None:
        with run.lock:
            if run.ended:
                return
            run.ended = True
            self.store.transition(run.job_id, state, allowed_from=(JobState.RUNNING,), error=error)
        for slot in run.running.values():
            self._cancel_on_worker(slot, run.job_id)
        run.todo.clear()
        self._runs.pop(run.job_id, None)

    def _fail_queued(self, reason: str) -> None:
        while (record := self.store.next_queued()) is not None:
            self.store.transition(
                record.id, JobState.FAILED, allowed_from=(JobState.QUEUED,), error=reason
            )

    def _missing(self, job_id: str, frames: tuple[int, ...]) -> list[int]:
        done = set(self.store.finished_frames(job_id))
        return [f for f in frames if f not in done]
