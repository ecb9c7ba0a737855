"""Flow-guided latent fusion and flow-warped noise: the warping itself, then whole stylize jobs
through the real service on a shot with exact known motion (passes made with flow_to_vector)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from backend.jobs import InputError, Pass
from backend.pipelines.stylize_fusion import (
    ChunkMotion,
    FusionSchedule,
    LatentFusion,
    warp_latents,
    warped_noise,
)
from backend.pipelines.stylize_params import parse_params
from backend.vision.consistency import FrameMotion, job_warping_error, shot_warping_error
from tests.backend.server import Backend, outputs, start_and_finish
from tests.backend.test_consistency import MovingSquare

# --- the warping itself (no models) ------------------------------------------------------------


def motion_of(shot: MovingSquare, frames: int) -> ChunkMotion:
    return ChunkMotion.from_frames(
        [FrameMotion(*shot.flows(t), shot.depth(t)[..., 0]) for t in range(frames)]
    )


def test_an_integer_shift_moves_latents_exactly_and_a_half_cell_interpolates() -> None:
    latents = torch.randn(2, 4, 6, 9, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(2, 6, 9, 2)
    flow[..., 0], flow[..., 1] = -2.0, 1.0  # each cell shows what was 2 left and 1 down of it
    warped = warp_latents(latents, flow)
    assert torch.equal(warped[:, :, :5, 2:], latents[:, :, 1:, :7])
    assert torch.equal(warped[:, :, :, 0], warped[:, :, :, 1])  # clamped at the border

    flow[..., 0], flow[..., 1] = 0.5, 0.0
    half = warp_latents(latents, flow)
    expected = 0.5 * (latents[..., :-1] + latents[..., 1:])
    torch.testing.assert_close(half[..., :-1], expected)


def test_fusion_pulls_visible_cells_towards_the_previous_frame_and_leaves_the_rest() -> None:
    shot = MovingSquare(size=16, start=8, speed=8)  # 2×2 cells, moving one cell a frame
    motion = motion_of(shot, 3)
    flow, trust = motion.latent()
    np.testing.assert_array_equal(np.unique(flow[1:, ..., 0]), [-1.0, 0.0])
    uncovered = trust[2] == 0.0
    assert uncovered.sum() == 2 and (trust[2][~uncovered] == 1.0).all()  # the wall behind

    latents = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fusion = LatentFusion(motion, FusionSchedule(strength=0.5, end=0.6))
    fused = fusion(latents, step=0, steps=4)
    assert torch.equal(fused[:, :, 0], latents[:, :, 0])  # nothing before the first frame
    mask = torch.from_numpy(uncovered)
    assert torch.equal(fused[:, :, 2][..., mask], latents[:, :, 2][..., mask])  # occluded
    warped = warp_latents(fused[:, :, 1], torch.from_numpy(flow[2])[None])
    expected = 0.5 * (latents[:, :, 2] + warped)
    torch.testing.assert_close(fused[:, :, 2][..., ~mask], expected[..., ~mask])

    assert torch.equal(fusion(latents, step=3, steps=4), latents)  # off in the last steps
    held = LatentFusion(motion, FusionSchedule(0.5, 0.6), held=[1])(latents, 0, 4)
    assert torch.equal(held[:, :, 1], latents[:, :, 1])
    assert not torch.equal(held[:, :, 2], latents[:, :, 2])  # continues from the held frame


def test_the_schedule_is_strong_early_and_off_at_the_end() -> None:
    schedule = FusionSchedule(strength=0.8, end=0.6)
    weights = [schedule.weight(i, 20) for i in range(20)]
    assert weights[0] == 0.8 and all(a > b for a, b in itertools.pairwise(weights[:12]))
    assert weights[11] > 0.0 and weights[12:] == [0.0] * 8
    assert FusionSchedule(0.8, 1.0).weight(9, 10) > 0.0
    assert FusionSchedule(0.8, 0.6).weight(1, 2) == 0.0  # never after the last step of two


def test_warped_noise_follows_the_motion_and_stays_unit_gaussian() -> None:
    shot = MovingSquare(width=128, height=128, size=48, start=8, speed=8)
    noise = warped_noise(motion_of(shot, 4), channels=4, seed=5)
    assert noise.shape == (4, 4, 16, 16) and noise.dtype == np.float32
    # One whole cell a frame: the square's cells carry their noise along, exactly.
    top, rows = (128 - 48) // 8, slice((128 - 48) // 16, (128 + 48) // 16)
    assert top == 10
    left = shot.left(2) // 8
    np.testing.assert_array_equal(
        noise[2][:, rows, left : left + 6], noise[1][:, rows, left - 1 : left + 5]
    )
    wall = noise[2][:, :4]  # static wall above the square: the same noise every frame
    np.testing.assert_array_equal(wall, noise[0][:, :4])
    # The uncovered wall gets fresh noise: unrelated to what was there.
    uncovered = noise[2][:, rows, left - 1]
    before = noise[1][:, rows, left - 1]
    assert abs(np.corrcoef(uncovered.ravel(), before.ravel())[0, 1]) < 0.6

    # Slow (sub-cell) motion and a zoom (many pixels reading one source) keep unit variance.
    big = MovingSquare(width=256, height=256, size=160, start=16, speed=3)
    slow = warped_noise(motion_of(big, 6), channels=4, seed=1)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    zoom = np.stack([(128 - xx) * 0.3, (128 - yy) * 0.3], axis=2)
    frames = [FrameMotion(zoom, -zoom)] * 6
    zoomed = warped_noise(ChunkMotion.from_frames(frames), channels=4, seed=2)
    for sample in (slow, zoomed):
        for frame in sample[1:]:
            assert abs(float(frame.mean())) < 0.05 and abs(float(frame.std()) - 1.0) < 0.04
    assert np.corrcoef(slow[5].ravel(), slow[4].ravel())[0, 1] > 0.5  # still follows along


def test_fusion_params() -> None:
    params = parse_params({})
    assert params.temporal_fusion is True
    assert 0.0 < params.fusion_strength <= 1.0 and 0.0 < params.fusion_end <= 1.0
    for bad in ({"fusion_strength": 1.5}, {"fusion_end": 0.0}, {"temporal_fusion": "maybe"}):
        with pytest.raises(InputError, match=next(iter(bad))):
            parse_params(bad)


# --- whole jobs through the real service ---------------------------------------------------------

FRAMES = 12
SHOT = MovingSquare()  # 2 px a frame, a quarter of a latent cell
PARAMS = {
    "prompt": "an ink drawing",
    "steps": 3,
    "seed": 11,
    "strength": 0.8,
    "controlnets": [{"pass": "depth"}],
}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("fusion")
    b = Backend(data=root / "data", models=tiny_models, env={"OMP_NUM_THREADS": "1"}).start()
    yield b
    b.stop()


def stylize(c: httpx.Client, params: dict, vectors: bool) -> tuple[dict, dict[int, bytes]]:
    body = {"kind": "stylize", "frames": list(range(FRAMES)), "width": 64, "height": 64}
    job = c.post("/v1/jobs", json=body | {"params": params}).raise_for_status().json()
    passes = [Pass.BEAUTY, Pass.DEPTH] + ([Pass.VECTOR] if vectors else [])
    for t in range(FRAMES):
        files = SHOT.passes(t)
        for p in passes:
            c.put(f"/v1/jobs/{job['id']}/inputs/{p.value}/{t}", content=files[p]).raise_for_status()
    done = start_and_finish(c, job["id"])
    return done, outputs(c, done)


def test_fusion_lowers_the_warping_error_and_off_changes_nothing(backend: Backend) -> None:
    with backend.client() as c:
        off_job, off = stylize(c, {**PARAMS, "temporal_fusion": False}, vectors=True)
        on_job, on = stylize(c, PARAMS, vectors=True)
        _, off_no_vectors = stylize(c, {**PARAMS, "temporal_fusion": False}, vectors=False)

    jobs = backend.data / "jobs"
    error_off = job_warping_error(jobs / off_job["id"])
    error_on = job_warping_error(jobs / on_job["id"])
    assert len(error_on.per_pair) == FRAMES - 1 and error_on.visible_fraction > 0.9
    assert error_on.mean < 0.25 * error_off.mean, (error_on, error_off)

    # The helper reads the job's own folders: the same figure as from the passes directly.
    from tests.backend.images import png_pixels

    direct = shot_warping_error(
        [png_pixels(on[t]) for t in range(FRAMES)],
        [SHOT.vector(t) for t in range(FRAMES)],
        [SHOT.depth(t) for t in range(FRAMES)],
    )
    assert direct.mean == pytest.approx(error_on.mean, rel=1e-5)

    # Fusion off is the plain pipeline, Vector pass or not: the very same frames. (Fusion on
    # without a Vector pass never runs unfused: its start is refused, test_missing_passes.py.)
    assert off == off_no_vectors
    assert on != off
