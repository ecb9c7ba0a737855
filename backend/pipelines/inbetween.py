"""In-betweening: keyframe images at frame numbers in, every frame between them out.

Methods: "flow" (estimated motion, inbetween_flow) and "crossfade" (inbetween_image),
render-assisted "render" (exact motion from the vector/depth passes, inbetween_guided) and
generative "diffusion" (SparseCtrl keyframes in AnimateDiff, inbetween_diffusion). Each method
is an object in inbetween_methods.METHODS; this pipeline does what they share (checking keys
and frames, one chunk per key interval, the worker interface) and hands them chunks.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

from pydantic import BaseModel

from ..jobs import FrameRanges, InputError, JobSpec, Pass
from . import inbetween_methods
from .base import GENERIC_OOM_ADVICE, Chunk, RunContext
from .inbetween_guided import guide_ranges
from .inbetween_params import InbetweenParams, parse_params


def interval_index(keys: tuple[int, ...], t: int) -> int:
    """Which key interval (0 .. len(keys)-2) frame t belongs to; outside frames go to the ends."""
    return min(max(bisect.bisect_right(keys, t) - 1, 0), len(keys) - 2)


def _strictly_ascending(values: tuple[int, ...]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


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
        keys = {Pass.KEYFRAME: tuple(job.keyframes)}
        guide = parse_params(job.params).diffusion_settings.guide_pass  # a Wan2.1-VACE control
        if guide is not None:
            return keys | {guide: guide_ranges(job.keyframes, job.frames)}
        return keys

    def input_reasons(self, job: JobSpec) -> dict[Pass, str]:
        """Why each required pass is needed, and the setting that would do without it."""
        diffusion = parse_params(job.params).diffusion_settings
        if diffusion.guide_pass is not None:
            return {
                diffusion.guide_pass: f"which diffusion.control {diffusion.control} follows from "
                "key to key: upload them, or set diffusion.control to null"
            }
        if parse_params(job.params).method != "render":
            return {}
        why = (
            "which method 'render' follows from key to key (the render's motion in Vector, "
            "occlusion in Depth): upload them, or use method 'flow'"
        )
        return {Pass.VECTOR: why, Pass.DEPTH: why}

    def accepted_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...] | FrameRanges]:
        # Vector and depth feed render-assisted in-betweening (method "render").
        every = FrameRanges.of(set(job.frames) | set(job.keyframes))
        params = parse_params(job.params)
        guide = params.diffusion_settings.guide_pass  # a Wan2.1-VACE control: its guides
        if params.method == "render" or guide is not None:
            every = every.union(guide_ranges(job.keyframes, job.frames))
        accepted = {Pass.KEYFRAME: tuple(job.keyframes), Pass.VECTOR: every, Pass.DEPTH: every}
        return accepted | ({guide: every} if guide is not None else {})

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

    # base.ShrinksPerJob: a job has its method's memory levels (1 for the methods without).

    def memory_levels_for(self, job: JobSpec) -> int:
        method = inbetween_methods.get(parse_params(job.params).method)
        return int(getattr(method, "memory_levels", 1))

    def out_of_memory_advice(self, job: JobSpec) -> str:
        params = parse_params(job.params)
        advice = getattr(inbetween_methods.get(params.method), "out_of_memory_advice", None)
        return advice(job, params) if advice is not None else GENERIC_OOM_ADVICE
