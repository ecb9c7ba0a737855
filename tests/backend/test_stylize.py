"""Stylize with the tiny models: chunk planning, seeds and seams, params; chunks run in-process
(resume, FreeNoise, holding a chunk on written frames); whole jobs through the real service
(a 40-frame shot with three ControlNets, seeds, the three modes, cancel, missing models, single
files against their folder twins)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backend.jobs import InputError, JobSpec, Pass
from backend.pipelines.stylize import StylizePipeline
from backend.pipelines.stylize_params import StylizeParams, parse_params
from backend.pipelines.stylize_plan import blend_seam, chunk_seed, plan_chunks, seam_weights
from backend.vision.imageio import decode
from tests.backend.images import exr_bytes, png_bytes, png_pixels
from tests.backend.server import Backend, outputs, start_and_finish, wait_for, wait_until

W = H = 64
SHOT = 40  # longer than the tiny motion module's 16-frame window: three chunks
NETS = [
    {"pass": "depth"},
    {"pass": "normal", "scale": 0.8},
    {"pass": "lineart", "scale": 0.9, "end": 0.8},
]
BASE = {"prompt": "a watercolour ball", "steps": 2, "seed": 7, "strength": 0.8, "controlnets": NETS}


# --- a synthetic shot: a ball rolling across a textured wall ----------------------------------


def shot_frame(t: int) -> dict[Pass, bytes]:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    cx, cy, r = 18.0 + 0.7 * t, 32.0, 12.0
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    inside = d2 < r * r
    bulge = np.sqrt(np.clip(r * r - d2, 0.0, None)) / r
    depth = np.where(inside, 4.0 - bulge, 1e10).astype(np.float32)
    normal = [np.where(inside, v, 0.0) for v in ((xx - cx) / r, (cy - yy) / r, bulge)]
    line = (np.abs(np.sqrt(d2) - r) < 1.0).astype(np.uint8) * 255
    # Blender's Vector pass: XY from the previous frame, ZW to the next, y up (passes.py).
    moving = inside.astype(np.float32)
    vector = {"X": -0.7 * moving, "Y": 0 * moving, "Z": -0.7 * moving, "W": 0 * moving}
    wall = 0.5 + 0.25 * np.sin(xx / 4.0) * np.cos(yy / 6.0)
    beauty = np.stack([np.where(inside, 0.9 * bulge, wall), wall, np.where(inside, 0.2, wall)], 2)
    return {
        Pass.BEAUTY: png_bytes(np.clip(beauty * 255, 0, 255).astype(np.uint8)),
        Pass.DEPTH: exr_bytes({"V": depth}),
        Pass.NORMAL: exr_bytes(dict(zip("XYZ", normal, strict=True))),
        Pass.LINEART: png_bytes(np.repeat(line[:, :, None], 3, axis=2)),
        Pass.VECTOR: exr_bytes(vector),
    }


@pytest.fixture(scope="module")
def shot() -> dict[int, dict[Pass, bytes]]:
    return {t: shot_frame(t) for t in range(SHOT)}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("stylize")
    # One torch thread: on a small shared CI box two OpenMP threads spin on each other and
    # tiny convolutions ran 10-40x slower (measured); results do not depend on it.
    b = Backend(data=root / "data", models=tiny_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def create(c: httpx.Client, params: dict, frames: range = range(SHOT)) -> dict:
    body = {"kind": "stylize", "frames": list(frames), "width": W, "height": H, "params": params}
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def upload(
    c: httpx.Client, job: dict, shot: dict[int, dict[Pass, bytes]], vectors: bool = False
) -> None:
    """The job's required inputs; with vectors, the Vector pass too (temporal fusion)."""
    needed = dict(job["missing_inputs"])
    if vectors:
        needed[Pass.VECTOR.value] = job["frames"]
    for p, frames in needed.items():
        for f in frames:
            r = c.put(f"/v1/jobs/{job['id']}/inputs/{p}/{f}", content=shot[f][Pass(p)])
            assert r.status_code == 200, r.text


def run_job(
    c: httpx.Client, params: dict, shot, frames: range = range(SHOT), vectors: bool = False
) -> dict:
    job = create(c, params, frames)
    upload(c, job, shot, vectors)
    return start_and_finish(c, job["id"])


# --- planning, seeds, seams (no models) --------------------------------------------------------


