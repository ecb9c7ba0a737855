"""Load a Wan2.1-VACE diffusers folder offline (safetensors only), for engine wan_vace.

The VAE stays in float32 whatever the dtype (Wan's VAE loses detail in half precision and is
small); the text encoder (umT5, about 11 GB in bf16 for the real model) stays on the CPU: it
runs once per prompt, and its embeddings are cached by the runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline

from .catalogue import ModelKind
from .dtypes import resolve_dtype
from .entries import ModelEntry, Refused
from .load_checks import ModelLoadError, checked_path, expect_kind
from .loaders import freeze
from .registry import ModelRegistry
from .wan_folder import check_wan_vace_folder


def _checked_folder(entry: ModelEntry, registry: ModelRegistry | None) -> Path:
    """The folder, checked again right before diffusers reads it (it may have changed): the
    same file checks as every other model, then the Wan folder's own layout."""
    expect_kind(entry, ModelKind.WAN_VACE)
    path = checked_path(entry, registry)
    try:
        check_wan_vace_folder(path)
    except (Refused, OSError) as exc:  # the folder changed since the scan
        raise ModelLoadError(f"'{entry.name}' ({path}) is {exc}") from None
    return path


def load_wan_vace(
    entry: ModelEntry,
    *,
    registry: ModelRegistry | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
) -> WanVACEPipeline:
    """The folder as a WanVACEPipeline: transformer in `dtype` on `device`, VAE in float32 on
    `device`, text encoder in `dtype` on the CPU."""
    path = _checked_folder(entry, registry)
    common: dict[str, Any] = {
        "local_files_only": True,
        "use_safetensors": True,
        "variant": entry.variant,
    }
    try:
        vae = AutoencoderKLWan.from_pretrained(
            str(path), subfolder="vae", dtype=torch.float32, **common
        )
        pipe = WanVACEPipeline.from_pretrained(
            str(path), vae=vae, dtype=resolve_dtype(dtype), **common
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"Wan2.1-VACE model '{entry.name}' could not be loaded from {path}: {exc}"
        ) from None
    for model in (pipe.transformer, pipe.vae, pipe.text_encoder):
        freeze(model)
    pipe.transformer.to(device)
    pipe.vae.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe
