"""Diffusion in-betweening on engine wan_vace with the tiny Wan2.1-VACE: params, required guide
passes and the engine dispatch in-process; whole jobs through the real service (uneven keys with
depth guides and a gap longer than one window, exact keys, seeds, on twos without a control,
cancel, missing models and missing guides)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backend.jobs import InputError, JobSpec, Pass
from backend.models.registry import ModelRegistry
from backend.pipelines import inbetween_methods
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_diffusion import DiffusionMethod, plan_clips
from backend.pipelines.inbetween_engines import engine_of
from backend.pipelines.inbetween_params import parse_params
from backend.pipelines.inbetween_wan import WanInbetween
from backend.pipelines.wan_control import resize
from backend.vision.passes import depth_range, depth_to_control
from tests.backend.images import exr_bytes, png_bytes, png_pixels
from tests.backend.server import Backend, outputs, start_and_finish, wait_for, wait_until
from tests.backend.test_stylize import MemoryContext

W = H = 64
# Keys 0 → 3 fit one window; 3 → 20 is 18 frames, longer than a 9-frame window: anchors first.
KEYS = (0, 3, 20)
FRAMES = [0, 1, 2, 3, 5, 9, 12, 14, 19, 20, 22]
GUIDES = range(0, 21)  # every frame from the first key to the last
WINDOW = 9
WAN = {
    "engine": "wan_vace",
    "prompt": "a ball rolling along a wall",
    "steps": 2,
    "guidance": 3.0,
    "seed": 5,
    "window": WINDOW,
    "control": "depth",
}


def ball(t: int) -> dict[str, np.ndarray]:
    """A ball rolling across a wall at frame t: beauty (uint8 RGB), depth (float32) and its
    outline as line art (uint8 RGB)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, r = 10.0 + 2.0 * t, 11.0
    d2 = (xx - cx) ** 2 + (yy - 32.0) ** 2
    inside = d2 < r * r
    bulge = np.sqrt(np.clip(r * r - d2, 0.0, None)) / r
    depth = np.where(inside, 4.0 - bulge, 1e10).astype(np.float32)
    wall = 0.5 + 0.25 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    beauty = np.stack([np.where(inside, bulge, wall), wall, 0.8 * wall], 2)
    line = (np.abs(np.sqrt(d2) - r) < 1.0).astype(np.uint8) * 255
    return {
        "beauty": (beauty * 255).astype(np.uint8),
        "depth": depth,
        "lineart": np.repeat(line[:, :, None], 3, axis=2),
    }


def guide_bytes(p: str, frame: int) -> bytes:
    image = ball(frame)[p]
    return exr_bytes({"V": image}) if p == "depth" else png_bytes(image)


