"""Promise 1: a finished frame is never lost.

A multi-chunk job is killed with SIGKILL at seeded random moments (after a randomly chosen number
of finished frames, mid-computation), the backend restarts on the same data folder each time,
and the job completes. Every frame on disk at a kill keeps its bytes and its inode (never
rewritten), and the final frames equal an uninterrupted run's.
"""

from __future__ import annotations

import random
from pathlib import Path

from backend.worker import HOLD_ENV
from tests.backend.server import wait_for
from tests.promises.support import (
    FileFacts,
    create_inbetween,
    file_facts,
    frame_files,
    square_keys,
    start,
    wait_files,
)

SEED = 1729
KILLS = 3
# The worker holds after this many frames past a kill target, so a slow test process can never
# let the job finish before the kill lands; normally the kill comes first, mid-frame.
SLACK = 4
W, H = 128, 96
KEYS = {0: 4.0, 10: 30.0, 20: 60.0, 30: 90.0, 40: 108.0}  # four chunks (one per key interval)
FRAMES = range(0, 41)


def test_finished_frames_survive_kill9_at_random_moments(make_backend) -> None:
    keys = square_keys(KEYS, W, H)
    rng = random.Random(SEED)
    targets = sorted(rng.sample(range(3, len(FRAMES) - 2 * SLACK), KILLS))

    b = make_backend("crash")
    job_id: str | None = None
    kept: dict[str, FileFacts] = {}
    found_at_kill: list[int] = []
    for target in targets:
        have = len(kept)
        target = max(target, have + 1)
        b.env = {HOLD_ENV: str(target - have + SLACK)}
        b.start()
        with b.client() as c:
            if job_id is None:
                job_id = create_inbetween(c, keys, FRAMES)["id"]
                start(c, job_id)
        out = b.data / "jobs" / job_id / "outputs"
        wait_files(out, target, alive=lambda: b.proc.poll() is None)
        b.kill9()

        now = _frame_facts(out)
        assert len(now) < len(FRAMES), "the job finished before the kill: nothing was proven"
        for name, facts in kept.items():
            assert now[name] == facts, f"{name}, finished before an earlier kill, was changed"
        kept = now
        found_at_kill.append(len(now))

    print("kill targets", targets, "frames found at each kill", found_at_kill)
    assert found_at_kill == sorted(found_at_kill) and found_at_kill[0] >= targets[0]
    b.env = {}
    b.start()
    assert job_id is not None
    with b.client() as c:
        final = wait_for(c, job_id, {"done", "failed", "canceled"})
        assert final["state"] == "done", final
        assert final["finished_frames"] == list(FRAMES)
        out = b.data / "jobs" / job_id / "outputs"
        after = file_facts(out)
        assert set(after) == {p.name for p in frame_files(out)}, "a temp file was left behind"
        for name, facts in kept.items():
            assert after[name] == facts, f"{name} was rewritten or changed after the restarts"
        served = {f: c.get(f"/v1/jobs/{job_id}/outputs/{f}").content for f in FRAMES}

        # The same job run without interruption on the same backend gives the same frames.
        clean = create_inbetween(c, keys, FRAMES)["id"]
        start(c, clean)
        assert wait_for(c, clean, {"done", "failed"})["state"] == "done"
        for f in FRAMES:
            uninterrupted = c.get(f"/v1/jobs/{clean}/outputs/{f}").content
            assert served[f] == uninterrupted, f"frame {f} differs from an uninterrupted run"


def _frame_facts(folder: Path) -> dict[str, FileFacts]:
    """Facts of the finished frames only: a kill mid-write may leave a temp file beside them."""
    facts = file_facts(folder)
    return {p.name: facts[p.name] for p in frame_files(folder)}