def test_plan_owns_every_frame_once_and_overlaps_the_previous_chunk() -> None:
    frames = tuple(range(100, 141))  # 41 frames: a one-frame tail
    chunks = plan_chunks(frames, 16, 4)
    assert [c.frames[0] for c in chunks] == [100, 116, 128, 140]
    assert sum((c.frames for c in chunks), ()) == frames
    for prev, chunk in itertools.pairwise(chunks):
        assert chunk.context[-1] == chunk.frames[-1] and len(chunk.context) == 16
        shared = set(chunk.context) - set(chunk.frames)
        assert len(shared) >= 4 and shared <= set(prev.context)
    assert chunks == plan_chunks(frames, 16, 4)  # resume finds the same cut
    assert [c.context for c in plan_chunks((1, 3, 5), 16, 4)] == [(1, 3, 5)]


def test_chunk_seeds_are_fixed_and_distinct() -> None:
    assert chunk_seed(7, 1) == chunk_seed(7, 1)
    assert len({chunk_seed(s, i) for s in range(5) for i in range(5)}) == 25
    assert all(0 <= chunk_seed(2**63 - 1, i) < 2**63 for i in range(3))


def test_seam_blend_continues_the_finished_frames_then_fades_out() -> None:
    rng = np.random.default_rng(0)
    new = {f: np.full((4, 4, 3), 0.2 + 0.01 * f, np.float32) for f in range(10, 20)}
    old = (rng.uniform(0.6, 0.8, (4, 4, 3)) * 255).astype(np.uint8)
    owned = tuple(range(14, 20))
    out = blend_seam(new, {13: old}, owned, overlap=4)
    residual = old / 255.0 - new[13]
    seam = np.abs(out[14] - old / 255.0).max()
    assert seam < 0.25 * np.abs(new[14] - old / 255.0).max()  # no jump at the seam
    np.testing.assert_allclose(out[14], new[14] + 0.8 * residual, atol=1e-6)
    for f in (18, 19):
        np.testing.assert_array_equal(out[f], new[f])  # the chunk's own look after the fade
    assert blend_seam(new, {}, owned, overlap=4) == {f: new[f] for f in owned}
    np.testing.assert_allclose(seam_weights(3, 2), [2 / 3, 1 / 3, 0.0], atol=1e-6)


# --- params and the job check (no models) ------------------------------------------------------


def spec(params: dict, width: int = W, height: int = H, frames=range(4)) -> JobSpec:
    clean = StylizeParams.model_validate(params).model_dump(mode="json")
    # One id per job: the shot-wide depth range is cached by job id for the whole process.
    return JobSpec(uuid.uuid4().hex, "stylize", width, height, tuple(frames), (), clean)


def test_params_round_trip_with_the_pass_field_named_pass() -> None:
    dumped = StylizeParams.model_validate({"controlnets": NETS}).model_dump(mode="json")
    assert [n["pass"] for n in dumped["controlnets"]] == ["depth", "normal", "lineart"]
    assert parse_params(dumped).controlnets[2].end == 0.8
    assert dumped["steps"] == 20 and dumped["guidance"] == 7.5 and dumped["chunk_size"] == 16
    for bad, word in (
        ({"mode": "img2vid"}, "mode"),
        ({"scheduler": "pndm"}, "scheduler"),
        ({"controlnets": [{"pass": "beauty"}]}, "controlnets.0.pass"),
        ({"controlnets": [{"pass": "depth", "start": 0.6, "end": 0.5}]}, "start"),
        ({"overlap": 16}, "overlap"),
        ({"wobble": 1}, "wobble"),
    ):
        with pytest.raises(InputError, match=word):
            parse_params(bad)


