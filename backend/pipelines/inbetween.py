"""In-betweening: keyframe images at frame numbers in, every frame between them out.

Image-only methods: "flow" (DIS optical flow both ways from matched motion hypotheses, both
keys warped to the in-between and blended by how far each is trusted, a cross-fade where
neither is; line art kept in whole dark strokes; paths bent through neighbouring keys) and
"crossfade". Render-assisted ("render": exact motion from the vector/depth passes) lives in
inbetween_guided.py; generative ("diffusion": SparseCtrl keyframes in AnimateDiff) in
inbetween_diffusion.py. Each method is an object in inbetween_methods.METHODS; this pipeline
does what they share and hands them chunks.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from ..vision import lineart
from ..vision.flow import (
    MIN_FLOW_SIZE,
    Preset,
    backward_warp,
    consistency_error,
    fill_holes,
    flow_both_ways,
    photometric_error,
    resize_flow,
    shrink,
    to_gray_u8,
)
from ..vision.splat import Splat, premultiply, softmax_splat, unpremultiply
from . import base, inbetween_methods
from .base import Chunk, FrameRanges, InputError, JobSpec, Pass, PipelineError, RunContext
from .inbetween_diffusion import DiffusionParams
from .inbetween_guided import GuidedInterpolator, guide_ranges

STAGE = "inbetween"

# Softmax importance = -(PHOTO_WEIGHT · colour error + CONSISTENCY_WEIGHT · flow disagreement).
# Colour error is the mean absolute difference in 0..1, the disagreement is in pixels.
PHOTO_WEIGHT = 20.0
CONSISTENCY_WEIGHT = 0.1
IMPORTANCE_FLOOR = -30.0
# Importance added to pixels moving at least FOREGROUND_PX away from the shot's median motion.
# Only as far as its motion is sure: exp(−colour error / FOREGROUND_SURE_ERROR − disagreement
# / FOREGROUND_SURE_PX).
FOREGROUND_BONUS = 4.0
FOREGROUND_PX = 4.0
FOREGROUND_SURE_ERROR = 0.03
FOREGROUND_SURE_PX = 1.0
# A splatted pixel is fully trusted once time-weighted coverage × mean exp(importance) of what
# landed there reaches this; below, it is blended towards the cross-fade (a wrong motion then
# gives a soft blend, not a torn, ghosted splat).
FULL_TRUST = 0.3
# How far a key's pixels are trusted where the other key shows nothing, whatever their checks
# say (0: not at all beyond the checks, 1: fully).
ALONE_TRUST = 0.15
# A neighbouring key bends the path only where its motion brings back this key's colours (mean
# absolute error under this) and its two flows agree (under this many pixels).
CURVE_PHOTO_LIMIT = 0.1
CURVE_FLOW_LIMIT = 8.0
# A drawing's in-between flow is blurred this much (pixels at 192 wide, scaled with the size).
DRAWN_FLOW_SMOOTHING = 2.0
# Motion is estimated on pictures at most this long (1080p: at half size); DIS finds the same
# motion in a quarter of the time, and warping still moves every full-size pixel. A drawing's
# distance image is smooth, and so is its motion: a quarter size is enough.
FLOW_MAX_SIDE = 1024
DRAWN_FLOW_MAX_SIDE = 512


class InbetweenParams(BaseModel):
    """method: "flow" (estimated optical flow, the default), "crossfade", "diffusion", or
    "render": render-assisted, the motion taken from the renderer's Vector and Depth passes,
    which must then be uploaded for every frame from the first key to the last (the job's
    missing inputs name them); chosen explicitly, never guessed from what was uploaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["flow", "crossfade", "diffusion", "render"] = "flow"
    on_twos: bool = False
    flow_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    diffusion: DiffusionParams | None = None  # method "diffusion" only; None: its defaults


def parse_params(raw: Mapping[str, Any]) -> InbetweenParams:
    return base.parse_params(InbetweenParams, raw, "in-between")


