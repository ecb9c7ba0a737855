"""Pins: what a stylize job is given reaches the frames it makes.

Chunks run in this process through StylizePipeline.run_chunk with the tiny models, on inputs
decoded as the backend decodes uploads (tests/backend/test_stylize.py's MemoryContext):

- latent fusion acts, over and above the flow-warped noise it comes with (the service test
  compares fusion on with fusion off, which the warped noise alone already wins);
- depth is normalised once per shot, so a static surface keeps its conditioning brightness in
  every frame of every chunk while something else comes nearer;
- the negative prompt changes the frames (same seed, same everything else);
- the seed changes the frames in per_frame mode too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backend.jobs import JobSpec, Pass
from backend.models.registry import ModelRegistry
from backend.pipelines import stylize_runtime
from backend.pipelines.stylize import StylizePipeline
from backend.pipelines.stylize_params import StylizeParams
from backend.vision.consistency import WarpingReport, shot_warping_error
from backend.vision.passes import depth_range, depth_to_control
from tests.backend.images import exr_bytes
from tests.backend.test_consistency import MovingSquare
from tests.backend.test_stylize import BASE, NETS, MemoryContext, shot_frame

Shot = dict[int, dict[Pass, bytes]]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a small shared box spin on each other
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def registry(tiny_models: Path) -> ModelRegistry:
    return ModelRegistry(tiny_models).scan()


def stylize(registry: ModelRegistry, params: dict, shot: Shot, frames: range) -> MemoryContext:
    """A whole job, chunk by chunk, as the worker runs it. Each job has its own id: the shot's
    depth range is kept by job id."""
    clean = StylizeParams.model_validate(params).model_dump(mode="json")
    job = JobSpec(uuid.uuid4().hex, "stylize", 64, 64, tuple(frames), (), clean)
    ctx = MemoryContext(job, registry, shot)
    pipe = StylizePipeline()
    for chunk in pipe.plan(job):
        pipe.run_chunk(ctx, chunk)
    return ctx


def differ(a: MemoryContext, b: MemoryContext) -> list[int]:
    """The frames whose pictures differ between two runs."""
    return [f for f in a.outputs if not np.array_equal(a.outputs[f], b.outputs[f])]


# --- latent fusion -----------------------------------------------------------------------------

SQUARE = MovingSquare()  # 2 px a frame, a quarter of a latent cell
FUSION_FRAMES = range(12)
FUSION = {"prompt": "an ink drawing", "steps": 3, "seed": 11, "strength": 0.8,
          "controlnets": [{"pass": "depth"}]}  # fmt: skip


def warping_error(ctx: MemoryContext) -> WarpingReport:
    frames = list(FUSION_FRAMES)
    return shot_warping_error(
        [ctx.outputs[t] for t in frames],
        [SQUARE.vector(t) for t in frames],
        [SQUARE.depth(t) for t in frames],
    )


def test_latent_fusion_lowers_the_warping_error_beyond_the_warped_noise(
    registry: ModelRegistry,
) -> None:
    """Measured: 0.0077 with the warped noise alone (fusion_strength 0), 0.0044 fused."""
    shot = {t: SQUARE.passes(t) for t in FUSION_FRAMES}
    noise_only = stylize(registry, {**FUSION, "fusion_strength": 0.0}, shot, FUSION_FRAMES)
    fused = stylize(registry, FUSION, shot, FUSION_FRAMES)
    alone, both = warping_error(noise_only), warping_error(fused)
    assert both.mean < 0.75 * alone.mean, (both, alone)


# --- depth: one range per shot -------------------------------------------------------------

DEPTH_W = DEPTH_H = 64
DEPTH_FRAMES = range(7)
BACK, WALL = 20.0, 10.0
WALL_PIXEL = (56, 4)  # (row, column): the static wall in front of the back plane


def approaching_depth(t: int) -> np.ndarray:
    """A back plane at 20, a static wall at 10 over its lower quarter, and a ball coming from
    8 to 2.6 units away: each frame's own nearest point is different, the shot's is one."""
    yy, xx = np.mgrid[0:DEPTH_H, 0:DEPTH_W].astype(np.float32)
    depth = np.full((DEPTH_H, DEPTH_W), BACK, np.float32)
    depth[48:] = WALL
    ball = (xx - 20 - 4 * t) ** 2 + (yy - 24) ** 2 < 100
    depth[ball] = 8.0 - 0.9 * t
    return depth


def depth_shot() -> Shot:
    return {t: {Pass.DEPTH: exr_bytes({"V": approaching_depth(t)})} for t in DEPTH_FRAMES}


@pytest.fixture
def depth_controls(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[np.ndarray]]:
    """The depth ControlNet images each video chunk is denoised with, by the chunk's frames."""
    seen: dict[int, list[np.ndarray]] = {}
    real: Callable[..., Any] = stylize_runtime.denoise_video

    def recording(runtime: Any, loaded: Any, req: Any, hook: Any) -> list[np.ndarray]:
        seen[len(seen)] = req.controls[0]
        return real(runtime, loaded, req, hook)

    monkeypatch.setattr(stylize_runtime, "denoise_video", recording)
    return seen


