"""Promise 23: a small request never costs big memory.

A render-assisted in-between with keys a million frames apart is a request of a few bytes: its
create, poll, list and start answers stay a few kilobytes, with the guide passes it still needs
reported as ranges (and counts), and the backend's memory does not grow with the gap. Frame
numbers outside Blender's own range (about ±1 million) are refused with a sentence, in a job's
body and in an upload's or output's path, never a 5xx.
"""

from __future__ import annotations

import httpx

from backend.api.schemas import MAX_LISTED_MISSING
from backend.jobs import MAX_FRAME
from tests.backend.images import png_bytes
from tests.backend.server import Backend
from tests.promises.support import H, W, rss_kb, square_keys

FAR = 1_000_000
SMALL_ANSWER = 64 * 1024  # bytes: the frames listed by number are capped, ranges are pairs


def render_job(keys: list[int], frames: list[int]) -> dict:
    return {"kind": "inbetween", "frames": frames, "keyframes": keys, "width": W, "height": H,
            "params": {"method": "render"}}  # fmt: skip


def test_keys_a_million_frames_apart_cost_a_few_kilobytes(make_backend) -> None:
    b: Backend = make_backend().start()
    with b.client() as c:
        c.get("/v1/jobs").raise_for_status()  # the list route's code is loaded before measuring
        before = rss_kb(b.proc.pid)
        r = c.post("/v1/jobs", json=render_job([0, FAR], [0, 1, FAR]))
        assert r.status_code == 201, r.text
        assert len(r.content) < SMALL_ANSWER, len(r.content)
        job = r.json()
        assert job["missing_input_ranges"]["vector"] == [[0, FAR]]
        assert job["missing_input_counts"]["depth"] == FAR + 1
        assert len(job["missing_inputs"]["vector"]) == MAX_LISTED_MISSING  # capped, not 1e6
        assert job["missing_inputs"]["keyframe"] == [0, FAR]  # short lists stay whole

        for f, img in square_keys({0: 4.0, FAR: 36.0}).items():
            c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{f}", content=png_bytes(img))
        polled = c.get(f"/v1/jobs/{job['id']}")
        assert len(polled.content) < SMALL_ANSWER
        assert "keyframe" not in polled.json()["missing_input_ranges"]
        listed = c.get("/v1/jobs")
        assert listed.status_code == 200 and len(listed.content) < SMALL_ANSWER
        started = c.post(f"/v1/jobs/{job['id']}/start")
        assert started.status_code == 400
        assert f"vector for frame(s) 0-{FAR} ({FAR + 1} frames)" in started.json()["detail"]
        grown_mb = (rss_kb(b.proc.pid) - before) / 1024
    assert grown_mb < 40, f"the backend grew by {grown_mb:.0f} MB for one small job"


def test_frame_numbers_outside_blenders_range_are_refused_with_a_sentence(make_backend) -> None:
    b: Backend = make_backend().start()
    huge = int("9" * 301)
    with b.client() as c:
        for keys, frames in (([0, MAX_FRAME + 1], [0, 1]), ([-MAX_FRAME - 1, 0], [0]),
                             ([0, 8], [0, huge])):  # fmt: skip
            r = c.post("/v1/jobs", json=render_job(keys, frames))
            assert r.status_code == 422, r.text
            assert "outside Blender's frame range" in r.json()["detail"], r.text
        ok = c.post("/v1/jobs", json=render_job([-MAX_FRAME, MAX_FRAME], [0]))
        assert ok.status_code == 201, ok.text
        job_id = ok.json()["id"]
        key = png_bytes(square_keys({0: 4.0})[0])
        for frame in (MAX_FRAME + 1, huge, -huge):
            for r in (
                c.put(f"/v1/jobs/{job_id}/inputs/keyframe/{frame}", content=key),
                c.get(f"/v1/jobs/{job_id}/outputs/{frame}"),
            ):
                assert r.status_code == 422, (frame, r.status_code, r.text)
                assert "frame range" in r.json()["detail"] or "integer" in r.json()["detail"]
        assert c.put(f"/v1/jobs/{job_id}/inputs/keyframe/{MAX_FRAME}", content=key).is_success
    assert b.proc.poll() is None


def test_the_job_list_still_answers_after_a_restart(make_backend) -> None:
    """The stored far-apart job must not break the list on the next start either."""
    b: Backend = make_backend().start()
    with b.client() as c:
        c.post("/v1/jobs", json=render_job([-MAX_FRAME, MAX_FRAME], [0, 1])).raise_for_status()
    b.stop()
    b.start()
    with httpx.Client(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as c:
        r = c.get("/v1/jobs")
        assert r.status_code == 200 and len(r.content) < SMALL_ANSWER
        assert r.json()[0]["missing_input_counts"]["vector"] == 2 * MAX_FRAME + 1
