"""The worker side: a Ray actor that runs pieces of jobs through the real pipelines.

One actor per GPU (or per CPU worker), alive between pieces so its models stay loaded. A piece
runs on a thread of the actor; its frames (PNG-encoded here, off the head), progress and end go
back to the head as a stream, frame by frame, so a worker killed mid-piece has handed over every
frame it finished. A second call, cancel(), reaches the running piece within a step. The class
is plain Python; slots.py makes it a Ray actor when it starts one.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import device as devices
from .. import pipelines
from ..jobs import ANY_SIZE_PASSES, InputError, JobSpec, Pass, PipelineError
from ..pipelines.base import Canceled
from ..vision.imageio import decode
from ..vision.png import encode_png
from ..worker import MAX_PIXELS, check_output, run_with_memory_levels
from . import faults
from .messages import (
    FrameDone,
    Message,
    Outcome,
    PieceEnd,
    PieceOrder,
    ProgressNote,
    WorkerInfo,
    WorkerSetup,
)

log = logging.getLogger("framesmith.cluster.actor")

_REMEMBERED_CANCELS = 256  # job ids canceled lately: a piece of one that arrives late stops at once


class RemoteContext:
    """The RunContext of a piece on a worker: inputs fetched from the head's object store when
    read, finished frames from the order (and this piece), written frames sent to the head."""

    def __init__(
        self,
        order: PieceOrder,
        device: str,
        models: Callable[[], Any],
        read: Callable[[str], bytes],
        cancel: threading.Event,
        send: Callable[[Message], None],
    ) -> None:
        self.job: JobSpec = order.job
        self.device = device
        self.memory_level = order.memory_level
        self._order = order
        self._models = models
        self._read = read
        self._cancel = cancel
        self._send = send
        self._written: dict[int, bytes] = dict(order.finished)
        # The context frames' inputs, decoded once; other frames (a shot-wide depth range) are
        # decoded on every read, as on the head, so a piece never holds a whole shot.
        self._decoded: dict[tuple[Pass, int], np.ndarray] = {}
        self._kept_frames = frozenset(order.chunk.context) | frozenset(order.chunk.frames)

    @property
    def models(self) -> Any:
        return self._models()

    def has_input(self, pass_: Pass, frame: int) -> bool:
        return (pass_.value, frame) in self._order.inputs

    def input(self, pass_: Pass, frame: int) -> np.ndarray:
        key = (pass_, frame)
        if key in self._decoded:
            return self._decoded[key]
        where = self._order.inputs.get((pass_.value, frame))
        if where is None:
            raise PipelineError(f"input {pass_.value} for frame {frame} was not uploaded")
        expect = None if pass_ in ANY_SIZE_PASSES else (self.job.width, self.job.height)
        image = decode(self._read(where), max_pixels=MAX_PIXELS, expect_size=expect, pass_=pass_)
        if frame in self._kept_frames:
            self._decoded[key] = image
        return image

    def finished_output(self, frame: int) -> np.ndarray | None:
        data = self._written.get(frame)
        return None if data is None else png_to_rgb(data)

    def write_output(self, frame: int, image: np.ndarray) -> None:
        check_output(self.job, frame, image)
        if frame in self._written:
            return  # first write wins, as on the head: a finished frame is never rewritten
        png = encode_png(image)
        self._written[frame] = png
        self._send(FrameDone(frame, png))
        faults.hold_if_armed(self.job.id, self._cancel)

    def progress(self, stage: str, done: int, total: int) -> None:
        self._send(ProgressNote(stage, done, total))

    def check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Canceled()


def png_to_rgb(data: bytes) -> np.ndarray | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class PieceWorker:
    """The actor. Ray runs its methods on two threads (max_concurrency=2): run_piece streams,
    cancel answers meanwhile."""

    def __init__(self, setup: WorkerSetup) -> None:
        faults.die_at_start_if_asked()
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        cv2.setNumThreads(setup.threads)
        torch = sys.modules.get("torch")  # OMP_NUM_THREADS holds a torch imported later
        if torch is not None:
            torch.set_num_threads(setup.threads)
        try:
            self._device = devices.resolve(setup.device)
        except SystemExit as exc:  # resolve speaks to a command line; here it is a start error
            raise RuntimeError(str(exc)) from None
        self._setup = setup
        self._registry: Any = None
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}
        self._canceled: collections.deque[str] = collections.deque(maxlen=_REMEMBERED_CANCELS)

    def info(self) -> WorkerInfo:
        import ray  # a Ray worker process

        node = ray.util.get_node_ip_address()
        return WorkerInfo(os.getpid(), node, devices.describe(self._device))

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._canceled.append(job_id)
            event = self._running.get(job_id)
        if event is not None:
            event.set()

    def run_piece(self, order: PieceOrder) -> Iterator[Message]:
        """Stream the piece's messages; the last one is its PieceEnd."""
        cancel = threading.Event()
        with self._lock:
            self._running[order.job.id] = cancel
            if order.job.id in self._canceled:
                cancel.set()
        messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        thread = threading.Thread(
            target=self._compute, args=(order, cancel, messages.put), name="piece", daemon=True
        )
        thread.start()
        try:
            while True:
                message = messages.get()
                yield message
                if isinstance(message, PieceEnd):
                    break
        finally:
            cancel.set()  # the head stopped reading: nobody waits for the rest
            thread.join()
            with self._lock:
                self._running.pop(order.job.id, None)

    def _read(self, relative: str) -> bytes:
        import ray  # this process is a Ray worker: ray is imported already

        return ray.get(self._setup.reader.read.remote(relative))

    def _models(self) -> Any:
        with self._lock:
            if self._registry is None:  # scanned once, by the first piece that reads it
                from ..models.registry import ModelRegistry

                self._registry = ModelRegistry(
                    self._setup.models_dir, self._setup.extra_models
                ).scan()
            return self._registry

    def _compute(
        self, order: PieceOrder, cancel: threading.Event, send: Callable[[Message], None]
    ) -> None:
        ctx = RemoteContext(order, self._device, self._models, self._read, cancel, send)
        try:
            run_with_memory_levels(pipelines.get(order.job.kind), ctx, order.chunk)
            end = PieceEnd(Outcome.DONE, memory_level=ctx.memory_level)
        except Canceled:
            end = PieceEnd(Outcome.CANCELED, memory_level=ctx.memory_level)
        except (PipelineError, InputError, LookupError) as exc:
            end = PieceEnd(Outcome.FAILED, str(exc), ctx.memory_level)
        except Exception:  # the head fails the job; the worker lives on
            log.exception("job %s, chunk %d: unexpected error", order.job.id, order.chunk.index)
            end = PieceEnd(Outcome.ERROR, traceback.format_exc(limit=20), ctx.memory_level)
        send(end)


class InputReader:
    """An actor on the head's node that hands the uploaded inputs to the workers, file by file
    as their pipelines read them: nothing of a job is copied ahead, whatever its length."""

    def __init__(self, jobs_dir: str) -> None:
        self._jobs = Path(jobs_dir)

    def read(self, relative: str) -> bytes:
        path = self._jobs / relative
        # only real files inside the jobs folder (the store's rule: no symlink on the way)
        if path.resolve() != path or not path.is_relative_to(self._jobs) or not path.is_file():
            raise PipelineError(f"input {relative} is not a file in the head's jobs folder")
        return path.read_bytes()
