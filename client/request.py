"""The job requests: one frozen dataclass per job kind, in three forms.

- the wire form, what the backend's pydantic models read: `job_body()` and `params()`;
- the stored form, kept on the resulting strip: `to_json()`, read back by `from_json()`;
- the backend's own report of a job (GET /v1/jobs/{id}), read by `from_job()`.

The stored form is written and read by one serializer driven by the dataclasses' fields
(`fields_to_json`, `fields_from_json` in request_fields.py), so a new field needs no code there. The knobs both
generators share live once: `SamplingOptions` (prompt, seed, steps, ...) and `ModelChoice`
(checkpoint, motion module), which `StylizeRequest`, `DiffusionOptions` and the builder's
`Settings` take their fields from. `build_request()` (client/request_builder.py) makes requests
from the scene's settings.
"""

from __future__ import annotations

import enum
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from .request_fields import JsonFields, RequestError, fields_from_json, fields_of, fields_to_json

SCHEMA = 1  # bump when a stored request's meaning changes

E = TypeVar("E", bound=enum.StrEnum)


class JobKind(enum.StrEnum):
    STYLIZE = "stylize"
    INBETWEEN = "inbetween"


class InbetweenMethod(enum.StrEnum):
    """The backend's in-between methods (backend/pipelines/inbetween_methods.py)."""

    FLOW = "flow"  # optical flow estimated from the keys alone
    CROSSFADE = "crossfade"
    RENDER = "render"  # motion from the Vector and Depth passes of every frame (guide passes)
    DIFFUSION = "diffusion"  # generated from the keys (SparseCtrl or Wan2.1-VACE; needs models)


class StylizeEngine(enum.StrEnum):
    """The backend's stylize engines (params.engine)."""

    ANIMATEDIFF = "animatediff"  # SD1.5 + motion module + ControlNets: the light one
    WAN_VACE = "wan_vace"  # Wan2.1-VACE following a control video made from one pass


class DiffusionEngine(enum.StrEnum):
    """The engines of diffusion in-betweening (params.diffusion.engine)."""

    SPARSECTRL = "sparsectrl"  # SparseCtrl RGB keys in AnimateDiff
    WAN_VACE = "wan_vace"  # Wan2.1-VACE: keys held through its mask, the rest generated


class VaceControl(enum.StrEnum):
    """What Wan2.1-VACE's control video is made from (stylize's params.vace.control)."""

    DEPTH = "depth"
    LINEART = "lineart"
    LUMINANCE = "luminance"  # the beauty pass's grey
    NONE = "none"  # the prompt (and a style reference) alone


class StylizeMode(enum.StrEnum):
    VIDEO2VIDEO = "video2video"
    TEXT2VIDEO = "text2video"
    PER_FRAME = "per_frame"


class Scheduler(enum.StrEnum):
    """The backend's scheduler names (backend/pipelines/stylize_params.py)."""

    DDIM = "ddim"
    EULER_A = "euler_a"
    DPMPP_2M = "dpmpp_2m"
    LCM = "lcm"


MIN_SIDE, MAX_SIDE = 8, 8192
# Render-assisted in-betweening reads these passes of every guide frame (see guide_frames()).
GUIDE_PASSES = ("vector", "depth")
# Temporal fusion reads the Vector pass (motion) and the Depth pass (occlusion) of every frame.
FUSION_PASSES = ("vector", "depth")
# A style reference image is the input pass "reference" at this frame (backend/jobs.py).
REFERENCE_PASS, REFERENCE_FRAME = "reference", 0
# The pass each Wan2.1-VACE control reads, for every frame (None: none).
VACE_CONTROL_PASS: dict[str, str | None] = {
    VaceControl.DEPTH: "depth",
    VaceControl.LINEART: "lineart",
    VaceControl.LUMINANCE: "beauty",
    VaceControl.NONE: None,
}
# Controls of a Wan2.1-VACE in-between: the guide pass of every frame from key to key.
INBETWEEN_CONTROLS = (VaceControl.DEPTH.value, VaceControl.LINEART.value)
VACE_MAX_WINDOW = 81  # frames Wan2.1-VACE 1.3B makes together (4k+1)
VACE_OVERLAP = 5  # frames a stylize window holds on the previous window's


