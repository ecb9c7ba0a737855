"""Promise 10: running out of GPU memory fails one job at worst.

torch's own OutOfMemoryError is injected into chunk attempts (FRAMESMITH_FAULT_OOM, a test-only
fault read by the worker: the first n attempts of the process raise it). A chunk that runs out
is retried at the pipeline's next, smaller memory level and the job completes; one that runs
out at every level fails its job with a message saying what to lower, and the same server runs
the next job to the end.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from backend.pipelines.stylize import StylizePipeline
from backend.worker import OOM_ENV
from tests.backend.images import png_bytes, textured_square_scene
from tests.backend.server import wait_for

W, H = 64, 64
FRAMES = range(5)  # two chunks of at most 4 frames
PARAMS = {"prompt": "gouache", "steps": 2, "strength": 0.6, "chunk_size": 4, "overlap": 1,
          "temporal_fusion": False}  # fmt: skip
LEVELS = StylizePipeline.memory_levels


def stylize(c: httpx.Client) -> dict:
    body = {"kind": "stylize", "frames": list(FRAMES), "width": W, "height": H, "params": PARAMS}
    job = c.post("/v1/jobs", json=body).raise_for_status().json()
    for f in FRAMES:
        image = png_bytes(textured_square_scene(W, H, 8.0 + 3 * f))
        c.put(f"/v1/jobs/{job['id']}/inputs/beauty/{f}", content=image).raise_for_status()
    c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
    return wait_for(c, job["id"], {"done", "failed", "canceled"})


def test_out_of_memory_is_retried_smaller_then_fails_only_its_job(
    make_backend, tiny_models: Path
) -> None:
    assert LEVELS >= 2, "stylize must have a smaller way to run a chunk"
    # Faults hit the process's first attempts: every level of the first job's first chunk,
    # then the second job's first attempt only.
    b = make_backend("oom", models=tiny_models, env={OOM_ENV: str(LEVELS + 1)}).start()
    with b.client() as c:
        permanent = stylize(c)
        assert permanent["state"] == "failed", permanent
        error = permanent["error"]
        assert "ran out of memory" in error and "smallest memory settings" in error, error
        assert "lower the resolution (now 64×64)" in error and "chunk_size (now 4" in error, error
        assert permanent["finished_frames"] == []

        transient = stylize(c)  # the server keeps serving, and retries smaller
        assert transient["state"] == "done", transient["error"]
        assert transient["finished_frames"] == list(FRAMES)
        log = b.output()
        assert f"job {transient['id']}, chunk 0: out of GPU memory at memory level 0" in log
        assert f"job {transient['id']}, chunk 0: out of GPU memory at memory level 1" not in log

        after = stylize(c)
        assert after["state"] == "done", after["error"]
        assert after["finished_frames"] == list(FRAMES)
        assert c.get("/v1/health").status_code == 200
