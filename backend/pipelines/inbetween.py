"""In-betweening: keyframe images at frame numbers in, every frame between them out.

Image-only methods: "flow" (DIS optical flow both ways + bidirectional softmax splatting,
cross-fade only where neither key covers a pixel) and "crossfade". Render-assisted ("render":
exact motion from the vector/depth passes) lives in inbetween_guided.py; generative
("diffusion": SparseCtrl keyframes in AnimateDiff) in inbetween_diffusion.py. Each method is an
object in inbetween_methods.METHODS; this pipeline does what they share and hands them chunks.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..vision.flow import (
    MIN_FLOW_SIZE,
    Preset,
    consistency_error,
    flow_both_ways,
    photometric_error,
)
from ..vision.splat import premultiply, softmax_splat, unpremultiply
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
# Below this coverage (Σ bilinear shares) a splatted pixel is blended towards the cross-fade.
HOLE_COVERAGE = 0.25


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


class FlowInterpolator:
    """Frames between two keys (same layout, straight alpha) by bidirectional softmax splatting.

    Flow and splatting importance are computed once, on the first frame asked for.
    """

    def __init__(self, key0: np.ndarray, key1: np.ndarray, preset: Preset = "medium") -> None:
        self.key0 = key0
        self.key1 = key1
        self.preset = preset
        self.has_alpha = key0.shape[2] == 4
        self.same = bool(np.array_equal(key0, key1))
        self._work0 = premultiply(key0) if self.has_alpha else key0
        self._work1 = premultiply(key1) if self.has_alpha else key1
        self._motion: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    def motion(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(flow 0→1, flow 1→0, importance of key0's pixels, importance of key1's pixels)."""
        if self._motion is None:
            f01, f10 = flow_both_ways(self.key0, self.key1, self.preset)
            imp0 = self._importance(self._work0, self._work1, f01, f10)
            imp1 = self._importance(self._work1, self._work0, f10, f01)
            self._motion = (f01, f10, imp0, imp1)
        return self._motion

    @staticmethod
    def _importance(
        src: np.ndarray, dst: np.ndarray, f_sd: np.ndarray, f_ds: np.ndarray
    ) -> np.ndarray:
        photo = photometric_error(src, dst, f_sd)
        disagreement = consistency_error(f_sd, f_ds)
        score = -(PHOTO_WEIGHT * photo + CONSISTENCY_WEIGHT * disagreement)
        return np.maximum(score, IMPORTANCE_FLOOR).astype(np.float32)

    def at(self, s: float) -> np.ndarray:
        """The frame at time s in (0, 1) between the keys, straight alpha, float 0..1."""
        if self.same:
            return self.key0
        f01, f10, imp0, imp1 = self.motion()
        fwd = softmax_splat(self._work0, s * f01, imp0)
        bwd = softmax_splat(self._work1, (1.0 - s) * f10, imp1)

        # One softmax over both splats, each side also weighted by its nearness in time: a hole
        # in one side is filled by the other.
        w0 = ((1.0 - s) * fwd.weight).astype(np.float32)[..., None]
        w1 = (s * bwd.weight).astype(np.float32)[..., None]
        total = w0 + w1
        safe = np.where(total > 0.0, total, 1.0)
        mixed = np.where(total > 0.0, (w0 * fwd.image + w1 * bwd.image) / safe, 0.0)

        fallback = (1.0 - s) * self._work0 + s * self._work1
        covered = np.clip(np.maximum(fwd.coverage, bwd.coverage) / HOLE_COVERAGE, 0.0, 1.0)
        covered = covered[..., None]
        result = np.clip(covered * mixed + (1.0 - covered) * fallback, 0.0, 1.0)
        result = result.astype(np.float32)
        return unpremultiply(result) if self.has_alpha else result


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
            self._interp = FlowInterpolator(key0, key1, self.params.flow_preset)
        return self._interp.at(s)

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
