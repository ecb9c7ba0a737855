"""The kinds of model Framesmith knows: their names, folders, what each pipeline mode needs.

Plain tables, no I/O. A downloadable catalogue (name, repo, files, sha256, size, licence per
model) belongs here too, next to the kinds it fills.

Recommended layout of a models folder (scanning is recursive and ignores it; it is where
messages send people):

    <models>/checkpoints/   SD1.5-family base models
    <models>/controlnet/    ControlNets (depth, normal, lineart, ...)
    <models>/motion/        AnimateDiff motion modules
    <models>/sparsectrl/    AnimateDiff SparseCtrl models
    <models>/lora/          LoRAs
    <models>/ip_adapter/    IP-Adapters (.safetensors) and their CLIP image encoder folder
    <models>/tokenizer/     the CLIP tokenizer, needed by single-file checkpoints
    <models>/wan/           Wan2.1-VACE diffusers folders (the video model of engine wan_vace)
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class ModelKind(enum.StrEnum):
    CHECKPOINT = "checkpoint"
    CONTROLNET = "controlnet"
    MOTION_ADAPTER = "motion_adapter"
    SPARSECTRL = "sparsectrl"
    LORA = "lora"
    IP_ADAPTER = "ip_adapter"
    IMAGE_ENCODER = "image_encoder"
    TOKENIZER = "tokenizer"
    WAN_VACE = "wan_vace"


@dataclass(frozen=True)
class KindInfo:
    label: str  # "motion adapter": for sentences
    folder: str  # recommended sub-folder
    example: str  # what to put there


KINDS: Mapping[ModelKind, KindInfo] = {
    ModelKind.CHECKPOINT: KindInfo(
        "checkpoint",
        "checkpoints",
        "an SD1.5-family checkpoint (a single .safetensors such as "
        "v1-5-pruned-emaonly.safetensors, or a diffusers folder with model_index.json)",
    ),
    ModelKind.CONTROLNET: KindInfo(
        "ControlNet",
        "controlnet",
        "an SD1.5 ControlNet (e.g. control_v11f1p_sd15_depth.safetensors or a diffusers "
        "ControlNetModel folder)",
    ),
    ModelKind.MOTION_ADAPTER: KindInfo(
        "motion adapter",
        "motion",
        "an AnimateDiff motion module (e.g. mm_sd_v15_v2.safetensors or a diffusers "
        "MotionAdapter folder)",
    ),
    ModelKind.SPARSECTRL: KindInfo(
        "SparseCtrl model",
        "sparsectrl",
        "an AnimateDiff SparseCtrl model (a diffusers SparseControlNetModel folder such as "
        "animatediff-sparsectrl-rgb)",
    ),
    ModelKind.LORA: KindInfo("LoRA", "lora", "an SD1.5 LoRA (.safetensors)"),
    ModelKind.IP_ADAPTER: KindInfo(
        "IP-Adapter", "ip_adapter", "an SD1.5 IP-Adapter (e.g. ip-adapter_sd15.safetensors)"
    ),
    ModelKind.IMAGE_ENCODER: KindInfo(
        "image encoder",
        "ip_adapter",
        "the IP-Adapter CLIP image encoder (a diffusers/transformers folder)",
    ),
    ModelKind.TOKENIZER: KindInfo(
        "CLIP tokenizer",
        "tokenizer",
        "the tokenizer/ folder of Stable Diffusion 1.5 (vocab.json, merges.txt, "
        "tokenizer_config.json, special_tokens_map.json)",
    ),
    ModelKind.WAN_VACE: KindInfo(
        "Wan2.1-VACE model",
        "wan",
        "a Wan2.1-VACE diffusers folder (e.g. Wan2.1-VACE-1.3B-diffusers, with transformer/, "
        "vae/, text_encoder/, tokenizer/, scheduler/ and model_index.json)",
    ),
}

# What each pipeline mode needs. The first mode of each pipeline is the default of missing_for.
PIPELINE_MODES: Mapping[str, Mapping[str, tuple[ModelKind, ...]]] = {
    "stylize": {
        "video": (ModelKind.CHECKPOINT, ModelKind.MOTION_ADAPTER),
        "per_frame": (ModelKind.CHECKPOINT,),
        "wan_vace": (ModelKind.WAN_VACE,),
    },
    "inbetween": {
        "diffusion": (ModelKind.CHECKPOINT, ModelKind.MOTION_ADAPTER, ModelKind.SPARSECTRL),
        "flow": (),
    },
}

# Conditioning types a ControlNet may have, and the name fragments that hint at them. Order
# matters: the first match wins ("lineart" before "line", "softedge" before "edge").
CONTROLNET_TYPES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("depth", ("depth", "midas", "zoe")),
    ("normal", ("normal", "normalbae", "nrm")),
    ("lineart", ("lineart", "line", "freestyle")),
    ("canny", ("canny",)),
    ("softedge", ("softedge", "hed", "pidi")),
    ("scribble", ("scribble", "sketch")),
    ("openpose", ("openpose", "pose")),
    ("segmentation", ("seg",)),
    ("mlsd", ("mlsd",)),
    ("tile", ("tile",)),
    ("inpaint", ("inpaint",)),
    ("ip2p", ("ip2p",)),
    ("shuffle", ("shuffle",)),
    ("rgb", ("rgb",)),
)
KNOWN_CONTROLNET_TYPES = frozenset(t for t, _ in CONTROLNET_TYPES)
