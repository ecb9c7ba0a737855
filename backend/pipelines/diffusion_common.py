"""What the diffusion pipelines share (stylize on both engines, diffusion in-betweening):
progress stage names, the per-step progress and cancel hook, the step callback diffusers calls,
the check for missing models, seeds derived from a job's seed, the sizes the VAE takes and the
dtype a device runs in.

Torch-free, like the pipelines that validate jobs with it: torch is imported only by
generator(), which only the runtimes (already holding torch) call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..jobs import PipelineError
from .base import RunContext
from .stylize_params import MAX_SEED

if TYPE_CHECKING:
    import torch

LOAD_STAGE = "load"  # the first job imports torch and loads the models
DENOISE_STAGE = "denoise"

# Step hook: (steps done in this call, steps of this call) -> None; may raise Canceled.
StepHook = Callable[[int, int], None]
# What a step callback may do to the latents after a step, besides reporting it:
# hold some frames on pictures (pipe, step index, timestep, latents) -> latents ...
HoldFrames = Callable[[Any, int, Any, Any], Any]
# ... and fuse the frames along the render's motion (latents, step index, steps) -> latents.
FuseFrames = Callable[[Any, int, int], Any]


def progress_hook(ctx: RunContext, call: int = 0, calls: int = 1) -> StepHook:
    """Per denoising step: stop if canceled, then report the steps done so far.

    A chunk made by `calls` pipeline calls of equal length reports them as one count.
    """

    def hook(done: int, total: int) -> None:
        ctx.check_cancel()
        ctx.progress(DENOISE_STAGE, call * total + done, calls * total)

    return hook


def step_callback(
    hook: StepHook, hold: HoldFrames | None = None, fuse: FuseFrames | None = None
) -> Callable[..., dict[str, Any]]:
    """diffusers' callback_on_step_end: the hook first (it may raise Canceled, and then nothing
    after it runs), then the held frames, then fusion, which continues from the held frames."""

    def on_step_end(pipe: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        hook(i + 1, int(pipe.num_timesteps))
        if hold is None and fuse is None:
            return {}
        latents = tensors["latents"]
        if hold is not None:
            latents = hold(pipe, i, t, latents)
        if fuse is not None:
            latents = fuse(latents, i, int(pipe.num_timesteps))
        return {"latents": latents}

    return on_step_end


def require_models(missing: Sequence[str]) -> None:
    """Fail the job naming what to install (the lines of a pipeline's missing_models)."""
    if missing:
        raise PipelineError("Models missing: " + " ".join(missing))


def derived_seed(text: str) -> int:
    """A seed fixed by `text` (which names the job's seed and the part it seeds): the same part
    gets the same seed in every run, so a resumed job reproduces it exactly."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & MAX_SEED


def anchor_seed(seed: int) -> int:
    """The seed of the noise that held frames are noised with, apart from the call's own."""
    return (seed + 1) & MAX_SEED


def generator(seed: int) -> torch.Generator:
    """A torch generator on the CPU whatever the device: the same seed gives the same noise on
    every machine."""
    import torch  # only the runtimes call this, with torch already imported

    return torch.Generator("cpu").manual_seed(seed)


LATENT_MULTIPLE = 8  # the SD VAE downsamples by 8: diffusion sizes are multiples of it


def latent_size_error(width: int, height: int) -> str | None:
    """None for a size the VAE takes; otherwise the sizes to use instead, in words."""
    if width % LATENT_MULTIPLE == 0 and height % LATENT_MULTIPLE == 0:
        return None

    def near(v: int) -> str:
        low = max(LATENT_MULTIPLE, v - v % LATENT_MULTIPLE)
        return f"{low} or {low + LATENT_MULTIPLE}" if low != v else str(v)

    return (
        f"{width}×{height} is not a multiple of {LATENT_MULTIPLE} (use a width of {near(width)}"
        f" and a height of {near(height)})"
    )


def dtype_for(device: str) -> str:
    """Half precision on a GPU (SD1.5 and its ControlNets are published in fp16), float32 on a
    CPU, where half precision is slow and not every op exists."""
    return "float16" if device.startswith("cuda") else "float32"
