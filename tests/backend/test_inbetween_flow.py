"""Image-only `flow` in-betweening: what each part of it promises, on synthetic keys.

Line art stays one dark piece; where the motion is not to be trusted the result falls back to a
cross-fade instead of tearing; the frame near a key favours that key; motion far beyond DIS's
own reach is found from matched features; a neighbouring key bends the path.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from backend.bench.scores import ink_kept, stroke_pieces
from backend.jobs import JobSpec, Pass
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_flow import FlowInterpolator, Neighbour
from backend.pipelines.inbetween_keys import crossfade
from backend.vision import lineart
from backend.vision.flow import fill_holes, flow_both_ways
from backend.vision.motion import initial_flows, rigid_motions
from tests.backend.test_inbetween import MemoryContext

H, W = 128, 176
INK_RGB = np.array([20, 20, 30], np.uint8)


def _strokes(
    shift: tuple[float, float], turn: float, swing: float = 0.0, extra: bool = False
) -> list[np.ndarray]:
    """A little figure of joined strokes (a hook, a stem, two branches swinging about their
    joint by `swing` radians), moved and turned."""
    t = np.linspace(0.0, 1.0, 30)[:, None]
    hook = np.hstack([20 + 14 * np.cos(np.pi * t), 30 - 14 * np.sin(np.pi * t)])
    stem = np.hstack([6 + 0 * t, 30 + 34 * t])
    strokes = [hook, stem]
    for angle, length in ((0.6 + swing, 22.0), (2.4 - swing, 20.0)):
        joint = np.array([6.0, 46.0])
        strokes.append(np.stack([joint, joint + length * np.array([np.cos(angle), np.sin(angle)])]))
    if extra:
        strokes.append(np.array([[96, 20], [116, 35]]))  # a stroke far from the rest
    c, s = math.cos(turn), math.sin(turn)
    rot = np.array([[c, -s], [s, c]])
    return [(p - [6, 45]) @ rot.T + [40 + shift[0], 45 + shift[1]] for p in strokes]


def drawing(
    shift: tuple[float, float], turn: float, film: bool, swing: float = 0.0, extra: bool = False
) -> np.ndarray:
    """uint8 ink on white (RGB), or ink on transparent film (RGBA, colour 0 where clear)."""
    big = np.zeros((H * 4, W * 4), np.uint8)
    for p in _strokes(shift, turn, swing, extra):
        points = np.rint((p + 0.5) * 4 * 16 - 8).astype(np.int32)
        cv2.polylines(big, [points], False, 255, 12, cv2.LINE_8, 4)
    cover = cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if film:
        out = np.zeros((H, W, 4), np.float32)
        out[..., :3] = INK_RGB / 255.0 * (cover[..., None] > 0)
        out[..., 3] = cover
    else:
        out = 1.0 - cover[..., None] * (1.0 - INK_RGB / 255.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def run_job(keys: dict[int, np.ndarray], frames: tuple[int, ...]) -> MemoryContext:
    """The flow method through the pipeline, keys as uploaded (uint8)."""
    pipe = InbetweenPipeline()
    job = JobSpec("job", "inbetween", W, H, frames, tuple(sorted(keys)), {"method": "flow"})
    pipe.check_job(job)
    ctx = MemoryContext(job, {(Pass.KEYFRAME, f): img for f, img in keys.items()})
    for chunk in pipe.plan(job):
        pipe.run_chunk(ctx, chunk)
    return ctx


def unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def texture(h: int, w: int, seed: int, sigma: float = 1.5) -> np.ndarray:
    noise = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w, 3)), (0, 0), sigma)
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def square_at(x: float, y: float, size: int = 24) -> np.ndarray:
    """Textured blue-green background with a textured red square whose corner is at (x, y)."""
    img = 0.2 + 0.6 * texture(H, W, 1)
    img[..., 0] *= 0.3
    patch = 0.3 + 0.4 * texture(size, size, 2)
    patch[..., 0] = 0.95
    xi, yi = round(x), round(y)
    img[yi : yi + size, xi : xi + size] = patch
    return img


def red_centre(img: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(img[..., 0] > 0.8)
    return float(xs.mean()), float(ys.mean())


# --- line art --------------------------------------------------------------------------------


@pytest.mark.parametrize("film", [False, True], ids=["white", "film"])
def test_a_moved_stroke_drawing_stays_one_dark_piece(film: bool) -> None:
    key0 = drawing((0, 0), 0.0, film)
    key1 = drawing((24, -8), 0.35, film, swing=0.7)
    middle = drawing((12, -4), 0.175, film, swing=0.35)
    assert stroke_pieces(key0) == stroke_pieces(key1) == 1
    ctx = run_job({1: key0, 5: key1}, (2, 3, 4))
    for frame in (2, 3, 4):
        assert stroke_pieces(ctx.outputs[frame]) == 1, frame
    # Dark where the true middle drawing is dark (a cross-fade keeps ~20 % of it that dark).
    assert ink_kept(ctx.outputs[3], middle) > 0.8
    if film:
        clear = ctx.outputs[3][..., 3] == 0
        assert clear.mean() > 0.5 and not ctx.outputs[3][clear, :3].any()


def test_composite_keeps_the_near_strokes_and_no_faint_copy() -> None:
    """Two copies of a drawing 4 px apart (motion estimated a little wrong): the composite is
    the near copy, dark and whole; the far copy adds nothing away from it (an average would
    leave two half-dark copies)."""
    paper = lineart.Paper(film=False)
    near = unit(drawing((0, 0), 0.0, False))
    far = unit(drawing((4, 3), 0.0, False))
    out = lineart.composite(near, far, paper)
    ink_out, ink_near = lineart.ink(out, paper), lineart.ink(near, paper)
    assert stroke_pieces(to_u8(out)) == 1
    assert np.all(ink_out >= ink_near - 1e-6)  # never lighter than the near strokes
    beside = cv2.dilate((ink_near >= 0.5).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    np.testing.assert_array_equal(out[~beside], near[~beside])


def test_a_walking_stick_figure_stays_whole_and_dark() -> None:
    """The benchmark's walking figure (arms and legs swinging, 30 px a key interval): every
    in-between has at most one piece more than its keys and most of the true ink, dark."""
    from backend.bench import lineart_shots

    w, h = 192, 128

    def figure(u: float) -> np.ndarray:
        ink = lineart_shots.ink(lineart_shots.figure(u, w, h), w, h, 3.0)
        return lineart_shots.picture(ink, film=True)

    keys = {1: figure(0.25), 5: figure(0.5)}
    pipe = InbetweenPipeline()
    job = JobSpec("job", "inbetween", w, h, (2, 3, 4), (1, 5), {"method": "flow"})
    ctx = MemoryContext(job, {(Pass.KEYFRAME, f): img for f, img in keys.items()})
    for chunk in pipe.plan(job):
        pipe.run_chunk(ctx, chunk)
    for frame in (2, 3, 4):
        out = ctx.outputs[frame]
        assert stroke_pieces(out) <= 2, frame
        assert ink_kept(out, figure(0.25 + (frame - 1) / 16)) > 0.6, frame


def test_line_art_is_told_from_pictures() -> None:
    for film in (False, True):
        key = unit(drawing((0, 0), 0.0, film))
        key = key if film else key[..., :3]
        paper = lineart.detect(key, key)
        assert paper is not None and paper.film == film
    picture = square_at(30, 30)
    assert lineart.detect(picture, picture) is None
    flat = np.full((H, W, 3), 0.9, np.float32)
    assert lineart.detect(flat, flat) is None  # nothing drawn: no strokes to keep whole


def test_near_key_strokes_win_a_stroke_only_one_key_has() -> None:
    """The frame a quarter of the way shows key 0's drawing, three quarters key 1's."""
    key0 = drawing((0, 0), 0.0, False)
    key1 = drawing((4, 0), 0.0, False, extra=True)
    far_stroke = (slice(12, 42), slice(125, 165))
    assert (unit(key1)[far_stroke] < 0.5).any() and not (unit(key0)[far_stroke] < 0.5).any()
    ctx = run_job({1: key0, 5: key1}, (2, 4))
    assert not (unit(ctx.outputs[2])[far_stroke] < 0.5).any()
    assert (unit(ctx.outputs[4])[far_stroke] < 0.5).any()


# --- pictures: trust and fallback ------------------------------------------------------------


def test_where_the_keys_share_no_motion_the_result_falls_back_to_a_crossfade() -> None:
    """Two unrelated textures: no motion explains one by the other, so every flow is wrong;
    the in-between must be (close to) the cross-fade, not a torn splat of one key."""
    key0, key1 = texture(H, W, 11, 1.0), texture(H, W, 12, 1.0)
    interp = FlowInterpolator(key0, key1)
    for s in (0.25, 0.5, 0.75):
        blend = crossfade(key0, key1, s)
        assert np.mean(np.abs(interp.at(s) - blend)) < 0.03, s  # a splat: 0.05 to 0.07


def test_the_frame_near_a_key_favours_that_key() -> None:
    """No motion, a slight brightness change (both keys trusted): the frame at s is
    (1 − s)·key0 + s·key1, not the mirror, which would be 0.02 off at s = 0.25."""
    key0 = 0.2 + 0.5 * texture(H, W, 3)
    key1 = key0 + 0.04
    interp = FlowInterpolator(key0, key1)
    for s in (0.25, 0.75):
        expected = (1.0 - s) * key0 + s * key1
        assert np.mean(np.abs(interp.at(s) - expected)) < 0.004, s


def test_motion_beyond_dis_reach_is_found_from_matched_features() -> None:
    """A square moves 80 px (over three times its size): DIS alone settles on the background's
    motion; the matched hypotheses find it, and the in-between shows it whole halfway."""
    key0, key1 = square_at(10, 36), square_at(90, 30)
    f01, _ = flow_both_ways(key0, key1)
    inside = (slice(40, 56), slice(14, 30))
    assert np.median(f01[inside][..., 0]) == pytest.approx(80.0, abs=1.0)
    middle = FlowInterpolator(key0, key1).at(0.5)
    x, y = red_centre(middle)
    assert x == pytest.approx(50 + 12, abs=1.5) and y == pytest.approx(33 + 12, abs=1.5)
    assert np.count_nonzero(middle[..., 0] > 0.8) > 0.7 * 24 * 24


def test_rigid_motions_separate_two_moving_groups() -> None:
    rng = np.random.default_rng(0)
    pa = rng.random((60, 2)).astype(np.float32) * 200
    pb = pa.copy()
    pb[:30] += (5.0, 0.0)
    pb[30:] += (-20.0, 7.0)
    models = rigid_motions(pa, pb, tolerance=1.0)
    shifts = sorted(tuple(np.round(m[:, 2]).astype(int)) for m in models[:2])
    assert shifts == [(-20, 7), (5, 0)]


def test_initial_flows_keep_dis_where_it_explains_the_pictures() -> None:
    g = (255 * texture(H, W, 5)[..., 0]).astype(np.uint8)
    shifted = np.roll(g, 3, axis=1)
    dis = np.zeros((H, W, 2), np.float32)
    dis[..., 0] = 3.0
    init_ab, _ = initial_flows(g, shifted, dis, -dis)
    assert np.median(init_ab[..., 0]) == pytest.approx(3.0)


# --- paths through more than two keys ---------------------------------------------------------


def _on_circle(angle: float) -> tuple[float, float]:
    return 80 + 40 * math.cos(angle), 56 + 40 * math.sin(angle)


STEP = math.radians(60)  # between keys, along the circle
START = -0.3


def test_a_neighbouring_key_bends_the_path() -> None:
    """A square on a circle: with the keys before and after, the in-between moves off the
    straight chord towards the arc it really follows."""
    keys = [square_at(*_on_circle(START + i * STEP)) for i in (-1, 0, 1, 2)]
    on_arc = np.array(_on_circle(START + 0.5 * STEP)) + 12
    on_chord = (np.array(_on_circle(START)) + np.array(_on_circle(START + STEP))) / 2 + 12
    assert np.linalg.norm(on_arc - on_chord) > 5.0
    straight = np.array(red_centre(FlowInterpolator(keys[1], keys[2]).at(0.5)))
    bent = FlowInterpolator(keys[1], keys[2], "medium", Neighbour(keys[0], 1.0),
                            Neighbour(keys[3], 1.0)).at(0.5)  # fmt: skip
    assert np.linalg.norm(straight - on_chord) < 1.5
    miss = np.linalg.norm(np.array(red_centre(bent)) - on_arc)
    assert miss < 0.6 * np.linalg.norm(straight - on_arc)


def test_the_pipeline_hands_neighbouring_keys_to_flow() -> None:
    keys = {1 + 4 * i: to_u8(square_at(*_on_circle(START + (i - 1) * STEP))) for i in range(4)}
    ctx = run_job(keys, (7,))
    on_arc = np.array(_on_circle(START + 0.5 * STEP)) + 12
    on_chord = (np.array(_on_circle(START)) + np.array(_on_circle(START + STEP))) / 2 + 12
    centre = np.array(red_centre(unit(ctx.outputs[7])))
    assert np.linalg.norm(centre - on_arc) < 0.6 * np.linalg.norm(on_chord - on_arc)


# --- hole filling ----------------------------------------------------------------------------


def test_fill_holes_keeps_what_is_known_and_fills_the_rest_smoothly() -> None:
    field = np.zeros((40, 60, 2), np.float32)
    field[..., 0] = 4.0
    field[..., 1] = np.linspace(-3, 3, 60)[None, :]
    known = np.ones((40, 60), np.float32)
    known[10:30, 20:40] = 0.0
    filled = fill_holes(field * known[..., None], known)
    np.testing.assert_array_equal(filled[known == 1], field[known == 1])
    assert np.abs(filled[..., 0] - 4.0).max() < 1e-4
    assert np.abs(filled[..., 1] - field[..., 1]).max() < 1.0
