"""The real backend process over real HTTP on 127.0.0.1: a job's life, its errors and its log.

The security and reliability promises (token, Host/Origin, bounds, bad images, crash and resume,
idempotency, cancel, idle exit, lockfile, load) are proven in tests/promises/, one file each.
"""

from __future__ import annotations

import httpx
import numpy as np

from tests.backend.images import png_bytes, png_pixels, textured_square_scene
from tests.backend.server import Backend, wait_for

W, H = 64, 48


def make_inbetween_job(client: httpx.Client, keys: dict[int, np.ndarray], frames, **kw) -> dict:
    body = {
        "kind": "inbetween",
        "frames": list(frames),
        "keyframes": sorted(keys),
        "width": next(iter(keys.values())).shape[1],
        "height": next(iter(keys.values())).shape[0],
        "params": kw.pop("params", {}),
    }
    r = client.post("/v1/jobs", json=body, **kw)
    assert r.status_code in (200, 201), r.text
    job = r.json()
    for frame, img in keys.items():
        up = client.put(f"/v1/jobs/{job['id']}/inputs/keyframe/{frame}", content=png_bytes(img))
        assert up.status_code == 200, up.text
    return job


def post_job(c: httpx.Client, frames: list[int], keyframes: list[int]) -> dict:
    body = {"kind": "inbetween", "frames": frames, "keyframes": keyframes, "width": W, "height": H}
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def square_keys(xs: dict[int, float], w: int = W, h: int = H) -> dict[int, np.ndarray]:
    return {f: textured_square_scene(w, h, x) for f, x in xs.items()}


# --- a job's full life -----------------------------------------------------------------------


def test_job_full_life(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        health = c.get("/v1/health").json()
        assert health["api"] == "v1"
        assert health["pipelines"]["inbetween"]["available"] is True
        # the size the add-on renders stylize frames at, per engine (SD1.5 / AnimateDiff: 512)
        assert health["engines"]["animatediff"] == {"working_size": 512}
        assert c.get("/v1/models").json()["engines"] == health["engines"]

        keys = square_keys({1: 8.0, 5: 40.0})
        job = make_inbetween_job(c, keys, range(1, 6))
        assert job["state"] == "awaiting_inputs"
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {}

        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 202, r.text
        done = wait_for(c, job["id"], {"done", "failed", "canceled"})
        assert done["state"] == "done", done
        assert done["finished_frames"] == [1, 2, 3, 4, 5]
        assert done["progress"]["fraction"] == 1.0

        for f in range(1, 6):
            r = c.get(f"/v1/jobs/{job['id']}/outputs/{f}")
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            img = png_pixels(r.content)
            assert img.shape == (H, W, 3)
            if f in keys:
                assert np.array_equal(img, keys[f]), "a keyframe must pass through untouched"

        listed = [j["id"] for j in c.get("/v1/jobs").json()]
        assert job["id"] in listed

        assert c.post(f"/v1/jobs/{job['id']}/start").status_code == 409  # done stays done
        assert c.delete(f"/v1/jobs/{job['id']}").status_code == 200
        assert c.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert not (shared_backend.data / "jobs" / job["id"]).exists()


def test_start_names_missing_inputs(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        keys = square_keys({0: 4.0})
        job = post_job(c, [0, 1, 2, 3], [0, 3])
        c.put(f"/v1/jobs/{job['id']}/inputs/keyframe/0", content=png_bytes(keys[0]))
        r = c.post(f"/v1/jobs/{job['id']}/start")
        assert r.status_code == 400
        assert "keyframe" in r.json()["detail"] and "3" in r.json()["detail"]
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {"keyframe": [3]}


def test_outputs_unknown_and_unfinished(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        assert c.get("/v1/jobs/" + "0" * 32).status_code == 404
        assert c.get("/v1/jobs/not-a-job").status_code == 404
        job = post_job(c, [0, 1, 2], [0, 2])
        r = c.get(f"/v1/jobs/{job['id']}/outputs/1")
        assert r.status_code == 404 and "not finished" in r.json()["detail"]
        assert c.get(f"/v1/jobs/{job['id']}/outputs/7").status_code == 404


def test_cancel_queued_and_awaiting(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        job = post_job(c, [0, 1, 2], [0, 2])
        r = c.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "canceled"
        assert c.post(f"/v1/jobs/{job['id']}/start").status_code == 409


def test_bad_params_are_422_with_a_sentence(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        body = {"kind": "inbetween", "frames": [0, 1], "keyframes": [0, 1], "width": W, "height": H}
        r = c.post("/v1/jobs", json={**body, "params": {"wobble": 3}})
        assert r.status_code == 422 and "wobble" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"kind": "paint", "frames": [0], "width": W, "height": H})
        assert r.status_code == 400 and "unknown job kind" in r.json()["detail"]
        r = c.post("/v1/jobs", json={**body, "frames": [2, 1], "keyframes": [1, 2]})
        assert r.status_code == 422 and "ascending" in r.json()["detail"]


def test_log_has_a_line_per_request_and_per_transition(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        keys = square_keys({0: 4.0, 2: 12.0})
        job = make_inbetween_job(c, keys, range(0, 3))
        c.post(f"/v1/jobs/{job['id']}/start")
        wait_for(c, job["id"], {"done"})
    log = (shared_backend.data / "logs" / "backend.log").read_text()
    assert f"POST /v1/jobs/{job['id']}/start 202" in log
    for transition in ("awaiting_inputs -> queued", "queued -> running", "running -> done"):
        assert f"job {job['id']}: {transition}" in log
