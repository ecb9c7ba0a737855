"""The torch side of stylize: models kept loaded between jobs, diffusers pipelines built from
them once, and one denoising call per chunk (or per frame) with progress and cancel per step.
Diffusion in-betweening (inbetween_diffusion) runs its SparseCtrl clips on the same runtime and
holds its clips' end frames with Anchor.

Imported only when a stylize chunk runs, so the API never pays for torch/diffusers imports.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import (
    AnimateDiffControlNetPipeline,
    AnimateDiffSparseControlNetPipeline,
    AnimateDiffVideoToVideoControlNetPipeline,
    AnimateDiffVideoToVideoPipeline,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    LCMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    UNetMotionModel,
)
from diffusers.models.attention import FreeNoiseTransformerBlock
from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

from ..device import free_memory
from ..jobs import PipelineError
from ..models.cache import LoadedModels, LoraSpec, ModelCache, ModelSet
from ..models.load_checks import ModelLoadError
from ..vision.pixels import to_uint8
from .diffusion_common import StepHook, anchor_seed, dtype_for, generator, step_callback
from .stylize_fusion import ChunkMotion, FusionSchedule, LatentFusion, warped_noise
from .stylize_params import MOTION_WINDOW, StylizeParams
from .stylize_plan import MEMORY_PLANS, MemoryPlan, memory_plan

log = logging.getLogger("framesmith.runtime")

# AnimateDiff's motion modules were trained with a linear beta schedule; the checkpoint's own
# scheduler config (scaled_linear) is kept for per-frame Stable Diffusion.
_MOTION_SCHEDULER = {
    "beta_schedule": "linear",
    "clip_sample": False,
    "timestep_spacing": "linspace",
    "steps_offset": 1,
}


def make_scheduler(name: str, base: Any, motion: bool) -> Any:
    config = {**dict(base), **(_MOTION_SCHEDULER if motion else {})}
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2
        )
    if name == "lcm":
        return LCMScheduler.from_config(config)
    raise PipelineError(f"unknown scheduler {name!r}")


@dataclass(frozen=True)
class Request:
    """One denoising call: what the pipeline needs besides the models."""

    params: StylizeParams
    width: int
    height: int
    seed: int
    beauty: list[np.ndarray] | None  # float32 HxWx3 0..1 per frame, or None
    controls: list[list[np.ndarray]]  # per ControlNet, float32 HxWx3 0..1 per frame
    # Frames already written (position in the request -> float32 HxWx3 0..1): held on those
    # pictures while the rest is denoised, so the chunk continues what was written.
    anchors: Mapping[int, np.ndarray] = field(default_factory=dict)
    # The render's motion over the request's frames: warped initial noise and latent fusion
    # (video modes, params.temporal_fusion). None: each frame's own noise, no fusion.
    motion: ChunkMotion | None = None
    memory_level: int = 0  # stylize_plan.MEMORY_PLANS: raised after running out of memory
    # The style reference image (float32 HxWx3 0..1) for the IP-Adapter; None without one.
    reference: np.ndarray | None = None


class Runtime:
    """Models of the last model set, and the diffusers pipelines built from them."""

    def __init__(self) -> None:
        self._cache: ModelCache | None = None
        self._loaded: LoadedModels | None = None
        self._built: dict[str, Any] = {}
        self._reference: tuple[tuple[int, str], torch.Tensor] | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> LoadedModels | None:
        """The model set loaded last (None before the first job)."""
        return self._loaded

    def load(self, registry: Any, models: ModelSet) -> LoadedModels:
        with self._lock:
            if self._cache is None or self._cache.registry.root != registry.root:
                self._cache = ModelCache(registry)
            else:
                self._cache.registry = registry  # the newest scan: names resolve as listed
            try:
                loaded = self._cache.load(models)
            except ModelLoadError as exc:
                raise PipelineError(str(exc)) from None
            if loaded is not self._loaded:
                dropped = bool(self._built)
                self._loaded, self._built, self._reference = loaded, {}, None
                if dropped:
                    free_memory()  # the old set's motion UNet copy
            return loaded

    def pipeline(self, loaded: LoadedModels, kind: str) -> Any:
        with self._lock:
            if kind not in self._built:
                pipe = self._build(loaded, kind)
                pipe.set_progress_bar_config(disable=True)
                self._built[kind] = pipe
            return self._built[kind]

    def _build(self, loaded: LoadedModels, kind: str) -> DiffusionPipeline:
        dtype = loaded.pipe.unet.dtype
        nets = list(loaded.controlnets)
        if kind in {"video2video", "text2video"}:
            if loaded.motion_adapter is None:
                raise PipelineError("This mode needs a motion adapter; none was loaded.")
            common: dict[str, Any] = {
                "unet": self._motion_unet(loaded),
                "motion_adapter": loaded.motion_adapter,
                "dtype": dtype,
            }
            if kind == "text2video":
                return AnimateDiffControlNetPipeline.from_pipe(
                    loaded.pipe, controlnet=nets, **common
                )
            if nets:
                return AnimateDiffVideoToVideoControlNetPipeline.from_pipe(
                    loaded.pipe, controlnet=nets, **common
                )
            return AnimateDiffVideoToVideoPipeline.from_pipe(loaded.pipe, **common)
        if kind == "sparsectrl":  # diffusion in-betweening (inbetween_diffusion)
            if loaded.motion_adapter is None or loaded.sparsectrl is None:
                raise PipelineError("SparseCtrl needs a motion adapter and a SparseCtrl model.")
            return AnimateDiffSparseControlNetPipeline.from_pipe(
                loaded.pipe,
                unet=self._motion_unet(loaded),
                motion_adapter=loaded.motion_adapter,
                controlnet=loaded.sparsectrl,
                dtype=dtype,
            )
        if kind == "img2img":
            if nets:
                return StableDiffusionControlNetImg2ImgPipeline.from_pipe(
                    loaded.pipe, controlnet=nets, dtype=dtype
                )
            return StableDiffusionImg2ImgPipeline.from_pipe(loaded.pipe, dtype=dtype)
        if kind == "txt2img":
            return StableDiffusionControlNetPipeline.from_pipe(
                loaded.pipe, controlnet=nets, dtype=dtype
            )
        raise PipelineError(f"unknown stylize pipeline {kind!r}")

    def reference_embeds(self, loaded: LoadedModels, image: np.ndarray) -> torch.Tensor:
        """The reference image's CLIP embedding (1, D), computed once per job: every chunk of
        a job brings the same image and model set, and finds it here."""
        encoder = loaded.image_encoder
        if encoder is None:
            raise PipelineError("A style reference needs an IP-Adapter; none was loaded.")
        pixels = np.ascontiguousarray(image, dtype=np.float32)
        key = (
            id(loaded),
            hashlib.sha256(pixels.tobytes() + str(pixels.shape).encode()).hexdigest(),
        )
        with self._lock:
            if self._reference is not None and self._reference[0] == key:
                return self._reference[1]
            inputs = encoder.processor(images=to_uint8(pixels), return_tensors="pt").pixel_values
            model = encoder.model
            with torch.no_grad():
                embeds = model(inputs.to(model.device, model.dtype)).image_embeds
            self._reference = (key, embeds)
            return embeds

    def _motion_unet(self, loaded: LoadedModels) -> UNetMotionModel:
        # Built once per model set and shared by the video pipelines: from_unet2d copies the
        # UNet's weights, which must not happen per pipeline (or per job).
        if "motion_unet" not in self._built:
            base = loaded.pipe.unet
            unet = UNetMotionModel.from_unet2d(base, loaded.motion_adapter)
            unet.to(device=base.device, dtype=base.dtype).eval().requires_grad_(False)
            self._built["motion_unet"] = unet
        return self._built["motion_unet"]


_RUNTIMES: dict[str, Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(device: str) -> Runtime:
    """The models kept loaded for one device (one worker thread per device uses it)."""
    with _RUNTIMES_LOCK:
        return _RUNTIMES.setdefault(device, Runtime())


def motion_window(loaded: LoadedModels) -> int:
    adapter = loaded.motion_adapter
    length = int(adapter.config.motion_max_seq_length) if adapter is not None else MOTION_WINDOW
    return max(1, min(MOTION_WINDOW, length))


def set_free_noise(pipe: Any, frames: int, window: int) -> None:
    """FreeNoise context windows inside a chunk longer than the motion module's window only.

    The motion UNet is shared between pipelines, so its state is set before every call.
    """
    if frames > window:
        pipe.enable_free_noise(context_length=window, context_stride=max(1, window // 4))
        return
    # Not pipe.disable_free_noise(): it assumes a motion mid block, which v1 modules lack.
    blocks = [*pipe.unet.down_blocks, pipe.unet.mid_block, *pipe.unet.up_blocks]
    for block in blocks:
        modules = getattr(block, "motion_modules", None)
        if modules is not None and any(
            isinstance(m, FreeNoiseTransformerBlock) for m in modules.modules()
        ):
            # Called on the mixin: the SparseCtrl pipeline shares the UNet but lacks FreeNoise.
            AnimateDiffFreeNoiseMixin._disable_free_noise_in_block(pipe, block)
    pipe._free_noise_context_length = None


class Anchor:
    """Holds some frames of a video latent on given pictures, at each step's noise level.

    After every step those frames' latents are replaced by the pictures' latents noised to
    the level of the next step (clean after the last), as inpainting with a plain UNet does
    with its known region: the motion module then denoises the other frames as the
    continuation of the pictures, which is what keeps a chunk's start on the previous chunk.
    """

    def __init__(
        self,
        pipe: Any,
        pictures: Mapping[int, np.ndarray],
        seed: int,
        noise: torch.Tensor | None = None,
    ) -> None:
        """noise: the chunk's initial noise (1, C, F, h, w) to noise the pictures with (so they
        share the warped noise of the frames after them); default: their own, from seed."""
        self.positions = sorted(pictures)
        vae = pipe.vae
        pixels = torch.from_numpy(np.stack([pictures[i] for i in self.positions]))
        pixels = (pixels.permute(0, 3, 1, 2) * 2.0 - 1.0).to(vae.device, vae.dtype)
        with torch.no_grad():
            clean = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        self.clean = clean.permute(1, 0, 2, 3)[None]  # (1, C, frames, h, w), as the pipeline
        if noise is None:
            noise = torch.randn(self.clean.shape, generator=generator(seed), dtype=torch.float32)
        else:
            noise = noise[:, :, self.positions]
        self.noise = noise.to(clean.device, clean.dtype)

    def __call__(self, pipe: Any, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        target = self.clean
        if i + 1 < pipe.num_timesteps:
            schedule = pipe.scheduler.timesteps
            at = int((schedule == t.to(schedule.device)).nonzero()[0, 0])
            target = pipe.scheduler.add_noise(self.clean, self.noise, schedule[at + 1 : at + 2])
        held = latents.clone()
        held[:, :, self.positions] = target.to(held.device, held.dtype)
        return held


def _control_kwargs(params: StylizeParams) -> dict[str, Any]:
    nets = params.controlnets
    return {
        "controlnet_conditioning_scale": [n.scale for n in nets],
        "control_guidance_start": [n.start for n in nets],
        "control_guidance_end": [n.end for n in nets],
    }


def _reference_kwargs(
    runtime: Runtime, loaded: LoadedModels, pipe: Any, req: Request
) -> dict[str, Any]:
    """ip_adapter_image_embeds for the call, and the adapter's scale set on `pipe`'s UNet.

    Embeddings in diffusers' precomputed form: with classifier-free guidance the unconditional
    half first, a zero embedding, as diffusers makes it for the plain IP-Adapter."""
    if req.reference is None:
        return {}
    embeds = runtime.reference_embeds(loaded, req.reference)
    unet = pipe.unet
    embeds = embeds.to(unet.device, unet.dtype)[:, None]  # (1, images per adapter, D)
    guided = req.params.guidance > 1.0 and unet.config.time_cond_proj_dim is None
    if guided:
        embeds = torch.cat([torch.zeros_like(embeds), embeds])
    pipe.set_ip_adapter_scale(req.params.ip_adapter_scale)  # processors are per UNet copy
    return {"ip_adapter_image_embeds": [embeds]}


def _common_kwargs(
    req: Request,
    hook: StepHook,
    anchor: Anchor | None = None,
    fusion: LatentFusion | None = None,
) -> dict[str, Any]:
    p = req.params
    return {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt or None,
        "height": req.height,
        "width": req.width,
        "num_inference_steps": p.steps,
        "guidance_scale": p.guidance,
        "output_type": "np",
        "callback_on_step_end": step_callback(hook, anchor, fusion),
        "callback_on_step_end_tensor_inputs": ["latents"],
    }


def denoise_video(
    runtime: Runtime, loaded: LoadedModels, req: Request, hook: StepHook
) -> list[np.ndarray]:
    """Denoise the request's frames together with the motion module; float32 HxWx3 0..1 each."""
    p = req.params
    if p.mode == "text2video":
        pipe = runtime.pipeline(loaded, "text2video")
        frames = len(req.controls[0])
    else:
        if req.beauty is None:
            raise PipelineError("video2video needs the beauty pass")
        pipe = runtime.pipeline(loaded, "video2video")
        frames = len(req.beauty)
    pipe.scheduler = make_scheduler(p.scheduler, loaded.pipe.scheduler.config, motion=True)
    plan = memory_plan(req.memory_level)
    set_free_noise(pipe, frames, max(1, motion_window(loaded) // plan.window_divisor))
    set_vae_memory(pipe.vae, plan)
    noise = fusion = None
    if req.motion is not None and p.temporal_fusion:
        if req.motion.frames != frames:
            raise PipelineError(f"motion for {req.motion.frames} frames, not {frames}")
        channels = int(pipe.unet.config.in_channels)
        noise = torch.from_numpy(warped_noise(req.motion, channels, req.seed))
        noise = noise.permute(1, 0, 2, 3)[None]  # (1, C, F, h, w), as the pipeline's latents
        if p.fusion_strength > 0.0:
            schedule = FusionSchedule(p.fusion_strength, p.fusion_end)
            fusion = LatentFusion(req.motion, schedule, held=req.anchors.keys())
    anchor = None
    if req.anchors:
        anchor = Anchor(pipe, req.anchors, anchor_seed(req.seed), noise)
    kwargs = _common_kwargs(req, hook, anchor, fusion) | {"generator": generator(req.seed)}
    kwargs |= _reference_kwargs(runtime, loaded, pipe, req)
    kwargs["decode_chunk_size"] = plan.decode_frames
    if req.controls:
        kwargs |= _control_kwargs(p) | {"conditioning_frames": req.controls}
    if p.mode == "text2video":
        kwargs["num_frames"] = frames
        if noise is not None:
            kwargs["latents"] = noise.to(pipe.unet.device, pipe.unet.dtype)
    else:
        kwargs["strength"] = p.strength
        start = _noised_video(pipe, req, noise, plan) if noise is not None else None
        if start is None:
            kwargs["video"] = req.beauty
        else:  # the pipeline takes either the video or latents made from it
            kwargs["latents"] = start
    out = pipe(**kwargs).frames
    return [np.asarray(f, np.float32) for f in out[0]]


def _noised_video(
    pipe: Any, req: Request, noise: torch.Tensor, plan: MemoryPlan
) -> torch.Tensor | None:
    """video2video's starting latents with the given noise: the beauty frames encoded and
    noised to the first step's level, as the pipeline does itself with noise of its own.
    None when strength leaves no step to run (then there is nothing to noise)."""
    p = req.params
    device, dtype = pipe.unet.device, pipe.unet.dtype
    pipe.scheduler.set_timesteps(p.steps, device=device)
    timesteps, _ = pipe.get_timesteps(p.steps, pipe.scheduler.timesteps, p.strength, device)
    if len(timesteps) == 0:
        return None
    video = pipe.video_processor.preprocess_video(req.beauty, height=req.height, width=req.width)
    video = video.permute(0, 2, 1, 3, 4)[0]  # (F, 3, H, W)
    vae = pipe.vae
    upcast = bool(vae.config.force_upcast) and vae.dtype == torch.float16
    if upcast:  # as the pipeline: SD VAEs overflow when encoding in half precision
        vae.to(dtype=torch.float32)
    try:
        with torch.no_grad():
            pixels = video.to(device, torch.float32 if upcast else dtype)
            clean = pipe.encode_video(pixels, generator(req.seed), plan.decode_frames)
    finally:
        if upcast:
            vae.to(dtype=dtype)
    clean = clean.to(dtype) * vae.config.scaling_factor  # (F, C, h, w)
    frames_first = noise[0].permute(1, 0, 2, 3).to(device, dtype)
    noised = pipe.scheduler.add_noise(clean, frames_first, timesteps[:1])
    return noised.permute(1, 0, 2, 3)[None]


def set_vae_memory(vae: Any, plan: MemoryPlan) -> None:
    """The VAE is shared by every pipeline of a model set: its state is set before each call."""
    (vae.enable_slicing if plan.vae_slicing else vae.disable_slicing)()
    (vae.enable_tiling if plan.vae_tiling else vae.disable_tiling)()


def _on_off(value: object) -> str:
    return "on" if value else "off"


@contextmanager
def memory_scope(loaded: LoadedModels, level: int, what: str) -> Iterator[MemoryPlan]:
    """One chunk's memory level on the model set's shared VAE, for the chunk only.

    The models stay loaded between jobs (and the VAE is shared by every pipeline built from
    them), so what a raised level switches on is put back to level 0's settings when the chunk
    ends, however it ends: a later job, of any pipeline, starts as it asked. The log line
    names the level and what the chunk found, so a setting left behind would show there.
    """
    vae = loaded.pipe.vae
    found = f"slicing {_on_off(getattr(vae, 'use_slicing', False))}, tiling " + _on_off(
        getattr(vae, "use_tiling", False)
    )
    plan = memory_plan(level)
    set_vae_memory(vae, plan)
    log.info(
        "%s at memory level %d: VAE slicing %s, tiling %s (found with %s)",
        what,
        level,
        _on_off(getattr(vae, "use_slicing", False)),
        _on_off(getattr(vae, "use_tiling", False)),
        found,
    )
    try:
        yield plan
    finally:
        set_vae_memory(vae, MEMORY_PLANS[0])


def denoise_frame(
    runtime: Runtime, loaded: LoadedModels, req: Request, index: int, hook: StepHook
) -> np.ndarray:
    """One frame made on its own (no motion module), from the request's frame `index`."""
    p = req.params
    controls = [net[index][None] for net in req.controls]  # per net: one 1xHxWx3 image
    kwargs = _common_kwargs(req, hook) | {"generator": generator(req.seed)}
    if controls:
        kwargs |= _control_kwargs(p)
    if req.beauty is not None:
        pipe = runtime.pipeline(loaded, "img2img")
        kwargs |= {"image": req.beauty[index][None], "strength": p.strength}
        if controls:
            kwargs["control_image"] = controls
    else:
        pipe = runtime.pipeline(loaded, "txt2img")
        kwargs["image"] = controls
    pipe.scheduler = make_scheduler(p.scheduler, loaded.pipe.scheduler.config, motion=False)
    set_vae_memory(pipe.vae, memory_plan(req.memory_level))
    kwargs |= _reference_kwargs(runtime, loaded, pipe, req)
    out = pipe(**kwargs).images
    return np.asarray(out[0], np.float32)


def model_set(
    checkpoint: str,
    motion_adapter: str | None,
    controlnets: Sequence[str],
    lora: tuple[str, float] | None,
    device: str,
    ip_adapter: tuple[str, str] | None = None,
) -> ModelSet:
    """ip_adapter: (IP-Adapter, image encoder) names, for a job with a style reference."""
    return ModelSet(
        checkpoint=checkpoint,
        motion_adapter=motion_adapter,
        controlnets=tuple(controlnets),
        loras=(LoraSpec(*lora),) if lora else (),
        ip_adapter=ip_adapter[0] if ip_adapter else None,
        image_encoder=ip_adapter[1] if ip_adapter else None,
        dtype=dtype_for(device),
        device=device,
    )
