"""A style reference through an IP-Adapter: attach the adapter and its image encoder to a pipeline."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from .catalogue import ModelKind
from .entries import ModelEntry
from .load_checks import ModelLoadError, expect_kind
from .loaders import ImageEncoder, read_single_file
from .registry import ModelRegistry

DEFAULT_IP_ADAPTER_SCALE = 0.6


def load_ip_adapter(
    pipe: StableDiffusionPipeline,
    entry: ModelEntry,
    encoder: ImageEncoder,
    scale: float = DEFAULT_IP_ADAPTER_SCALE,
    *,
    registry: ModelRegistry | None = None,
) -> None:
    """Attach an IP-Adapter (single safetensors file) and its image encoder to `pipe`.

    The weights go to diffusers as a state dict and the encoder is registered beforehand, so
    diffusers never looks for either on the hub. Changes the UNet in place (its cross-attention
    processors): the cache keys a checkpoint by its IP-Adapter, as by its LoRAs.
    """
    expect_kind(entry, ModelKind.IP_ADAPTER)
    state = _split_state(read_single_file(entry, registry))
    proj = state["image_proj"].get("proj.weight")
    if proj is None:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' is not a plain IP-Adapter (no image_proj.proj.weight); "
            "Framesmith supports the SD1.5 IP-Adapter (ip-adapter_sd15.safetensors) and its "
            "light variant"
        )
    embed_dim = int(encoder.model.config.projection_dim)
    if proj.shape[-1] != embed_dim:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' expects {proj.shape[-1]}-wide image embeddings but the "
            f"image encoder makes {embed_dim}: install the image encoder this IP-Adapter was "
            "trained with (SD1.5 IP-Adapters: the ViT-H/14 encoder, models/image_encoder)"
        )
    pipe.register_modules(image_encoder=encoder.model, feature_extractor=encoder.processor)
    try:
        pipe.load_ip_adapter(
            state, subfolder="", weight_name="", image_encoder_folder=None, low_cpu_mem_usage=False
        )
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"IP-Adapter '{entry.name}' does not fit this checkpoint ({exc}). Is it an "
            "IP-Adapter for SD1.5?"
        ) from None
    pipe.set_ip_adapter_scale(scale)


def _split_state(raw: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The published single file's flat names as the two parts diffusers takes."""
    state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in raw.items():
        part, _, rest = key.partition(".")
        if part in state:
            state[part][rest] = value
    return state
