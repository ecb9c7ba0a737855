"""One thread per worker on the head: it starts the worker's actor, feeds it pieces, passes
what comes back to the scheduler, and starts a new actor when the old one dies.

A worker lost mid-piece loses that piece only: its frames written so far stay, the piece goes
back to the scheduler for the next free worker, and a new actor takes the slot's place. A slot
whose actor dies (or fails to start) MAX_FAILURES times in a row is taken out, and health says
why.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..store import Store
from .actor import PieceWorker
from .messages import (
    FrameDone,
    Outcome,
    PieceEnd,
    PieceOrder,
    ProgressNote,
    WorkerInfo,
    WorkerSetup,
)
from .scheduler import Assignment, Scheduler

log = logging.getLogger("framesmith.cluster")

MAX_FAILURES = 3  # deaths or failed starts in a row before a worker is taken out
START_TIMEOUT_S = 300.0  # a worker that has not said who it is by then has failed to start


class SlotState(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    OUT = "out"  # failed too often: taken out, named in health with its last error


@dataclass(frozen=True)
class SlotPlan:
    """How the head starts one worker: its name, Ray's options for its actor, and its setup."""

    setup: WorkerSetup
    options: dict[str, Any]


class WorkerSlot:
    def __init__(
        self,
        plan: SlotPlan,
        store: Store,
        scheduler: Scheduler,
        on_out: Callable[[WorkerSlot], None],
    ) -> None:
        self.name = plan.setup.slot
        self._plan = plan
        self._store = store
        self._scheduler = scheduler
        self._on_out = on_out
        self._actor: Any = None
        self.state = SlotState.STARTING
        self.info: WorkerInfo | None = None
        self.failures = 0  # in a row
        self.restarts = 0
        self.error: str | None = None
        self.current: Assignment | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"slot-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No new actor from now on (the scheduler hands out no more pieces)."""
        self._stopping.set()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def cancel(self, job_id: str) -> None:
        """Tell the actor to stop its piece of this job at its next step (no waiting)."""
        actor = self._actor
        if actor is not None:
            actor.cancel.remote(job_id)

    def describe(self) -> dict[str, Any]:
        current = self.current
        last = self.info  # the last actor's: its node stays named when it is gone
        info = last if self.state is SlotState.READY else None  # a dead one's pid would mislead
        return {
            "id": self.name,
            "node": last.node if last else None,
            "pid": info.pid if info else None,
            "device": info.device if info else None,
            "busy": current is not None,
            "job": current.run.job_id if current is not None else None,
            "state": self.state.value,
            "restarts": self.restarts,
            "error": self.error,
        }

    # --- the slot's thread ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._actor is None and not self._start_actor():
                if self.failures >= MAX_FAILURES:
                    self._take_out()
                    return
                continue
            assignment = self._scheduler.next_piece(self.name)
            if assignment is None:
                return  # stopping
            try:
                self._run(assignment)
            except Exception:  # never let one piece end the slot
                log.exception("worker %s: unexpected error running a piece", self.name)
                end = PieceEnd(Outcome.ERROR, "unexpected error on the head; see its log")
                self._scheduler.piece_ended(assignment, end)
            finally:
                self.current = None

    def _start_actor(self) -> bool:
        import ray  # connected already by the runner

        self.state = SlotState.STARTING
        actor = None
        try:
            actor = ray.remote(PieceWorker).options(**self._plan.options).remote(self._plan.setup)
            info = ray.get(actor.info.remote(), timeout=START_TIMEOUT_S)
        except Exception as exc:  # died in its constructor, not placed, timed out, Ray stopped
            if actor is not None:
                _kill(actor)
            self._failed(f"the worker did not start: {_first_line(exc)}")
            return False
        self._actor, self.info, self.state = actor, info, SlotState.READY
        log.info("worker %s ready: pid %d on %s, %s", self.name, info.pid, info.node, info.device)
        return True

    def _run(self, a: Assignment) -> None:
        from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, WorkerCrashedError

        lost = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError)

        self.current = a
        order = self._order(a)
        end: PieceEnd | None = None
        try:
            for ref in self._actor.run_piece.remote(order):
                message = _get(ref)
                if isinstance(message, FrameDone):
                    self._scheduler.write_frame(a, message.frame, message.png)
                elif isinstance(message, ProgressNote):
                    self._scheduler.note_progress(a, message.stage, message.done, message.total)
                else:
                    end = message
        except lost as exc:
            self._scheduler.piece_lost(a)
            self._lost(exc)
            return
        if end is None:
            end = PieceEnd(Outcome.ERROR, "the worker's stream ended without an outcome")
        self.failures = 0
        self._scheduler.piece_ended(a, end)

    def _order(self, a: Assignment) -> PieceOrder:
        """The piece with where its inputs are and the frames it may read that exist."""
        job_id, chunk = a.run.job_id, a.piece.chunk
        store = self._store
        inputs: dict[tuple[str, int], str] = {}
        for pass_, frames in store.uploaded(job_id).items():
            for frame in frames:
                path = store.find_input(job_id, pass_, frame)
                if path is not None:
                    inputs[(pass_.value, frame)] = str(path.relative_to(store.jobs_dir))
        readable = set(chunk.frames) | (set(chunk.context) if a.piece.after is not None else set())
        finished: dict[int, bytes] = {}
        for frame in sorted(readable):
            data = store.read_output(job_id, frame)
            if data is not None:
                finished[frame] = data
        level = self._scheduler.memory_level(a.run)
        return PieceOrder(a.run.record.spec(), chunk, inputs, finished, level)

    def _lost(self, exc: BaseException) -> None:
        log.warning("worker %s died: %s", self.name, _first_line(exc))
        _kill(self._actor)
        self._actor, self.restarts = None, self.restarts + 1
        self._failed(f"the worker died: {_first_line(exc)}")

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.error = error
        log.error("worker %s (failure %d of %d): %s", self.name, self.failures, MAX_FAILURES, error)

    def _take_out(self) -> None:
        self.state = SlotState.OUT
        log.error("worker %s is taken out after %d failures in a row", self.name, self.failures)
        self._on_out(self)


def _get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def _kill(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):  # dead already, or Ray is shutting down
        ray.kill(actor, no_restart=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
