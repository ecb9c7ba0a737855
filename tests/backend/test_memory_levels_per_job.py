"""Memory levels are per job, and diffusion in-betweening has the out-of-memory ladder stylize
has. Through the real service with the tiny models and the worker's injected out-of-memory
faults (FRAMESMITH_FAULT_OOM, as promise 10): the first n chunk attempts of the process raise
torch's OutOfMemoryError.

The models stay loaded between jobs, and one checkpoint's VAE is shared by stylize and
SparseCtrl: VAE slicing switched on by one job's raised level must not reach the next job. Each
chunk logs its level, its VAE settings and the settings it found the VAE in.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from backend.jobs import JobSpec
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.stylize_plan import MEMORY_PLANS
from backend.worker import OOM_ENV
from tests.backend.images import png_bytes, textured_square_scene
from tests.backend.server import wait_for

W = H = 64
FRAMES = [0, 1, 2, 3, 4]
LEVELS = len(MEMORY_PLANS)
STYLIZE = {"prompt": "gouache", "steps": 2, "strength": 0.6, "temporal_fusion": False}
DIFFUSION = {"method": "diffusion", "diffusion": {"prompt": "a red square", "steps": 2}}


def _image(frame: int) -> bytes:
    return png_bytes(textured_square_scene(W, H, 8.0 + 4 * frame))


def _run(c: httpx.Client, body: dict, uploads: dict[str, list[int]]) -> dict:
    body = {"width": W, "height": H, "frames": FRAMES} | body
    job = c.post("/v1/jobs", json=body).raise_for_status().json()
    for pass_, frames in uploads.items():
        for f in frames:
            c.put(f"/v1/jobs/{job['id']}/inputs/{pass_}/{f}", content=_image(f)).raise_for_status()
    c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
    return wait_for(c, job["id"], {"done", "failed", "canceled"})


def _spec(params: dict) -> JobSpec:
    return JobSpec("j", "inbetween", W, H, tuple(FRAMES), (0, 4), params)


def _inbetween(c: httpx.Client) -> dict:
    body = {"kind": "inbetween", "keyframes": [0, 4], "params": DIFFUSION}
    return _run(c, body, {"keyframe": [0, 4]})


def _stylize(c: httpx.Client) -> dict:
    return _run(c, {"kind": "stylize", "params": STYLIZE}, {"beauty": FRAMES})


def test_diffusion_inbetweens_shrink_on_oom_and_no_level_outlives_its_job(
    make_backend, tiny_models: Path
) -> None:
    assert InbetweenPipeline().memory_levels_for(_spec(DIFFUSION)) == LEVELS
    assert InbetweenPipeline().memory_levels_for(_spec({"method": "flow"})) == 1
    # Faults hit the process's first attempts: every level of the first job, then all but the
    # last level of the second; none after.
    faults = LEVELS + LEVELS - 1
    b = make_backend("levels", models=tiny_models, env={OOM_ENV: str(faults)}).start()
    with b.client() as c:
        failed = _inbetween(c)
        assert failed["state"] == "failed", failed
        assert failed["error"] == (
            "The GPU ran out of memory on chunk 1 even with the smallest memory settings: lower"
            " the resolution (now 64×64) or clip_length (now 16 frames), or close other programs"
            " that use the GPU, and run the job again."
        )
        retried = _inbetween(c)
        assert retried["state"] == "done", retried["error"]
        assert retried["finished_frames"] == FRAMES
        stylized = _stylize(c)
        assert stylized["state"] == "done", stylized["error"]
        after = _inbetween(c)
        assert after["state"] == "done", after["error"]

    log = b.output()
    last = LEVELS - 1
    assert f"job {retried['id']}, chunk 0: out of GPU memory at memory level {last - 1}" in log
    assert (
        f"job {retried['id']}, SparseCtrl in-betweens 0-4 at memory level {last}: VAE slicing"
        " on, tiling on (found with slicing off, tiling off)"
    ) in log
    # Each later job on the same backend (and the same VAE) finds it as level 0 left it, and
    # runs as it asked.
    assert (
        f"job {stylized['id']}, stylize chunk 0 at memory level 0: VAE slicing off, tiling off"
        " (found with slicing off, tiling off)"
    ) in log
    assert (
        f"job {after['id']}, SparseCtrl in-betweens 0-4 at memory level 0: VAE slicing off,"
        " tiling off (found with slicing off, tiling off)"
    ) in log