# ---------------------------------------------------------------------------------------------
# Pixels


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float 0..1 → uint8. Exact inverse of decoding an 8-bit image as value/255."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def colour_layout(image: np.ndarray) -> np.ndarray:
    """Decoded key (HxW, HxWx1..4) → float32 RGB or RGBA with straight alpha."""
    img = image.astype(np.float32, copy=False)
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[2]
    if channels == 1:
        return np.repeat(img, 3, axis=2)
    if channels == 2:
        return np.concatenate([np.repeat(img[..., :1], 3, axis=2), img[..., 1:]], axis=2)
    if channels in (3, 4):
        return img
    raise PipelineError(f"A keyframe has {channels} channels; expected grey, RGB or RGBA.")


def with_alpha(image: np.ndarray) -> np.ndarray:
    if image.shape[2] == 4:
        return image
    return np.concatenate([image, np.ones_like(image[..., :1])], axis=2)


def output_uint8(image: np.ndarray) -> np.ndarray:
    """Straight-alpha float → uint8, with colour 0 wherever alpha rounds to 0."""
    out = to_uint8(image)
    if out.shape[2] == 4:
        out[..., :3][out[..., 3] == 0] = 0
    return out


def crossfade(key0: np.ndarray, key1: np.ndarray, s: float) -> np.ndarray:
    """(1-s)·key0 + s·key1, blended premultiplied when there is alpha."""
    if key0.shape[2] == 4:
        mixed = (1.0 - s) * premultiply(key0) + s * premultiply(key1)
        return unpremultiply(mixed)
    return ((1.0 - s) * key0 + s * key1).astype(np.float32)


@dataclass(frozen=True)
class Neighbour:
    """The key beyond one end of an interval, for bending the path: its picture, and how far
    it is from that end in units of the interval's length."""

    image: np.ndarray
    span: float


@dataclass(frozen=True)
class Side:
    """One key's pixels on their way through the interval: where each is at time s (0 at this
    key, 1 at the other) is p + s·flow + s·(s − 1)·curve, a straight path when curve is None."""

    work: np.ndarray  # the key, premultiplied when it has alpha
    # The motion, at most FLOW_MAX_SIDE long (the key itself stays full size):
    flow: np.ndarray  # to the other key
    importance: np.ndarray  # softmax splatting importance of each pixel (higher wins)
    curve: np.ndarray | None = None

    def moved(self, s: float) -> np.ndarray:
        if self.curve is None:
            return s * self.flow
        return s * self.flow + (s * (s - 1.0)) * self.curve


def path_curve(flow: np.ndarray, beyond: np.ndarray, span: float, trust: np.ndarray) -> np.ndarray:
    """The quadratic term of a path through three keys: a pixel is at 0 at this key, at flow
    at the other (time 1) and at beyond at the neighbouring key (time −span). Scaled by trust
    (0..1 per pixel) and never longer than the longer of the two steps per unit of time (a
    swing out and back between two keys has a short step but a long curve)."""
    curve = (beyond + span * flow) / (span * (1.0 + span))
    step = np.maximum(np.linalg.norm(flow, axis=2), np.linalg.norm(beyond, axis=2) / span)
    limit = step[..., None] + 1.0
    length = np.linalg.norm(curve, axis=2, keepdims=True)
    curve *= np.minimum(1.0, limit / np.maximum(length, 1e-6))
    return (curve * trust[..., None]).astype(np.float32)


def importance_of(
    src: np.ndarray, dst: np.ndarray, f_sd: np.ndarray, f_ds: np.ndarray
) -> np.ndarray:
    """Splatting importance of src's pixels: low where the colour they land on in dst differs
    (0..1 mean absolute) or where the two flows disagree (pixels)."""
    photo = photometric_error(src, dst, f_sd)
    disagreement = consistency_error(f_sd, f_ds)
    score = -(PHOTO_WEIGHT * photo + CONSISTENCY_WEIGHT * disagreement)
    score = np.maximum(score, IMPORTANCE_FLOOR)
    # Where a moving thing and the still background land together, both matched their keys
    # equally well; the one moving against the shot's main motion is taken to be in front, but
    # only where its own motion is sure (it matched, and the two flows agree).
    dominant = np.median(f_sd.reshape(-1, 2), axis=0)
    apart = np.clip(np.linalg.norm(f_sd - dominant, axis=2) / FOREGROUND_PX, 0.0, 1.0)
    sure = np.exp(-photo / FOREGROUND_SURE_ERROR - disagreement / FOREGROUND_SURE_PX)
    return (score + FOREGROUND_BONUS * apart * sure).astype(np.float32)


