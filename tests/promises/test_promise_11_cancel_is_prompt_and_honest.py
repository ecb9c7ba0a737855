"""Promise 11: cancel is prompt and honest.

Once a cancel is acknowledged (the response to POST /cancel), the job advances at most one more
step (a frame for in-betweening, a denoising step for stylize), it ends "canceled" and is never
reported "done", its finished frames stay downloadable, and cancelling a queued job leaves the
running one alone.

The in-between pipeline is the fast real pipeline to prove it on (a step is a frame); the same
bound for stylize's denoising steps is tests/backend/test_stylize.py::test_cancel_stops_within_a_step,
which reuses that file's backend with the models already loaded (loading them costs ~10 s).
"""

from __future__ import annotations

import httpx

from tests.backend.server import wait_until
from tests.promises.support import TERMINAL, create_inbetween, frame_files, square_keys, start


def follow_to_end(c: httpx.Client, job_id: str) -> tuple[dict, set[str]]:
    """Poll until the job ends; returns its last state and every state seen on the way."""
    seen: set[str] = set()
    job = wait_until(c, job_id, lambda j: seen.add(j["state"]) or j["state"] in TERMINAL)
    return job, seen


def test_a_canceled_inbetween_stops_within_one_frame(make_backend) -> None:
    b = make_backend().start()
    keys = square_keys({0: 4.0, 300: 140.0}, 160, 120)
    with b.client() as c:
        job = create_inbetween(c, keys, range(0, 301))
        start(c, job["id"])
        wait_until(c, job["id"], lambda j: len(j["finished_frames"]) >= 3)
        ack = c.post(f"/v1/jobs/{job['id']}/cancel").json()
        assert ack["cancel_requested"] is True and ack["state"] in ("running", "canceled")
        final, seen = follow_to_end(c, job["id"])
        assert final["state"] == "canceled" and "done" not in seen, seen
        extra = len(final["finished_frames"]) - len(ack["finished_frames"])
        assert 0 <= extra <= 1, f"{extra} frames were finished after the cancel was acknowledged"
        assert final["progress"]["done"] <= ack["progress"]["done"] + 1
        out = b.data / "jobs" / job["id"] / "outputs"
        assert len(frame_files(out)) == len(final["finished_frames"])
        first = final["finished_frames"][0]
        assert c.get(f"/v1/jobs/{job['id']}/outputs/{first}").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "canceled"


def test_cancelling_a_queued_job_leaves_the_running_one_alone(make_backend) -> None:
    b = make_backend().start()
    keys = square_keys({0: 4.0, 120: 140.0}, 160, 120)
    with b.client() as c:
        running = create_inbetween(c, keys, range(0, 121))["id"]
        queued = create_inbetween(c, keys, range(0, 121))["id"]
        start(c, running)
        wait_until(c, running, lambda j: len(j["finished_frames"]) >= 2)
        assert start(c, queued)["state"] == "queued"
        r = c.post(f"/v1/jobs/{queued}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "canceled"
        at_cancel = c.get(f"/v1/jobs/{running}").json()
        assert at_cancel["state"] == "running" and not at_cancel["cancel_requested"]
        # the running job keeps going after the queued one was canceled
        n = len(at_cancel["finished_frames"])
        wait_until(c, running, lambda j: len(j["finished_frames"]) >= n + 3)
        assert c.get(f"/v1/jobs/{running}").json()["state"] == "running"
        assert c.get(f"/v1/jobs/{queued}").json()["finished_frames"] == []
        c.post(f"/v1/jobs/{running}/cancel")
        assert follow_to_end(c, running)[0]["state"] == "canceled"
        assert c.get(f"/v1/jobs/{queued}").json()["state"] == "canceled"
