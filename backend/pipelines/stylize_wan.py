"""Stylize engine wan_vace: Wan2.1-VACE follows a control video made from the passes.

A shot is cut into windows of 4k+1 frames (vace.window, 81 at most); each window after the
first also covers the vace.overlap frames before it, which the previous window wrote, and
holds them through VACE's mask (kept frames) so the seam continues what was written. Each
window has its own seed (the job's seed and the window's index), so a resumed job reproduces
the frames it had not written yet. The model runs at its working area in multiples of 16 (the
size is pinned in params.vace.run_size at start); frames come back at the shot's size.

Torch-free: stylize_wan_runtime (torch, diffusers) is imported when the first window runs.
"""

from __future__ import annotations

from typing import Any

from ..jobs import REFERENCE_FRAME, InputError, JobSpec, Pass
from ..models.catalogue import ModelKind
from ..models.registry import Need
from ..models.wan_folder import wan_working_area
from .base import Chunk, RunContext
from .diffusion_common import LOAD_STAGE, progress_hook, require_models
from .stylize_params import StylizeParams, VaceParams
from .stylize_plan import beauty_rgb, chunk_seed, plan_chunks
from .wan_control import CONTROL_PASS, build_window, frames_at_shot_size, run_size

ACCEPTED_PASSES = (Pass.BEAUTY, Pass.DEPTH, Pass.NORMAL, Pass.LINEART, Pass.VECTOR)
MIN_SIDE = 16


def check_job(job: JobSpec, params: StylizeParams) -> None:
    if job.width < MIN_SIDE or job.height < MIN_SIDE:
        raise InputError(
            f"Engine wan_vace needs frames of at least {MIN_SIDE}×{MIN_SIDE} pixels, "
            f"not {job.width}×{job.height}."
        )


def required_inputs(job: JobSpec, params: StylizeParams) -> dict[Pass, tuple[int, ...]]:
    needed: dict[Pass, tuple[int, ...]] = {}
    source = CONTROL_PASS[params.vace_settings.control]
    if source is not None:
        needed[source] = tuple(job.frames)
    if params.style_reference:
        needed[Pass.REFERENCE] = (REFERENCE_FRAME,)
    return needed


def accepted_inputs(job: JobSpec, params: StylizeParams) -> dict[Pass, tuple[int, ...]]:
    frames = tuple(job.frames)
    accepted = {p: frames for p in ACCEPTED_PASSES}
    if params.style_reference:
        accepted[Pass.REFERENCE] = (REFERENCE_FRAME,)
    return accepted


def missing_models(params: StylizeParams, models: Any) -> list[str]:
    name = params.vace_settings.model
    needs = [Need(ModelKind.WAN_VACE, name=name)] if name is not None else []
    return list(models.missing_for("stylize", needs, mode="wan_vace"))


def resolve_model(vace: VaceParams, registry: Any) -> Any:
    """The model's registry entry; call after missing_models() found nothing."""
    if vace.model is not None:
        return registry.get(vace.model, ModelKind.WAN_VACE)
    return registry.of_kind(ModelKind.WAN_VACE)[0]


def pin_models(job: JobSpec, params: StylizeParams, models: Any) -> dict[str, Any]:
    """The params with the model named and the size the model will run at."""
    vace = params.vace_settings
    entry = resolve_model(vace, models)
    pinned = params.model_dump(mode="json")
    pinned["vace"] = vace.model_dump(mode="json") | {
        "model": str(entry.name),
        "run_size": list(run_size(job.width, job.height, wan_working_area(entry))),
    }
    return pinned


def plan(job: JobSpec, params: StylizeParams) -> list[Chunk]:
    vace = params.vace_settings
    return plan_chunks(job.frames, vace.window, vace.overlap)


def out_of_memory_advice(job: JobSpec, params: StylizeParams) -> str:
    vace = params.vace_settings
    return (
        f"lower vace.window (now {vace.window} frames) or the model's working size, or close "
        "other programs that use the GPU, and run the job again."
    )


def run_chunk(ctx: RunContext, chunk: Chunk, params: StylizeParams) -> None:
    """Generate the window over chunk.context, holding its already written frames; write the
    frames it owns."""
    ctx.check_cancel()
    require_models(missing_models(params, ctx.models))
    vace = params.vace_settings
    entry = resolve_model(vace, ctx.models)
    job = ctx.job
    size = vace.run_size or run_size(job.width, job.height, wan_working_area(entry))
    ctx.progress(LOAD_STAGE, 0, 1)
    # torch and diffusers: imported by the first window that runs, loaded with the model
    from .stylize_wan_runtime import WanRequest, denoise_window, runtime_for

    runtime = runtime_for(ctx.device)
    pipe = runtime.load(ctx.models, str(entry.name))
    ctx.check_cancel()
    written: dict[int, Any] = {}
    for frame in chunk.context:
        if frame < chunk.frames[0] and (done := ctx.finished_output(frame)) is not None:
            written[frame] = done
    window = build_window(ctx, vace.control, chunk.context, written, size)
    reference = None
    if params.style_reference:
        reference = beauty_rgb(ctx.input(Pass.REFERENCE, REFERENCE_FRAME))
    request = WanRequest(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        seed=chunk_seed(params.seed, chunk.index),
        steps=params.steps,
        guidance=params.guidance,
        conditioning_scale=vace.conditioning_scale,
        window=window,
        size=size,
        reference=reference,
        memory_level=getattr(ctx, "memory_level", 0),
    )
    images = denoise_window(runtime, pipe, request, progress_hook(ctx))[: window.produced]
    frames = frames_at_shot_size(images, job.width, job.height)
    for frame, image in zip(chunk.context, frames, strict=True):
        if frame in chunk.frames:
            ctx.write_output(frame, image)
