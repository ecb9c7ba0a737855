"""The torch side of engine wan_vace: the Wan2.1-VACE pipeline kept loaded between jobs,
prompt embeddings cached by prompt, memory levels, and one VACE call per window.

Imported only when a wan_vace window runs, so the API never pays for torch/diffusers imports.
"""

from __future__ import annotations

import html
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..device import free_memory
from ..jobs import PipelineError
from ..models.catalogue import ModelKind
from ..models.entries import fingerprint as folder_fingerprint
from ..models.load_checks import ModelLoadError
from ..models.wan import load_wan_vace
from ..vision.pixels import to_uint8
from .diffusion_common import StepHook, generator, step_callback
from .wan_control import Window

MAX_TOKENS = 512  # WanVACEPipeline's max_sequence_length
_EMBEDDINGS_KEPT = 8


@dataclass(frozen=True)
class WanMemoryPlan:
    """How a window runs at one memory level (the worker's out-of-memory retry ladder)."""

    vae_tiling: bool  # the VAE encodes and decodes in tiles, one frame slice at a time
    cpu_offload: bool  # each model moves to the GPU only while it runs (CUDA only)


WAN_MEMORY_PLANS = (
    WanMemoryPlan(vae_tiling=False, cpu_offload=False),
    WanMemoryPlan(vae_tiling=True, cpu_offload=False),
    WanMemoryPlan(vae_tiling=True, cpu_offload=True),
)


def wan_memory_plan(level: int) -> WanMemoryPlan:
    return WAN_MEMORY_PLANS[min(max(level, 0), len(WAN_MEMORY_PLANS) - 1)]


def wan_dtype(device: str) -> str:
    """bf16 on a GPU (Wan is published and run in bf16), float32 on a CPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


@dataclass(frozen=True)
class WanRequest:
    """One window's VACE call, besides the model."""

    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    conditioning_scale: float
    window: Window
    size: tuple[int, int]  # (width, height) the model runs at
    reference: np.ndarray | None = None  # style image, float32 HxWx3 0..1
    memory_level: int = 0


class WanRuntime:
    """The last Wan2.1-VACE model loaded on one device, and its prompt embeddings."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._key: tuple[Any, ...] | None = None
        self._pipe: Any = None
        self._offloaded = False
        self._embeddings: OrderedDict[tuple[Any, ...], tuple[torch.Tensor, ...]] = OrderedDict()
        self._lock = threading.RLock()

    def load(self, registry: Any, name: str) -> Any:
        with self._lock:
            try:
                entry = registry.get(name, ModelKind.WAN_VACE)
            except KeyError as exc:
                raise PipelineError(str(exc.args[0])) from None
            dtype = wan_dtype(self.device)
            key = (folder_fingerprint(entry), dtype, self.device)
            if key != self._key:
                self._pipe, self._key = None, None
                self._embeddings.clear()
                free_memory()
                try:
                    self._pipe = load_wan_vace(
                        entry, registry=registry, dtype=dtype, device=self.device
                    )
                except ModelLoadError as exc:
                    raise PipelineError(str(exc)) from None
                self._key, self._offloaded = key, False
            return self._pipe

    def embeddings(self, pipe: Any, prompt: str, negative: str, guided: bool) -> tuple[Any, Any]:
        """(prompt, negative prompt or None) embeddings; the text encoder runs once per prompt."""
        key = (self._key, prompt, negative if guided else None)
        with self._lock:
            if key in self._embeddings:
                self._embeddings.move_to_end(key)
                positive, *rest = self._embeddings[key]
                return positive, (rest[0] if rest else None)
            encoded = _encode(pipe, [prompt, negative] if guided else [prompt], self.device)
            self._embeddings[key] = tuple(encoded)
            while len(self._embeddings) > _EMBEDDINGS_KEPT:
                self._embeddings.popitem(last=False)
            return encoded[0], (encoded[1] if guided else None)

    def set_memory(self, pipe: Any, plan: WanMemoryPlan) -> None:
        """The memory level's settings, set before every window (jobs differ in level)."""
        vae = pipe.vae
        (vae.enable_tiling if plan.vae_tiling else vae.disable_tiling)()
        offload = plan.cpu_offload and self.device.startswith("cuda")
        if offload == self._offloaded:
            return
        if offload:
            pipe.enable_model_cpu_offload(device=self.device)
        else:
            pipe.remove_all_hooks()
            pipe.transformer.to(self.device)
            pipe.vae.to(self.device)
            pipe.text_encoder.to("cpu")
        self._offloaded = offload
        free_memory()


def _clean(text: str) -> str:
    # As diffusers' prompt_clean, without ftfy (an optional dependency not installed here).
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def _encode(pipe: Any, prompts: list[str], device: str) -> list[torch.Tensor]:
    """umT5 embeddings of each prompt, zero past its tokens, as WanVACEPipeline makes them.

    The encoder lives on the CPU; on a GPU it visits the device for this call only."""
    tokens = pipe.tokenizer(
        [_clean(p) for p in prompts],
        padding="max_length",
        max_length=MAX_TOKENS,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    encoder = pipe.text_encoder
    visit = device.startswith("cuda") and not hasattr(encoder, "_hf_hook")
    where = torch.device(device) if visit else next(encoder.parameters()).device
    try:
        if visit:
            encoder.to(device)
        with torch.no_grad():
            hidden = encoder(
                tokens.input_ids.to(where), tokens.attention_mask.to(where)
            ).last_hidden_state
    finally:
        if visit:
            encoder.to("cpu")
            free_memory()
    lengths = tokens.attention_mask.sum(dim=1)
    out = []
    for row, length in zip(hidden, lengths, strict=True):
        kept = torch.zeros_like(row)
        kept[: int(length)] = row[: int(length)]
        out.append(kept[None].to("cpu"))
    return out


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def denoise_window(
    runtime: WanRuntime, pipe: Any, req: WanRequest, hook: StepHook
) -> list[np.ndarray]:
    """The window's frames at the run size, float32 HxWx3 0..1, padding included."""
    runtime.set_memory(pipe, wan_memory_plan(req.memory_level))
    guided = req.guidance > 1.0
    positive, negative = runtime.embeddings(pipe, req.prompt, req.negative_prompt, guided)
    width, height = req.size
    window = req.window

    masks = [
        Image.new("RGB", (width, height), (255, 255, 255) if m else (0, 0, 0)) for m in window.mask
    ]
    kwargs: dict[str, Any] = {
        "video": [_pil(v) for v in window.video],
        "mask": masks,
        "conditioning_scale": req.conditioning_scale,
        "height": height,
        "width": width,
        "num_frames": len(window.video),
        "num_inference_steps": req.steps,
        "guidance_scale": req.guidance,
        "generator": generator(req.seed),
        "prompt_embeds": positive,
        "negative_prompt_embeds": negative,
        "output_type": "np",
        "callback_on_step_end": step_callback(hook),
        "callback_on_step_end_tensor_inputs": ["latents"],
    }
    if req.reference is not None:
        kwargs["reference_images"] = [_pil(req.reference)]
    with torch.no_grad():
        frames = pipe(**kwargs).frames[0]
    return [np.asarray(f, np.float32) for f in frames]


_RUNTIMES: dict[str, WanRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def runtime_for(device: str) -> WanRuntime:
    """The Wan model kept loaded for one device (one worker thread per device uses it)."""
    with _RUNTIMES_LOCK:
        return _RUNTIMES.setdefault(device, WanRuntime(device))
