"""One frozen, JSON-serialisable request per job kind, built by one pure function.

The add-on turns `scene.framesmith` into plain `Settings` and the shot into a `Shot`;
`build_request()` makes the request from those two alone, so it is tested without Blender, stored
on the resulting strip (`to_json`) and re-submitted from there (`from_json`).
"""

from __future__ import annotations

import enum
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

SCHEMA = 1  # bump when a stored request's meaning changes

E = TypeVar("E", bound=enum.StrEnum)


class RequestError(ValueError):
    """Settings that cannot make a job; the message says what to change."""


class JobKind(enum.StrEnum):
    STYLIZE = "stylize"
    INBETWEEN = "inbetween"


class InbetweenMethod(enum.StrEnum):
    """The backend's in-between methods (backend/pipelines/inbetween_methods.py)."""

    FLOW = "flow"  # optical flow estimated from the keys alone
    CROSSFADE = "crossfade"
    RENDER = "render"  # motion from the Vector and Depth passes of every frame (guide passes)
    DIFFUSION = "diffusion"  # SparseCtrl keyframes in AnimateDiff (needs models)


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


# Passes that can drive a ControlNet, in the order the UI lists them.
CONTROL_PASSES = ("depth", "normal", "lineart")
FLOW_PRESETS = ("ultrafast", "fast", "medium")
# The backend's optical flow needs frames at least this big (backend/vision/flow.py).
MIN_FLOW_SIZE = 12
MIN_SIDE, MAX_SIDE = 8, 8192
# Render-assisted in-betweening reads these passes of every guide frame (see guide_frames()).
GUIDE_PASSES = ("vector", "depth")
# Temporal fusion reads the Vector pass (motion) and the Depth pass (occlusion) of every frame.
FUSION_PASSES = ("vector", "depth")
# Diffusion works in latents 8× smaller than the frame (backend/pipelines/inbetween_diffusion.py).
DIFFUSION_SIZE_MULTIPLE = 8
# A style reference image is the input pass "reference" at this frame (backend/pipelines/base.py).
REFERENCE_PASS, REFERENCE_FRAME = "reference", 0
MAX_IP_ADAPTER_SCALE = 2.0


@dataclass(frozen=True)
class ControlNetSetting:
    """One pass → ControlNet row of the scene settings."""

    pass_name: str
    enabled: bool = False
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: str = ""  # a model name from the models folder; "" lets the backend choose


@dataclass(frozen=True)
class Settings:
    """Plain values of `scene.framesmith` (no bpy types), as the one input besides the shot."""

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    stylize_mode: str = StylizeMode.VIDEO2VIDEO.value
    scheduler: str = Scheduler.DDIM.value
    controlnets: tuple[ControlNetSetting, ...] = ()
    chunk_size: int = 16
    overlap: int = 4
    # video modes: follow the render's motion vectors (flow-guided latent fusion, warped noise)
    temporal_fusion: bool = True
    fusion_strength: float = 0.5
    inbetween_method: str = InbetweenMethod.FLOW.value
    on_twos: bool = False
    flow_preset: str = "medium"
    # diffusion in-betweening; prompt, seed, steps, guidance, scheduler and the checkpoint and
    # motion adapter above are shared with stylize (the same generator, the same meaning)
    sparsectrl: str = ""  # "": the backend takes the first installed RGB SparseCtrl model
    key_strength: float = 1.0  # SparseCtrl conditioning scale
    # model names from the backend's listing; "" lets the backend take the first installed one
    checkpoint: str = ""
    motion_adapter: str = ""
    lora: str = ""  # "": no LoRA
    lora_weight: float = 1.0
    # stylize: a style reference image through an IP-Adapter. The request names the image (file
    # name, and the SHA-256 of the bytes uploaded: the operator reads the file), never its pixels.
    use_reference: bool = False
    reference_name: str = ""
    reference_sha256: str = ""  # "": not read yet (e.g. a check before anything is rendered)
    ip_adapter_scale: float = 0.6
    ip_adapter: str = ""  # "": the backend takes the first installed one
    image_encoder: str = ""


