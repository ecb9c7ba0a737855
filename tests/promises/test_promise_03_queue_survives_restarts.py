"""Promise 3: the queue survives restarts.

Across kill -9 restarts: a queued job stays queued, a running job resumes, a job still awaiting
inputs keeps waiting, an unknown id is 404, and a finished (done or canceled) job's state,
frames and timestamps never change: start and cancel on it are refused with 409.
"""

from __future__ import annotations

import httpx

from backend.worker import HOLD_ENV
from tests.backend.server import wait_for, wait_until
from tests.promises.support import create_inbetween, file_facts, square_keys, start

KEYS = {0: 4.0, 8: 36.0}
FRAMES = range(0, 9)
UNKNOWN = "f" * 32


def snapshot(c: httpx.Client, job_id: str) -> dict:
    job = c.get(f"/v1/jobs/{job_id}").json()
    return {k: job[k] for k in ("state", "finished_frames", "updated_at", "error", "progress")}


def assert_unknown_is_404(c: httpx.Client) -> None:
    assert c.get(f"/v1/jobs/{UNKNOWN}").status_code == 404
    assert c.post(f"/v1/jobs/{UNKNOWN}/start").status_code == 404
    assert c.post(f"/v1/jobs/{UNKNOWN}/cancel").status_code == 404
    assert c.get(f"/v1/jobs/{UNKNOWN}/outputs/0").status_code == 404
    assert c.delete(f"/v1/jobs/{UNKNOWN}").status_code == 404


def assert_finished_jobs_unchanged(c: httpx.Client, before: dict[str, dict]) -> None:
    for job_id, snap in before.items():
        for action in ("start", "cancel"):
            r = c.post(f"/v1/jobs/{job_id}/{action}")
            assert r.status_code == 409, (action, snap["state"], r.status_code, r.text)
            assert snap["state"] in r.json()["detail"]
        assert snapshot(c, job_id) == snap, f"finished job {job_id} changed"


def test_queue_survives_kill9_restarts(make_backend) -> None:
    keys = square_keys(KEYS)
    b = make_backend("queue").start()
    with b.client() as c:
        done = create_inbetween(c, keys, FRAMES)["id"]
        start(c, done)
        wait_for(c, done, {"done"})
        canceled = create_inbetween(c, keys, FRAMES)["id"]
        assert c.post(f"/v1/jobs/{canceled}/cancel").json()["state"] == "canceled"
        finished = {j: snapshot(c, j) for j in (done, canceled)}
    done_files = file_facts(b.data / "jobs" / done / "outputs")
    b.kill9()

    b.env = {HOLD_ENV: "2"}  # the worker holds its job in "running" after two frames
    b.start()
    with b.client() as c:
        assert_finished_jobs_unchanged(c, finished)
        running = create_inbetween(c, keys, FRAMES)["id"]
        start(c, running)
        wait_until(c, running, lambda j: j["state"] == "running" and len(j["finished_frames"]) >= 2)
        queued = create_inbetween(c, keys, FRAMES)["id"]
        assert start(c, queued)["state"] == "queued"
        waiting = create_inbetween(c, keys, FRAMES, upload=False)["id"]
    b.kill9()

    b.start()  # still holding: the resumed job runs two more frames, then holds again
    with b.client() as c:
        resumed = wait_until(c, running, lambda j: len(j["finished_frames"]) >= 4)
        assert resumed["state"] == "running"
        assert c.get(f"/v1/jobs/{queued}").json()["state"] == "queued"
        still = c.get(f"/v1/jobs/{waiting}").json()
        assert still["state"] == "awaiting_inputs"
        assert still["missing_inputs"] == {"keyframe": [0, 8]}
        assert_finished_jobs_unchanged(c, finished)
        assert_unknown_is_404(c)
    b.kill9()

    b.env = {}
    b.start()
    with b.client() as c:
        for job_id in (running, queued):
            final = wait_for(c, job_id, {"done", "failed", "canceled"})
            assert final["state"] == "done", final
            assert final["finished_frames"] == list(FRAMES)
        assert c.get(f"/v1/jobs/{waiting}").json()["state"] == "awaiting_inputs"
        assert_finished_jobs_unchanged(c, finished)
        assert_unknown_is_404(c)
    assert file_facts(b.data / "jobs" / done / "outputs") == done_files
