"""Stylize: a rendered shot and its passes in, the same shot in the prompt's style out.

Modes:
  video2video  AnimateDiff video-to-video from the beauty pass (strength), plus ControlNets
  text2video   AnimateDiff text-to-video guided by ControlNets fed from the passes alone
  per_frame    Stable Diffusion per frame (img2img from the beauty pass, or txt2img when
               strength is 1) plus ControlNets; no motion module (and the flicker baseline)

A shot is cut into chunks of `chunk_size` frames; each chunk after the first also denoises the
`overlap` frames before it, which the previous chunk already wrote, and blends its first frames
towards them so the seam does not jump. Each chunk has its own seed, derived from the job's
seed and the chunk's index, so a resumed job reproduces the frames it had not written yet.

That is engine animatediff (the default). params.engine "wan_vace" hands every step of the
job to stylize_wan (Wan2.1-VACE, windows pinned through its mask) instead.

This module stays free of torch: the API validates jobs without importing the model stack;
stylize_runtime (torch, diffusers) is imported when the first chunk runs.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from ..jobs import REFERENCE_FRAME, InputError, JobSpec, Pass, PipelineError
from ..models.catalogue import ModelKind
from ..models.registry import Need
from ..vision.consistency import FrameMotion
from ..vision.passes import normal_to_control
from ..vision.pixels import to_uint8
from . import stylize_wan
from .base import Chunk, RunContext
from .diffusion_common import LOAD_STAGE, latent_size_error, progress_hook, require_models
from .stylize_conditioning import control_frames
from .stylize_fusion import ChunkMotion
from .stylize_params import StylizeParams, parse_params
from .stylize_plan import MEMORY_PLANS, beauty_rgb, blend_seam, chunk_seed, plan_chunks

if TYPE_CHECKING:
    from .stylize_runtime import Request, Runtime

ACCEPTED_PASSES = (Pass.BEAUTY, Pass.DEPTH, Pass.NORMAL, Pass.LINEART, Pass.VECTOR)
FUSION_REASON = (
    "which temporal_fusion follows (the render's motion in Vector, occlusion in Depth): upload"
    " them, or set temporal_fusion to false"
)


def fuses(params: StylizeParams) -> bool:
    """Whether the job follows the render's motion (warped noise, latent fusion): then its
    Vector and Depth passes are required for every frame, so that it never runs unfused
    without a word (the add-on uploads them; a client that does not is told at start)."""
    return params.engine == "animatediff" and params.uses_motion and params.temporal_fusion


class StylizePipeline:
    kind = "stylize"
    memory_levels = len(MEMORY_PLANS)  # base.ShrinksOnOutOfMemory

    def out_of_memory_advice(self, job: JobSpec) -> str:
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.out_of_memory_advice(job, params)
        lower = [f"the resolution (now {job.width}×{job.height})"]
        if params.uses_motion:
            lower.append(f"chunk_size (now {params.chunk_size} frames)")
        if params.controlnets:
            lower.append(f"the number of ControlNets (now {len(params.controlnets)})")
        return (
            f"lower {', '.join(lower[:-1])} or {lower[-1]}"
            if len(lower) > 1
            else f"lower {lower[0]}"
        ) + ", or close other programs that use the GPU, and run the job again."

    def params_model(self) -> type[BaseModel]:
        return StylizeParams

    def check_job(self, job: JobSpec) -> None:
        params = parse_params(job.params)
        frames = tuple(job.frames)
        if not frames:
            raise InputError("No output frames were requested.")
        if any(b <= a for a, b in itertools.pairwise(frames)):
            raise InputError("Output frames must be listed in ascending order, each frame once.")
        if params.engine == "wan_vace":
            stylize_wan.check_job(job, params)
            return
        _check_size(job.width, job.height)
        if not params.uses_beauty and not params.controlnets:
            what = "text2video" if params.mode == "text2video" else "per_frame at strength 1"
            raise InputError(
                f"{what} follows the shot through ControlNets only: add at least one "
                "ControlNet (depth, normal or lineart), or start from the beauty pass "
                "(mode video2video, or per_frame with strength below 1)."
            )
        if params.uses_beauty and int(params.steps * params.strength) < 1:
            # diffusers runs int(steps × strength) of the steps from the beauty pass
            least = next(n for n in range(1, 10_000) if int(n * params.strength) >= 1)
            raise InputError(
                f"{params.steps} steps at strength {params.strength} leave no denoising step "
                f"to run: use at least {least} steps, or a higher strength."
            )
        if params.world_to_camera is not None:  # refused now rather than in the middle of a job
            normal_to_control(np.zeros((1, 1, 3), np.float32), params.world_to_camera)

    def required_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...]]:
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.required_inputs(job, params)
        frames = tuple(job.frames)
        needed: dict[Pass, tuple[int, ...]] = {}
        if params.uses_beauty:
            needed[Pass.BEAUTY] = frames
        for net in params.controlnets:
            needed[net.render_pass] = frames
        if fuses(params):  # never a silent run without the motion it was asked to follow
            needed[Pass.VECTOR] = needed[Pass.DEPTH] = frames
        if params.style_reference:
            needed[Pass.REFERENCE] = (REFERENCE_FRAME,)
        return needed

    def input_reasons(self, job: JobSpec) -> dict[Pass, str]:
        """Why each required pass is needed, and the setting that would do without it."""
        params = parse_params(job.params)
        reasons: dict[Pass, str] = {}
        if params.engine == "wan_vace":
            control = params.vace_settings.control
            for p in stylize_wan.required_inputs(job, params):
                reasons[p] = f"which vace.control {control} reads: upload them, or set it to none"
        else:
            if params.uses_beauty:
                instead = (
                    "use mode text2video" if params.mode == "video2video" else "set strength to 1"
                )
                reasons[Pass.BEAUTY] = (
                    f"which mode {params.mode} starts from: upload them, or {instead}"
                )
            for net in params.controlnets:
                reasons[net.render_pass] = (
                    f"which the {net.pass_} ControlNet reads: upload them, or remove that ControlNet"
                )
            if fuses(params):
                for p in (Pass.VECTOR, Pass.DEPTH):
                    reasons.setdefault(p, FUSION_REASON)
        if params.style_reference:
            reasons[Pass.REFERENCE] = "the style image: upload it, or set style_reference to false"
        return reasons

    def accepted_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...]]:
        # Every pass may go up, whether the job reads it or not (per_frame ignores Vector).
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.accepted_inputs(job, params)
        frames = tuple(job.frames)
        accepted = {p: frames for p in ACCEPTED_PASSES}
        if params.style_reference:
            accepted[Pass.REFERENCE] = (REFERENCE_FRAME,)
        return accepted

    def missing_models(self, job: JobSpec, models: Any) -> list[str]:
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.missing_models(params, models)
        mode = "video" if params.uses_motion else "per_frame"
        return list(models.missing_for("stylize", _needs(params), mode=mode))

    def pin_models(self, job: JobSpec, models: Any) -> dict[str, Any]:
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.pin_models(job, params, models)
        checkpoint, motion, nets, lora = resolve_models(params, models)
        pinned = params.model_dump(mode="json")
        pinned["checkpoint"] = checkpoint
        pinned["motion_adapter"] = motion
        for unit, name in zip(pinned["controlnets"], nets, strict=True):
            unit["model"] = name
        if lora is not None:
            pinned["lora"]["name"] = lora[0]
        reference = resolve_reference_models(params, models)
        pinned["ip_adapter"], pinned["image_encoder"] = reference or (None, None)
        return pinned

    def plan(self, job: JobSpec) -> list[Chunk]:
        params = parse_params(job.params)
        if params.engine == "wan_vace":
            return stylize_wan.plan(job, params)
        return plan_chunks(job.frames, params.chunk_size, params.chunk_overlap)

    def run_chunk(self, ctx: RunContext, chunk: Chunk) -> None:
        ctx.check_cancel()
        params = parse_params(ctx.job.params)
        if params.engine == "wan_vace":
            stylize_wan.run_chunk(ctx, chunk, params)
            return
        models = ctx.models
        require_models(self.missing_models(ctx.job, models))
        names = resolve_models(params, models)
        ctx.progress(LOAD_STAGE, 0, 1)
        # torch and diffusers: imported by the first chunk that runs, loaded with the models
        from .stylize_runtime import memory_scope, model_set, runtime_for

        reference = resolve_reference_models(params, models)
        runtime = runtime_for(ctx.device)
        loaded = runtime.load(models, model_set(*names, device=ctx.device, ip_adapter=reference))
        ctx.check_cancel()
        level = getattr(ctx, "memory_level", 0)
        with memory_scope(loaded, level, f"job {ctx.job.id}, stylize chunk {chunk.index}"):
            if params.uses_motion:
                _run_video(ctx, chunk, params, runtime, loaded)
            else:
                _run_per_frame(ctx, chunk, params, runtime, loaded)


# ---- models ----------------------------------------------------------------------------------


def _needs(params: StylizeParams) -> list[Need]:
    needs = [Need(ModelKind.CHECKPOINT, name=params.checkpoint)]
    if params.uses_motion:
        needs.append(Need(ModelKind.MOTION_ADAPTER, name=params.motion_adapter))
    for net in params.controlnets:
        if net.model is not None:
            needs.append(Need(ModelKind.CONTROLNET, name=net.model))
        else:
            needs.append(Need(ModelKind.CONTROLNET, controlnet_type=net.pass_))
    if params.lora is not None:
        needs.append(Need(ModelKind.LORA, name=params.lora.name))
    if params.style_reference:
        needs.append(Need(ModelKind.IP_ADAPTER, name=params.ip_adapter))
        needs.append(Need(ModelKind.IMAGE_ENCODER, name=params.image_encoder))
    return needs


def resolve_models(
    params: StylizeParams, registry: Any
) -> tuple[str, str | None, list[str], tuple[str, float] | None]:
    """(checkpoint, motion adapter, ControlNets, LoRA) names, defaults filled in.

    Call after missing_models() found nothing: every name resolves then.
    """

    def name(given: str | None, kind: ModelKind) -> str:
        if given is not None:
            return str(registry.get(given, kind).name)
        return str(registry.of_kind(kind)[0].name)

    checkpoint = name(params.checkpoint, ModelKind.CHECKPOINT)
    motion = name(params.motion_adapter, ModelKind.MOTION_ADAPTER) if params.uses_motion else None
    nets = [
        name(n.model, ModelKind.CONTROLNET)
        if n.model is not None
        else str(registry.controlnets(n.pass_)[0].name)
        for n in params.controlnets
    ]
    lora = None
    if params.lora is not None:
        lora = (name(params.lora.name, ModelKind.LORA), params.lora.weight)
    return checkpoint, motion, nets, lora


def resolve_reference_models(params: StylizeParams, registry: Any) -> tuple[str, str] | None:
    """(IP-Adapter, image encoder) names for a job with a style reference, else None."""
    if not params.style_reference:
        return None
    adapter = registry.get(params.ip_adapter, ModelKind.IP_ADAPTER) if params.ip_adapter else None
    encoder = (
        registry.get(params.image_encoder, ModelKind.IMAGE_ENCODER)
        if params.image_encoder
        else None
    )
    adapter = adapter or registry.of_kind(ModelKind.IP_ADAPTER)[0]
    encoder = encoder or registry.of_kind(ModelKind.IMAGE_ENCODER)[0]
    return str(adapter.name), str(encoder.name)


# ---- running ---------------------------------------------------------------------------------


def _request(
    ctx: RunContext,
    params: StylizeParams,
    frames: tuple[int, ...],
    seed: int,
    finished: dict[int, np.ndarray] | None = None,
    motion: ChunkMotion | None = None,
) -> Request:
    from .stylize_runtime import Request  # torch: only once a chunk runs

    beauty = [beauty_rgb(ctx.input(Pass.BEAUTY, f)) for f in frames] if params.uses_beauty else None
    anchors = {frames.index(f): beauty_rgb(img / 255.0) for f, img in (finished or {}).items()}
    reference = None
    if params.style_reference:
        reference = beauty_rgb(ctx.input(Pass.REFERENCE, REFERENCE_FRAME))
    job = ctx.job
    return Request(
        params=params,
        width=job.width,
        height=job.height,
        seed=seed,
        beauty=beauty,
        controls=control_frames(ctx, params, frames),
        anchors=anchors,
        motion=motion,
        reference=reference,
        memory_level=getattr(ctx, "memory_level", 0),
    )


def _run_video(
    ctx: RunContext, chunk: Chunk, params: StylizeParams, runtime: Runtime, loaded: Any
) -> None:
    """Denoise the chunk's context; its frames already written hold the chunk on them."""
    from .stylize_runtime import denoise_video  # torch: only once a chunk runs

    finished: dict[int, np.ndarray] = {}
    for frame in chunk.context:
        if frame < chunk.frames[0] and (done := ctx.finished_output(frame)) is not None:
            finished[frame] = done
    seed = chunk_seed(params.seed, chunk.index)
    motion = _chunk_motion(ctx, chunk.context) if params.temporal_fusion else None
    request = _request(ctx, params, chunk.context, seed, finished, motion)
    images = denoise_video(runtime, loaded, request, progress_hook(ctx))
    generated = dict(zip(chunk.context, images, strict=True))
    blended = blend_seam(generated, finished, chunk.frames, params.overlap)
    for frame in chunk.frames:
        ctx.write_output(frame, to_uint8(blended[frame]))


