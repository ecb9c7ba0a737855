"""The stylize job's parameters: validated once by pydantic, unknown fields refused.

Plain pydantic (no torch), so the API validates a request without loading the model stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from ..jobs import Pass, validate_params

# AnimateDiff motion modules were trained on 16-frame clips: the default chunk and the
# FreeNoise context window. A module's window is min(this, its positional-encoding length).
MOTION_WINDOW = 16
DEFAULT_OVERLAP = 4
MAX_CHUNK = 256
MAX_SEED = 2**63 - 1
# Short side in pixels each stylize engine works best at (what its model was trained at): the
# add-on renders and sends a shot's frames at it. SD1.5 / AnimateDiff: 512; Wan2.1-VACE 1.3B:
# 480p.
ENGINE_WORKING_SIZE = {"animatediff": 512, "wan_vace": 480}
# Wan2.1-VACE: frames per window (4k+1; the 1.3B was trained on 81) and frames a window holds
# on the previous window's written frames.
VACE_MAX_WINDOW = 81
VACE_DEFAULT_OVERLAP = 5

Mode = Literal["video2video", "text2video", "per_frame"]
SchedulerName = Literal["ddim", "euler_a", "dpmpp_2m", "lcm"]
ControlPass = Literal["depth", "normal", "lineart"]
Engine = Literal["animatediff", "wan_vace"]
VaceControl = Literal["depth", "lineart", "luminance", "none"]

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


class VaceParams(BaseModel):
    """Engine wan_vace: the control video Wan2.1-VACE follows, and how the shot is windowed."""

    model_config = _CONFIG

    control: VaceControl = Field(
        "depth",
        description="control video made from: the depth pass (normalised once per shot), the "
        "lineart pass, the beauty pass's luminance, or none (prompt and reference only)",
    )
    conditioning_scale: float = Field(1.0, ge=0.0, le=4.0, description="how strongly it follows")
    model: str | None = Field(None, description="default: the first installed Wan2.1-VACE model")
    window: int = Field(
        VACE_MAX_WINDOW,
        ge=5,
        le=VACE_MAX_WINDOW,
        description=f"frames generated together: 4k+1, at most {VACE_MAX_WINDOW}",
    )
    overlap: int = Field(
        VACE_DEFAULT_OVERLAP,
        ge=0,
        description="frames a window shares with the previous one, held on what it wrote",
    )
    run_size: tuple[int, int] | None = Field(
        None,
        description="set by the backend when the job starts: the width and height the model "
        "ran at (about its working area, multiples of 16); frames come back at the job's size",
    )

    @model_validator(mode="after")
    def _windows(self) -> Self:
        if (self.window - 1) % 4:
            low = (self.window - 1) // 4 * 4 + 1
            raise ValueError(
                f"window must be 4k+1 frames (e.g. {low} or {low + 4}), not {self.window}"
            )
        if self.overlap >= self.window:
            raise ValueError(
                f"overlap ({self.overlap}) must be smaller than window ({self.window})"
            )
        return self


class StylizeParams(BaseModel):
    model_config = _CONFIG

    engine: Engine = Field(
        "animatediff",
        description="animatediff (SD1.5 + motion module + ControlNets) or wan_vace "
        "(Wan2.1-VACE, settings in vace)",
    )
    vace: VaceParams | None = Field(None, description="engine wan_vace: its settings")

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
        description="video modes: follow Blender's Vector pass (and Depth, for occlusion) with "
        "flow-warped initial noise and flow-guided latent fusion; both passes are then required "
        "for every frame (a start without them is refused, naming them). Off for comparison, "
        "or for a shot without motion passes",
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
    def _engine(self) -> Self:
        if self.engine == "animatediff":
            if self.vace is not None:
                raise ValueError('vace settings apply to engine "wan_vace" only')
            return self
        animatediff_only = [
            name
            for name, used in (
                ("controlnets", bool(self.controlnets)),
                ("lora", self.lora is not None),
                ("checkpoint", self.checkpoint is not None),
                ("motion_adapter", self.motion_adapter is not None),
                ("ip_adapter", self.ip_adapter is not None),
                ("image_encoder", self.image_encoder is not None),
            )
            if used
        ]
        if animatediff_only:
            raise ValueError(
                f"{', '.join(animatediff_only)} belong to engine animatediff; engine wan_vace "
                "takes its control from vace.control and its model from vace.model"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # An animatediff job's params read back exactly as before engines existed.
        data = handler(self)
        if self.engine == "animatediff" and isinstance(data, dict):
            data.pop("engine", None)
            data.pop("vace", None)
        return data

    @property
    def vace_settings(self) -> VaceParams:
        """The wan_vace settings, defaults filled in."""
        return self.vace if self.vace is not None else VaceParams()

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
    return validate_params(StylizeParams, raw, "stylize")
