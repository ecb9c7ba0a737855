"""Warping error from exact render motion: a synthetic shot with known motion, its passes made
with flow_to_vector (so the test follows whichever sign convention vector_to_flow has)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from backend.jobs import Pass
from backend.vision.consistency import (
    FrameMotion,
    folder_warping_error,
    job_warping_error,
    shot_warping_error,
    visible_in_previous,
    warping_error,
)
from backend.vision.passes import flow_to_vector
from tests.backend.images import exr_bytes, png_bytes

WALL_DEPTH, SQUARE_DEPTH = 10.0, 2.0


@dataclass(frozen=True)
class MovingSquare:
    """A textured square sliding right by `speed` whole pixels a frame over a textured wall.

    Its texture is fixed to the square, the wall's to the picture, so each frame is exactly the
    previous one moved along the motion its passes describe.
    """

    width: int = 64
    height: int = 64
    size: int = 20
    start: int = 6
    speed: int = 2

    def left(self, t: int) -> int:
        return self.start + self.speed * t

    def _inside(self, t: int) -> np.ndarray:
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        top = (self.height - self.size) // 2
        x0 = self.left(t)
        return (xx >= x0) & (xx < x0 + self.size) & (yy >= top) & (yy < top + self.size)

    def beauty(self, t: int) -> np.ndarray:
        """uint8 RGB."""
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        wall = np.stack(
            [
                0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0),
                0.5 + 0.25 * np.cos(xx / 7.0 + yy / 4.0),
                0.4 + 0.2 * np.sin((xx + yy) / 6.0),
            ],
            axis=2,
        )
        u = xx - self.left(t)  # the square's own coordinates
        square = np.stack(
            [0.9 - 0.02 * u, 0.2 + 0.03 * yy, 0.3 + 0.25 * ((np.floor(u / 3) + yy // 3) % 2)],
            axis=2,
        )
        image = np.where(self._inside(t)[..., None], square, wall)
        return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)

    def flows(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(backward, forward) in the OpenCV convention of passes.vector_to_flow."""
        inside = self._inside(t).astype(np.float32)
        zero = np.zeros_like(inside)
        backward = np.stack([-self.speed * inside, zero], axis=2)
        forward = np.stack([self.speed * inside, zero], axis=2)
        return backward, forward

    def vector(self, t: int) -> np.ndarray:
        return flow_to_vector(*self.flows(t))

    def depth(self, t: int) -> np.ndarray:
        return np.where(self._inside(t), SQUARE_DEPTH, WALL_DEPTH).astype(np.float32)[..., None]

    def passes(self, t: int) -> dict[Pass, bytes]:
        """The uploaded files of frame t, as Blender writes them."""
        vector = self.vector(t)
        return {
            Pass.BEAUTY: png_bytes(self.beauty(t)),
            Pass.VECTOR: exr_bytes(dict(zip("XYZW", np.moveaxis(vector, 2, 0), strict=True))),
            Pass.DEPTH: exr_bytes({"V": self.depth(t)[..., 0]}),
        }


SHOT = MovingSquare()


def test_flow_to_vector_inverts_vector_to_flow() -> None:
    from backend.vision.passes import vector_to_flow

    rng = np.random.default_rng(0)
    back, fwd = rng.normal(size=(2, 5, 7, 2)).astype(np.float32)
    got_back, got_fwd = vector_to_flow(flow_to_vector(back, fwd))
    np.testing.assert_array_equal(got_back, back)
    np.testing.assert_array_equal(got_fwd, fwd)


