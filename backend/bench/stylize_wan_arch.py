"""The real-size Wan2.1-VACE 1.3B with random weights, for speed (engine wan_vace).

The transformer and the VAE are the published 1.3B architecture (12 heads of 128, FFN 8960, 30
layers, VACE blocks at every second layer, 96 VACE input channels; the Wan VAE at diffusers'
defaults), built on PyTorch's meta device first, so building is free and FLOPs are counted on
meta tensors; only what runs then gets memory and random values (stylize_arch.materialize).

The umT5-XXL text encoder (5.7B parameters, about 11 GB in bf16) runs once per prompt and its
embeddings are cached by the runtime (stylize_wan_runtime), so a window never runs it: its FLOPs
are counted on meta, and a one-layer stand-in with the same output width makes the embeddings.
The tokenizer is the tiny model's (the umT5 vocabulary cannot be shipped); it pads to the same
512 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from diffusers.utils import logging as diffusers_logging
from transformers import UMT5Config, UMT5EncoderModel

from ..models.tiny_wan import build_tiny_umt5_tokenizer
from ..pipelines.wan_control import TEMPORAL_STEP
from .stylize_arch import _count

TOKENS = 512  # the pipeline's max_sequence_length
TEXT_DIM = 4096  # umT5-XXL's width: the transformer's text_dim
LAYERS = 30
WAN_13B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": TEXT_DIM,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": LAYERS,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
    "vace_layers": list(range(0, LAYERS, 2)),
    "vace_in_channels": 96,
}
UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": TEXT_DIM,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
}


def build_on_meta(dtype: torch.dtype) -> WanVACEPipeline:
    """The 1.3B pipeline: transformer in `dtype`, VAE in float32 (as the backend loads it) on
    the meta device; the text encoder stand-in small and real, in `dtype`, on the CPU."""
    tokenizer = build_tiny_umt5_tokenizer()
    with torch.device("meta"):
        transformer = WanVACETransformer3DModel(**WAN_13B)
        vae = AutoencoderKLWan()
    small = {"d_kv": 8, "d_ff": 16, "num_layers": 1, "num_heads": 2}
    config = UMT5Config(vocab_size=len(tokenizer), d_model=TEXT_DIM, **small)
    stand_in = UMT5EncoderModel(config)
    if dtype != transformer.dtype:
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its float32 modules are kept just below
        try:
            transformer.to(dtype=dtype)
        finally:
            diffusers_logging.set_verbosity(verbosity)
        _keep_in_float32(transformer)
    stand_in.to(dtype=dtype)
    for module in (transformer, vae, stand_in):
        module.eval().requires_grad_(False)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=stand_in,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _keep_in_float32(model: Any) -> None:
    """What diffusers keeps in float32 when it loads the model in half precision (the rope,
    the time embedding, the norms, the modulation tables), kept so here too."""
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and any(k in name.split(".") for k in keep):
                tensor.data = tensor.data.to(torch.float32)


@dataclass(frozen=True)
class WanFlops:
    """FLOPs of one VACE window (2 per multiply-add), as FlopCounterMode counts them."""

    step: float  # one denoising step: the transformer with its VACE blocks, once per CFG branch
    encode: float  # the VAE encoding the control video twice (VACE's kept and generated parts)
    decode: float  # the VAE decoding every frame
    text: float  # umT5-XXL on the prompt and the negative prompt: once per prompt, cached

    def window(self, steps: int) -> float:
        """What a window costs (the text encoder is not run: its embeddings are cached)."""
        return steps * self.step + self.encode + self.decode


def latent_frames(frames: int) -> int:
    return (frames - 1) // TEMPORAL_STEP + 1


def count_flops(pipe: WanVACEPipeline, width: int, height: int, frames: int, cfg: bool) -> WanFlops:
    """Count while the transformer and the VAE are still on the meta device."""
    transformer, vae = pipe.transformer, pipe.vae
    dtype = transformer.dtype
    t, h, w = latent_frames(frames), height // 8, width // 8
    vace = len(transformer.config.vace_layers)

    def meta(*shape: int, like: torch.dtype = dtype) -> torch.Tensor:
        return torch.zeros(shape, device="meta", dtype=like)

    def step() -> None:
        for _ in range(2 if cfg else 1):  # the pipeline runs the two branches one after other
            transformer(
                hidden_states=meta(1, 16, t, h, w),
                timestep=torch.zeros(1, device="meta", dtype=torch.long),
                encoder_hidden_states=meta(1, TOKENS, TEXT_DIM),
                control_hidden_states=meta(1, 96, t, h, w),
                control_hidden_states_scale=meta(vace),
                return_dict=False,
            )

    def encode() -> None:
        for _ in range(2):
            vae.encode(meta(1, 3, frames, height, width, like=torch.float32))

    def decode() -> None:
        vae.decode(meta(1, 16, t, h, w, like=torch.float32))

    def text() -> None:
        with torch.device("meta"):
            encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
        ids = torch.zeros((2 if cfg else 1, TOKENS), dtype=torch.long, device="meta")
        encoder(ids)

    return WanFlops(_count(step), _count(encode), _count(decode), _count(text))


def parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
