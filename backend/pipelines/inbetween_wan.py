"""Diffusion in-betweening on engine wan_vace: Wan2.1-VACE with the keys held through its mask.

A key interval (one chunk) is made as clips of at most `window` frames (4k+1, 81 at most for
the 1.3B), planned as for SparseCtrl (inbetween_diffusion.plan_clips): every clip starts and
ends on a known picture, a key or an anchor generated first for a gap longer than one clip, so
long gaps are pinned at both ends and no error builds up along a chain. One clip is one VACE
call: its two end pictures at their frames with mask 0 (kept), every frame between generated
(mask 1) from its control picture, the depth or line art guide pass of that frame
(params.diffusion.control; the guides of every frame from key to key are then required
inputs) or, without a control, an empty grey that leaves the motion to the model. The call is
padded to 4k+1 frames. The model runs at its working area in multiples of 16 (pinned in
params.diffusion.run_size at start); frames come back at the job's size.

Keys pass through untouched (byte for byte), frames outside the keys hold the nearest key, on
twos the odd frames repeat the frame before, as with the other methods. Each clip's seed is
fixed by the job's seed and the clip's frames: the same seed gives the same frames whichever
frames are asked for, and when a job resumes.

Torch-free: stylize_wan_runtime (torch, diffusers) is imported when the first clip runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..jobs import InputError, JobSpec
from ..models.catalogue import ModelKind
from ..models.registry import Need
from ..models.wan_folder import wan_working_area
from .base import Chunk, RunContext
from .diffusion_common import LOAD_STAGE, progress_hook, require_models
from .inbetween_diffusion import ClipPictures, Key, clip_seed, plan_clips, write_clips
from .inbetween_guided import guide_frames
from .inbetween_params import MIN_CLIP, DiffusionParams, InbetweenParams
from .stylize_conditioning import DepthRanges
from .stylize_plan import MEMORY_PLANS
from .wan_control import build_window, frames_at_shot_size, run_size

MIN_SIDE = 16


class WanInbetween:
    """Method "diffusion" with engine wan_vace (inbetween_engines hands it the jobs)."""

    memory_levels = len(MEMORY_PLANS)  # stylize_wan_runtime's plans clamp to their own

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        if job.width < MIN_SIDE or job.height < MIN_SIDE:
            raise InputError(
                f"Wan2.1-VACE in-betweening needs keys of at least {MIN_SIDE}×{MIN_SIDE} pixels, "
                f"not {job.width}×{job.height}."
            )

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        name = params.diffusion_settings.wan_vace
        needs = [Need(ModelKind.WAN_VACE, name=name)] if name is not None else []
        return list(models.missing_for("inbetween", needs, mode="wan_vace"))

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        """The params with the model named and the size it will run at."""
        p = params.diffusion_settings
        entry = resolve_model(p, models)
        pinned = params.model_dump(mode="json")
        pinned["diffusion"] = p.model_dump(mode="json") | {
            "wan_vace": str(entry.name),
            "run_size": list(run_size(job.width, job.height, wan_working_area(entry))),
        }
        return pinned

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        write_clips(
            ctx,
            chunk,
            params,
            lambda k0, k1, wanted, keys: _generate(ctx, params, k0, k1, wanted, keys),
            _channels,
        )

    def out_of_memory_advice(self, job: JobSpec, params: InbetweenParams) -> str:
        window = params.diffusion_settings.window
        return (
            f"lower diffusion.window (now {window} frames) or the model's working size, or "
            "close other programs that use the GPU, and run the job again."
        )


def resolve_model(p: DiffusionParams, models: Any) -> Any:
    """The model's registry entry; call after missing_models() found nothing."""
    if p.wan_vace is not None:
        return models.get(p.wan_vace, ModelKind.WAN_VACE)
    return models.of_kind(ModelKind.WAN_VACE)[0]


def _channels(picture: np.ndarray, channels: int) -> np.ndarray:
    """A generated uint8 RGB frame with the keys' channel count (opaque alpha)."""
    if channels == 4:
        return np.concatenate([picture, np.full_like(picture[..., :1], 255)], axis=2)
    return picture


# one range per job over the depth guides of every interval it follows (keys included)
GUIDE_DEPTH_RANGES = DepthRanges(lambda job: guide_frames(job.keyframes, job.frames))


def _generate(
    ctx: RunContext,
    params: InbetweenParams,
    k0: int,
    k1: int,
    wanted: set[int],
    keys: dict[int, Key],
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame, uint8 RGB picture at the job's size) of every wanted frame strictly between k0
    and k1, each as soon as its clip is made."""
    require_models(WanInbetween().missing_models(ctx.job, params, ctx.models))
    p = params.diffusion_settings
    entry = resolve_model(p, ctx.models)
    job = ctx.job
    size = p.run_size or run_size(job.width, job.height, wan_working_area(entry))
    control = p.control or "none"
    depth = GUIDE_DEPTH_RANGES.get(ctx) if p.control == "depth" else None
    ctx.progress(LOAD_STAGE, 0, 1)
    # torch and diffusers: imported by the first clip that runs, loaded with the model
    from .stylize_wan_runtime import WanRequest, denoise_window, runtime_for

    runtime = runtime_for(ctx.device)
    pipe = runtime.load(ctx.models, str(entry.name))
    ctx.check_cancel()
    clips = plan_clips(range(k0, k1 + 1), max(MIN_CLIP, p.window), wanted)
    pictures = ClipPictures(clips, {k: key.output for k, key in keys.items()})
    for i, clip in enumerate(clips):
        ends = dict(zip((clip[0], clip[-1]), pictures.ends(clip), strict=True))
        window = build_window(ctx, control, clip, ends, size, depth)
        request = WanRequest(
            prompt=p.prompt,
            negative_prompt=p.negative_prompt,
            seed=clip_seed(p.seed, clip),
            steps=p.steps,
            guidance=p.guidance,
            conditioning_scale=p.conditioning_scale,
            window=window,
            size=size,
            memory_level=getattr(ctx, "memory_level", 0),
        )
        images = denoise_window(runtime, pipe, request, progress_hook(ctx, i, len(clips)))
        made = frames_at_shot_size(images[: window.produced], job.width, job.height)
        yield from pictures.made(clip, made, wanted)