def _chunk_motion(ctx: RunContext, frames: tuple[int, ...]) -> ChunkMotion | None:
    """The render's motion over the chunk's frames, from whichever Vector passes were uploaded
    (depth, where uploaded, adds occlusion); None without any."""
    motions: list[FrameMotion | None] = []
    for frame in frames:
        if not ctx.has_input(Pass.VECTOR, frame):
            motions.append(None)
            continue
        depth = ctx.input(Pass.DEPTH, frame) if ctx.has_input(Pass.DEPTH, frame) else None
        try:
            motions.append(FrameMotion.from_passes(ctx.input(Pass.VECTOR, frame), depth))
        except ValueError as exc:
            raise PipelineError(f"The vector pass of frame {frame} cannot be used: {exc}") from None
    if all(m is None for m in motions):
        return None
    return ChunkMotion.from_frames(motions)


def _run_per_frame(
    ctx: RunContext, chunk: Chunk, params: StylizeParams, runtime: Runtime, loaded: Any
) -> None:
    from .stylize_runtime import denoise_frame  # torch: only once a chunk runs

    todo = [f for f in chunk.frames if ctx.finished_output(f) is None]
    # One seed for every frame: frames do not depend on how the shot was cut.
    request = _request(ctx, params, tuple(todo), chunk_seed(params.seed, 0))
    for i, frame in enumerate(todo):
        image = denoise_frame(runtime, loaded, request, i, progress_hook(ctx, i, len(todo)))
        ctx.write_output(frame, to_uint8(image))


def _check_size(width: int, height: int) -> None:
    if problem := latent_size_error(width, height):
        raise InputError(f"Stylize needs a width and height that the model takes: {problem}.")