@pytest.fixture(scope="module")
def keys() -> dict[int, np.ndarray]:
    return {k: ball(k)["beauty"] for k in KEYS}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, wan_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("inbetween-wan")
    b = Backend(data=root / "data", models=wan_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def create(c: httpx.Client, diffusion: dict[str, Any], frames: list[int], **params: Any) -> dict:
    body = {
        "kind": "inbetween",
        "frames": frames,
        "keyframes": list(KEYS),
        "width": W,
        "height": H,
        "params": {"method": "diffusion", "diffusion": diffusion, **params},
    }
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload(c: httpx.Client, job: dict, keys: dict[int, np.ndarray], guides: bool = True) -> None:
    """The keys, and every guide the job asks for (unless `guides` is false)."""
    for p, listed in job["missing_inputs"].items():
        if p != "keyframe" and not guides:
            continue
        for f in listed:
            data = png_bytes(keys[f]) if p == "keyframe" else guide_bytes(p, f)
            r = c.put(f"/v1/jobs/{job['id']}/inputs/{p}/{f}", content=data)
            assert r.status_code == 200, r.text


def run(c: httpx.Client, keys, diffusion: dict[str, Any], frames: list[int], **params) -> dict:
    job = create(c, diffusion, frames, **params)
    upload(c, job, keys)
    return start_and_finish(c, job["id"])


# --- params, inputs and the engines (no model) ------------------------------------------------


def spec(diffusion: dict[str, Any], frames: tuple[int, ...] = tuple(FRAMES)) -> JobSpec:
    return JobSpec("j" * 32, "inbetween", W, H, frames, KEYS, {"method": "diffusion",
                                                              "diffusion": diffusion})  # fmt: skip


def test_the_engine_picks_the_method_and_sparsectrl_reads_back_unchanged() -> None:
    dispatch = inbetween_methods.get("diffusion")
    assert isinstance(engine_of(parse_params(spec(WAN).params)), WanInbetween)
    assert isinstance(engine_of(parse_params(spec({}).params)), DiffusionMethod)
    assert dispatch.memory_levels >= WanInbetween.memory_levels
    for bad, words in (
        ({"engine": "wan"}, ["engine", "'sparsectrl' or 'wan_vace'"]),
        ({**WAN, "control": "normal"}, ["control", "'depth' or 'lineart'"]),
        ({**WAN, "window": 8}, ["4k+1"]),
        ({**WAN, "window": 85}, ["window"]),
        ({"control": "depth"}, ['engine "wan_vace" only']),
        ({"wan_vace": "wan/x"}, ['engine "wan_vace" only']),
        ({**WAN, "sparsectrl": "rgb"}, ["sparsectrl belong to engine sparsectrl"]),
    ):
        with pytest.raises(InputError) as err:
            InbetweenPipeline().check_job(spec(bad))
        assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(InputError, match="at least 16×16"):
        InbetweenPipeline().check_job(JobSpec("j", "inbetween", 12, 64, (1,), (0, 2),
                                              {"method": "diffusion", "diffusion": WAN}))  # fmt: skip
    InbetweenPipeline().check_job(JobSpec("j", "inbetween", 50, 30, (1,), (0, 2),
                                          {"method": "diffusion", "diffusion": WAN}))  # fmt: skip


def test_a_control_requires_its_guide_of_every_frame_from_key_to_key() -> None:
    pipeline = InbetweenPipeline()
    for control, guide in (("depth", Pass.DEPTH), ("lineart", Pass.LINEART)):
        job = spec({**WAN, "control": control})
        required = pipeline.required_inputs(job)
        assert set(required) == {Pass.KEYFRAME, guide}
        assert tuple(required[guide]) == tuple(GUIDES)
        assert set(GUIDES) <= set(pipeline.accepted_inputs(job)[guide])
        assert "diffusion.control" in pipeline.input_reasons(job)[guide]
    # frames only inside 0 → 3: the guides of that interval alone
    short = pipeline.required_inputs(spec(WAN, (1, 2, 20)))
    assert tuple(short[Pass.DEPTH]) == (0, 1, 2, 3)
    # without a control (and for SparseCtrl) the keys alone
    assert set(pipeline.required_inputs(spec({**WAN, "control": None}))) == {Pass.KEYFRAME}
    assert set(pipeline.required_inputs(spec({}))) == {Pass.KEYFRAME}


def test_a_long_gap_is_pinned_by_anchors_at_both_ends_of_every_window() -> None:
    clips = plan_clips(range(3, 21), WINDOW, {5, 9, 12, 14, 19})
    assert clips[0][0] == 3 and clips[0][-1] == 20  # the anchors first, between the keys
    assert all(len(c) <= WINDOW for c in clips)
    anchors = set(clips[0])
    assert all(c[0] in anchors and c[-1] in anchors for c in clips[1:])


def test_each_window_holds_its_ends_and_follows_the_guides_between(
    wan_models: Path, keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process, with the tiny model: every VACE call the job makes is recorded. Each
    holds the pictures at its two ends (the keys, or anchors made first) with mask 0, gives
    every frame between the depth of that frame (one range for the whole job) with mask 1, and
    is 4k+1 frames, at most the window."""
    from backend.pipelines import stylize_wan_runtime

    calls: list[tuple[Any, ...]] = []
    real = stylize_wan_runtime.denoise_window

    def recorded(runtime, pipe, request, hook):  # type: ignore[no-untyped-def]
        images = real(runtime, pipe, request, hook)
        calls.append((request.window, images))
        return images

    monkeypatch.setattr(stylize_wan_runtime, "denoise_window", recorded)
    shot = {f: {Pass.DEPTH: guide_bytes("depth", f)} for f in GUIDES}
    for k in KEYS:
        shot[k][Pass.KEYFRAME] = png_bytes(keys[k])
    frames = (1, 2, 9, 14)
    job = spec(WAN, frames)
    ctx = MemoryContext(job, ModelRegistry(wan_models).scan(), shot)
    pipeline = InbetweenPipeline()
    for chunk in pipeline.plan(job):
        pipeline.run_chunk(ctx, chunk)
    assert sorted(ctx.outputs) == list(frames)

    shared = depth_range([ball(f)["depth"] for f in GUIDES])
    clips = [(0, 1, 2, 3), *plan_clips(range(3, 21), WINDOW, {9, 14})]
    assert len(calls) == len(clips)
    made: dict[int, np.ndarray] = {k: keys[k] for k in KEYS}
    for clip, (window, images) in zip(clips, calls, strict=True):
        n = len(clip)
        assert window.produced == n and len(window.video) % 4 == 1 and len(window.video) <= WINDOW
        assert window.mask[:n] == [0.0] + [1.0] * (n - 2) + [0.0]
        for i in (0, n - 1):  # the ends: the pictures known by then
            want = resize(made[clip[i]].astype(np.float32) / 255.0, 32, 32)
            np.testing.assert_allclose(window.video[i], want, atol=1e-6)
        for i in range(1, n - 1):
            control = depth_to_control(ball(clip[i])["depth"], shared)
            np.testing.assert_allclose(window.video[i], resize(control, 32, 32), atol=1e-6)
        for frame, image in zip(clip[1:-1], images[1 : n - 1], strict=True):
            made[frame] = resize((np.clip(image, 0, 1) * 255).round().astype(np.uint8), W, H)


# --- whole jobs through the real service -------------------------------------------------------


@pytest.fixture(scope="module")
def full_job(backend: Backend, keys) -> tuple[dict, dict[int, bytes]]:
    """The job over FRAMES with WAN (depth guides), run once: (finished job, PNGs by frame)."""
    with backend.client() as c:
        done = run(c, keys, WAN, FRAMES)
        return done, outputs(c, done)


def test_uneven_keys_with_depth_guides_keep_the_keys_byte_for_byte(
    full_job: tuple[dict, dict[int, bytes]], keys
) -> None:
    done, frames = full_job
    assert done["finished_frames"] == FRAMES
    pinned = done["params"]["diffusion"]
    assert pinned["wan_vace"] == "wan/tiny-wan2.1-vace"
    assert pinned["run_size"] == [32, 32]  # the size the model ran at
    pictures = {f: png_pixels(data) for f, data in frames.items()}
    for k in KEYS:
        np.testing.assert_array_equal(pictures[k], keys[k])
    np.testing.assert_array_equal(pictures[22], keys[20])  # after the last key: held
    between = [f for f in FRAMES if f not in KEYS and f < 20]
    for f in between:
        assert pictures[f].shape == (H, W, 3)  # back at the job's size
        assert not any(np.array_equal(pictures[f], keys[k]) for k in KEYS)
    assert len({pictures[f].tobytes() for f in between}) == len(between)  # each its own


def test_the_same_seed_gives_the_same_frames_whichever_are_asked_for(
    backend: Backend, full_job: tuple[dict, dict[int, bytes]], keys
) -> None:
    first = full_job[1]
    with backend.client() as c:
        again = outputs(c, run(c, keys, WAN, [1, 14]))
        other = outputs(c, run(c, keys, {**WAN, "seed": 6}, [1, 3, 14]))
        lines = outputs(c, run(c, keys, {**WAN, "control": "lineart"}, [1, 14]))
    assert again == {f: first[f] for f in (1, 14)}, "the same seed must give identical frames"
    assert other[1] != first[1] and other[14] != first[14]
    assert other[3] == first[3]  # a key
    assert lines[1] != first[1]  # the control is followed


def test_on_twos_without_a_control_holds_pairs(backend: Backend, keys) -> None:
    with backend.client() as c:
        job = create(c, {**WAN, "control": None}, list(range(3, 12)), on_twos=True)
        assert set(job["missing_inputs"]) == {"keyframe"}  # the keys alone
        upload(c, job, keys)
        out = outputs(c, start_and_finish(c, job["id"]))
    assert out[4] == out[3]  # the key, held for two
    for t in (5, 7, 9):
        assert out[t] == out[t + 1]
    assert len({out[t] for t in range(3, 12)}) == 5  # the key and four drawings


def test_missing_guides_are_named_with_the_setting_that_needs_them(backend: Backend, keys) -> None:
    with backend.client() as c:
        job = create(c, WAN, [1, 2])
        assert job["missing_inputs"]["depth"] == [0, 1, 2, 3]
        upload(c, job, keys, guides=False)
        r = c.post(f"/v1/jobs/{job['id']}/start")
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "depth for frame(s) 0-3" in detail and "diffusion.control depth" in detail, detail


def test_cancel_stops_within_a_step(backend: Backend, keys) -> None:
    with backend.client() as c:
        job = create(c, {**WAN, "steps": 40}, [1, 2])
        upload(c, job, keys)
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        wait_until(
            c, job["id"], lambda j: j["progress"]["stage"] == "denoise" and j["progress"]["done"]
        )
        at_cancel = c.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status().json()
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
    assert final["state"] == "canceled"
    assert final["finished_frames"] == []
    assert final["progress"]["done"] <= at_cancel["progress"]["done"] + 1 < 40


def test_a_missing_model_is_a_400_naming_the_folder(
    backend: Backend, keys, make_backend: Any
) -> None:
    with backend.client() as c:
        job = create(c, {**WAN, "wan_vace": "wan-14b"}, [1])
        upload(c, job, keys)
        r = c.post(f"/v1/jobs/{job['id']}/start")
    assert r.status_code == 400, r.text
    assert "wan-14b" in r.json()["detail"] and f"{backend.models}/wan/" in r.json()["detail"]
    empty = make_backend("empty").start()
    with empty.client() as c:
        job = create(c, WAN, [1])
        upload(c, job, keys)
        r = c.post(f"/v1/jobs/{job['id']}/start")
        listing = c.get("/v1/models").raise_for_status().json()
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "No Wan2.1-VACE model installed" in detail and f"{empty.models}/wan/" in detail
    assert listing["pipelines"]["inbetween"]["modes"]["wan_vace"]["ready"] is False