def test_check_job_and_inputs() -> None:
    pipe = StylizePipeline()
    with pytest.raises(InputError, match=r"100×64 is not a multiple of 8.*96 or 104"):
        pipe.check_job(spec({}, width=100))
    with pytest.raises(InputError, match="at least one ControlNet"):
        pipe.check_job(spec({"mode": "text2video"}))
    with pytest.raises(InputError, match=r"1 steps at strength 0.6 .* at least 2 steps"):
        pipe.check_job(spec({"steps": 1, "strength": 0.6}))
    with pytest.raises(InputError, match="singular"):
        pipe.check_job(spec({"world_to_camera": [[0, 0, 0]] * 3}))
    v2v = spec({"controlnets": [{"pass": "depth"}]})
    pipe.check_job(v2v)
    every = (0, 1, 2, 3)  # temporal_fusion (on by default) needs the motion of every frame
    assert pipe.required_inputs(v2v) == {Pass.BEAUTY: every, Pass.DEPTH: every, Pass.VECTOR: every}
    unfused = spec({"controlnets": [{"pass": "depth"}], "temporal_fusion": False})
    assert pipe.required_inputs(unfused) == {Pass.BEAUTY: every, Pass.DEPTH: every}
    assert Pass.VECTOR in pipe.accepted_inputs(unfused)
    t2v = spec({"mode": "text2video", "controlnets": [{"pass": "lineart"}]})
    assert pipe.required_inputs(t2v) == {Pass.LINEART: every, Pass.VECTOR: every, Pass.DEPTH: every}
    txt = spec({"mode": "per_frame", "strength": 1.0, "controlnets": [{"pass": "normal"}]})
    assert Pass.BEAUTY not in pipe.required_inputs(txt)
    per_frame = pipe.plan(spec({"mode": "per_frame"}, frames=range(20)))
    assert [(len(c.frames), len(c.context)) for c in per_frame] == [(16, 16), (4, 4)]


# --- chunks run in-process on a memory context ---------------------------------------------------


@dataclass
class MemoryContext:
    """A RunContext over the shot's uploaded bytes, decoded as the backend decodes them."""

    job: JobSpec
    registry: Any
    shot: dict[int, dict[Pass, bytes]]
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    progress_log: list[tuple[str, int, int]] = field(default_factory=list)
    device: str = "cpu"
    memory_level: int = 0

    @property
    def models(self) -> Any:
        return self.registry

    def has_input(self, pass_: Pass, frame: int) -> bool:
        return pass_ in self.shot.get(frame, {})

    def input(self, pass_: Pass, frame: int) -> np.ndarray:
        data = self.shot[frame][pass_]
        return decode(data, max_pixels=W * H, expect_size=(W, H), pass_=pass_)

    def finished_output(self, frame: int) -> np.ndarray | None:
        return self.outputs.get(frame)

    def write_output(self, frame: int, image: np.ndarray) -> None:
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        self.outputs.setdefault(frame, image.copy())  # first write wins, as on disk

    def progress(self, stage: str, done: int, total: int) -> None:
        self.progress_log.append((stage, done, total))

    def check_cancel(self) -> None:
        pass