def test_the_disoccluded_strip_and_the_edge_are_not_visible_in_the_previous_frame() -> None:
    t = 3
    now = FrameMotion(*SHOT.flows(t), SHOT.depth(t)[..., 0])
    before = FrameMotion(*SHOT.flows(t - 1), SHOT.depth(t - 1)[..., 0])
    top = (SHOT.height - SHOT.size) // 2
    rows = slice(top, top + SHOT.size)
    strip = slice(SHOT.left(t - 1), SHOT.left(t))  # wall the square uncovered
    for motion_now, motion_before in ((now, before), (now.__class__(*SHOT.flows(t)), before)):
        visible = visible_in_previous(motion_now, motion_before)
        assert not visible[rows, strip].any()
        hidden = np.zeros_like(visible)
        hidden[rows, strip] = True
        assert visible[~hidden].all()  # the square itself and the rest of the wall

    # Depth alone catches it too: the previous frame saw the square there, 8 units nearer.
    still = FrameMotion(np.zeros_like(now.backward), np.zeros_like(now.forward), now.depth)
    still_before = FrameMotion(still.backward, still.forward, before.depth)
    assert not visible_in_previous(still, still_before)[rows, strip].any()

    # Motion that leads out of the picture has nothing to compare with.
    out = np.zeros_like(now.backward)
    out[:, :, 0] = -5.0
    edge = visible_in_previous(FrameMotion(out, -out), FrameMotion(out, -out))
    assert not edge[:, :5].any() and edge[:, 5:].all()


def test_a_steady_shot_scores_zero_and_flicker_scores_high() -> None:
    frames = [SHOT.beauty(t) for t in range(8)]
    vectors = [SHOT.vector(t) for t in range(8)]
    depths = [SHOT.depth(t) for t in range(8)]
    steady = shot_warping_error(frames, vectors, depths)
    assert steady.mean < 1e-10 and len(steady.per_pair) == 7
    assert 0.9 < steady.visible_fraction < 1.0  # the uncovered strips are left out

    # Without the masks the uncovered strips count: not zero any more.
    flows = [SHOT.flows(t)[0] for t in range(1, 8)]
    assert warping_error(frames, flows) > 1e-4

    rng = np.random.default_rng(1)
    flicker = [
        np.clip(f.astype(np.int16) + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)
        for f in frames
    ]
    noisy = shot_warping_error(flicker, vectors, depths)
    assert noisy.mean > 1e-3
    with pytest.raises(ValueError, match="two frames"):
        shot_warping_error(frames[:1], vectors[:1])
    with pytest.raises(ValueError, match="one vector pass"):
        shot_warping_error(frames, vectors[:3])


def test_a_jobs_folders_give_the_same_figure(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / ("a" * 32)
    frames = [*range(10, 16), 20, 21]  # a gap: 15 -> 20 is no pair
    rng = np.random.default_rng(2)
    outputs = {}
    for t in frames:
        image = np.clip(SHOT.beauty(t - 10).astype(np.int16) + rng.integers(-9, 10, (64, 64, 3)),
                        0, 255).astype(np.uint8)  # fmt: skip
        outputs[t] = image
        files = SHOT.passes(t - 10)
        for folder, data in (
            (job / "outputs", png_bytes(image)),
            (job / "inputs" / "vector", files[Pass.VECTOR]),
            (job / "inputs" / "depth", files[Pass.DEPTH]),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            ext = "png" if folder.name == "outputs" else "exr"
            (folder / f"{t:06d}.{ext}").write_bytes(data)

    report = job_warping_error(job)
    assert len(report.per_pair) == 6  # 10-11 ... 14-15 and 20-21
    run = range(10, 16)
    direct = shot_warping_error(
        [outputs[t] for t in run],
        [SHOT.vector(t - 10) for t in run],
        [SHOT.depth(t - 10) for t in run],
    )
    np.testing.assert_allclose(report.per_pair[:5], direct.per_pair, rtol=1e-5)
    without_depth = folder_warping_error(job / "outputs", job / "inputs" / "vector")
    assert len(without_depth.per_pair) == 6
    with pytest.raises(ValueError, match="consecutive"):
        folder_warping_error(tmp_path / "nothing", job / "inputs" / "vector")