def test_depth_is_normalised_once_for_the_whole_shot(
    registry: ModelRegistry, depth_controls: dict[int, list[np.ndarray]]
) -> None:
    params = {**BASE, "mode": "text2video", "controlnets": [{"pass": "depth"}]}
    params |= {"chunk_size": 4, "overlap": 1}  # chunks: frames 0-3, then 3-6
    stylize(registry, params, depth_shot(), DEPTH_FRAMES)
    assert len(depth_controls) == 2
    controls = [image for chunk in depth_controls.values() for image in chunk]
    wall = {float(image[WALL_PIXEL][0]) for image in controls}
    assert len(wall) == 1, f"the static wall flickers in the depth conditioning: {sorted(wall)}"
    shot_range = depth_range(approaching_depth(t) for t in DEPTH_FRAMES)
    first, last = depth_controls[0][0], depth_controls[1][-1]
    np.testing.assert_array_equal(first, depth_to_control(approaching_depth(0), shot_range))
    np.testing.assert_array_equal(last, depth_to_control(approaching_depth(6), shot_range))


# --- negative prompt and seed ------------------------------------------------------------------

SHORT = range(2)


@pytest.fixture(scope="module")
def ball_shot() -> Shot:
    return {t: shot_frame(t) for t in SHORT}


@pytest.mark.parametrize(
    "mode",
    [{"mode": "video2video"}, {"mode": "per_frame", "strength": 1.0, "controlnets": NETS[:1]}],
    ids=["video2video", "per_frame"],
)
def test_the_negative_prompt_changes_the_frames(
    registry: ModelRegistry, ball_shot: Shot, mode: dict
) -> None:
    # Four steps: at two, strength 0.8 leaves one step, so near the end that guidance (and so
    # the negative prompt) moves the frames by about 1e-6.
    params = {**BASE, **mode, "steps": 4, "negative_prompt": "blurry, dark"}
    first = stylize(registry, params, ball_shot, SHORT)
    again = stylize(registry, params, ball_shot, SHORT)
    other = stylize(registry, {**params, "negative_prompt": "grainy, pale"}, ball_shot, SHORT)
    none = stylize(registry, {**params, "negative_prompt": ""}, ball_shot, SHORT)
    assert differ(first, again) == []  # so that a difference below is the prompt's
    assert differ(first, other) == list(SHORT), "another negative prompt, the same frames"
    assert differ(first, none) == list(SHORT), "no negative prompt, the same frames"


def test_the_seed_changes_the_frames_per_frame(registry: ModelRegistry, ball_shot: Shot) -> None:
    params = {**BASE, "mode": "per_frame", "strength": 1.0, "controlnets": NETS[:1]}
    first = stylize(registry, params, ball_shot, SHORT)
    again = stylize(registry, params, ball_shot, SHORT)
    other = stylize(registry, {**params, "seed": 8}, ball_shot, SHORT)
    assert differ(first, again) == []
    assert differ(first, other) == list(SHORT), "another seed, the same frames"
