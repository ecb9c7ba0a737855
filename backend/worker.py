"""One worker thread per device: runs queued jobs chunk by chunk, resumable and cancelable.

A chunk whose frames are all on disk is skipped, so a job interrupted by a crash resumes from
its first missing frame and never recomputes (or rewrites) a finished one.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import pipelines
from .device import free_memory
from .jobs import ANY_SIZE_PASSES, InputError, JobSpec, Pass, PipelineError, shortened_list
from .pipelines.base import GENERIC_OOM_ADVICE, Canceled, Chunk
from .store import JobRecord, JobState, Progress, Store
from .store_files import UnsafePath
from .vision.imageio import decode
from .vision.png import encode_png

log = logging.getLogger("framesmith.worker")

# Fault injection for the crash tests only: after this many frames written by this process, the
# worker thread holds its job in "running" until the process is killed or stopped, or the job
# is canceled.
MAX_PIXELS = 8192 * 8192
HOLD_ENV = "FRAMESMITH_FAULT_HOLD_AFTER_FRAMES"
# Fault injection for the out-of-memory tests only: "<n>" makes the first n chunk attempts of
# this process raise torch's OutOfMemoryError before they start; "always" makes every one.
OOM_ENV = "FRAMESMITH_FAULT_OOM"
# A running job's temporary files (render-assisted tracks, ...) live in this folder of its job
# folder, never beside its outputs; it is removed when the job's run ends and at every start.
SCRATCH = "scratch"


class JobContext:
    """The RunContext a pipeline sees for one job."""

    def __init__(
        self,
        store: Store,
        job: JobRecord,
        device: str,
        models: Callable[[], Any],
        cancel_event: threading.Event,
        on_frame_written: Callable[[], None],
    ) -> None:
        self.job: JobSpec = job.spec()
        self.device = device
        self._store = store
        self._models = models
        self._cancel = cancel_event
        self._on_frame_written = on_frame_written
        self._progress = Progress()
        # Decoded inputs of the current chunk's context frames: read again within the chunk,
        # dropped at the next. Other frames (a shot-wide depth range, guides between keys) are
        # decoded on every read, so a chunk never holds the frames of a whole shot.
        self._decoded: dict[tuple[Pass, int], np.ndarray] = {}
        self._kept_frames: frozenset[int] = frozenset()
        self.memory_level = 0  # raised by Worker._run_chunk after running out of GPU memory

    @property
    def models(self) -> Any:
        return self._models()

    def has_input(self, p: Pass, frame: int) -> bool:
        return self._store.find_input(self.job.id, p, frame) is not None

    def input(self, p: Pass, frame: int) -> np.ndarray:
        key = (p, frame)
        if key in self._decoded:
            return self._decoded[key]
        path = self._store.find_input(self.job.id, p, frame)
        if path is None:
            raise PipelineError(f"input {p.value} for frame {frame} was not uploaded")
        image = decode(
            path.read_bytes(),
            max_pixels=MAX_PIXELS,
            expect_size=None if p in ANY_SIZE_PASSES else (self.job.width, self.job.height),
            pass_=p,
        )
        if frame in self._kept_frames:
            self._decoded[key] = image
        return image

    def scratch_dir(self) -> Path:
        """A private folder for the running job's temporary files; removed when its run ends."""
        folder = self._store.job_dir(self.job.id) / SCRATCH
        if folder.is_symlink() or folder.parent.resolve() != folder.parent:
            raise UnsafePath(folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder

    def remove_scratch(self) -> None:
        remove_scratch(self._store.job_dir(self.job.id) / SCRATCH)

    def finished_output(self, frame: int) -> np.ndarray | None:
        data = self._store.read_output(self.job.id, frame)
        if data is None:
            return None
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            return None
        if img.ndim == 3 and img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def write_output(self, frame: int, image: np.ndarray) -> None:
        check_output(self.job, frame, image)
        if self._store.has_output(self.job.id, frame):
            return  # first write wins: a finished frame is never rewritten (e.g. on resume)
        self._store.write_output(self.job.id, frame, encode_png(image))
        self._on_frame_written()

    def progress(self, stage: str, done: int, total: int) -> None:
        p = self._progress
        self._progress = Progress(stage, done, total, p.chunk, p.chunks)
        self._store.set_progress(self.job.id, self._progress)

    def set_chunk(self, finished_chunks: int, chunks: int, chunk: Chunk | None = None) -> None:
        """Progress at a new chunk (None: past the last); its context frames' inputs are kept."""
        p = self._progress
        self._progress = Progress(p.stage, 0, p.total, finished_chunks, chunks)
        self._store.set_progress(self.job.id, self._progress)
        self._decoded.clear()
        self._kept_frames = frozenset(chunk.context) if chunk is not None else frozenset()

    def check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Canceled()


class Worker:
    def __init__(self, store: Store, device: str, models: Callable[[], Any]) -> None:
        self.store = store
        self.device = device
        self._models = models
        self._wake = threading.Condition()
        self._stop = False
        self._current: str | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"worker-{device}", daemon=True)
        self._frames_written = 0
        self.ready = threading.Event()  # set once the device is known
        self._stopping = threading.Event()
        hold = os.environ.get(HOLD_ENV)
        self._hold_after = int(hold) if hold else None
        self._oom_faults = _OomFaults(os.environ.get(OOM_ENV))

    # --- control from the API thread -------------------------------------------------------

    def start(self) -> None:
        for folder in self.store.jobs_dir.glob(f"*/{SCRATCH}"):
            remove_scratch(folder)  # left by a run the process died in
        resumed = self.store.requeue_interrupted()
        if resumed:
            log.info("resuming %d interrupted job(s)", len(resumed))
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stop = True
            self._stopping.set()
            self._cancel.set()  # a running chunk stops at its next step; the job is requeued
            self._wake.notify_all()
        self._thread.join(timeout)

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        self.store.request_cancel(job_id)
        with self._wake:
            if self._current == job_id:
                self._cancel.set()

    @property
    def current_job(self) -> str | None:
        return self._current

    # --- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        self.ready.wait()
        while True:
            with self._wake:
                if self._stop:
                    return
                job = self.store.next_queued()
                if job is None:
                    self._wake.wait()
                    continue
                self._current = job.id
                self._cancel.clear()
            try:
                self._run(job)
            except Exception:  # never let one job kill the worker
                log.exception("job %s: unexpected error in the worker", job.id)
                self.store.transition(
                    job.id,
                    JobState.FAILED,
                    allowed_from=(JobState.RUNNING,),
                    error="internal error in the backend; see the backend log",
                )
            finally:
                with self._wake:
                    self._current = None

    def _run(self, job: JobRecord) -> None:
        running = self.store.transition(job.id, JobState.RUNNING, allowed_from=(JobState.QUEUED,))
        if running is None:
            return
        self.store.begin_run(job.id)
        if running.cancel_requested:
            self.store.transition(job.id, JobState.CANCELED, allowed_from=(JobState.RUNNING,))
            return
        try:
            pipeline = pipelines.get(job.kind)
        except LookupError as exc:
            self._fail(job.id, str(exc))
            return
        ctx = JobContext(
            self.store, running, self.device, self._models, self._cancel, self._frame_written
        )
        ctx.remove_scratch()  # what a crashed run left
        try:
            state, error = self._run_chunks(pipeline, ctx)
        finally:
            ctx.remove_scratch()  # before the job is seen to end
        if state is JobState.FAILED:
            self._fail(job.id, error or "the job failed")
        else:
            self.store.transition(job.id, state, allowed_from=(JobState.RUNNING,))

    def _run_chunks(self, pipeline: Any, ctx: JobContext) -> tuple[JobState, str | None]:
        """Every unfinished chunk, in order; the state the job ends in, and its error."""
        spec = ctx.job
        try:
            chunks = pipeline.plan(spec)
            for i, chunk in enumerate(chunks):
                ctx.check_cancel()
                ctx.set_chunk(i, len(chunks), chunk)
                if self._chunk_finished(spec.id, chunk):
                    continue
                self._run_chunk(pipeline, ctx, chunk)
                missing = self._missing_frames(spec.id, chunk.frames)
                if missing:
                    raise PipelineError(
                        f"the {spec.kind} pipeline did not produce frame(s) {shortened_list(missing)}"
                    )
            ctx.set_chunk(len(chunks), len(chunks))
        except Canceled:
            if self._stop and not self.store.get(spec.id).cancel_requested:  # type: ignore[union-attr]
                return JobState.QUEUED, None
            return JobState.CANCELED, None
        except (PipelineError, InputError) as exc:
            return JobState.FAILED, str(exc)
        missing = self._missing_frames(spec.id, spec.frames)
        if missing:
            return (
                JobState.FAILED,
                f"frames {shortened_list(missing)} are missing after the last chunk",
            )
        return JobState.DONE, None

    def _run_chunk(self, pipeline: Any, ctx: JobContext, chunk: Chunk) -> None:
        run_with_memory_levels(pipeline, ctx, chunk, before_each_try=self._oom_faults.check)

    def _fail(self, job_id: str, message: str) -> None:
        self.store.transition(
            job_id, JobState.FAILED, allowed_from=(JobState.RUNNING,), error=message
        )

    def _chunk_finished(self, job_id: str, chunk: Chunk) -> bool:
        return not self._missing_frames(job_id, chunk.frames)

    def _missing_frames(self, job_id: str, frames: tuple[int, ...]) -> list[int]:
        done = set(self.store.finished_frames(job_id))
        return [f for f in frames if f not in done]

    def _frame_written(self) -> None:
        self._frames_written += 1
        if self._hold_after is not None and self._frames_written >= self._hold_after:
            log.warning("%s reached: holding the worker until stopped or canceled", HOLD_ENV)
            while not (self._stopping.wait(0.05) or self._cancel.is_set()):
                pass


