"""The head's scheduler on a real store, without Ray: the slots are played by the test, asking
for pieces and reporting how they ended, in an order the test chooses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.cluster.messages import Outcome, PieceEnd
from backend.cluster.scheduler import Assignment, Scheduler
from backend.store import JobState, Store
from tests.backend.images import png_bytes
from tests.promises.support import square_keys


class Cluster:
    """A Scheduler over a store, recording what it asks of the workers."""

    def __init__(self, root: Path) -> None:
        self.store = Store(root)
        self.cancels: list[tuple[str, str]] = []
        self.scheduler = Scheduler(self.store, lambda slot, job: self.cancels.append((slot, job)))

    def queue(self, kind: str, frames: range, keys: tuple[int, ...] = (), **params) -> str:
        job, _ = self.store.create_job(
            kind=kind,
            width=64,
            height=48,
            frames=tuple(frames),
            keyframes=keys,
            params=params,
            idempotency_key=None,
            request_hash="",
        )
        self.store.transition(job.id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,))
        return job.id

    def take(self, slot: str) -> Assignment:
        a = self.scheduler.next_piece(slot)
        assert a is not None
        return a

    def finish(self, a: Assignment) -> None:
        image = square_keys({0: 4.0})[0]
        for frame in a.piece.chunk.frames:
            self.scheduler.write_frame(a, frame, png_bytes(image))
        self.scheduler.piece_ended(a, PieceEnd(Outcome.DONE))

    def state(self, job_id: str) -> JobState:
        job = self.store.get(job_id)
        assert job is not None
        return job.state


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.store.close()


def test_a_free_worker_starts_the_next_job_before_sharing_a_running_one(cluster) -> None:
    first = cluster.queue("inbetween", range(0, 25), (0, 8, 16, 24))
    second = cluster.queue("inbetween", range(0, 25), (0, 8, 16, 24))
    a, b = cluster.take("w0"), cluster.take("w1")
    assert (a.run.job_id, b.run.job_id) == (first, second)
    c = cluster.take("w2")  # no job left to start: the pieces of a running one spread out
    assert c.run.job_id == first and c.piece.index == 1


def test_a_seamed_chunk_waits_for_its_predecessor_and_a_lost_piece_runs_again(cluster) -> None:
    job = cluster.queue("stylize", range(20), prompt="x", chunk_size=8, overlap=2)
    first = cluster.take("w0")
    assert first.piece.index == 0
    assert first.run.ready_piece() is None, "chunk 1 holds chunk 0's seam: it waits for it"
    cluster.scheduler.piece_lost(first)  # w0 died: chunk 0 goes back, first in line
    again = cluster.take("w1")
    assert again.piece.index == 0 and again.run.ready_piece() is None
    cluster.finish(again)
    second = cluster.take("w0")
    assert second.piece.index == 1
    cluster.finish(second)
    cluster.finish(cluster.take("w1"))
    assert cluster.state(job) is JobState.DONE


def test_cancel_and_failure_end_the_job_at_once_and_stop_its_other_pieces(cluster) -> None:
    canceled = cluster.queue("inbetween", range(0, 17), (0, 8, 16))
    a, b = cluster.take("w0"), cluster.take("w1")
    cluster.scheduler.cancel(canceled)
    assert cluster.state(canceled) is JobState.CANCELED
    assert sorted(cluster.cancels) == [("w0", canceled), ("w1", canceled)]
    cluster.scheduler.write_frame(a, a.piece.chunk.frames[0], b"late")
    assert cluster.store.finished_frames(canceled) == [], "a frame was written after cancel"
    cluster.scheduler.piece_ended(b, PieceEnd(Outcome.CANCELED))

    failing = cluster.queue("inbetween", range(0, 17), (0, 8, 16))
    c, d = cluster.take("w1"), cluster.take("w2")
    cluster.scheduler.piece_ended(c, PieceEnd(Outcome.FAILED, "the keys differ in size"))
    job = cluster.store.get(failing)
    assert job is not None and job.state is JobState.FAILED
    assert job.error == "the keys differ in size" and ("w2", failing) in cluster.cancels
    assert d.run.ended
