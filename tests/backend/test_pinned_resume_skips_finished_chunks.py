"""Pins: a resumed job does not redo the work it had finished.

Finished frames are never rewritten, so a resumed job that recomputed its finished chunks (or,
per frame, its finished frames) would look just like one that skipped them: the same files,
the same bytes. Here the work itself is counted.

The worker half runs the real Worker and Store in this process on a real in-between job,
interrupted the way the crash tests interrupt a backend (the worker's own hold fault, then a
stop), and resumed by a new Worker on the same data folder. The per-frame half resumes a
stylize chunk (tiny models) that had written half its frames.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.jobs import Pass
from backend.pipelines.base import Chunk, RunContext
from backend.pipelines.inbetween import InbetweenPipeline
from backend.store import JobState, Store
from backend.vision.png import encode_png
from backend.worker import HOLD_ENV, Worker
from tests.backend.test_stylize import BASE, NETS, MemoryContext, shot_frame, spec
from tests.promises.support import square_keys

KEYS = {0: 4.0, 4: 14.0, 8: 24.0, 12: 34.0}  # three chunks: frames 0-3, 4-7, 8-12
FRAMES = tuple(range(13))
HOLD_AFTER = 6  # frames 0-5 written: chunk 0 finished, chunk 1 half done
WAIT_S = 60.0


class LogEvent(logging.Handler):
    """Set once a log line containing `text` is emitted (the worker thread's own signal)."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.INFO)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def framesmith_log() -> Iterator[logging.Logger]:
    logger = logging.getLogger("framesmith")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(level)


@pytest.fixture
def chunks_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The index of every chunk the in-between pipeline runs, in order."""
    run: list[int] = []
    real = InbetweenPipeline.run_chunk

    def counted(self: InbetweenPipeline, ctx: RunContext, chunk: Chunk) -> None:
        run.append(chunk.index)
        real(self, ctx, chunk)

    monkeypatch.setattr(InbetweenPipeline, "run_chunk", counted)
    return run


def queue_job(store: Store) -> str:
    """An in-between job, keys uploaded and started, as the API leaves it."""
    job, _ = store.create_job(
        kind="inbetween",
        width=64,
        height=48,
        frames=FRAMES,
        keyframes=tuple(KEYS),
        params={"method": "flow"},
        idempotency_key=None,
        request_hash="pin",
    )
    for frame, image in square_keys(KEYS).items():
        store.save_input(job.id, Pass.KEYFRAME, frame, "png", encode_png(image))
    store.transition(job.id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,))
    return job.id


def run_until(store: Store, logger: logging.Logger, line: str) -> Worker:
    """A worker started on the store, once it has logged `line`."""
    event = LogEvent(line)
    logger.addHandler(event)
    worker = Worker(store, "cpu", dict)
    try:
        worker.start()
        worker.ready.set()
        assert event.seen.wait(WAIT_S), f"the worker never logged {line!r}"
    finally:
        logger.removeHandler(event)
    return worker


def test_a_resumed_job_skips_the_chunks_it_had_finished(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    framesmith_log: logging.Logger,
    chunks_run: list[int],
) -> None:
    data = tmp_path / "data"
    store = Store(data)
    job_id = queue_job(store)
    monkeypatch.setenv(HOLD_ENV, str(HOLD_AFTER))
    run_until(store, framesmith_log, "holding the worker").stop()
    assert store.get(job_id).state is JobState.QUEUED  # type: ignore[union-attr]
    finished = store.finished_frames(job_id)
    store.close()
    assert finished == list(range(HOLD_AFTER)), finished
    assert chunks_run == [0, 1]

    monkeypatch.delenv(HOLD_ENV)
    chunks_run.clear()
    store = Store(data)  # the restarted backend
    try:
        run_until(store, framesmith_log, f"job {job_id}: running -> done").stop()
        assert store.finished_frames(job_id) == list(FRAMES)
    finally:
        store.close()
    assert chunks_run == [1, 2], "chunk 0 was finished before the interruption"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a small shared box spin on each other
    yield
    torch.set_num_threads(before)


def denoise_totals(ctx: MemoryContext) -> set[int]:
    return {total for stage, _, total in ctx.progress_log if stage == "denoise"}


@pytest.mark.usefixtures("one_torch_thread")
def test_a_resumed_per_frame_chunk_denoises_only_its_missing_frames(tiny_models: Path) -> None:
    """Per frame, a chunk counts its steps over the frames it makes: half of them after half
    of its frames were written."""
    from backend.models.registry import ModelRegistry
    from backend.pipelines.stylize import StylizePipeline

    registry = ModelRegistry(tiny_models).scan()
    params = {**BASE, "mode": "per_frame", "strength": 1.0, "controlnets": NETS[:1]}
    job = spec(params, frames=range(4))
    shot = {t: shot_frame(t) for t in range(4)}
    (chunk,) = StylizePipeline().plan(job)

    whole = MemoryContext(job, registry, shot)
    StylizePipeline().run_chunk(whole, chunk)
    resumed = MemoryContext(job, registry, shot, {f: whole.outputs[f] for f in (0, 1)})
    StylizePipeline().run_chunk(resumed, chunk)

    (all_steps,) = denoise_totals(whole)
    assert denoise_totals(resumed) == {all_steps // 2}, (resumed.progress_log, all_steps)
