"""No silent downgrades: a job that asks for what a render pass gives is refused at start, with
a 400 naming the pass and the setting that would do without it, never run without it.

Through the real service with the tiny models: temporal fusion without the Vector pass (then
uploaded, and the same job runs), a ControlNet without its pass, render-assisted in-betweening
without its guides; per_frame stylize, which fuses nothing, asks for no Vector pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from backend.jobs import JobSpec, Pass
from backend.pipelines.stylize import StylizePipeline
from tests.backend.images import exr_bytes, png_bytes, textured_square_scene
from tests.backend.server import Backend, start_and_finish

W = H = 64
FRAMES = [0, 1, 2, 3]
STYLIZE = {"prompt": "gouache", "steps": 2, "strength": 0.6, "chunk_size": 4, "overlap": 1}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("missing-passes")
    b = Backend(data=root / "data", models=tiny_models).start()
    yield b
    b.stop()


def _create(c: httpx.Client, body: dict) -> dict:
    r = c.post("/v1/jobs", json={"width": W, "height": H, "frames": FRAMES} | body)
    assert r.status_code == 201, r.text
    return r.json()


def _put(c: httpx.Client, job: dict, pass_: Pass, frame: int) -> None:
    if pass_ is Pass.VECTOR:  # the square moves 3 px right a frame; Blender's layout
        ones = np.ones((H, W), np.float32)
        data = exr_bytes({"X": -3 * ones, "Y": 0 * ones, "Z": -3 * ones, "W": 0 * ones})
    elif pass_ is Pass.DEPTH:
        data = exr_bytes({"V": np.full((H, W), 4.0, np.float32)})
    else:
        data = png_bytes(textured_square_scene(W, H, 8.0 + 3 * frame))
    r = c.put(f"/v1/jobs/{job['id']}/inputs/{pass_.value}/{frame}", content=data)
    assert r.status_code == 200, r.text


def _refused(c: httpx.Client, job: dict) -> str:
    r = c.post(f"/v1/jobs/{job['id']}/start")
    assert r.status_code == 400, r.text
    assert c.get(f"/v1/jobs/{job['id']}").json()["state"] == "awaiting_inputs"
    return str(r.json()["detail"])


def test_fusion_without_the_vector_pass_is_refused_naming_it_and_the_setting(
    backend: Backend,
) -> None:
    with backend.client() as c:
        job = _create(c, {"kind": "stylize", "params": STYLIZE})  # temporal_fusion: default on
        assert set(job["missing_inputs"]) == {"beauty", "vector", "depth"}
        for f in FRAMES:
            _put(c, job, Pass.BEAUTY, f)
            _put(c, job, Pass.DEPTH, f)
        detail = _refused(c, job)
        assert detail == (
            "inputs missing: vector for frame(s) 0-3 (4 frames), which temporal_fusion follows"
            " (the render's motion in Vector, occlusion in Depth): upload them, or set"
            " temporal_fusion to false"
        )

        for f in FRAMES:
            _put(c, job, Pass.VECTOR, f)
        assert start_and_finish(c, job["id"])["finished_frames"] == FRAMES

        # Off, it needs neither pass: the add-on's own choice for a shot without motion passes.
        unfused = _create(c, {"kind": "stylize", "params": STYLIZE | {"temporal_fusion": False}})
        assert set(unfused["missing_inputs"]) == {"beauty"}


def test_a_controlnet_without_its_pass_is_refused_naming_it(backend: Backend) -> None:
    params = STYLIZE | {"mode": "text2video", "controlnets": [{"pass": "lineart"}]}
    with backend.client() as c:
        job = _create(c, {"kind": "stylize", "params": params | {"temporal_fusion": False}})
        detail = _refused(c, job)
        assert detail == (
            "inputs missing: lineart for frame(s) 0-3 (4 frames), which the lineart ControlNet"
            " reads: upload them, or remove that ControlNet"
        )


def test_render_assisted_inbetweens_without_guides_are_refused_naming_them(
    backend: Backend,
) -> None:
    body = {"kind": "inbetween", "keyframes": [0, 3], "params": {"method": "render"}}
    with backend.client() as c:
        job = _create(c, body)
        for k in (0, 3):
            _put(c, job, Pass.KEYFRAME, k)
        detail = _refused(c, job)
        why = (
            "which method 'render' follows from key to key (the render's motion in Vector,"
            " occlusion in Depth): upload them, or use method 'flow'"
        )
        assert detail == (
            f"inputs missing: vector for frame(s) 0-3 (4 frames), {why}; depth for frame(s) 0-3"
            f" (4 frames), {why}"
        )


def test_only_jobs_that_fuse_require_the_motion_passes() -> None:
    pipe = StylizePipeline()

    def required(**params: object) -> set[Pass]:
        job = JobSpec("j", "stylize", W, H, tuple(FRAMES), (), STYLIZE | params)
        return set(pipe.required_inputs(job))

    assert required() == {Pass.BEAUTY, Pass.VECTOR, Pass.DEPTH}
    assert required(mode="per_frame") == {Pass.BEAUTY}  # no motion module, nothing fused
    assert required(temporal_fusion=False) == {Pass.BEAUTY}
    wan = {"engine": "wan_vace", "vace": {"control": "lineart"}}
    assert required(**wan) == {Pass.LINEART}  # Wan has no fusion to run without them