def memory_levels(pipeline: Any, job: JobSpec) -> int:
    """How many memory levels `pipeline` has for `job` (base.ShrinksOnOutOfMemory, ShrinksPerJob;
    1 for a pipeline with neither)."""
    per_job = getattr(pipeline, "memory_levels_for", None)
    levels = per_job(job) if per_job is not None else getattr(pipeline, "memory_levels", 1)
    return max(1, int(levels))


def remove_scratch(folder: Path) -> None:
    """Remove a job's scratch folder; never through a link (a link in its place goes alone)."""
    job_folder = folder.parent
    if job_folder.is_symlink() or job_folder.resolve() != job_folder:
        return
    if folder.is_symlink():
        folder.unlink()
    elif folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA), or another backend's "out of memory" RuntimeError (MPS).
    torch is looked up, not imported: a job that never imported it cannot have raised it."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class _OomFaults:
    """OOM_ENV's injected faults (tests only)."""

    def __init__(self, spec: str | None) -> None:
        spec = (spec or "").strip().lower()
        self._always = spec == "always"
        self._left = 0 if self._always or not spec else int(spec)
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if not self._always and self._left <= 0:
                return
            self._left -= 1
        import torch  # heavy, and only this test fault needs it here

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {OOM_ENV}, a test fault)")


