"""The in-between job's parameters, and those of its diffusion method: validated once by
pydantic, unknown fields refused. Plain pydantic (no torch), so the API validates a request
without loading the model stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..jobs import validate_params
from .stylize_params import MAX_SEED, MOTION_WINDOW, SchedulerName

MIN_CLIP = 3  # two ends and at least one frame between them


class DiffusionParams(BaseModel):
    """Options of method "diffusion" (params.diffusion; omitted = all defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field("", max_length=4000)
    negative_prompt: str = Field("", max_length=4000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    steps: int = Field(25, ge=1, le=200, description="denoising steps per clip")
    guidance: float = Field(7.5, ge=0.0, le=30.0, description="classifier-free guidance scale")
    scheduler: SchedulerName = "ddim"
    checkpoint: str | None = Field(None, description="default: the first installed checkpoint")
    motion_adapter: str | None = Field(
        None, description="default: the first installed motion adapter"
    )
    sparsectrl: str | None = Field(
        None,
        description="SparseCtrl model name; default: the first installed RGB SparseCtrl model "
        "(or one of unknown type)",
    )
    conditioning_scale: float = Field(1.0, ge=0.0, le=4.0, description="SparseCtrl strength")
    clip_length: int = Field(
        MOTION_WINDOW,
        ge=MIN_CLIP,
        le=MOTION_WINDOW,
        description="frames generated together, both ends included; longer gaps are filled "
        "through generated anchor frames",
    )
    hold_keys: bool = Field(
        True, description="hold each clip's end frames on their pictures while denoising"
    )


class InbetweenParams(BaseModel):
    """method: "flow" (estimated optical flow, the default), "crossfade", "diffusion", or
    "render": render-assisted, the motion taken from the renderer's Vector and Depth passes,
    which must then be uploaded for every frame from the first key to the last (the job's
    missing inputs name them); chosen explicitly, never guessed from what was uploaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["flow", "crossfade", "diffusion", "render"] = "flow"
    on_twos: bool = False
    flow_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    diffusion: DiffusionParams | None = None  # method "diffusion" only; None: its defaults

    @property
    def diffusion_settings(self) -> DiffusionParams:
        """The diffusion method's settings, defaults filled in."""
        return self.diffusion if self.diffusion is not None else DiffusionParams()


def parse_params(raw: Mapping[str, Any]) -> InbetweenParams:
    return validate_params(InbetweenParams, raw, "in-between")