@dataclass(frozen=True)
class Shot:
    """What Blender knows about the shot: output size, output frames, key frames (in-between)."""

    width: int
    height: int
    frames: tuple[int, ...]
    keyframes: tuple[int, ...] = ()
    # Rotation taking world-space normals (Blender's Normal pass) into camera space, row-major.
    world_to_camera: tuple[tuple[float, ...], ...] | None = None


@dataclass(frozen=True)
class ControlNetUnit:
    pass_name: str
    scale: float
    start: float
    end: float
    model: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "pass": self.pass_name,
            "model": self.model or None,  # None: the backend takes an installed one
            "scale": self.scale,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class DiffusionOptions:
    """The backend's `params.diffusion` of an in-between job with method "diffusion".

    Model names "" are not sent: the backend chooses (and pins its choice into the job's params
    when it starts, so `from_job()` gets the names back).
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 7.5
    scheduler: str = Scheduler.DDIM.value
    checkpoint: str = ""
    motion_adapter: str = ""
    sparsectrl: str = ""
    conditioning_scale: float = 1.0
    clip_length: int = 16  # frames made together: at most the motion module's window (16)
    hold_keys: bool = True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("checkpoint", "motion_adapter", "sparsectrl"):
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: Any) -> DiffusionOptions:
        """Stored options (to_json(), asdict() or the backend's own, where None = its default)."""
        if not isinstance(data, Mapping):
            raise RequestError("the stored diffusion options are not a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RequestError(f"the stored diffusion options have unknown fields: {unknown}")
        return cls(**{k: v for k, v in data.items() if v is not None})


@dataclass(frozen=True)
class StyleReference:
    """A stylize job's style reference image: which image (by name and content hash), how
    strongly it steers, through which models. The image goes up as the "reference" pass."""

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

    @classmethod
    def from_json(cls, data: Any) -> StyleReference:
        if not isinstance(data, Mapping):
            raise RequestError("the stored style reference is not a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RequestError(f"the stored style reference has unknown fields: {unknown}")
        values = {k: v for k, v in data.items() if v is not None}
        if "scale" in values:
            values["scale"] = float(values["scale"])
        return cls(**values)


@dataclass(frozen=True)
class InbetweenRequest:
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
            params["diffusion"] = self.diffusion.to_json()
        return params

    def inputs(self) -> dict[str, tuple[int, ...]]:
        """Pass name → frames whose images must be uploaded before the job can start."""
        inputs = {"keyframe": self.keyframes}
        if self.method == InbetweenMethod.RENDER:
            guides = guide_frames(self.keyframes, self.frames)
            inputs.update({name: guides for name in GUIDE_PASSES})
        return inputs

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

    def to_json(self) -> str:
        return _dump(self, {"keyframes": list(self.keyframes)})


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
class StylizeRequest:
    kind: ClassVar[JobKind] = JobKind.STYLIZE
    width: int
    height: int
    frames: tuple[int, ...]
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    mode: str = StylizeMode.VIDEO2VIDEO.value
    scheduler: str = Scheduler.DDIM.value
    controlnets: tuple[ControlNetUnit, ...] = field(default_factory=tuple)
    chunk_size: int = 16
    overlap: int = 4
    temporal_fusion: bool = True
    fusion_strength: float = 0.5
    world_to_camera: tuple[tuple[float, ...], ...] | None = None
    checkpoint: str = ""
    motion_adapter: str = ""
    lora: str = ""
    lora_weight: float = 1.0
    reference: StyleReference | None = None

    def params(self) -> dict[str, Any]:
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
        for key in ("checkpoint", "motion_adapter"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if self.lora:
            params["lora"] = {"name": self.lora, "weight": self.lora_weight}
        if self.reference is not None:
            params.update(self.reference.params())
        return params

    @property
    def uses_beauty(self) -> bool:
        """Starts from the rendered frames (the backend's rule: per_frame at strength 1 does not)."""
        return self.mode == StylizeMode.VIDEO2VIDEO or (
            self.mode == StylizeMode.PER_FRAME and self.strength < 1.0
        )

    @property
    def uses_fusion(self) -> bool:
        """Follows the render's motion: fusion on, in a mode that makes frames together."""
        return self.temporal_fusion and self.mode != StylizeMode.PER_FRAME

    def inputs(self) -> dict[str, tuple[int, ...]]:
        passes: dict[str, tuple[int, ...]] = {}
        if self.uses_beauty:
            passes["beauty"] = self.frames
        for unit in self.controlnets:
            passes[unit.pass_name] = self.frames
        if self.uses_fusion:  # accepted, not required, by the backend: without them no fusion
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

    def to_json(self) -> str:
        return _dump(self, {})


Request = InbetweenRequest | StylizeRequest


def build_request(kind: JobKind | str, settings: Settings, shot: Shot) -> Request:
    """The request for a job of `kind` from the scene's settings and the shot; pure."""
    kind = _enum(JobKind, kind, "job kind")
    width, height, frames = _check_shot(shot)
    if kind is JobKind.INBETWEEN:
        return _inbetween(settings, shot, width, height, frames)
    return _stylize(settings, shot, width, height, frames)


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
    kind = _enum(JobKind, data.get("kind"), "job kind")
    cls: type[InbetweenRequest] | type[StylizeRequest] = (
        InbetweenRequest if kind is JobKind.INBETWEEN else StylizeRequest
    )
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names - {"schema", "kind"})
    if unknown:
        raise RequestError(f"the stored request has unknown fields: {', '.join(unknown)}")
    values = {k: v for k, v in data.items() if k in names}
    for key in ("frames", "keyframes"):
        if key in values:
            values[key] = tuple(int(v) for v in values[key])
    if cls is InbetweenRequest and values.get("diffusion") is not None:
        values["diffusion"] = DiffusionOptions.from_json(values["diffusion"])
    if cls is StylizeRequest:
        values["world_to_camera"] = _matrix(values.get("world_to_camera"))
        if values.get("reference") is not None:
            values["reference"] = StyleReference.from_json(values["reference"])
        values["controlnets"] = tuple(
            ControlNetUnit(
                pass_name=c["pass"],
                scale=float(c["scale"]),
                start=float(c["start"]),
                end=float(c["end"]),
                model=str(c.get("model") or ""),
            )
            for c in values.get("controlnets", ())
        )
    try:
        request = cls(**values)
    except TypeError as exc:
        raise RequestError(f"the stored request is incomplete: {exc}") from None
    shot = Shot(request.width, request.height, request.frames, getattr(request, "keyframes", ()))
    _check_shot(shot)
    return request


def from_job(job: Mapping[str, Any]) -> Request:
    """The request behind a job the backend reports (GET /v1/jobs/{id}), e.g. to re-import a job
    this Blender did not submit."""
    kind = _enum(JobKind, job.get("kind"), "job kind")
    params = dict(job.get("params") or {})
    common = {
        "width": int(job["width"]),
        "height": int(job["height"]),
        "frames": tuple(int(f) for f in job["frames"]),
    }
    if kind is JobKind.INBETWEEN:
        known = {f.name for f in fields(InbetweenRequest)} - {"diffusion"}
        diffusion = params.get("diffusion")
        return InbetweenRequest(
            keyframes=tuple(int(f) for f in job.get("keyframes", ())),
            **common,
            **{k: v for k, v in params.items() if k in known},
            diffusion=None if diffusion is None else DiffusionOptions.from_json(diffusion),
        )
    lora = params.pop("lora", None)
    if isinstance(lora, dict):  # the backend's {"name", "weight"}: flat, as the request holds it
        params["lora"], params["lora_weight"] = str(lora.get("name", "")), lora.get("weight", 1.0)
    reference = _reference_from_params(params)
    params = {k: v for k, v in params.items() if v is not None}  # None: the backend's default
    data = {"schema": SCHEMA, "kind": kind.value, **common, **params, "reference": reference}
    known = {f.name for f in fields(StylizeRequest)} | {"schema", "kind"}
    data["frames"] = list(common["frames"])
    return from_json(json.dumps({k: v for k, v in data.items() if k in known}))


def _reference_from_params(params: dict[str, Any]) -> dict[str, Any] | None:
    """Takes the backend's style reference fields out of `params`: the request's `reference`
    (without name or hash: the backend does not know them), or None."""
    used = params.pop("style_reference", False)
    scale = params.pop("ip_adapter_scale", None)
    names = {key: params.pop(key, None) or "" for key in ("ip_adapter", "image_encoder")}
    if not used:
        return None
    return {**names, **({} if scale is None else {"scale": scale})}


# ---------------------------------------------------------------------------------------------


def _inbetween(
    settings: Settings, shot: Shot, width: int, height: int, frames: tuple[int, ...]
) -> InbetweenRequest:
    method = _enum(InbetweenMethod, settings.inbetween_method, "in-between method")
    if settings.flow_preset not in FLOW_PRESETS:
        raise RequestError(
            f"unknown flow preset {settings.flow_preset!r}; use one of {', '.join(FLOW_PRESETS)}"
        )
    keys = tuple(shot.keyframes)
    if list(keys) != sorted(set(keys)):
        raise RequestError("key frames must be ascending, each frame once")
    if len(keys) < 2:
        found = ", ".join(map(str, keys)) or "none"
        raise RequestError(
            f"in-betweening needs at least two key frames in the frame range "
            f"{frames[0]}–{frames[-1]}; found {found}"
        )
    if method is InbetweenMethod.FLOW and min(width, height) < MIN_FLOW_SIZE:
        raise RequestError(
            f"flow in-betweening needs frames of at least {MIN_FLOW_SIZE}×{MIN_FLOW_SIZE} pixels"
            f" (got {width}×{height}); use the cross-fade method or a bigger resolution"
        )
    diffusion = None
    if method is InbetweenMethod.DIFFUSION:
        diffusion = _diffusion(settings, width, height)
    return InbetweenRequest(
        width=width,
        height=height,
        frames=frames,
        keyframes=keys,
        method=method.value,
        on_twos=bool(settings.on_twos),
        flow_preset=settings.flow_preset,
        diffusion=diffusion,
    )


def _diffusion(settings: Settings, width: int, height: int) -> DiffusionOptions:
    scheduler = _enum(Scheduler, settings.scheduler, "scheduler")
    step = DIFFUSION_SIZE_MULTIPLE
    if width % step or height % step:
        raise RequestError(
            f"diffusion in-betweening needs a width and height that are multiples of {step}"
            f" (got {width}×{height}); change the render resolution or use another method"
        )
    _check_sampling(settings)
    if not 0.0 <= settings.key_strength <= 4.0:
        raise RequestError(
            f"the key strength must be between 0 and 4 (got {settings.key_strength})"
        )
    return DiffusionOptions(
        prompt=settings.prompt.strip(),
        negative_prompt=settings.negative_prompt.strip(),
        seed=int(settings.seed),
        steps=int(settings.steps),
        guidance=_ui(settings.guidance),
        scheduler=scheduler.value,
        checkpoint=settings.checkpoint.strip(),
        motion_adapter=settings.motion_adapter.strip(),
        sparsectrl=settings.sparsectrl.strip(),
        conditioning_scale=_ui(settings.key_strength),
    )


def _check_sampling(settings: Settings) -> None:
    if settings.steps < 1:
        raise RequestError(f"steps must be at least 1 (got {settings.steps})")
    if settings.guidance < 0.0:
        raise RequestError(f"guidance must not be negative (got {settings.guidance})")


def _stylize(
    settings: Settings, shot: Shot, width: int, height: int, frames: tuple[int, ...]
) -> StylizeRequest:
    mode = _enum(StylizeMode, settings.stylize_mode, "stylize mode")
    scheduler = _enum(Scheduler, settings.scheduler, "scheduler")
    if not settings.prompt.strip():
        raise RequestError("write a prompt: it says what the stylized frames should look like")
    _check_sampling(settings)
    if not 0.0 < settings.strength <= 1.0:
        raise RequestError(f"strength must be above 0 and at most 1 (got {settings.strength})")
    if not 0.0 <= settings.fusion_strength <= 1.0:
        raise RequestError(
            f"the fusion strength must be between 0 and 1 (got {settings.fusion_strength})"
        )
    if settings.chunk_size < 1 or not 0 <= settings.overlap < settings.chunk_size:
        raise RequestError(
            f"the chunk overlap ({settings.overlap}) must be at least 0 and below the chunk size"
            f" ({settings.chunk_size})"
        )
    units = []
    for c in settings.controlnets:
        if not c.enabled:
            continue
        if c.pass_name not in CONTROL_PASSES:
            raise RequestError(
                f"no ControlNet can be driven by the {c.pass_name!r} pass;"
                f" use one of {', '.join(CONTROL_PASSES)}"
            )
        if not 0.0 <= c.start < c.end <= 1.0:
            raise RequestError(
                f"the {c.pass_name} ControlNet must start before it ends, both between 0 and 1"
                f" (got {c.start}–{c.end})"
            )
        units.append(ControlNetUnit(c.pass_name, _ui(c.weight), _ui(c.start), _ui(c.end), c.model))
    uses_normals = any(u.pass_name == "normal" for u in units)
    request = StylizeRequest(
        width=width,
        height=height,
        frames=frames,
        prompt=settings.prompt.strip(),
        negative_prompt=settings.negative_prompt.strip(),
        seed=int(settings.seed),
        steps=int(settings.steps),
        guidance=_ui(settings.guidance),
        strength=_ui(settings.strength),
        mode=mode.value,
        scheduler=scheduler.value,
        controlnets=tuple(units),
        chunk_size=int(settings.chunk_size),
        overlap=int(settings.overlap),
        temporal_fusion=bool(settings.temporal_fusion),
        fusion_strength=_ui(settings.fusion_strength),
        world_to_camera=_matrix(shot.world_to_camera) if uses_normals else None,
        checkpoint=settings.checkpoint.strip(),
        motion_adapter=settings.motion_adapter.strip(),
        lora=settings.lora.strip(),
        lora_weight=_ui(settings.lora_weight),
        reference=_style_reference(settings),
    )
    if not request.uses_beauty and not units:
        raise RequestError(
            "without the rendered frames (passes only, or per frame at strength 1) the result"
            " follows the shot only through ControlNets: enable at least one pass"
        )
    return request


def _style_reference(settings: Settings) -> StyleReference | None:
    if not settings.use_reference:
        return None
    name = settings.reference_name.strip()
    if not name:
        raise RequestError(
            "choose a style reference image in the Stylize panel, or turn Style Reference off"
        )
    digest = settings.reference_sha256.strip().lower()
    if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise RequestError(f"the style reference's SHA-256 {digest!r} is not 64 hex digits")
    if not 0.0 <= settings.ip_adapter_scale <= MAX_IP_ADAPTER_SCALE:
        raise RequestError(
            f"the reference strength must be between 0 and {MAX_IP_ADAPTER_SCALE:g}"
            f" (got {settings.ip_adapter_scale})"
        )
    return StyleReference(
        name=name,
        sha256=digest,
        scale=_ui(settings.ip_adapter_scale),
        ip_adapter=settings.ip_adapter.strip(),
        image_encoder=settings.image_encoder.strip(),
    )


def _matrix(rows: Any) -> tuple[tuple[float, ...], ...] | None:
    if rows is None:
        return None
    matrix = tuple(tuple(float(v) for v in row) for row in rows)
    if len(matrix) not in (3, 4) or any(len(row) != len(matrix) for row in matrix):
        raise RequestError("the camera rotation must be a 3×3 or 4×4 matrix")
    return matrix


def _check_shot(shot: Shot) -> tuple[int, int, tuple[int, ...]]:
    width, height = int(shot.width), int(shot.height)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise RequestError(
            f"the output size {width}×{height} is outside {MIN_SIDE}–{MAX_SIDE} pixels a side;"
            " check the render resolution and its percentage"
        )
    frames = tuple(int(f) for f in shot.frames)
    if not frames:
        raise RequestError("the frame range is empty")
    if list(frames) != sorted(set(frames)):
        raise RequestError("output frames must be ascending, each frame once")
    return width, height, frames


def _enum(cls: type[E], value: Any, what: str) -> E:
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise RequestError(f"unknown {what} {value!r}; use one of {known}") from None


def _dump(request: Request, overrides: Mapping[str, Any]) -> str:
    data: dict[str, Any] = {"schema": SCHEMA, "kind": request.kind.value, **asdict(request)}
    data["frames"] = list(request.frames)
    if isinstance(request, StylizeRequest):
        data["controlnets"] = [c.to_json() for c in request.controlnets]
        data["world_to_camera"] = request.params().get("world_to_camera")
    data.update(overrides)
    return json.dumps(data, sort_keys=True)


def _ui(value: float) -> float:
    """A UI float (Blender stores float32: 0.6 reads back as 0.6000000238) as the user typed it."""
    return round(float(value), 6)
