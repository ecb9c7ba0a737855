"""Load a Wan2.1-VACE diffusers folder offline (safetensors only), for engine wan_vace.

The VAE stays in float32 whatever the dtype (Wan's VAE loses detail in half precision and is
small); the text encoder (umT5, about 11 GB in bf16 for the real model) stays on the CPU: it
runs once per prompt, and its embeddings are cached by the runtime.
"""

from __future__ import annotations

from .offline import ensure_offline

ensure_offline()

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from diffusers import AutoencoderKLWan, WanVACEPipeline  # noqa: E402

from .loading import ModelLoadError, resolve_dtype  # noqa: E402
from .registry import (  # noqa: E402
    KINDS,
    ModelEntry,
    ModelKind,
    ModelRegistry,
    check_wan_vace_folder,
    read_checked_header,
)
from .safetensors_header import HeaderError, sniff_pickle  # noqa: E402


def _checked_folder(entry: ModelEntry, registry: ModelRegistry | None) -> Path:
    """The folder, checked again right before diffusers reads it (it may have changed)."""
    if entry.kind != ModelKind.WAN_VACE:
        raise ModelLoadError(
            f"'{entry.name}' is a {KINDS[entry.kind].label}, not a {KINDS[ModelKind.WAN_VACE].label}"
        )
    path = entry.path
    if not path.is_dir():
        raise ModelLoadError(
            f"Wan2.1-VACE model '{entry.name}' is no longer at {path}: it was moved or deleted "
            "since the models folder was scanned"
        )
    try:
        check_wan_vace_folder(path)
    except Exception as exc:  # registry._Refused: the folder changed since the scan
        raise ModelLoadError(f"'{entry.name}' ({path}) is {exc}") from None
    root = registry.root if registry is not None else None
    for file in sorted(path.rglob("*.safetensors")):
        real = file.resolve()
        if root is not None and root not in real.parents:
            raise ModelLoadError(f"'{entry.name}': {file.name} resolves outside the models folder")
        if sniff_pickle(real):
            raise ModelLoadError(f"'{entry.name}': {file.name} is a pickle; never loaded")
        try:
            read_checked_header(real)
        except (HeaderError, OSError) as exc:
            raise ModelLoadError(
                f"'{entry.name}': {file.name} is not a valid safetensors file ({exc})"
            ) from None
    return path


def _frozen(model: Any) -> Any:
    model.eval()
    model.requires_grad_(False)
    return model


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
        _frozen(model)
    pipe.transformer.to(device)
    pipe.vae.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def folder_fingerprint(entry: ModelEntry) -> tuple[Any, ...]:
    """Changes when any weights file of the folder changes on disk."""
    stats = []
    for file in sorted(entry.path.rglob("*.safetensors")):
        try:
            st = file.stat()
        except OSError:
            continue
        stats.append((str(file), st.st_size, st.st_mtime_ns))
    return (entry.kind.value, str(entry.path), tuple(stats))
