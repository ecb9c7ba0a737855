"""Fuse a LoRA into a loaded SD1.5 pipeline's UNet and text encoder weights, through diffusers'
PEFT integration (`load_lora_weights`, `fuse_lora`, then `unload_lora_weights`).

diffusers reads the layouts (kohya/A1111 `lora_unet_...`, diffusers `unet.`-prefixed, PEFT
`lora_A`/`lora_B`) and peft adds the update to the weights. Before that, the same state dict is
checked here layer by layer, because diffusers only warns about a layer it cannot place and
loads the rest: a file that is not a LoRA, or one for another base model, is refused with a
sentence instead of half loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from peft.tuners.lora import LoraLayer

from .catalogue import ModelKind
from .entries import ModelEntry
from .load_checks import ModelLoadError, expect_kind
from .loaders import read_single_file
from .registry import ModelRegistry

_ADAPTER = "framesmith"
_COMPONENTS = ("unet", "text_encoder")
_LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:"
    r"lora_(?P<peft>[AB])(?:\.[^.]+)?"
    r"|lora[._](?P<dir1>down|up)"
    r"|lora_linear_layer\.(?P<dir2>down|up)"
    r")\.weight$"
)
_OLD_PROCESSOR_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<proj>to_q|to_k|to_v|to_out)_lora\.(?P<dir>down|up)\.weight$"
)
_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_UNET_PROJ = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}


@dataclass
class _LoraLayer:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None


def apply_lora(
    pipe: StableDiffusionPipeline,
    entry: ModelEntry,
    weight: float = 1.0,
    *,
    registry: ModelRegistry | None = None,
) -> int:
    """Fuse a LoRA into the pipeline's UNet / text encoder weights; returns the layers changed.

    Fused, and the adapter unloaded: no per-step cost. The cache keys a checkpoint by its LoRAs,
    so a fused pipeline is never reused for another set.
    """
    expect_kind(entry, ModelKind.LORA)
    raw = read_single_file(entry, registry)
    try:
        # A copy: diffusers' conversion of kohya names pops keys from the dict it is given.
        state, _ = StableDiffusionPipeline.lora_state_dict(dict(raw), unet_config=pipe.unet.config)
    except ValueError as exc:
        raise ModelLoadError(
            f"LoRA '{entry.name}' is in a layout Framesmith cannot read ({exc})"
        ) from None
    layers = _lora_layers(state)
    _check_fits(pipe, layers, entry.name)
    try:
        pipe.load_lora_weights(raw, adapter_name=_ADAPTER)
        placed = _adapter_layers(pipe)
        if placed != len(layers):
            raise ValueError(f"diffusers placed {placed} of its {len(layers)} layers")
        pipe.fuse_lora(components=list(_COMPONENTS), lora_scale=weight, adapter_names=[_ADAPTER])
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(
            f"LoRA '{entry.name}' does not fit this checkpoint ({exc}). Is it a LoRA for SD1.5?"
        ) from None
    finally:
        pipe.unload_lora_weights()  # keeps fused weights, drops the adapter layers
    return len(layers)


def _lora_target(key: str) -> tuple[str, str, str] | None:
    """(component, module path, "down"|"up") of one LoRA weight name, or None."""
    if m := _OLD_PROCESSOR_KEY.match(key):
        module, direction = m["module"].removesuffix(".processor"), m["dir"]
        table = _TEXT_PROJ if module.startswith("text_encoder") else _UNET_PROJ
        module = f"{module}.{table[m['proj']]}"
    elif m := _LORA_KEY.match(key):
        module = m["module"]
        direction = {"A": "down", "B": "up"}.get(m["peft"] or "", m["dir1"] or m["dir2"])
    else:
        return None
    component, _, rest = module.partition(".")
    if component not in _COMPONENTS:
        component, rest = "unet", module
    return component, rest, direction


def _lora_layers(state: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], _LoraLayer]:
    """{(component, module path): (down, up)} from any layout lora_state_dict returns."""
    layers: dict[tuple[str, str], _LoraLayer] = {}
    for key, value in state.items():
        if key.endswith(".alpha"):
            continue
        target = _lora_target(key)
        if target is None:
            raise ModelLoadError(
                f"unsupported LoRA tensor {key!r} (LoHa/LoKr/DoRA are not supported)"
            )
        component, path, direction = target
        setattr(layers.setdefault((component, path), _LoraLayer()), direction, value)
    return layers


def _check_fits(
    pipe: StableDiffusionPipeline, layers: Mapping[tuple[str, str], _LoraLayer], name: str
) -> None:
    """Every layer has a module of the right size in this pipeline."""
    missing = [f"{c}.{p}" for c, p in layers if _submodule(pipe, c, p) is None]
    if not layers or missing:
        example = f" (e.g. {missing[0]})" if missing else ""
        raise ModelLoadError(
            f"LoRA '{name}' does not fit this checkpoint: {len(missing)} of {len(layers)} "
            f"layers have no matching module{example}. Is it a LoRA for SD1.5?"
        )
    for (component, path), layer in layers.items():
        where = f"{name}: {component}.{path}"
        target = getattr(_submodule(pipe, component, path), "weight", None)
        if layer.down is None or layer.up is None or not isinstance(target, torch.Tensor):
            raise ModelLoadError(
                f"LoRA layer {where} is incomplete or targets a layer without weights"
            )
        rows, cols = layer.up.shape[0], math.prod(layer.down.shape[1:])
        if rows * cols != target.numel():
            raise ModelLoadError(
                f"LoRA layer {where} has shape {(rows, cols)}, the model {tuple(target.shape)}"
            )


def _submodule(pipe: StableDiffusionPipeline, component: str, path: str) -> torch.nn.Module | None:
    model = getattr(pipe, component)
    # LoRAs name CLIP modules text_model.encoder...; transformers 5 has no text_model level.
    for candidate in (path, path.removeprefix("text_model.")):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def _adapter_layers(pipe: StableDiffusionPipeline) -> int:
    """How many layers of the pipeline carry the adapter being loaded."""
    return sum(
        isinstance(module, LoraLayer) and _ADAPTER in module.lora_A
        for component in _COMPONENTS
        for module in getattr(pipe, component).modules()
    )
