"""The in-between job's parameters, and those of its diffusion method: validated once by
pydantic, unknown fields refused. Plain pydantic (no torch), so the API validates a request
without loading the model stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..jobs import Pass, validate_params
from .stylize_params import MAX_SEED, MOTION_WINDOW, VACE_MAX_WINDOW, SchedulerName

MIN_CLIP = 3  # two ends and at least one frame between them
MIN_VACE_WINDOW = 5  # 4k+1 frames, k >= 1
DiffusionEngine = Literal["sparsectrl", "wan_vace"]
InbetweenControl = Literal["depth", "lineart"]
# The guide pass each control reads, of every frame from key to key.
CONTROL_GUIDE: dict[str, Pass] = {"depth": Pass.DEPTH, "lineart": Pass.LINEART}
# What only engine sparsectrl reads: refused with wan_vace rather than silently ignored.
SPARSECTRL_ONLY = ("checkpoint", "motion_adapter", "sparsectrl")


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
    engine: DiffusionEngine = Field(
        "sparsectrl",
        description="sparsectrl (SparseCtrl RGB keys in AnimateDiff) or wan_vace (Wan2.1-VACE: "
        "the keys held at their frames through its mask, everything else generated)",
    )
    control: InbetweenControl | None = Field(
        None,
        description="engine wan_vace: follow the depth or lineart guide pass of every frame from "
        "key to key (then required inputs, as for method 'render'); null: the keys alone",
    )
    wan_vace: str | None = Field(
        None, description="engine wan_vace: default the first installed Wan2.1-VACE model"
    )
    window: int = Field(
        VACE_MAX_WINDOW,
        ge=MIN_VACE_WINDOW,
        le=VACE_MAX_WINDOW,
        description=f"engine wan_vace: frames generated together, both ends included (4k+1, at "
        f"most {VACE_MAX_WINDOW}); longer gaps are filled through generated anchor frames",
    )
    run_size: tuple[int, int] | None = Field(
        None,
        description="engine wan_vace, set by the backend when the job starts: the width and "
        "height the model ran at; frames come back at the job's size",
    )

    @model_validator(mode="after")
    def _engine(self) -> Self:
        if (self.window - 1) % 4:
            low = (self.window - 1) // 4 * 4 + 1
            raise ValueError(
                f"window must be 4k+1 frames (e.g. {low} or {low + 4}), not {self.window}"
            )
        if self.engine == "wan_vace":
            used = [name for name in SPARSECTRL_ONLY if getattr(self, name) is not None]
            if used:
                raise ValueError(
                    f"{', '.join(used)} belong to engine sparsectrl; engine wan_vace takes its "
                    "model from wan_vace"
                )
        elif self.control is not None or self.wan_vace is not None:
            raise ValueError(
                'control and wan_vace apply to engine "wan_vace" only (SparseCtrl follows the '
                "keys alone)"
            )
        return self

    @property
    def guide_pass(self) -> Pass | None:
        """The pass a wan_vace in-between follows between the keys, if any."""
        if self.engine != "wan_vace" or self.control is None:
            return None
        return CONTROL_GUIDE[self.control]


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