def run_chunks(ctx: MemoryContext) -> None:
    """What the worker does: every chunk in order, skipping those already all written."""
    pipe = StylizePipeline()
    for chunk in pipe.plan(ctx.job):
        if not all(f in ctx.outputs for f in chunk.frames):
            pipe.run_chunk(ctx, chunk)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see the backend fixture
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_resumed_job_reproduces_the_frames_it_had_not_written(
    tiny_models: Path, shot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend.models.registry import ModelRegistry
    from backend.pipelines import stylize_runtime

    registry = ModelRegistry(tiny_models).scan()
    job = spec({**BASE, "chunk_size": 8, "overlap": 2}, frames=range(20))  # 3 chunks
    whole = MemoryContext(job, registry, shot)
    run_chunks(whole)
    assert sorted(whole.outputs) == list(range(20))
    assert {stage for stage, _, _ in whole.progress_log} == {"load", "denoise"}
    steps = [(done, total) for stage, done, total in whole.progress_log if stage == "denoise"]
    assert steps[-1][0] == steps[-1][1] > 0

    # Interrupted after chunk 0 and half of chunk 1 were written; resumed by a new process.
    monkeypatch.setattr(stylize_runtime, "_RUNTIMES", {})
    resumed = MemoryContext(job, registry, shot, {f: whole.outputs[f] for f in range(11)})
    run_chunks(resumed)
    for f in range(20):
        np.testing.assert_array_equal(resumed.outputs[f], whole.outputs[f], err_msg=f"frame {f}")


@pytest.mark.usefixtures("one_torch_thread")
def test_free_noise_only_in_chunks_longer_than_the_motion_window(tiny_models: Path, shot) -> None:
    from diffusers.models.attention import FreeNoiseTransformerBlock

    from backend.models.registry import ModelRegistry
    from backend.pipelines.stylize_runtime import runtime_for

    registry = ModelRegistry(tiny_models).scan()
    params = {**BASE, "mode": "text2video", "controlnets": NETS[2:], "chunk_size": 24}

    counts = []
    for frames in (range(20), range(8)):  # 20 > the 16-frame window; 8 fits in it
        ctx = MemoryContext(spec(params, frames=frames), registry, shot)
        run_chunks(ctx)
        assert sorted(ctx.outputs) == list(frames)
        runtime = runtime_for("cpu")
        assert runtime.loaded is not None
        unet = runtime.pipeline(runtime.loaded, "text2video").unet
        counts.append(sum(isinstance(m, FreeNoiseTransformerBlock) for m in unet.modules()))
    assert counts[0] > 0 and counts[1] == 0


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("scheduler", ["ddim", "euler_a", "dpmpp_2m", "lcm"])
def test_written_frames_hold_the_next_chunk_on_them(tiny_models: Path, scheduler: str) -> None:
    """Frames a chunk shares with its predecessor end as exactly those pictures (through the
    VAE), whatever the chunk's seed; the frames it owns still come from its own noise."""
    from backend.models.registry import ModelRegistry
    from backend.pipelines.stylize import resolve_models
    from backend.pipelines.stylize_runtime import Request, denoise_video, model_set, runtime_for

    registry = ModelRegistry(tiny_models).scan()
    params = parse_params({**BASE, "steps": 2, "strength": 1.0, "scheduler": scheduler})
    runtime = runtime_for("cpu")
    loaded = runtime.load(registry, model_set(*resolve_models(params, registry), device="cpu"))
    rng = np.random.default_rng(1)
    frames = [rng.uniform(0.0, 1.0, (H, W, 3)).astype(np.float32) for _ in range(6)]
    written = {0: frames[0], 1: frames[1]}

    def chunk(seed: int, anchors: dict) -> list[np.ndarray]:
        request = Request(params, W, H, seed, frames, [frames] * 3, anchors)
        return denoise_video(runtime, loaded, request, lambda done, total: None)

    a, b = chunk(1, written), chunk(2, written)
    free = chunk(1, {})
    for i in (0, 1):
        np.testing.assert_array_equal(a[i], b[i])
        assert np.abs(a[i] - free[i]).max() > 0.01
    assert all(np.abs(a[i] - b[i]).max() > 0.01 for i in range(2, 6))


@pytest.mark.usefixtures("one_torch_thread")
def test_a_higher_memory_level_runs_the_chunk_smaller(tiny_models: Path, shot) -> None:
    """After running out of GPU memory the worker retries a chunk at the next memory level:
    the VAE then works frame by frame (and in tiles), and the chunk still writes its frames."""
    from backend.models.registry import ModelRegistry
    from backend.pipelines.stylize_plan import MEMORY_PLANS
    from backend.pipelines.stylize_runtime import runtime_for

    registry = ModelRegistry(tiny_models).scan()
    job = spec({**BASE, "controlnets": NETS[:1]}, frames=range(4))

    def vae_state() -> tuple[bool, bool]:
        vae = runtime_for("cpu").loaded.pipe.vae  # type: ignore[union-attr]
        return vae.use_slicing, vae.use_tiling

    states = []
    for level in (len(MEMORY_PLANS) - 1, 0):
        ctx = MemoryContext(job, registry, shot, memory_level=level)
        during: set[tuple[bool, bool]] = set()

        def seen(stage: str, done: int, total: int, during: set = during) -> None:
            if stage == "denoise":  # the VAE's state while the chunk denoises, at every step
                during.add(vae_state())

        ctx.progress = seen  # type: ignore[method-assign]
        run_chunks(ctx)
        assert sorted(ctx.outputs) == [0, 1, 2, 3]
        states.append((during, vae_state()))
    # Frame by frame and in tiles while the chunk runs at the last level, and put back when it
    # ends: the models stay loaded, and the next job starts at level 0 whatever ran before.
    assert states == [({(True, True)}, (False, False)), ({(False, False)}, (False, False))]
    assert MEMORY_PLANS[-1].decode_frames < MEMORY_PLANS[0].decode_frames


# --- whole jobs through the real service -------------------------------------------------------


def test_forty_frame_shot_with_three_controlnets(backend: Backend, shot) -> None:
    with backend.client() as c:
        job = create(c, BASE)
        upload(c, job, shot, vectors=True)  # flow-guided fusion follows them
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        first = wait_for(c, job["id"], {"done", "failed", "canceled"})
        assert first["state"] == "done", first
        assert first["finished_frames"] == list(range(SHOT))
        assert first["progress"]["chunks"] == 3 and first["progress"]["fraction"] == 1.0
        # the stored params name the models that ran, not "the default"
        assert first["params"]["checkpoint"] and first["params"]["motion_adapter"]
        assert all(net["model"] for net in first["params"]["controlnets"])
        frames = outputs(c, first)
        for data in frames.values():
            image = png_pixels(data)
            assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert len({bytes(d) for d in frames.values()}) == SHOT  # every frame its own

        again = outputs(c, run_job(c, BASE, shot, vectors=True))
        assert again == frames, "the same seed must give byte-identical frames"

        other = outputs(c, run_job(c, {**BASE, "seed": 8}, shot, vectors=True))
        assert all(other[f] != frames[f] for f in range(SHOT))


def test_text2video_and_per_frame_modes(backend: Backend, shot) -> None:
    t2v = {**BASE, "mode": "text2video", "chunk_size": 12, "controlnets": NETS[::2]}
    t2v["scheduler"] = "euler_a"
    per_frame = {**BASE, "mode": "per_frame", "strength": 0.7, "chunk_size": 3}
    per_frame |= {"scheduler": "dpmpp_2m", "lora": {"name": "tiny-lora", "weight": 0.7}}
    txt2img = {**BASE, "mode": "per_frame", "strength": 1.0, "controlnets": NETS[:1]}
    txt2img["scheduler"] = "lcm"
    cases = (
        (t2v, range(16), {"depth", "lineart", "vector"}),  # vector, depth: temporal_fusion
        (per_frame, range(4), {"beauty", "depth", "normal", "lineart"}),
        (txt2img, range(2), {"depth"}),
    )
    with backend.client() as c:
        for params, frames, needed in cases:
            job = create(c, params, frames)
            assert set(job["missing_inputs"]) == needed
            upload(c, job, shot)
            c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
            done = wait_for(c, job["id"], {"done", "failed", "canceled"})
            assert done["state"] == "done", done
            images = [png_pixels(d) for d in outputs(c, done).values()]
            assert len(images) == len(frames) and all(i.shape == (H, W, 3) for i in images)


def test_cancel_stops_within_a_step(backend: Backend, shot) -> None:
    with backend.client() as c:
        job = create(c, {**BASE, "steps": 40, "strength": 1.0}, range(16))
        upload(c, job, shot)
        c.post(f"/v1/jobs/{job['id']}/start").raise_for_status()
        wait_until(
            c, job["id"], lambda j: j["progress"]["stage"] == "denoise" and j["progress"]["done"]
        )
        at_cancel = c.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status().json()
        final = wait_for(c, job["id"], {"done", "failed", "canceled"})
    assert final["state"] == "canceled"
    assert final["finished_frames"] == []
    # The step running when the cancel arrived may still report; no step after it.
    assert final["progress"]["done"] <= at_cancel["progress"]["done"] + 1 < 40


def test_missing_or_wrong_models_are_a_400_naming_the_folder(backend: Backend, shot) -> None:
    models = str(backend.models)
    with backend.client() as c:
        for params, words in (
            ({"checkpoint": "sd15-nope"}, ["sd15-nope", f"{models}/checkpoints/"]),
            ({"motion_adapter": "mm-nope"}, ["mm-nope", f"{models}/motion/"]),
            (
                {"checkpoint": "controlnet/tiny-controlnet-depth"},
                ["a ControlNet, not a checkpoint"],
            ),
            ({"lora": {"name": "lora-nope"}}, ["lora-nope", f"{models}/lora/"]),
        ):
            job = create(c, {**BASE, **params}, range(2))
            upload(c, job, shot)
            r = c.post(f"/v1/jobs/{job['id']}/start")
            assert r.status_code == 400, r.text
            detail = r.json()["detail"]
            assert detail.startswith("models missing") and all(w in detail for w in words), detail


def test_single_files_match_their_folder_twins(backend: Backend, shot) -> None:
    """The LDM-layout checkpoint and the original-layout motion module load offline from
    shipped config skeletons and give the very frames their diffusers folders give."""
    params = {**BASE, "controlnets": NETS[:1], "motion_adapter": "motion/tiny-mm-sd-v15-v2"}
    folder_motion = {**params, "motion_adapter": "motion/tiny-motion-adapter"}
    with backend.client() as c:
        folder = outputs(c, run_job(c, {**params, "checkpoint": "tiny-sd15"}, shot, range(4)))
        single = outputs(c, run_job(c, {**params, "checkpoint": "tiny-sd15-ldm"}, shot, range(4)))
        motion = outputs(
            c, run_job(c, {**folder_motion, "checkpoint": "tiny-sd15"}, shot, range(4))
        )
    assert single == folder
    assert motion == folder
