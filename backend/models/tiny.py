"""Tiny random models of every kind the pipelines use, in the real on-disk formats.

`make_tiny_models(dest)` writes about 2.5 MB that the registry recognises and the loaders
load exactly like users' multi-GB models, so tests and the demo run the real code on a CPU in
seconds. The architectures are the shipped skeletons configs/tiny-* (SD1.5's structure: the
same block types, an 8x VAE, 77-token CLIP; just 8-16 channels). Weights are drawn from fixed
seeds with our own initialiser (zero-initialised layers such as ControlNet zero-convs and LoRA
up-projections get non-zero values, so every model visibly changes an output), so two runs
write byte-identical files. The tiny Wan2.1-VACE is in tiny_wan.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    ControlNetModel,
    DDIMScheduler,
    MotionAdapter,
    SparseControlNetModel,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)
from transformers.utils import logging as transformers_logging

from . import ldm_layout
from .sidecars import METADATA_KEY, SIDECAR_NAME, single_file_sidecar
from .skeletons import SKELETONS_DIR
from .tiny_common import SEEDS, fresh, randomize, write_sidecar
from .tiny_wan import make_tiny_wan_vace

# Saving tiny files needs no progress bars on stderr.
diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

TINY_SD = SKELETONS_DIR / "tiny-sd15"
TINY_CONTROLNET = SKELETONS_DIR / "tiny-controlnet"
TINY_MOTION_ADAPTER = SKELETONS_DIR / "tiny-motion-adapter"
TINY_SPARSECTRL = SKELETONS_DIR / "tiny-sparsectrl"

# Relative paths make_tiny_models writes, in the recommended folder layout.
CHECKPOINT_FOLDER = "checkpoints/tiny-sd15"
CHECKPOINT_FILE = "checkpoints/tiny-sd15-ldm.safetensors"
CONTROLNET_DEPTH_FOLDER = "controlnet/tiny-controlnet-depth"
CONTROLNET_NORMAL_FILE = "controlnet/tiny-controlnet-normal.safetensors"
CONTROLNET_LINEART_FILE = "controlnet/tiny-controlnet-lineart.safetensors"
MOTION_FOLDER = "motion/tiny-motion-adapter"
MOTION_FILE = "motion/tiny-mm-sd-v15-v2.safetensors"
SPARSECTRL_FOLDER = "sparsectrl/tiny-sparsectrl-rgb"
LORA_FILE = "lora/tiny-lora.safetensors"
# As published (h94/IP-Adapter: models/ip-adapter_sd15.safetensors + models/image_encoder/).
IP_ADAPTER_FILE = "ip_adapter/tiny-ip-adapter-sd15.safetensors"
IMAGE_ENCODER_FOLDER = "ip_adapter/image_encoder"

LORA_RANK = 2
LORA_ALPHA = 1.0
# The tiny CLIP image encoder: SD1.5's IP-Adapter uses ViT-H/14 (224 px, 1024-d embeddings).
IMAGE_ENCODER_SIZE = 32
IMAGE_EMBED_DIM = 16
IP_ADAPTER_TOKENS = 4  # image tokens of the plain IP-Adapter's projection
_STARTOFTEXT, _ENDOFTEXT = "<|startoftext|>", "<|endoftext|>"


# ---- building blocks ----------------------------------------------------------------------


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters byte-level BPE uses for bytes (GPT-2/CLIP convention)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes (no merges): 256 + 256 end-of-word + 2 special ids."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab |= {_STARTOFTEXT: 512, _ENDOFTEXT: 513}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_tiny_pipeline() -> StableDiffusionPipeline:
    unet = UNet2DConditionModel.from_config(_json(TINY_SD / "unet" / "config.json"))
    vae = AutoencoderKL.from_config(_json(TINY_SD / "vae" / "config.json"))
    text_config = CLIPTextConfig.from_pretrained(TINY_SD / "text_encoder", local_files_only=True)
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler.from_config(_json(TINY_SD / "scheduler" / "scheduler_config.json"))
    return StableDiffusionPipeline(
        vae=randomize(vae, SEEDS["vae"]),
        text_encoder=randomize(text_encoder, SEEDS["text_encoder"]),
        tokenizer=build_tiny_tokenizer(),
        unet=randomize(unet, SEEDS["unet"]),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_controlnet(seed: int) -> ControlNetModel:
    net = ControlNetModel.from_config(_json(TINY_CONTROLNET / "config.json"))
    return randomize(net, seed)


def build_tiny_motion_adapter() -> MotionAdapter:
    adapter = MotionAdapter.from_config(_json(TINY_MOTION_ADAPTER / "config.json"))
    return randomize(adapter, SEEDS["motion"])


def build_tiny_sparsectrl() -> SparseControlNetModel:
    net = SparseControlNetModel.from_config(_json(TINY_SPARSECTRL / "config.json"))
    return randomize(net, SEEDS["sparsectrl"])


def tiny_lora_state_dict(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """A kohya-style LoRA (the layout most SD1.5 LoRAs are published in) for the tiny pipeline:
    rank-2 updates of every UNet attention projection and the text encoder's first layer."""
    gen = torch.Generator().manual_seed(SEEDS["lora"])
    targets: list[tuple[str, torch.nn.Module]] = []
    for name, module in sorted(pipe.unet.named_modules()):
        if isinstance(module, torch.nn.Linear) and re.search(
            r"\.attn[12]\.(to_[qkv]|to_out\.0)$", name
        ):
            targets.append(("lora_unet_" + name.replace(".", "_"), module))
    for name, module in sorted(pipe.text_encoder.named_modules()):
        if isinstance(module, torch.nn.Linear) and re.search(
            r"layers\.0\.self_attn\.\w+_proj$", name
        ):
            # Published LoRAs name CLIP's modules with the text_model. level transformers 5 dropped.
            full = name if name.startswith("text_model.") else "text_model." + name
            targets.append(("lora_te_" + full.replace(".", "_"), module))
    state: dict[str, torch.Tensor] = {}
    for key, linear in targets:
        state[f"{key}.lora_down.weight"] = 0.5 * torch.randn(
            LORA_RANK, linear.in_features, generator=gen
        )
        state[f"{key}.lora_up.weight"] = 0.5 * torch.randn(
            linear.out_features, LORA_RANK, generator=gen
        )
        state[f"{key}.alpha"] = torch.tensor(LORA_ALPHA)
    return state