# --- the parts of a request ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How a generator samples: the knobs Stylize and diffusion in-betweening share (the same
    generator, the same meaning)."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.5
    scheduler: str = Scheduler.DDIM.value


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """The checkpoint and the motion module, by the names the backend listed. "" lets the
    backend take the first installed one (it pins its choice into the job's params when the job
    starts, so `from_job()` gets the names back)."""

    checkpoint: str = ""
    motion_adapter: str = ""

    def chosen_models(self) -> dict[str, str]:
        """The names chosen here, for the params; the backend's choices are not sent."""
        return {f.name: getattr(self, f.name) for f in fields(ModelChoice) if getattr(self, f.name)}


@dataclass(frozen=True, kw_only=True)
class ControlNetUnit:
    """One pass → ControlNet of a stylize job. Stored as the backend has it: "pass", and a null
    model for the backend's choice."""

    pass_name: str
    model: str = ""  # a model name from the models folder; "" lets the backend choose
    scale: float
    start: float
    end: float

    def to_json(self) -> dict[str, Any]:
        return {
            "pass": self.pass_name,
            "model": self.model or None,
            "scale": self.scale,
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_json(cls, data: Any) -> ControlNetUnit:
        if not isinstance(data, Mapping):
            raise RequestError("the stored ControlNet is not a JSON object")
        try:
            return cls(
                pass_name=data["pass"],
                model=str(data.get("model") or ""),
                scale=float(data["scale"]),
                start=float(data["start"]),
                end=float(data["end"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RequestError(f"the stored ControlNet is incomplete: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class DiffusionOptions(JsonFields, ModelChoice, SamplingOptions):
    """The backend's `params.diffusion` of an in-between job with method "diffusion", on either
    engine: SparseCtrl in AnimateDiff (the default) or Wan2.1-VACE."""

    label: ClassVar[str] = "diffusion setup"
    steps: int = 25  # the backend's default for diffusion in-betweening
    sparsectrl: str = ""  # "": the backend takes the first installed RGB SparseCtrl model
    conditioning_scale: float = 1.0  # SparseCtrl's scale, or VACE's
    clip_length: int = 16  # frames made together: at most the motion module's window (16)
    hold_keys: bool = True
    engine: str = DiffusionEngine.SPARSECTRL.value
    control: str = ""  # wan_vace: "" (keys only), or the guide pass of every frame it follows
    wan_vace: str = ""  # "": the backend takes the first installed Wan2.1-VACE model
    window: int = VACE_MAX_WINDOW  # wan_vace: frames made together (4k+1)
    run_size: tuple[int, int] | None = None  # the backend's word: the size Wan ran at

    # Each engine's own fields: the other engine's are never sent.
    SPARSECTRL_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"checkpoint", "motion_adapter", "sparsectrl", "scheduler", "clip_length", "hold_keys"}
    )
    WAN_ONLY: ClassVar[frozenset[str]] = frozenset({"engine", "control", "wan_vace", "window"})

    def params(self) -> dict[str, Any]:
        """The backend's fields for the engine; names "" are not sent (the backend chooses), nor
        is the size the backend reported. A SparseCtrl job's are as before engines existed."""
        skip = {"run_size"} | (
            self.SPARSECTRL_ONLY if self.engine == DiffusionEngine.WAN_VACE else self.WAN_ONLY
        )
        optional = {*fields_of(ModelChoice), "sparsectrl", "wan_vace", "control"}
        return {
            k: v for k, v in self.to_json().items() if k not in skip and (v or k not in optional)
        }


@dataclass(frozen=True, kw_only=True)
class VaceOptions(JsonFields):
    """The backend's `params.vace` of a stylize job on engine wan_vace."""

    label: ClassVar[str] = "Wan2.1-VACE settings"
    control: str = VaceControl.DEPTH.value
    conditioning_scale: float = 1.0
    model: str = ""  # "": the backend takes the first installed Wan2.1-VACE model
    window: int = VACE_MAX_WINDOW  # frames made together (4k+1)
    overlap: int = VACE_OVERLAP  # frames a window holds on the previous window's
    run_size: tuple[int, int] | None = None  # the backend's word: the size Wan ran at

    def params(self) -> dict[str, Any]:
        """The backend's fields; the model only when chosen, the run size never (the backend
        pins it when the job starts)."""
        params: dict[str, Any] = {
            "control": self.control,
            "conditioning_scale": self.conditioning_scale,
            "window": self.window,
            "overlap": self.overlap,
        }
        if self.model:
            params["model"] = self.model
        return params

    @property
    def control_pass(self) -> str | None:
        """The pass the control video is made from, for every frame."""
        return VACE_CONTROL_PASS.get(self.control)


@dataclass(frozen=True)
class StyleReference(JsonFields):
    """A stylize job's style reference image: which image (by name and content hash), how
    strongly it steers, through which models. The image goes up as the "reference" pass."""

    label: ClassVar[str] = "style reference"
    name: str = ""  # the image's file name; "" when unknown (a job re-imported by id)
    sha256: str = ""  # of the bytes uploaded; "" when unknown
    scale: float = 0.6
    ip_adapter: str = ""  # "": the backend's choice
    image_encoder: str = ""

    def params(self) -> dict[str, Any]:
        """The backend's fields for it (the name and hash stay on the Blender side)."""
        params: dict[str, Any] = {"style_reference": True, "ip_adapter_scale": self.scale}
        for key in ("ip_adapter", "image_encoder"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        return params

    @staticmethod
    def take_from_params(params: dict[str, Any]) -> dict[str, Any] | None:
        """The inverse of `params()`: takes the backend's fields out of `params` and gives the
        stored form (without name or hash: the backend never knew them), or None."""
        used = params.pop("style_reference", False)
        scale = params.pop("ip_adapter_scale", None)
        names = {key: params.pop(key, None) or "" for key in ("ip_adapter", "image_encoder")}
        if not used:
            return None
        return {**names, **({} if scale is None else {"scale": scale})}


# --- the requests ----------------------------------------------------------------------------


class JobRequest:
    """What both requests share: the stored form, and the way back from a job's params."""

    kind: ClassVar[JobKind]

    def to_json(self) -> str:
        """The stored form: every field, with the schema and the kind, keys sorted."""
        data = {"schema": SCHEMA, "kind": self.kind.value, **fields_to_json(self)}
        return json.dumps(data, sort_keys=True)

    @staticmethod
    def fields_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
        """The inverse of `params()`: stored-form fields from the backend's params."""
        return dict(params)


@dataclass(frozen=True)
class InbetweenRequest(JobRequest):
    kind: ClassVar[JobKind] = JobKind.INBETWEEN
    width: int
    height: int
    frames: tuple[int, ...]
    keyframes: tuple[int, ...]
    method: str = InbetweenMethod.FLOW.value
    on_twos: bool = False
    flow_preset: str = "medium"
    diffusion: DiffusionOptions | None = None  # method "diffusion"; None: the backend's defaults

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "method": self.method,
            "on_twos": self.on_twos,
            "flow_preset": self.flow_preset,
        }
        if self.diffusion is not None:
            params["diffusion"] = self.diffusion.params()
        return params

    def inputs(self) -> dict[str, tuple[int, ...]]:
        """Pass name → frames whose images must be uploaded before the job can start."""
        inputs = {"keyframe": self.keyframes}
        guides = self.guide_passes
        if guides:
            frames = guide_frames(self.keyframes, self.frames)
            inputs.update({name: frames for name in guides})
        return inputs

    @property
    def guide_passes(self) -> tuple[str, ...]:
        """The passes of every frame from key to key that the job follows: Vector and Depth
        (method render), or the control of a Wan2.1-VACE diffusion in-between."""
        if self.method == InbetweenMethod.RENDER:
            return GUIDE_PASSES
        d = self.diffusion
        if self.method == InbetweenMethod.DIFFUSION and d is not None and d.control:
            return (d.control,) if d.engine == DiffusionEngine.WAN_VACE else ()
        return ()

    def job_body(self) -> dict[str, Any]:
        """The body of POST /v1/jobs."""
        return {
            "kind": self.kind.value,
            "frames": list(self.frames),
            "keyframes": list(self.keyframes),
            "width": self.width,
            "height": self.height,
            "params": self.params(),
        }


def guide_frames(keys: tuple[int, ...], frames: tuple[int, ...]) -> tuple[int, ...]:
    """Frames whose guide passes render-assisted in-betweening needs: every frame from one key to
    the next, both included, of each key interval with a requested frame strictly inside it (the
    backend chains the motion through each of them; backend/pipelines/inbetween_guided.py)."""
    needed: set[int] = set()
    for k0, k1 in itertools.pairwise(keys):
        if any(k0 < t < k1 for t in frames):
            needed.update(range(k0, k1 + 1))
    return tuple(sorted(needed))


@dataclass(frozen=True)
class StylizeRequest(JobRequest, ModelChoice, SamplingOptions):
    kind: ClassVar[JobKind] = JobKind.STYLIZE
    width: int
    height: int
    frames: tuple[int, ...]
    strength: float = 0.6
    mode: str = StylizeMode.VIDEO2VIDEO.value
    controlnets: tuple[ControlNetUnit, ...] = field(default_factory=tuple)
    chunk_size: int = 16
    overlap: int = 4
    temporal_fusion: bool = True
    fusion_strength: float = 0.5
    world_to_camera: tuple[tuple[float, ...], ...] | None = None
    lora: str = ""
    lora_weight: float = 1.0
    reference: StyleReference | None = None
    engine: str = StylizeEngine.ANIMATEDIFF.value
    vace: VaceOptions | None = None  # engine wan_vace; None: the backend's defaults

    @property
    def uses_wan(self) -> bool:
        return self.engine == StylizeEngine.WAN_VACE

    def params(self) -> dict[str, Any]:
        if self.uses_wan:
            return self._wan_params()
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "strength": self.strength,
            "mode": self.mode,
            "scheduler": self.scheduler,
            "controlnets": [c.to_json() for c in self.controlnets],
            "chunk_size": self.chunk_size,
            "overlap": self.overlap,
            "temporal_fusion": self.temporal_fusion,
            "fusion_strength": self.fusion_strength,
        }
        if self.world_to_camera is not None:
            params["world_to_camera"] = [list(row) for row in self.world_to_camera]
        params.update(self.chosen_models())
        if self.lora:
            params["lora"] = {"name": self.lora, "weight": self.lora_weight}
        if self.reference is not None:
            params.update(self.reference.params())
        return params

    def _wan_params(self) -> dict[str, Any]:
        """Engine wan_vace: its settings and the sampling it shares; the reference image is
        Wan's own reference_images (no IP-Adapter, no scale)."""
        params: dict[str, Any] = {
            "engine": self.engine,
            "vace": (self.vace or VaceOptions()).params(),
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
        }
        if self.reference is not None:
            params["style_reference"] = True
        return params

    @staticmethod
    def fields_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(params)
        lora = values.pop("lora", None)
        if isinstance(lora, Mapping):  # the backend's {"name", "weight"}: flat, as stored
            values["lora"], values["lora_weight"] = (
                str(lora.get("name", "")),
                lora.get("weight", 1.0),
            )
        values["reference"] = StyleReference.take_from_params(values)
        return values

    @property
    def uses_beauty(self) -> bool:
        """Starts from the rendered frames (the backend's rule: per_frame at strength 1 does not;
        Wan reads them only for a luminance control)."""
        if self.uses_wan:
            return self.control_passes == ("beauty",)
        return self.mode == StylizeMode.VIDEO2VIDEO or (
            self.mode == StylizeMode.PER_FRAME and self.strength < 1.0
        )

    @property
    def uses_fusion(self) -> bool:
        """Follows the render's motion: fusion on, in a mode that makes frames together (engine
        animatediff)."""
        return not self.uses_wan and self.temporal_fusion and self.mode != StylizeMode.PER_FRAME

    @property
    def control_passes(self) -> tuple[str, ...]:
        """The passes that steer the frames: the ControlNets', or Wan's control video's."""
        if self.uses_wan:
            source = (self.vace or VaceOptions()).control_pass
            return (source,) if source else ()
        return tuple(unit.pass_name for unit in self.controlnets)

    def inputs(self) -> dict[str, tuple[int, ...]]:
        passes: dict[str, tuple[int, ...]] = {}
        if self.uses_beauty:
            passes["beauty"] = self.frames
        for name in self.control_passes:
            passes[name] = self.frames
        if self.uses_fusion:  # required by the backend: it never runs fusion without them
            passes.update({name: self.frames for name in FUSION_PASSES})
        if self.reference is not None:  # one image for the whole job, uploaded once
            passes[REFERENCE_PASS] = (REFERENCE_FRAME,)
        return passes

    def job_body(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "frames": list(self.frames),
            "width": self.width,
            "height": self.height,
            "params": self.params(),
        }


Request = InbetweenRequest | StylizeRequest
REQUEST_TYPES: dict[JobKind, type[InbetweenRequest] | type[StylizeRequest]] = {
    JobKind.INBETWEEN: InbetweenRequest,
    JobKind.STYLIZE: StylizeRequest,
}


def from_json(text: str) -> Request:
    """A request stored with `to_json()` (e.g. on a strip), checked as if it were built anew."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RequestError(f"the stored request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError("the stored request is not a JSON object")
    if data.get("schema") != SCHEMA:
        raise RequestError(f"the stored request has schema {data.get('schema')!r}, not {SCHEMA}")
    cls = REQUEST_TYPES[enum_value(JobKind, data.get("kind"), "job kind")]
    stored = {k: v for k, v in data.items() if k not in ("schema", "kind")}
    return _checked(fields_from_json(cls, stored, "request"))


def from_job(job: Mapping[str, Any]) -> Request:
    """The request behind a job the backend reports (GET /v1/jobs/{id}), e.g. to re-import a job
    this Blender did not submit. The params the backend added (its defaults) are left out."""
    cls = REQUEST_TYPES[enum_value(JobKind, job.get("kind"), "job kind")]
    values = cls.fields_from_params(job.get("params") or {})
    values.update(width=job["width"], height=job["height"], frames=job["frames"])
    values["keyframes"] = job.get("keyframes", ())
    known = fields_of(cls)
    return _checked(
        fields_from_json(cls, {k: v for k, v in values.items() if k in known}, "request")
    )


def _checked(request: Request) -> Request:
    checked_frames(request.width, request.height, request.frames)
    if isinstance(request, StylizeRequest):
        camera_matrix(request.world_to_camera)
    return request


# --- checks the builder shares ---------------------------------------------------------------


def checked_frames(width: int, height: int, frames: Any) -> tuple[int, int, tuple[int, ...]]:
    """The output size and frames as ints, or a RequestError that says what to change."""
    width, height = int(width), int(height)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise RequestError(
            f"the output size {width}×{height} is outside {MIN_SIDE}–{MAX_SIDE} pixels a side;"
            " check the render resolution and its percentage"
        )
    frames = tuple(int(f) for f in frames)
    if not frames:
        raise RequestError("the frame range is empty")
    if list(frames) != sorted(set(frames)):
        raise RequestError("output frames must be ascending, each frame once")
    return width, height, frames


def camera_matrix(rows: Any) -> tuple[tuple[float, ...], ...] | None:
    """A world → camera rotation as float rows (3×3 or 4×4), or None."""
    if rows is None:
        return None
    matrix = tuple(tuple(float(v) for v in row) for row in rows)
    if len(matrix) not in (3, 4) or any(len(row) != len(matrix) for row in matrix):
        raise RequestError("the camera rotation must be a 3×3 or 4×4 matrix")
    return matrix


def enum_value(cls: type[E], value: Any, what: str) -> E:
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise RequestError(f"unknown {what} {value!r}; use one of {known}") from None
