"""In-betweening (image-only): timing, exact keys, motion, alpha, on twos, cancel, params."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from backend.jobs import InputError, JobSpec, Pass
from backend.pipelines.base import Canceled
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_params import InbetweenParams
from backend.vision.flow import consistency_error, dis_flow, occlusion_mask
from backend.vision.splat import depth_importance, softmax_splat

H, W = 64, 96
SQUARE = 20
SQUARE_Y = 22


@dataclass
class MemoryContext:
    """A RunContext over dicts of arrays; decodes uint8 inputs the way the backend does (/255)."""

    job: JobSpec
    inputs: dict[tuple[Pass, int], np.ndarray]
    device: str = "cpu"
    cancel_after: int | None = None  # check_cancel raises on this call (1-based)
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    progress_log: list[tuple[str, int, int]] = field(default_factory=list)
    cancel_checks: int = 0

    @property
    def models(self) -> Any:
        return None

    def has_input(self, pass_: Pass, frame: int) -> bool:
        return (pass_, frame) in self.inputs

    def input(self, pass_: Pass, frame: int) -> np.ndarray:
        return self.inputs[(pass_, frame)].astype(np.float32) / 255.0

    def finished_output(self, frame: int) -> np.ndarray | None:
        return self.outputs.get(frame)

    def write_output(self, frame: int, image: np.ndarray) -> None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4)
        assert image.shape[:2] == (self.job.height, self.job.width)
        self.outputs[frame] = image.copy()

    def progress(self, stage: str, done: int, total: int) -> None:
        self.progress_log.append((stage, done, total))

    def check_cancel(self) -> None:
        self.cancel_checks += 1
        if self.cancel_after is not None and self.cancel_checks >= self.cancel_after:
            raise Canceled()


def _texture(h: int, w: int, seed: int, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigma)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min())


def square_scene(x: int) -> np.ndarray:
    """Textured blue-green background, textured red square with its left edge at x (uint8)."""
    img = 0.2 + 0.6 * _texture(H, W, 1, 2.0)
    img[..., 0] *= 0.3
    patch = 0.3 + 0.4 * _texture(SQUARE, SQUARE, 2, 1.5)
    patch[..., 0] = 0.9
    img[SQUARE_Y : SQUARE_Y + SQUARE, x : x + SQUARE] = patch
    return np.rint(img * 255).astype(np.uint8)


DISC_RGB = np.array([230, 60, 30])


def disc_scene(cx: float, cy: float = 32.0, radius: float = 10.0) -> np.ndarray:
    """Anti-aliased flat-colour disc on transparency; transparent pixels hold junk green."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    alpha = np.clip(radius + 0.5 - np.hypot(xs - cx, ys - cy), 0.0, 1.0)
    img = np.zeros((H, W, 4), dtype=np.uint8)
    img[..., :3] = DISC_RGB
    img[alpha == 0, :3] = (0, 255, 0)
    img[..., 3] = np.rint(alpha * 255).astype(np.uint8)
    return img


def make_job(keys: tuple[int, ...], frames: tuple[int, ...], **params: Any) -> JobSpec:
    return JobSpec("job", "inbetween", W, H, frames, keys, params)


