"""Real-size SD1.5 + ControlNet + AnimateDiff architectures with random weights, for speed.

Built from the shipped config skeletons (backend/models/configs/sd15*) on PyTorch's meta device
first: building is then free, FLOPs are counted on meta tensors (shapes only, no arithmetic),
and only the modules that run are given memory on the real device and filled with random
values. Speed does not depend on the weights' values; the values are still kept sane
(unit-variance fan-in scaling, norms at 1) so no denormals or infinities slow a CPU down.

The SD1.5 tokenizer's vocabulary cannot be shipped: the tiny byte-level tokenizer stands in.
It pads to the same 77 tokens, so the text encoder does the same work.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    MotionAdapter,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from ..models.cache import LoadedModels, ModelSet
from ..models.skeletons import SKELETONS_DIR
from ..models.tiny import build_tiny_tokenizer

SD15 = SKELETONS_DIR / "sd15"
CONTROLNET = SKELETONS_DIR / "sd15-controlnet"
MOTION_ADAPTER = SKELETONS_DIR / "sd15-motion-adapter-v2"
TOKENS = 77
_POOL = 1 << 20  # random values generated once, tiled into every weight

# Dense (no sparsity) fp16/bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s.
# Matched against torch.cuda.get_device_name() in order: the first substring found wins.
GPU_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("4090", 165.0),
    ("3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
)


def gpu_peak(name: str) -> tuple[float, str] | None:
    """(peak dense fp16/bf16 TFLOP/s, the table row matched) for a CUDA device name."""
    for key, peak in GPU_PEAKS:
        if key.lower() in name.lower():
            return peak, key
    return None


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def build_on_meta(dtype: torch.dtype, device: str) -> LoadedModels:
    """The whole real-size model set on the meta device, in the LoadedModels shape the stylize
    runtime takes (as if the backend's loader had loaded it)."""
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_json(SD15 / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(_json(SD15 / "vae" / "config.json"))
        text_config = CLIPTextConfig.from_pretrained(SD15 / "text_encoder", local_files_only=True)
        text_encoder = CLIPTextModel(text_config)
        adapter = MotionAdapter.from_config(_json(MOTION_ADAPTER / "config.json"))
        controlnet = ControlNetModel.from_config(_json(CONTROLNET / "config.json"))
    for module in (unet, vae, text_encoder, adapter, controlnet):
        module.to(dtype=dtype).eval().requires_grad_(False)
    scheduler = DDIMScheduler.from_config(_json(SD15 / "scheduler" / "scheduler_config.json"))
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    names = ModelSet(
        checkpoint="sd15-random",
        motion_adapter="mm-sd15-v2-random",
        controlnets=("controlnet-sd15-random",),
        dtype=str(dtype).removeprefix("torch."),
        device=device,
    )
    return LoadedModels(names, pipe, adapter, (controlnet,), None)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- FLOPs, counted on meta tensors -----------------------------------------------------------


@dataclass(frozen=True)
class RunFlops:
    """FLOPs of one text-to-video call (2 per multiply-add), as FlopCounterMode counts them."""

    step: float  # one denoising step: ControlNet + motion UNet on the CFG batch (2 x frames)
    decode: float  # the VAE decoding every frame
    text: float  # the text encoder (prompt and negative prompt)

    def total(self, steps: int) -> float:
        return steps * self.step + self.decode + self.text


def _count(fn: Callable[[], Any]) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return float(counter.get_total_flops())


def count_flops(
    loaded: LoadedModels, motion_unet: torch.nn.Module, size: int, frames: int, cfg: bool
) -> RunFlops:
    """Count while every module is still on the meta device (shapes only: instant)."""
    batch = 2 if cfg else 1
    latent = size // 8
    controlnet = loaded.controlnets[0]
    dtype = loaded.pipe.unet.dtype
    text_dim = int(loaded.pipe.text_encoder.config.hidden_size)

    def meta(*shape: int) -> torch.Tensor:
        return torch.zeros(shape, device="meta", dtype=dtype)

    def step() -> None:
        per_frame = meta(batch * frames, 4, latent, latent)
        context = meta(batch * frames, TOKENS, text_dim)
        t = torch.tensor(500, device="meta")
        down, mid = controlnet(
            per_frame,
            t,
            encoder_hidden_states=context,
            controlnet_cond=meta(batch * frames, 3, size, size),
            return_dict=False,
        )
        motion_unet(
            meta(batch, 4, frames, latent, latent),
            t,
            encoder_hidden_states=context,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )

    def decode() -> None:
        loaded.pipe.vae.decode(meta(frames, 4, latent, latent))

    def text() -> None:
        ids = torch.zeros((batch, TOKENS), dtype=torch.long, device="meta")
        loaded.pipe.text_encoder(ids)

    return RunFlops(_count(step), _count(decode), _count(text))


# ---- memory and random values for what runs ---------------------------------------------------


def materialize(modules: Iterable[torch.nn.Module], device: str, seed: int = 0) -> None:
    """Give meta modules real memory on `device`, in place, filled with random values."""
    generator = torch.Generator("cpu").manual_seed(seed)
    pool = torch.randn(_POOL, generator=generator).to(device)
    for module in modules:
        module.to_empty(device=device)
        norms = {
            id(p)
            for m in module.modules()
            if isinstance(m, torch.nn.GroupNorm | torch.nn.LayerNorm)
            for p in m.parameters(recurse=False)
        }
        with torch.no_grad():
            for name, param in module.named_parameters():
                if param.ndim >= 2:
                    fan_in = math.prod(param.shape[1:])
                    _tile(param, pool, 1.0 / math.sqrt(fan_in))
                elif id(param) in norms and name.endswith("weight"):
                    param.fill_(1.0)
                else:
                    param.zero_()
            for name, buffer in module.named_buffers():
                if buffer.is_floating_point():
                    _tile(buffer, pool, 0.1)  # motion modules' positional encodings
                elif name.endswith("position_ids"):  # CLIP's token positions
                    buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
                else:
                    raise RuntimeError(f"no rule to fill the buffer {name} ({buffer.dtype})")


def _tile(tensor: torch.Tensor, pool: torch.Tensor, scale: float) -> None:
    flat = tensor.view(-1)
    whole = flat.numel() // pool.numel()
    cut = whole * pool.numel()
    if whole:
        flat[:cut].view(whole, pool.numel()).copy_(pool.expand(whole, -1))
    if cut < flat.numel():
        flat[cut:].copy_(pool[: flat.numel() - cut])
    flat.mul_(scale)