def run_with_memory_levels(
    pipeline: Any, ctx: Any, chunk: Chunk, before_each_try: Callable[[], None] = lambda: None
) -> None:
    """Run one chunk; out of GPU memory, again at the pipeline's next memory level (kept in
    ctx.memory_level), and past the last level fail the job saying what to lower. The worker and
    the cluster's actors both run chunks through this."""
    levels = memory_levels(pipeline, ctx.job)
    while True:
        try:
            before_each_try()
            pipeline.run_chunk(ctx, chunk)
            return
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            last = ctx.memory_level + 1 >= levels
            log.warning(
                "job %s, chunk %d: out of GPU memory at memory level %d (%s); %s",
                ctx.job.id,
                chunk.index,
                ctx.memory_level,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                "giving up" if last else f"retrying at memory level {ctx.memory_level + 1}",
            )
        free_memory()  # outside the except block: the traceback's tensors are gone
        if last:
            advice = getattr(pipeline, "out_of_memory_advice", None)
            raise PipelineError(
                f"The GPU ran out of memory on chunk {chunk.index + 1}"
                + (" even with the smallest memory settings" if levels > 1 else "")
                + ": "
                + (advice(ctx.job) if advice else GENERIC_OOM_ADVICE)
            )
        ctx.memory_level += 1


def check_output(job: JobSpec, frame: int, image: np.ndarray) -> None:
    """A pipeline's output frame is one the job asked for, uint8 at the job's size."""
    if frame not in job.frames:
        raise PipelineError(f"pipeline wrote frame {frame}, which the job did not ask for")
    h, w = job.height, job.width
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[:2] != (h, w):
        raise PipelineError(
            f"pipeline produced a {image.shape} {image.dtype} image for frame {frame};"
            f" expected uint8 {h}x{w}x3 or x4"
        )
