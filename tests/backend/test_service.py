"""The real backend process over real HTTP on 127.0.0.1: a job's life, the gate, bad input, resume."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.backend.images import exr_bytes, png_bytes, png_pixels, textured_square_scene
from tests.backend.server import REPO, Backend, wait_for, wait_until

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


def test_cancel_running_job_stops_within_a_frame(make_backend) -> None:
    b = make_backend().start()
    w, h = 320, 240
    keys = {0: textured_square_scene(w, h, 10), 300: textured_square_scene(w, h, 200)}
    with b.client() as c:
        job = make_inbetween_job(c, keys, range(0, 301))
        c.post(f"/v1/jobs/{job['id']}/start")
        wait_until(c, job["id"], lambda j: len(j["finished_frames"]) >= 2)
        c.post(f"/v1/jobs/{job['id']}/cancel")
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
        assert final["state"] == "canceled"
        assert len(final["finished_frames"]) < 100
        # a finished frame stays downloadable after cancel
        assert (
            c.get(f"/v1/jobs/{job['id']}/outputs/{final['finished_frames'][0]}").status_code == 200
        )


def test_idempotency_key(shared_backend: Backend) -> None:
    body = {"kind": "inbetween", "frames": [0, 1, 2], "keyframes": [0, 2], "width": W, "height": H}
    with shared_backend.client() as c:
        a = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "take-7"})
        b = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "take-7"})
        assert a.status_code == 201 and b.status_code == 200
        assert a.json()["id"] == b.json()["id"]
        other = {**body, "frames": [0, 1, 2, 3], "keyframes": [0, 3]}
        r = c.post("/v1/jobs", json=other, headers={"Idempotency-Key": "take-7"})
        assert r.status_code == 409


def test_bad_params_are_422_with_a_sentence(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        body = {"kind": "inbetween", "frames": [0, 1], "keyframes": [0, 1], "width": W, "height": H}
        r = c.post("/v1/jobs", json={**body, "params": {"wobble": 3}})
        assert r.status_code == 422 and "wobble" in r.json()["detail"]
        r = c.post("/v1/jobs", json={"kind": "paint", "frames": [0], "width": W, "height": H})
        assert r.status_code == 400 and "unknown job kind" in r.json()["detail"]
        r = c.post("/v1/jobs", json={**body, "frames": [2, 1], "keyframes": [1, 2]})
        assert r.status_code == 422 and "ascending" in r.json()["detail"]


# --- the gate --------------------------------------------------------------------------------


def test_every_route_needs_the_token(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        spec = c.get("/openapi.json").json()
    job_id = "0" * 32
    with shared_backend.client(token=None) as anon, shared_backend.client(token="x" * 43) as wrong:
        assert anon.get("/openapi.json").status_code == 401
        for path, methods in spec["paths"].items():
            concrete = (
                path.replace("{job_id}", job_id)
                .replace("{pass_name}", "beauty")
                .replace("{frame}", "1")
            )
            for method in methods:
                for client in (anon, wrong):
                    r = client.request(method.upper(), concrete)
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.headers.get("www-authenticate") == "Bearer"


def test_foreign_host_and_origin_are_refused(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        assert c.get("/v1/health").status_code == 200
        assert c.get("/v1/health", headers={"Host": "evil.example:80"}).status_code == 421
        port = shared_backend.info["port"]
        assert c.get("/v1/health", headers={"Host": f"127.0.0.1:{port + 1}"}).status_code == 421
        assert c.get("/v1/health", headers={"Origin": "http://evil.example"}).status_code == 403
        assert c.get("/v1/health", headers={"Origin": "null"}).status_code == 403
        r = c.get("/v1/health", headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = c.post(
            "/v1/jobs",
            content=b"kind=inbetween",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415


def test_oversize_uploads_are_413(make_backend) -> None:
    b = make_backend(extra_args=["--max-upload-mb", "1"]).start()
    with b.client() as c:
        job = post_job(c, [0, 1], [0, 1])
        url = f"/v1/jobs/{job['id']}/inputs/keyframe/0"
        big = b"\0" * (2 * 1024 * 1024)
        assert c.put(url, content=big).status_code == 413

        def chunks():  # no Content-Length: chunked transfer, bounded while it streams
            for _ in range(40):
                yield b"\0" * 65536

        r = c.put(url, content=chunks())
        assert r.status_code == 413
        assert c.get("/v1/health").status_code == 200
    # a lying Content-Length (small) with a large body: counted as it arrives
    with socket.create_connection(("127.0.0.1", b.info["port"])) as s:
        head = (
            f"PUT {url} HTTP/1.1\r\nHost: 127.0.0.1:{b.info['port']}\r\n"
            f"Authorization: Bearer {b.token}\r\nContent-Length: 100\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        s.sendall(head)
        try:
            for _ in range(40):
                s.sendall(b"10000\r\n" + b"\0" * 65536 + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close the connection early, which is fine
        reply = s.recv(4096)
    assert reply.split(b"\r\n")[0].split()[1] in (b"400", b"413")


def test_bad_images_are_4xx_and_the_backend_stays_up(shared_backend: Backend) -> None:
    keys = square_keys({0: 4.0, 4: 20.0})
    good = png_bytes(keys[0])
    with shared_backend.client() as c:
        job = post_job(c, [0, 1, 2, 3, 4], [0, 4])
        base = f"/v1/jobs/{job['id']}/inputs"

        r = c.put(f"{base}/keyframe/0", content=good[: len(good) // 2])
        assert 400 <= r.status_code < 500, r.text
        assert "keyframe frame 0" in r.json()["detail"]

        r = c.put(f"{base}/keyframe/0", content=png_bytes(textured_square_scene(W + 8, H, 4)))
        assert r.status_code == 400 and str(W) in r.json()["detail"]

        r = c.put(f"{base}/keyframe/0", content=b"GIF89a not an image")
        assert r.status_code == 400

        depth = np.full((H, W), 5.0, np.float32)
        depth[10, 20] = np.nan
        r = c.put(f"{base}/depth/2", content=exr_bytes({"V": depth}))
        assert r.status_code == 400 and "nan" in r.json()["detail"].lower(), r.text

        depth[10, 20] = 1e10  # Blender's depth background is fine
        assert c.put(f"{base}/depth/2", content=exr_bytes({"V": depth})).status_code == 200

        assert c.put(f"{base}/keyframe/9", content=good).status_code == 422
        assert c.put(f"{base}/beauty/0", content=good).status_code == 422

        # nothing was stored for the refused uploads, and the job still runs
        assert c.get(f"/v1/jobs/{job['id']}").json()["missing_inputs"] == {"keyframe": [0, 4]}
        c.put(f"{base}/keyframe/0", content=good)
        c.put(f"{base}/keyframe/4", content=png_bytes(keys[4]))
        c.post(f"/v1/jobs/{job['id']}/start")
        assert wait_for(c, job["id"], {"done", "failed"})["state"] == "done"


# --- crash and restart -----------------------------------------------------------------------


def _file_facts(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), os.stat(p).st_ino)
        for p in sorted(folder.iterdir())
    }


def test_resume_after_kill9_keeps_finished_frames(make_backend) -> None:
    keys = square_keys({0: 4.0, 6: 20.0, 12: 36.0, 18: 44.0})
    frames = range(0, 19)

    crashing = make_backend("crash", env={"FRAMESMITH_FAULT_HOLD_AFTER_FRAMES": "9"}).start()
    with crashing.client() as c:
        job = make_inbetween_job(c, keys, frames)
        c.post(f"/v1/jobs/{job['id']}/start")
        held = wait_until(c, job["id"], lambda j: len(j["finished_frames"]) >= 9)
        assert held["state"] == "running"
    out_dir = crashing.data / "jobs" / job["id"] / "outputs"
    before = _file_facts(out_dir)
    assert len(before) == 9
    crashing.kill9()

    crashing.env = {}
    crashing.start()
    with crashing.client() as c:
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
        assert final["state"] == "done", final
        assert final["finished_frames"] == list(frames)
    after = _file_facts(out_dir)
    for name, facts in before.items():
        assert after[name] == facts, f"{name} was rewritten or changed after the restart"

    clean = make_backend("clean").start()
    with clean.client() as c:
        job2 = make_inbetween_job(c, keys, frames)
        c.post(f"/v1/jobs/{job2['id']}/start")
        assert wait_for(c, job2["id"], {"done", "failed"})["state"] == "done"
    uninterrupted = _file_facts(clean.data / "jobs" / job2["id"] / "outputs")
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in uninterrupted.items()}


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FRAMESMITH_TOKEN"}
    r = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--host", "0.0.0.0", "--data", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "token" in r.stderr


def test_second_backend_on_same_data_folder_refuses(make_backend) -> None:
    first = make_backend("same").start()
    second = Backend(data=first.data, models=first.models)
    with pytest.raises(RuntimeError, match="already running"):
        second.start()
    info = json.loads((first.data / "backend.json").read_text())
    assert info["pid"] == first.proc.pid


def test_models_route_lists_tiny_models_and_refuses_a_pickle(make_backend, tiny_models, tmp_path):
    import pickle
    import shutil

    models = tmp_path / "user-models"
    shutil.copytree(tiny_models, models)
    canary = tmp_path / "canary"

    class Boom:  # unpickling this would create the canary file
        def __reduce__(self):
            return (open, (str(canary), "w"))

    (models / "checkpoints" / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    b = make_backend(models=models).start()
    with b.client() as c:
        listing = c.get("/v1/models").json()
    names = {e["name"] for entries in listing["installed"].values() for e in entries}
    assert "checkpoints/tiny-sd15" in names and "motion/tiny-motion-adapter" in names
    assert any("model.safetensors" in r["path"] for r in listing["refused"])
    assert listing["pipelines"]["stylize"]["ready"] is True
    assert not canary.exists()


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


def test_idle_exit_when_no_job_is_left(make_backend) -> None:
    b = make_backend(extra_args=["--idle-exit", "1"]).start()
    with b.client() as c:
        keys = square_keys({0: 4.0, 2: 12.0})
        job = make_inbetween_job(c, keys, range(0, 3))
        c.post(f"/v1/jobs/{job['id']}/start")
        wait_for(c, job["id"], {"done"})
    assert b.proc.wait(timeout=60) == 0
    assert not (b.data / "backend.json").exists()
    assert "idle for 1 s with no job left" in b.output()


def test_a_full_queue_answers_429(make_backend) -> None:
    b = make_backend(
        extra_args=["--max-queue", "1"], env={"FRAMESMITH_FAULT_HOLD_AFTER_FRAMES": "1"}
    ).start()
    keys = square_keys({0: 4.0, 2: 12.0})
    with b.client() as c:
        running, queued, refused = (make_inbetween_job(c, keys, range(0, 3)) for _ in range(3))
        c.post(f"/v1/jobs/{running['id']}/start")
        wait_until(c, running["id"], lambda j: j["state"] == "running")
        assert c.post(f"/v1/jobs/{queued['id']}/start").status_code == 202
        r = c.post(f"/v1/jobs/{refused['id']}/start")
        assert r.status_code == 429 and "queue is full" in r.json()["detail"]
        assert c.get(f"/v1/jobs/{refused['id']}").json()["state"] == "awaiting_inputs"
        # cancelling the queued job leaves the running one alone and frees the slot
        c.post(f"/v1/jobs/{queued['id']}/cancel")
        assert c.get(f"/v1/jobs/{running['id']}").json()["state"] == "running"
        assert c.post(f"/v1/jobs/{refused['id']}/start").status_code == 202
