"""What a safetensors file or a model folder is, from its tensor names, shapes and configs.

Never from the file name (only a ControlNet's conditioning type may be hinted at by its name).
Every function raises Refused with a sentence for the person when the content is something
Framesmith will not run: SDXL/SD2 models, inpainting checkpoints, pickle-only folders, ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .catalogue import CONTROLNET_TYPES, ModelKind
from .entries import Refused
from .safetensors_header import SafetensorsHeader, is_pickle_name
from .sidecars import read_json

SD_PIPELINE_CLASSES = frozenset(
    {
        "StableDiffusionPipeline",
        "StableDiffusionImg2ImgPipeline",
        "StableDiffusionControlNetPipeline",
        "LatentConsistencyModelPipeline",
        "AnimateDiffPipeline",
    }
)
_LORA_KEY = re.compile(r"[._]lora(_[AB]|_down|_up|\.down|\.up|_linear_layer)[._]")

# ---- single files ---------------------------------------------------------------------------


def classify_header(header: SafetensorsHeader) -> tuple[ModelKind, str | None]:
    """(kind, default config skeleton) of a single safetensors file, from its tensor names."""
    keys = list(header.tensors)
    if not keys:
        raise Refused("an empty safetensors file")

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keys)

    def starts(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in keys)

    if starts("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_") or any(
        _LORA_KEY.search(k) for k in keys
    ):
        if has("motion_modules"):
            raise Refused("an AnimateDiff motion LoRA: not supported yet")
        if starts("lora_te2_", "lora_unet_input_blocks_4_1_transformer_blocks_1"):
            raise Refused("an SDXL LoRA: Framesmith runs SD1.5-family models only")
        return ModelKind.LORA, None
    if starts("image_proj.") and starts("ip_adapter."):
        return ModelKind.IP_ADAPTER, None
    if starts("model.diffusion_model."):
        return ModelKind.CHECKPOINT, _checkpoint_config(header, keys)
    if has("input_hint_block."):
        _check_context_dim(header, keys, "ControlNet")
        return ModelKind.CONTROLNET, "sd15-controlnet"
    # SparseCtrl RGB's "simplified" condition embedding is a single conv with no conv_in.
    if {"controlnet_cond_embedding.conv_in.weight", "controlnet_cond_embedding.weight"} & set(keys):
        if starts("add_embedding."):
            raise Refused("an SDXL ControlNet: Framesmith runs SD1.5-family models only")
        _check_context_dim(header, keys, "ControlNet")
        if has(".motion_modules."):
            return ModelKind.SPARSECTRL, None
        return ModelKind.CONTROLNET, "sd15-controlnet"
    if has(".motion_modules.") and starts("down_blocks.", "mid_block.", "up_blocks."):
        return ModelKind.MOTION_ADAPTER, "sd15-motion-adapter-v2"
    sample = ", ".join(sorted(keys)[:3])
    raise Refused(f"safetensors content Framesmith does not recognise (tensors such as {sample})")


def _checkpoint_config(header: SafetensorsHeader, keys: list[str]) -> str | None:
    if any(k.startswith("conditioner.embedders.") for k in keys):
        raise Refused("an SDXL checkpoint: Framesmith runs SD1.5-family models only")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        raise Refused("a Stable Diffusion 2.x checkpoint: Framesmith runs SD1.5-family models only")
    for part, what in (
        ("first_stage_model.", "VAE"),
        ("cond_stage_model.transformer.", "CLIP text encoder"),
    ):
        if not any(k.startswith(part) for k in keys):
            raise Refused(f"an incomplete checkpoint (no {what} inside): use a full checkpoint")
    conv_in = header.shape("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and len(conv_in) == 4 and conv_in[1] != 4:
        raise Refused(
            f"an inpainting/edit checkpoint ({conv_in[1]}-channel UNet): "
            "Framesmith needs a plain SD1.5-family checkpoint"
        )
    _check_context_dim(header, keys, "checkpoint")
    if conv_in is not None and conv_in[0] == 320:
        return "sd15"
    return None


def _check_context_dim(header: SafetensorsHeader, keys: list[str], what: str) -> None:
    for key in keys:
        if key.endswith("attn2.to_k.weight"):
            shape = header.shape(key) or ()
            if len(shape) == 2 and shape[1] in (1024, 2048):
                family = "Stable Diffusion 2.x" if shape[1] == 1024 else "SDXL"
                raise Refused(f"a {family} {what}: Framesmith runs SD1.5-family models only")
            return


# ---- folders --------------------------------------------------------------------------------


def check_sd15_cross_attention(config: Mapping[str, Any], what: str) -> None:
    dim = config.get("cross_attention_dim")
    if dim in (1024, 2048):
        family = "Stable Diffusion 2.x" if dim == 1024 else "SDXL"
        raise Refused(f"a {family} {what}: Framesmith runs SD1.5-family models only")


def folder_kind(config: Mapping[str, Any]) -> ModelKind | None:
    """The kind of a single-model folder from its config.json, or None for no model we know."""
    cls = config.get("_class_name")
    kinds = {
        "ControlNetModel": ModelKind.CONTROLNET,
        "MotionAdapter": ModelKind.MOTION_ADAPTER,
        "SparseControlNetModel": ModelKind.SPARSECTRL,
    }
    if cls in kinds:
        return kinds[cls]
    if cls == "ControlNetXSAdapter" or cls == "ControlNetUnionModel":
        raise Refused(f"a {cls} folder: not supported")
    architectures = config.get("architectures") or []
    if "CLIPVisionModelWithProjection" in architectures:
        return ModelKind.IMAGE_ENCODER
    return None


def weights_stem(kind: ModelKind) -> str:
    return "model" if kind == ModelKind.IMAGE_ENCODER else "diffusion_pytorch_model"


def weights_variant(directory: Path, stem: str) -> str | None:
    """None for plain safetensors weights, e.g. "fp16" when only that variant exists."""
    if (directory / f"{stem}.safetensors").is_file() or (
        directory / f"{stem}.safetensors.index.json"
    ).is_file():
        return None
    variants = sorted(
        p.name[len(stem) + 1 : -len(".safetensors")]
        for p in directory.glob(f"{stem}.*.safetensors")
        if "-of-" not in p.name
    )
    if variants:
        return "fp16" if "fp16" in variants else variants[0]
    pickles = (
        [p.name for p in directory.iterdir() if is_pickle_name(p)] if directory.is_dir() else []
    )
    if pickles:
        raise Refused(
            f"{directory.name}/ holds its weights only as pickle files ({', '.join(pickles)}): "
            "Framesmith loads .safetensors weights only"
        )
    raise Refused(f"{directory.name}/ has no {stem}.safetensors weights")


def check_pipeline_folder(directory: Path, model_index: Mapping[str, Any]) -> str | None:
    """The weights variant of an SD1.5-family diffusers checkpoint folder; refused otherwise."""
    cls = str(model_index.get("_class_name", ""))
    if "XL" in cls or "3" in cls or "Flux" in cls:
        raise Refused(f"a {cls} folder: Framesmith runs SD1.5-family models only")
    if cls not in SD_PIPELINE_CLASSES:
        raise Refused(f"a {cls or 'unknown'} pipeline folder, not an SD1.5-family checkpoint")
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if component not in model_index or not (directory / component).is_dir():
            raise Refused(f"incomplete diffusers checkpoint: no {component}/ folder")
    unet = read_json(directory / "unet" / "config.json") or {}
    if unet.get("in_channels", 4) != 4:
        raise Refused(
            f"an inpainting/edit checkpoint ({unet.get('in_channels')}-channel UNet): "
            "Framesmith needs a plain SD1.5-family checkpoint"
        )
    if unet.get("addition_embed_type") == "text_time":
        raise Refused("an SDXL checkpoint: Framesmith runs SD1.5-family models only")
    check_sd15_cross_attention(unet, "checkpoint")
    variants = {
        weights_variant(directory / "unet", "diffusion_pytorch_model"),
        weights_variant(directory / "vae", "diffusion_pytorch_model"),
        weights_variant(directory / "text_encoder", "model"),
    }
    if len(variants) > 1:
        raise Refused("its unet, vae and text_encoder weights have different variants")
    return variants.pop()


def is_tokenizer_folder(directory: Path) -> bool:
    if (directory / "tokenizer.json").is_file():
        return True
    return (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()


# ---- ControlNet conditioning ------------------------------------------------------------------


def conditioning_type(
    kind: ModelKind,
    name: str,
    declared: Mapping[str, Any],
    hints: tuple[str, ...],
) -> str | None:
    """A ControlNet's or SparseCtrl's type: declared, else hinted at by its name or config."""
    if kind not in {ModelKind.CONTROLNET, ModelKind.SPARSECTRL}:
        return None
    ctype = declared.get("controlnet_type")
    if isinstance(ctype, str) and ctype.strip():
        return ctype.strip().lower()
    for text in (name.rsplit("/", 1)[-1], *hints, name):
        found = _type_from_name(text)
        if found:
            return found
    return None


def _type_from_name(text: str) -> str | None:
    tokens = [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]
    for ctype, fragments in CONTROLNET_TYPES:
        for token in tokens:
            if any(token == f or (len(f) > 3 and token.startswith(f)) for f in fragments):
                return ctype
    return None