def build_tiny_image_encoder() -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    config = CLIPVisionConfig(
        hidden_size=8,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=IMAGE_ENCODER_SIZE,
        patch_size=8,
        projection_dim=IMAGE_EMBED_DIM,
    )
    encoder = randomize(CLIPVisionModelWithProjection(config), SEEDS["image_encoder"])
    processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_ENCODER_SIZE},
        crop_size={"height": IMAGE_ENCODER_SIZE, "width": IMAGE_ENCODER_SIZE},
    )
    return encoder, processor


def tiny_ip_adapter_state_dict(unet: UNet2DConditionModel) -> dict[str, torch.Tensor]:
    """A plain SD1.5 IP-Adapter for `unet`, in the published single-file layout.

    image_proj.*: image embedding -> 4 tokens of the cross-attention width; ip_adapter.<n>.*:
    the extra key/value projections of each cross-attention layer, numbered as the original
    implementation numbers all attention layers (self-attention ones even, cross odd), in the
    order diffusers walks the UNet's attention processors.
    """
    gen = torch.Generator().manual_seed(SEEDS["ip_adapter"])
    cross = int(unet.config.cross_attention_dim)

    def weight(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, generator=gen) / math.sqrt(cols)

    state = {
        "image_proj.proj.weight": weight(IP_ADAPTER_TOKENS * cross, IMAGE_EMBED_DIM),
        "image_proj.proj.bias": 0.02 * torch.randn(IP_ADAPTER_TOKENS * cross, generator=gen),
        "image_proj.norm.weight": 1.0 + 0.1 * torch.randn(cross, generator=gen),
        "image_proj.norm.bias": 0.02 * torch.randn(cross, generator=gen),
    }
    index = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        attention = unet.get_submodule(name.removesuffix(".processor"))
        inner = int(attention.to_k.out_features)
        state[f"ip_adapter.{index}.to_k_ip.weight"] = weight(inner, cross)
        state[f"ip_adapter.{index}.to_v_ip.weight"] = weight(inner, cross)
        index += 2
    return state


# ---- writing ------------------------------------------------------------------------------


