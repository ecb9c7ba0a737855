"""The stylize job's parameters: validated once by pydantic, unknown fields refused.

Plain pydantic (no torch), so the API validates a request without loading the model stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import base
from .base import Pass

# AnimateDiff motion modules were trained on 16-frame clips: the default chunk and the
# FreeNoise context window. A module's window is min(this, its positional-encoding length).
MOTION_WINDOW = 16
DEFAULT_OVERLAP = 4
MAX_CHUNK = 256
MAX_SEED = 2**63 - 1
# Short side in pixels each stylize engine works best at (what its model was trained at): the
# add-on renders and sends a shot's frames at it. SD1.5 / AnimateDiff: 512.
ENGINE_WORKING_SIZE = {"animatediff": 512}

Mode = Literal["video2video", "text2video", "per_frame"]
SchedulerName = Literal["ddim", "euler_a", "dpmpp_2m", "lcm"]
ControlPass = Literal["depth", "normal", "lineart"]

_CONFIG = ConfigDict(
    extra="forbid",
    frozen=True,
    # "pass" is a Python keyword: the field is pass_, the wire name "pass" in and out.
    validate_by_name=True,
    validate_by_alias=True,
    serialize_by_alias=True,
)


class ControlNetParams(BaseModel):
    """One ControlNet fed from one render pass."""

    model_config = _CONFIG

    pass_: ControlPass = Field(alias="pass", description="render pass that feeds this ControlNet")
    model: str | None = Field(
        None,
        description="ControlNet name in the models folder; default: the first installed "
        "ControlNet of this pass's type",
    )
    scale: float = Field(1.0, ge=0.0, le=4.0, description="conditioning scale")
    start: float = Field(0.0, ge=0.0, le=1.0, description="fraction of steps where it starts")
    end: float = Field(1.0, ge=0.0, le=1.0, description="fraction of steps where it stops")

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be below end ({self.end})")
        return self

    @property
    def render_pass(self) -> Pass:
        return Pass(self.pass_)


class LoraParams(BaseModel):
    model_config = _CONFIG

    name: str = Field(min_length=1, description="LoRA name in the models folder")
    weight: float = Field(1.0, ge=-4.0, le=4.0)


class StylizeParams(BaseModel):
    model_config = _CONFIG

    prompt: str = Field("", max_length=4000)
    negative_prompt: str = Field("", max_length=4000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int = Field(20, ge=1, le=200, description="denoising steps (before strength)")
    guidance: float = Field(7.5, ge=0.0, le=30.0, description="classifier-free guidance scale")
    strength: float = Field(
        0.6,
        gt=0.0,
        le=1.0,
        description="how far from the beauty pass to go (video2video, per_frame); 1 = ignore it",
    )
    mode: Mode = "video2video"
    scheduler: SchedulerName = "ddim"
    checkpoint: str | None = Field(None, description="default: the first installed checkpoint")
    motion_adapter: str | None = Field(
        None, description="default: the first installed motion adapter"
    )
    controlnets: list[ControlNetParams] = Field(default_factory=list, max_length=8)
    lora: LoraParams | None = None
    chunk_size: int = Field(
        MOTION_WINDOW,
        ge=1,
        le=MAX_CHUNK,
        description="frames denoised together; above the motion module's window, FreeNoise "
        "windows run inside the chunk",
    )
    overlap: int = Field(
        DEFAULT_OVERLAP, ge=0, description="frames a chunk shares with the previous one"
    )
    temporal_fusion: bool = Field(
        True,
        description="video modes: follow Blender's Vector pass (upload it, and depth for "
        "occlusion) with flow-warped initial noise and flow-guided latent fusion; off for "
        "comparison. Without a Vector pass it changes nothing",
    )
    fusion_strength: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="how far the first step pulls each frame towards the previous one warped "
        "along the motion (later steps less); 0 keeps the warped noise only",
    )
    fusion_end: float = Field(
        0.6, gt=0.0, le=1.0, description="fraction of the steps after which fusion stops"
    )
    style_reference: bool = Field(
        False,
        description="follow the style of a reference image (upload it as the 'reference' pass "
        "at frame 0, any size) through an IP-Adapter and its CLIP image encoder",
    )
    ip_adapter: str | None = Field(
        None, description="with style_reference: default the first installed IP-Adapter"
    )
    image_encoder: str | None = Field(
        None, description="with style_reference: default the first installed image encoder"
    )
    ip_adapter_scale: float = Field(
        0.6, ge=0.0, le=2.0, description="how strongly the reference image steers the style"
    )
    world_to_camera: list[list[float]] | None = Field(
        None,
        description="3x3 rotation (or 4x4 view matrix) bringing world-space normals into "
        "camera space; without it normals are taken as camera space",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.uses_motion and self.overlap >= self.chunk_size:  # per_frame ignores it
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        if self.world_to_camera is not None:
            rows = self.world_to_camera
            if len(rows) not in (3, 4) or any(len(r) != len(rows) for r in rows):
                raise ValueError("world_to_camera must be a 3x3 or 4x4 matrix")
        return self

    @property
    def uses_motion(self) -> bool:
        return self.mode != "per_frame"

    @property
    def uses_beauty(self) -> bool:
        """video2video always starts from the beauty pass; per_frame unless strength is 1."""
        return self.mode == "video2video" or (self.mode == "per_frame" and self.strength < 1.0)

    @property
    def chunk_overlap(self) -> int:
        """Frames shared between chunks: none when frames are made independently."""
        return self.overlap if self.uses_motion else 0


def parse_params(raw: Mapping[str, Any]) -> StylizeParams:
    return base.parse_params(StylizeParams, raw, "stylize")