class FlowInterpolator:
    """Frames between two keys (same layout, straight alpha) from estimated motion.

    Motion: DIS both ways, started from matched rigid-motion hypotheses (vision.motion), at
    most FLOW_MAX_SIDE long. For each in-between both keys' motions are reversed to the
    in-between (splatted there, holes filled) and both keys warped backward, so nothing
    cracks. Pictures: the two warps are blended by time, coverage and how sure each motion is,
    falling back to a cross-fade where neither is trusted. Line art (lineart.detect): motion
    estimated on the strokes' distance images and the nearer key's strokes kept whole and dark.
    With a neighbouring key beyond an end, that end's paths bend through it. Motion is
    estimated once, on the first frame asked for.
    """

    def __init__(
        self,
        key0: np.ndarray,
        key1: np.ndarray,
        preset: Preset = "medium",
        before: Neighbour | None = None,
        after: Neighbour | None = None,
    ) -> None:
        self.key0, self.key1 = key0, key1
        self.preset = preset
        self.before, self.after = before, after
        self.has_alpha = key0.shape[2] == 4
        self.same = bool(np.array_equal(key0, key1))
        self.paper = lineart.detect(key0, key1)
        self._sides: tuple[Side, Side] | None = None

    @property
    def _flow_side(self) -> int:
        return FLOW_MAX_SIDE if self.paper is None else DRAWN_FLOW_MAX_SIDE

    def _picture(self, image: np.ndarray) -> np.ndarray:
        """The 8-bit picture motion is estimated on, at most _flow_side long."""
        if self.paper is None:
            picture = to_gray_u8(image)
        else:
            picture = lineart.flow_picture(image, self.paper, lineart.reach_for(image.shape))
        return shrink(picture, self._flow_side)

    def _work(self, image: np.ndarray) -> np.ndarray:
        return premultiply(image) if self.has_alpha else image

    def sides(self) -> tuple[Side, Side]:
        """(key 0's side, key 1's side), estimated on the first call."""
        if self._sides is None:
            g0, g1 = self._picture(self.key0), self._picture(self.key1)
            # Pictures are refined down to full resolution; a drawing's distance image is
            # smooth, and finer steps only add noise along its strokes.
            f01, f10 = flow_both_ways(g0, g1, self.preset, fine=self.paper is None)
            c0 = self._curve(g0, f01, self.before)
            c1 = self._curve(g1, f10, self.after)
            w0, w1 = self._work(self.key0), self._work(self.key1)
            small0, small1 = shrink(w0, self._flow_side), shrink(w1, self._flow_side)
            imp0 = importance_of(small0, small1, f01, f10)
            imp1 = importance_of(small1, small0, f10, f01)
            self._sides = (Side(w0, f01, imp0, c0), Side(w1, f10, imp1, c1))
        return self._sides

    def _curve(
        self, picture: np.ndarray, flow: np.ndarray, neighbour: Neighbour | None
    ) -> np.ndarray | None:
        if neighbour is None or neighbour.image.shape != self.key0.shape:
            return None
        beyond_picture = self._picture(neighbour.image)
        beyond, back = flow_both_ways(picture, beyond_picture, self.preset, fine=self.paper is None)
        # Trust the neighbour's motion where it brings back what this key shows.
        error = photometric_error(_unit(picture), _unit(beyond_picture), beyond)
        trust = np.clip(1.0 - error / CURVE_PHOTO_LIMIT, 0.0, 1.0)
        trust *= np.clip(1.0 - consistency_error(beyond, back) / CURVE_FLOW_LIMIT, 0.0, 1.0)
        return path_curve(flow, beyond, neighbour.span, trust)

    def at(self, s: float) -> np.ndarray:
        """The frame at time s in (0, 1) between the keys, straight alpha, float 0..1."""
        if self.same:
            return self.key0
        side0, side1 = self.sides()
        if self.paper is not None:
            result = self._drawn(side0, side1, s)
        else:
            result = self._splatted(side0, side1, s)
        result = np.clip(result, 0.0, 1.0).astype(np.float32)
        return unpremultiply(result) if self.has_alpha else result

    def _splatted(self, side0: Side, side1: Side, s: float) -> np.ndarray:
        h, w = side0.work.shape[:2]
        flow0, landed0 = _reversed(side0, s)
        flow1, landed1 = _reversed(side1, 1.0 - s)
        seen0, sure0 = _seen_and_sure(landed0, w, h)
        seen1, sure1 = _seen_and_sure(landed1, w, h)
        # A key's pixels here count by how far it is in time, how much of it lands here and
        # how sure its motion is; where the other key shows nothing (a region only this key
        # sees, whose pixels fail the checks for being hidden in the other), partly regardless.
        trust0 = seen0 * (sure0 + ALONE_TRUST * (1.0 - seen1) * (1.0 - sure0))
        trust1 = seen1 * (sure1 + ALONE_TRUST * (1.0 - seen0) * (1.0 - sure1))
        w0 = ((1.0 - s) * trust0)[..., None]
        w1 = (s * trust1)[..., None]
        total = w0 + w1
        safe = np.where(total > 0.0, total, 1.0)
        warped0 = backward_warp(side0.work, resize_flow(flow0, w, h))
        warped1 = backward_warp(side1.work, resize_flow(flow1, w, h))
        mixed = (w0 * warped0 + w1 * warped1) / safe
        # Where neither key is trusted, a cross-fade: a wrong motion then gives a soft blend,
        # not a torn, ghosted picture.
        trust = np.clip(total / FULL_TRUST, 0.0, 1.0)
        fallback = (1.0 - s) * side0.work + s * side1.work
        return trust * mixed + (1.0 - trust) * fallback

    def _drawn(self, side0: Side, side1: Side, s: float) -> np.ndarray:
        assert self.paper is not None
        warped0 = backward_warp(side0.work, _drawn_flow(side0, s))
        warped1 = backward_warp(side1.work, _drawn_flow(side1, 1.0 - s))
        if s <= 0.5:
            return lineart.composite(warped0, warped1, self.paper)
        return lineart.composite(warped1, warped0, self.paper)