def _save(state: dict[str, torch.Tensor], path: Path, declared: dict[str, str]) -> Path:
    """Write a safetensors file; `declared` goes in as the registry's "framesmith" metadata.

    One metadata key only: safetensors writes metadata in hash-map order, so several keys
    would make the bytes differ from run to run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses tensors that share storage (the duplicated pos_encoder tables).
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}
    metadata = {METADATA_KEY: json.dumps(declared, sort_keys=True)} if declared else None
    save_file(tensors, str(path), metadata=metadata)
    return path


def make_tiny_models(dest: Path, *, video_models: bool = False) -> list[Path]:
    """Write the tiny model set under `dest` (created if needed); returns the paths written.

    Only the paths listed above are replaced; anything else in `dest` is left alone.
    video_models: also the tiny Wan2.1-VACE (engine wan_vace).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if video_models:
        written.append(make_tiny_wan_vace(dest))
    pipe = build_tiny_pipeline()
    written += _write_checkpoints(dest, pipe)
    written += _write_controlnets(dest)
    written += _write_motion_models(dest)
    written.append(_save(tiny_lora_state_dict(pipe), fresh(dest / LORA_FILE), {}))
    written.append(_save(tiny_ip_adapter_state_dict(pipe.unet), fresh(dest / IP_ADAPTER_FILE), {}))
    encoder, processor = build_tiny_image_encoder()
    folder = fresh(dest / IMAGE_ENCODER_FOLDER)
    encoder.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    written.append(folder)
    return written


def _write_checkpoints(dest: Path, pipe: StableDiffusionPipeline) -> list[Path]:
    """The tiny checkpoint as a diffusers folder and as an original (LDM) single file."""
    folder = fresh(dest / CHECKPOINT_FOLDER)
    pipe.save_pretrained(folder, safe_serialization=True)
    single: dict[str, torch.Tensor] = {}
    single |= ldm_layout.unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    single |= ldm_layout.vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)
    single |= ldm_layout.clip_to_ldm(pipe.text_encoder.state_dict())
    return [folder, _save(single, fresh(dest / CHECKPOINT_FILE), {"config": TINY_SD.name})]


def _write_controlnets(dest: Path) -> list[Path]:
    """Three ControlNets in the three layouts users have: folder, original file, diffusers file."""
    depth = build_tiny_controlnet(SEEDS["depth"])
    folder = fresh(dest / CONTROLNET_DEPTH_FOLDER)
    depth.save_pretrained(folder, safe_serialization=True)
    write_sidecar(folder / SIDECAR_NAME, {"controlnet_type": "depth"})

    normal = build_tiny_controlnet(SEEDS["normal"])  # original control_model.* layout
    normal_file = _save(
        ldm_layout.controlnet_to_ldm(normal.state_dict(), normal.config),
        fresh(dest / CONTROLNET_NORMAL_FILE),
        {"config": TINY_CONTROLNET.name, "controlnet_type": "normal"},
    )

    lineart = build_tiny_controlnet(SEEDS["lineart"])  # diffusers layout in one file
    lineart_file = _save(
        lineart.state_dict(),
        fresh(dest / CONTROLNET_LINEART_FILE),
        {"config": TINY_CONTROLNET.name},
    )
    sidecar = single_file_sidecar(lineart_file)
    write_sidecar(sidecar, {"controlnet_type": "lineart"})
    return [folder, normal_file, lineart_file, sidecar]


def _write_motion_models(dest: Path) -> list[Path]:
    """The motion adapter (folder and original file) and the SparseCtrl RGB folder."""
    adapter = build_tiny_motion_adapter()
    motion_folder = fresh(dest / MOTION_FOLDER)
    adapter.save_pretrained(motion_folder, safe_serialization=True)
    motion_file = _save(
        ldm_layout.motion_adapter_to_original(adapter.state_dict()),
        fresh(dest / MOTION_FILE),
        {"config": TINY_MOTION_ADAPTER.name},
    )
    sparse = build_tiny_sparsectrl()
    sparse_folder = fresh(dest / SPARSECTRL_FOLDER)
    sparse.save_pretrained(sparse_folder, safe_serialization=True)
    write_sidecar(sparse_folder / SIDECAR_NAME, {"controlnet_type": "rgb"})
    return [motion_folder, motion_file, sparse_folder]


def write_tiny_skeleton_tokenizer(dest: Path = TINY_SD / "tokenizer") -> Path:
    """(Re)write the tiny skeleton's tokenizer files shipped in configs/tiny-sd15/tokenizer/."""
    build_tiny_tokenizer().save_pretrained(fresh(dest))
    return dest