def run_job(keys: dict[int, np.ndarray], frames: tuple[int, ...], **params: Any) -> MemoryContext:
    pipe = InbetweenPipeline()
    job = make_job(tuple(sorted(keys)), frames, **params)
    pipe.check_job(job)
    ctx = MemoryContext(job, {(Pass.KEYFRAME, f): img for f, img in keys.items()})
    for chunk in pipe.plan(job):
        pipe.run_chunk(ctx, chunk)
    return ctx


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def red_centroid(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(img[..., 0] > 180)
    return float(xs.mean()), float(ys.mean())


# --- pipeline: timing and keys ---------------------------------------------------------------


def test_plan_gives_every_frame_to_one_chunk_with_its_two_keys() -> None:
    job = make_job((1, 4, 11), tuple(range(0, 14)))
    chunks = InbetweenPipeline().plan(job)
    assert [c.frames for c in chunks] == [(0, 1, 2, 3), (4, 5, 6, 7, 8, 9, 10, 11, 12, 13)]
    assert [c.context for c in chunks] == [(1, 4), (4, 11)]
    assert [c.index for c in chunks] == [0, 1]
    assert InbetweenPipeline().plan(job) == chunks


def test_plan_skips_intervals_without_requested_frames() -> None:
    chunks = InbetweenPipeline().plan(make_job((0, 10, 20), (12, 15)))
    assert [(c.frames, c.context) for c in chunks] == [((12, 15), (10, 20))]


def test_uneven_keys_write_exactly_the_requested_frames_and_keys_untouched() -> None:
    keys = {1: square_scene(10), 4: square_scene(22), 11: square_scene(36)}
    frames = (0, 1, 2, 3, 4, 6, 9, 11, 13)
    ctx = run_job(keys, frames)
    assert sorted(ctx.outputs) == list(frames)
    for f, img in keys.items():
        np.testing.assert_array_equal(ctx.outputs[f], img)
    np.testing.assert_array_equal(ctx.outputs[0], keys[1])  # before the first key: hold it
    np.testing.assert_array_equal(ctx.outputs[13], keys[11])  # after the last key: hold it
    for f in (2, 3, 6, 9):
        assert ctx.outputs[f].shape == (H, W, 3)
        assert not any(np.array_equal(ctx.outputs[f], k) for k in keys.values())


def test_uneven_spacing_follows_time() -> None:
    # Keys 4 → 11 move the square 14 px: frame 9 is 5/7 of the way, at x = 32.
    ctx = run_job({4: square_scene(22), 11: square_scene(36)}, (9,))
    cx, _ = red_centroid(ctx.outputs[9])
    assert abs(cx - red_centroid(square_scene(32))[0]) <= 1.5


def test_moving_square_lands_in_the_middle() -> None:
    ctx = run_job({0: square_scene(20), 2: square_scene(36)}, (1,))
    cx, cy = red_centroid(ctx.outputs[1])
    true_x, true_y = red_centroid(square_scene(28))
    assert abs(cx - true_x) <= 1.5
    assert abs(cy - true_y) <= 1.5


def test_flow_beats_crossfade_against_the_true_middle_frame() -> None:
    keys = {0: square_scene(20), 2: square_scene(36)}
    truth = square_scene(28)
    flow = psnr(run_job(keys, (1,)).outputs[1], truth)
    fade = psnr(run_job(keys, (1,), method="crossfade").outputs[1], truth)
    assert flow >= fade + 6.0, (flow, fade)  # measured 34.5 vs 22.8 dB


def test_identical_keys_give_identical_inbetweens() -> None:
    key = square_scene(30)
    ctx = run_job({0: key, 6: key.copy()}, tuple(range(7)))
    for f in range(7):
        np.testing.assert_array_equal(ctx.outputs[f], key)


def test_crossfade_is_the_time_weighted_mix() -> None:
    a = np.zeros((H, W, 3), np.uint8)
    b = np.full((H, W, 3), 200, np.uint8)
    ctx = run_job({0: a, 4: b}, (1, 2, 3), method="crossfade")
    assert [int(ctx.outputs[f][0, 0, 0]) for f in (1, 2, 3)] == [50, 100, 150]


# --- alpha -----------------------------------------------------------------------------------


def test_rgba_keys_keep_clean_alpha_and_colour() -> None:
    keys = {0: disc_scene(30.0), 2: disc_scene(44.0)}
    ctx = run_job(keys, (0, 1, 2))
    out = ctx.outputs[1]
    assert out.shape == (H, W, 4)
    np.testing.assert_array_equal(ctx.outputs[0], keys[0])

    # Far from every position of the disc, nothing appears: alpha exactly 0, colour 0.
    near = np.zeros((H, W), bool)
    for img in (keys[0], keys[2], disc_scene(37.0)):
        near |= cv2.dilate((img[..., 3] > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert np.all(out[~near] == 0)

    # Where anything is visible, it is the disc's colour: no dark or green fringe.
    seen = out[..., 3] > 0
    assert seen.sum() > 200
    assert np.abs(out[seen, :3].astype(int) - DISC_RGB).max() <= 3

    # And the disc sits between the keys.
    ys, xs = np.nonzero(out[..., 3] > 127)
    assert abs(xs.mean() - 37.0) <= 1.5 and abs(ys.mean() - 32.0) <= 1.5


def test_rgba_crossfade_is_premultiplied() -> None:
    keys = {0: disc_scene(30.0), 2: disc_scene(54.0)}
    out = run_job(keys, (1,), method="crossfade").outputs[1]
    seen = out[..., 3] > 0
    assert np.abs(out[seen, :3].astype(int) - DISC_RGB).max() <= 3
    assert np.all(out[~seen] == 0)


# --- on twos, progress, cancel ---------------------------------------------------------------


@pytest.mark.parametrize("last_key", [8, 7])
def test_on_twos_holds_pairs(last_key: int) -> None:
    keys = {0: square_scene(16), last_key: square_scene(48)}
    frames = tuple(range(last_key + 1))
    out = run_job(keys, frames, on_twos=True, flow_preset="fast").outputs
    for f in range(1, last_key, 2):
        np.testing.assert_array_equal(out[f], out[f - 1])
    for f in range(2, last_key, 2):
        assert not np.array_equal(out[f], out[f - 1])
    np.testing.assert_array_equal(out[last_key], keys[last_key])


def test_on_twos_computes_the_held_frame_even_when_it_was_not_requested() -> None:
    keys = {0: square_scene(16), 8: square_scene(48)}
    both = run_job(keys, (2, 3), on_twos=True).outputs
    alone = run_job(keys, (3,), on_twos=True).outputs
    np.testing.assert_array_equal(alone[3], both[2])


def test_progress_is_reported_per_frame() -> None:
    ctx = run_job({0: square_scene(20), 4: square_scene(36)}, (0, 1, 2, 3, 4))
    assert ctx.progress_log == [("inbetween", i, 5) for i in range(1, 6)]
    assert ctx.cancel_checks == 5


def test_cancel_mid_chunk_stops_writing() -> None:
    pipe = InbetweenPipeline()
    job = make_job((0, 6), tuple(range(7)))
    keys = {(Pass.KEYFRAME, 0): square_scene(20), (Pass.KEYFRAME, 6): square_scene(40)}
    ctx = MemoryContext(job, keys, cancel_after=3)
    (chunk,) = pipe.plan(job)
    with pytest.raises(Canceled):
        pipe.run_chunk(ctx, chunk)
    assert sorted(ctx.outputs) == [0, 1]


# --- the job and its params ------------------------------------------------------------------


def test_inputs_and_models() -> None:
    pipe = InbetweenPipeline()
    job = make_job((1, 4, 11), (0, 2, 4))
    assert pipe.required_inputs(job) == {Pass.KEYFRAME: (1, 4, 11)}
    accepted = pipe.accepted_inputs(job)
    assert accepted[Pass.KEYFRAME] == (1, 4, 11)
    assert tuple(accepted[Pass.VECTOR]) == tuple(accepted[Pass.DEPTH]) == (0, 1, 2, 4, 11)
    assert pipe.missing_models(job, None) == []
    assert pipe.params_model() is InbetweenParams
    assert InbetweenParams() == InbetweenParams(method="flow", on_twos=False, flow_preset="medium")


@pytest.mark.parametrize(
    ("keys", "frames", "params", "message"),
    [
        ((0, 4), (1,), {"sharpness": 2}, "sharpness"),
        ((0, 4), (1,), {"flow_preset": "slow"}, "flow_preset"),
        ((0, 4), (1,), {"method": "diffusion", "diffusion": {"steps": 0}}, "diffusion.steps"),
        ((3,), (3,), {}, "at least two keyframes"),
        ((), (3,), {}, "at least two keyframes"),
        ((4, 1), (2,), {}, "ascending"),
        ((1, 1, 4), (2,), {}, "ascending"),
        ((0, 4), (), {}, "No output frames"),
        ((0, 4), (3, 2), {}, "ascending"),
    ],
)
def test_check_job_refuses_nonsense(
    keys: tuple[int, ...], frames: tuple[int, ...], params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        InbetweenPipeline().check_job(make_job(keys, frames, **params))


def test_params_model_forbids_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        InbetweenParams.model_validate({"method": "flow", "strength": 0.5})


def test_tiny_frames_need_crossfade() -> None:
    job = JobSpec("j", "inbetween", 8, 8, (1,), (0, 2), {})
    with pytest.raises(InputError, match="crossfade"):
        InbetweenPipeline().check_job(job)
    InbetweenPipeline().check_job(
        JobSpec("j", "inbetween", 8, 8, (1,), (0, 2), {"method": "crossfade"})
    )


# --- flow and splatting ----------------------------------------------------------------------


def test_dis_flow_direction_and_consistency() -> None:
    a = square_scene(20)
    b = square_scene(28)
    f_ab = dis_flow(a, b, "medium")
    f_ba = dis_flow(b, a, "medium")
    assert f_ab.shape == (H, W, 2) and f_ab.dtype == np.float32
    inner = (slice(SQUARE_Y + 4, SQUARE_Y + SQUARE - 4), slice(24, 36))
    assert np.median(f_ab[inner][..., 0]) == pytest.approx(8.0, abs=0.5)
    assert np.median(f_ab[inner][..., 1]) == pytest.approx(0.0, abs=0.5)
    assert np.median(consistency_error(f_ab, f_ba)[inner]) < 0.5
    # Background that the square covers in b has no match: the check flags some of it.
    hidden = occlusion_mask(f_ab, f_ba)
    assert hidden[SQUARE_Y + 5 : SQUARE_Y + SQUARE - 5, 41:47].mean() > 0.5
    assert hidden[:10].mean() < 0.1


def test_splat_integer_shift_is_exact_and_leaves_a_hole() -> None:
    img = np.random.default_rng(3).random((6, 9, 3)).astype(np.float32)
    flow = np.zeros((6, 9, 2), np.float32)
    flow[..., 0] = 2.0
    out = softmax_splat(img, flow)
    np.testing.assert_array_equal(out.image[:, 2:], img[:, :-2])
    assert np.all(out.coverage[:, :2] == 0) and np.all(out.image[:, :2] == 0)
    np.testing.assert_allclose(out.coverage[:, 2:], 1.0)


def test_splat_importance_decides_who_is_in_front() -> None:
    img = np.array([[[0.0], [1.0], [0.5]]], np.float32)  # 1x3, one channel
    flow = np.zeros((1, 3, 2), np.float32)
    flow[0, 0, 0] = 1.0  # pixel 0 lands on pixel 1
    fair = softmax_splat(img, flow)
    assert fair.image[0, 1, 0] == pytest.approx(0.5)
    depth = np.array([[1.0, 5.0, 3.0]], np.float32)  # pixel 0 is nearer
    near_wins = softmax_splat(img, flow, depth_importance(depth))
    assert near_wins.image[0, 1, 0] < 0.01
    assert near_wins.coverage[0, 1] == pytest.approx(2.0)


def _reference_splat(
    img: np.ndarray, flow: np.ndarray, importance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax splatting written out pixel by pixel: (image, coverage)."""
    h, w, c = img.shape
    acc = np.zeros((h, w, c))
    weight = np.zeros((h, w))
    coverage = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            px, py = x + flow[y, x, 0], y + flow[y, x, 1]
            x0, y0 = int(np.floor(px)), int(np.floor(py))
            for tx, ty in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                if 0 <= tx < w and 0 <= ty < h:
                    share = (1 - abs(px - tx)) * (1 - abs(py - ty))
                    coverage[ty, tx] += share
                    weight[ty, tx] += share * np.exp(importance[y, x])
                    acc[ty, tx] += share * np.exp(importance[y, x]) * img[y, x]
    landed = weight > 0
    out = np.where(landed[..., None], acc / np.where(landed, weight, 1.0)[..., None], 0.0)
    return out, coverage


def test_splat_matches_the_per_pixel_definition_at_fractional_and_outside_positions() -> None:
    rng = np.random.default_rng(5)
    img = rng.random((7, 10, 3)).astype(np.float32)
    flow = (rng.random((7, 10, 2)).astype(np.float32) - 0.5) * 6.0  # some land outside
    flow[0, 0] = (40.0, -30.0)  # far off the image: adds nothing
    importance = (rng.random((7, 10)) * 8.0 - 4.0).astype(np.float32)
    out = softmax_splat(img, flow, importance)
    ref_image, ref_coverage = _reference_splat(img, flow, importance)
    np.testing.assert_allclose(out.image, ref_image, atol=1e-5)
    np.testing.assert_allclose(out.coverage, ref_coverage, atol=1e-5)
    assert out.image.dtype == np.float32 and out.image.shape == (7, 10, 3)


def test_splat_ignores_non_finite_flow() -> None:
    img = np.ones((4, 5, 1), np.float32)
    flow = np.zeros((4, 5, 2), np.float32)
    flow[1, 2] = np.nan
    out = softmax_splat(img, flow)
    assert out.coverage[1, 2] == 0.0 and out.image[1, 2, 0] == 0.0
    assert out.coverage.sum() == pytest.approx(19.0)
