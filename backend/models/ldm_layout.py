"""Diffusers → original (LDM / AnimateDiff) tensor names, to write single files as the wild has them.

The tiny-model builder uses this to write a checkpoint in the layout of v1-5-pruned.safetensors,
a ControlNet in the layout of control_v11p_sd15_*.safetensors and a motion module in the
layout of mm_sd_v15_v2, so the tests load them through diffusers' real single-file converters.
Only names (and the 1x1-conv shape of the original VAE attention) change; values do not.

No torch import: tensors are passed through and only reshaped with their own methods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
CONTROLNET_PREFIX = "control_model."

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


class LayoutError(KeyError):
    """A tensor name this mapping does not know."""


def _rename_part(rest: str, table: Mapping[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old) :]
    return rest


def _unet_block_key(key: str, layers_per_block: int, up_has_attention: Sequence[bool]) -> str:
    """One UNet/ControlNet encoder tensor name, diffusers → LDM (without prefix)."""
    per = layers_per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, what, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + i * per + j
        if what == "resnets":
            return f"input_blocks.{index}.0.{_rename_part(rest, _UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename_part(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i, what, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if what == "resnets":
            return f"output_blocks.{i * per + j}.0.{_rename_part(rest, _UNET_RESNET)}"
        return f"output_blocks.{i * per + j}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        i = int(m[1])
        # The upsampler follows the resnet (and the attention, if the block has one).
        slot = 2 if up_has_attention[i] else 1
        return f"output_blocks.{i * per + layers_per_block}.{slot}.conv.{m[2]}"
    renamed = _rename_part(key, _TOP_LEVEL)
    if renamed != key:
        return renamed
    raise LayoutError(key)


def unet_to_ldm(
    state_dict: Mapping[str, Any], config: Mapping[str, Any], prefix: str = UNET_PREFIX
) -> dict[str, Any]:
    lpb = int(config["layers_per_block"])
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    return {prefix + _unet_block_key(k, lpb, up_attn): v for k, v in state_dict.items()}


def vae_to_ldm(
    state_dict: Mapping[str, Any], config: Mapping[str, Any], prefix: str = VAE_PREFIX
) -> dict[str, Any]:
    n = len(config["block_out_channels"])
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = _vae_key(key, n)
        if ".mid.attn_1." in new and new.endswith(
            ("q.weight", "k.weight", "v.weight", "proj_out.weight")
        ):
            value = value.reshape(*value.shape, 1, 1)  # the original attention uses 1x1 convs
        out[prefix + new] = value
    return out


def _vae_key(key: str, n_blocks: int) -> str:
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{_rename_part(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        # The original decoder numbers its levels from the bottom.
        level = n_blocks - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{_rename_part(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_part(m[3], _VAE_RESNET)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_rename_part(m[2], _VAE_ATTENTION)}"
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.+)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if re.fullmatch(r"(encoder|decoder)\.conv_(in|out)\..+|(post_)?quant_conv\..+", key):
        return key
    raise LayoutError(key)


def clip_to_ldm(state_dict: Mapping[str, Any], prefix: str = CLIP_PREFIX) -> dict[str, Any]:
    """The original checkpoint stores transformers' CLIPTextModel under a prefix, as
    `text_model.*` (transformers 5 dropped that level from the module, not from the files)."""
    return {
        prefix + (k if k.startswith("text_model.") else "text_model." + k): v
        for k, v in state_dict.items()
    }


def controlnet_to_ldm(
    state_dict: Mapping[str, Any], config: Mapping[str, Any], prefix: str = CONTROLNET_PREFIX
) -> dict[str, Any]:
    lpb = int(config["layers_per_block"])
    n_hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
            new = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(.+)", key):
            new = f"middle_block_out.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", key):
            new = f"input_hint_block.0.{m[1]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", key):
            # input_hint_block is one nn.Sequential of conv, SiLU, conv, SiLU, ...
            new = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", key):
            new = f"input_hint_block.{2 * (n_hint_blocks + 1)}.{m[1]}"
        else:
            new = _unet_block_key(key, lpb, up_has_attention=())
        out[prefix + new] = value
    return out


def motion_adapter_to_original(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """MotionAdapter → the mm_sd_v15_v2 layout (temporal_transformer, attention_blocks, pos_encoder)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(
            r"((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.(.+)", key
        )
        if m is None:
            raise LayoutError(key)
        head, rest = f"{m[1]}.motion_modules.{m[2]}.temporal_transformer", m[3]
        t = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", rest)
        if t is None:  # norm, proj_in, proj_out of the temporal transformer
            out[f"{head}.{rest}"] = value
            continue
        block, inner = f"{head}.transformer_blocks.{t[1]}", t[2]
        if inner == "pos_embed.pe":
            # Each original attention block carries its own copy of the sinusoidal table.
            for a in (0, 1):
                out[f"{block}.attention_blocks.{a}.pos_encoder.pe"] = value
            continue
        inner = re.sub(r"^attn([12])\.", lambda g: f"attention_blocks.{int(g[1]) - 1}.", inner)
        inner = re.sub(r"^norm([12])\.", lambda g: f"norms.{int(g[1]) - 1}.", inner)
        inner = re.sub(r"^norm3\.", "ff_norm.", inner)
        out[f"{block}.{inner}"] = value
    return out