def _reversed(side: Side, s: float) -> tuple[np.ndarray, Splat]:
    """(backward flow from the in-between at s to the side's key, what of the key landed there)
    at the motion's own size (motion is smooth; warping with it still reads every full-size
    pixel): each key pixel's motion is splatted to where it is at s and the holes are filled
    from around, so that warping leaves no cracks."""
    moved = side.moved(s)
    landed = softmax_splat(-moved, moved, side.importance)
    return fill_holes(landed.image, np.clip(landed.coverage / 0.5, 0.0, 1.0)), landed


def _seen_and_sure(landed: Splat, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """At full size: how much of a key lands on each pixel (0..1), and how sure the motion of
    what landed is (mean exp(importance), 0..1)."""
    covered = landed.coverage > 1e-3
    sure = np.divide(landed.weight, landed.coverage, out=np.zeros_like(landed.weight),
                     where=covered).astype(np.float32)  # fmt: skip
    seen = np.minimum(landed.coverage, 1.0).astype(np.float32)
    if seen.shape != (h, w):
        seen = cv2.resize(seen, (w, h), interpolation=cv2.INTER_LINEAR)
        sure = cv2.resize(sure, (w, h), interpolation=cv2.INTER_LINEAR)
    return seen, sure


def _drawn_flow(side: Side, s: float) -> np.ndarray:
    """A drawing's backward flow at full size, blurred to remove the ripples that would kink
    or break a warped stroke."""
    h, w = side.work.shape[:2]
    flow, _ = _reversed(side, s)
    sigma = DRAWN_FLOW_SMOOTHING * max(flow.shape[:2]) / 192.0
    return resize_flow(cv2.GaussianBlur(flow, (0, 0), sigma), w, h)


def _unit(picture: np.ndarray) -> np.ndarray:
    return picture.astype(np.float32)[..., None] / 255.0


# ---------------------------------------------------------------------------------------------
# Timing


def source_frame(t: int, k0: int, on_twos: bool) -> int:
    """The frame whose picture frame t shows: on twos, odd offsets repeat the previous frame."""
    if on_twos and (t - k0) % 2 == 1:
        return t - 1
    return t


def interval_index(keys: tuple[int, ...], t: int) -> int:
    """Which key interval (0 .. len(keys)-2) frame t belongs to; outside frames go to the ends."""
    return min(max(bisect.bisect_right(keys, t) - 1, 0), len(keys) - 2)


def _strictly_ascending(values: tuple[int, ...]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


# ---------------------------------------------------------------------------------------------
# The pipeline


class _ChunkRun:
    """One chunk's state: its two keys, decoded once, and the interpolator between them."""

    def __init__(self, ctx: RunContext, k0: int, k1: int, params: InbetweenParams) -> None:
        self.ctx = ctx
        self.k0, self.k1 = k0, k1
        self.params = params
        self._keys: dict[int, np.ndarray] = {}
        self._interp: FlowInterpolator | None = None
        self._guided: GuidedInterpolator | None = None
        self._pair: tuple[np.ndarray, np.ndarray] | None = None
        self._done: dict[int, np.ndarray] = {}

    def key(self, frame: int) -> np.ndarray:
        if frame not in self._keys:
            image = colour_layout(self.ctx.input(Pass.KEYFRAME, frame))
            job = self.ctx.job
            if image.shape[:2] != (job.height, job.width):
                raise PipelineError(
                    f"Keyframe {frame} is {image.shape[1]}×{image.shape[0]} pixels but the job "
                    f"is {job.width}×{job.height}."
                )
            self._keys[frame] = image
        return self._keys[frame]

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """Both keys in one layout: RGBA if either has alpha."""
        if self._pair is None:
            a, b = self.key(self.k0), self.key(self.k1)
            if a.shape[2] != b.shape[2]:
                a, b = with_alpha(a), with_alpha(b)
            self._pair = (a, b)
        return self._pair

    def frame(self, t: int) -> np.ndarray:
        """uint8 output for frame t (t inside the chunk's interval or beyond its end keys)."""
        if t <= self.k0:
            return to_uint8(self.key(self.k0))
        if t >= self.k1:
            return to_uint8(self.key(self.k1))
        src = source_frame(t, self.k0, self.params.on_twos)
        if src == self.k0:
            return to_uint8(self.key(self.k0))
        if src not in self._done:
            self._done[src] = output_uint8(self._between(src))
        return self._done[src]

    def _between(self, t: int) -> np.ndarray:
        s = (t - self.k0) / (self.k1 - self.k0)
        key0, key1 = self.pair()
        if self.params.method == "crossfade":
            return crossfade(key0, key1, s)
        if self.params.method == "render":
            return self._render_assisted(key0, key1, t)
        if self._interp is None:
            before, after = self._neighbours(key0.shape[2] == 4)
            self._interp = FlowInterpolator(key0, key1, self.params.flow_preset, before, after)
        return self._interp.at(s)

    def _neighbours(self, alpha: bool) -> tuple[Neighbour | None, Neighbour | None]:
        """The keys just before k0 and just after k1, where the job has them and they differ
        from the end they neighbour (a hold says nothing about the path)."""
        keys = tuple(self.ctx.job.keyframes)
        i = keys.index(self.k0)
        found: list[Neighbour | None] = []
        for j, end in ((i - 1, self.k0), (i + 2, self.k1)):
            if not 0 <= j < len(keys):
                found.append(None)
                continue
            image = self.key(keys[j])
            image = with_alpha(image) if alpha else image[..., :3]
            if image.shape != self.pair()[0].shape or np.array_equal(image, self.key(end)):
                found.append(None)
                continue
            found.append(Neighbour(image, abs(keys[j] - end) / (self.k1 - self.k0)))
        return found[0], found[1]

    def _render_assisted(self, key0: np.ndarray, key1: np.ndarray, t: int) -> np.ndarray:
        if self._guided is None:
            between = range(self.k0 + 1, self.k1)
            targets = {source_frame(f, self.k0, self.params.on_twos) for f in between}
            self._guided = GuidedInterpolator(key0, key1, self.k0, self.k1, targets, self._guides)
        return self._guided.at(t)

    def _guides(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ctx.input(Pass.VECTOR, frame), self.ctx.input(Pass.DEPTH, frame)


class ImageMethod:
    """flow, crossfade and render (inbetween_methods): each in-between made on its own from the
    two keys (and, for render, the guide passes); no models."""

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        if params.method == "flow" and min(job.width, job.height) < MIN_FLOW_SIZE:
            raise InputError(
                f"Flow in-betweening needs frames of at least {MIN_FLOW_SIZE}×{MIN_FLOW_SIZE} "
                f"pixels (got {job.width}×{job.height}); use method 'crossfade' instead."
            )

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        return []

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        return dict(job.params)

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        if len(chunk.context) != 2:
            raise PipelineError(f"An in-between chunk reads two keys, not {chunk.context}.")
        run = _ChunkRun(ctx, chunk.context[0], chunk.context[1], params)
        total = len(chunk.frames)
        for done, t in enumerate(chunk.frames, start=1):
            ctx.check_cancel()
            ctx.write_output(t, run.frame(t))
            ctx.progress(STAGE, done, total)


class InbetweenPipeline:
    kind = "inbetween"

    def params_model(self) -> type[BaseModel]:
        return InbetweenParams

    def check_job(self, job: JobSpec) -> None:
        params = parse_params(job.params)
        keys, frames = tuple(job.keyframes), tuple(job.frames)
        if len(keys) < 2:
            raise InputError(f"In-betweening needs at least two keyframes; got {len(keys)}.")
        if not _strictly_ascending(keys):
            raise InputError("Keyframes must be listed in ascending order, each frame once.")
        if not frames:
            raise InputError("No output frames were requested.")
        if not _strictly_ascending(frames):
            raise InputError("Output frames must be listed in ascending order, each frame once.")
        if job.width < 1 or job.height < 1:
            raise InputError(f"The frame size {job.width}×{job.height} is empty.")
        if params.diffusion is not None and params.method != "diffusion":
            raise InputError(
                f"params.diffusion is for method 'diffusion'; this job's method is "
                f"{params.method!r} (drop it, or set method to 'diffusion')."
            )
        inbetween_methods.get(params.method).check_job(job, params)

    def required_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...] | FrameRanges]:
        if parse_params(job.params).method == "render":
            guides = guide_ranges(job.keyframes, job.frames)  # spans: never key-to-key tuples
            return {Pass.KEYFRAME: tuple(job.keyframes), Pass.VECTOR: guides, Pass.DEPTH: guides}
        return {Pass.KEYFRAME: tuple(job.keyframes)}

    def accepted_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...] | FrameRanges]:
        # Vector and depth feed render-assisted in-betweening (method "render").
        every = FrameRanges.of(set(job.frames) | set(job.keyframes))
        if parse_params(job.params).method == "render":
            every = every.union(guide_ranges(job.keyframes, job.frames))
        return {Pass.KEYFRAME: tuple(job.keyframes), Pass.VECTOR: every, Pass.DEPTH: every}

    def missing_models(self, job: JobSpec, models: Any) -> list[str]:
        params = parse_params(job.params)
        return inbetween_methods.get(params.method).missing_models(job, params, models)

    def pin_models(self, job: JobSpec, models: Any) -> dict[str, Any]:
        params = parse_params(job.params)
        return inbetween_methods.get(params.method).pin_models(job, params, models)

    def plan(self, job: JobSpec) -> list[Chunk]:
        """One chunk per key interval that has frames to write.

        A chunk writes the frames from its first key up to (not including) its second key; the
        first chunk also takes frames before the first key, the last one its second key and
        everything after. Its context is the two keys it reads.
        """
        keys = tuple(job.keyframes)
        per_interval: list[list[int]] = [[] for _ in range(len(keys) - 1)]
        for t in job.frames:
            per_interval[interval_index(keys, t)].append(t)
        chunks: list[Chunk] = []
        for i, frames in enumerate(per_interval):
            if frames:
                chunks.append(Chunk(len(chunks), tuple(frames), (keys[i], keys[i + 1])))
        return chunks

    def run_chunk(self, ctx: RunContext, chunk: Chunk) -> None:
        params = parse_params(ctx.job.params)
        inbetween_methods.get(params.method).run_chunk(ctx, chunk, params)
