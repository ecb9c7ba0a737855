"""The pure request builder: plain `Settings` (the add-on's `scene.framesmith`, no bpy types) and
a `Shot` in, one checked request out. Nothing else goes in, so it is tested without Blender."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .request import (
    INBETWEEN_CONTROLS,
    ControlNetUnit,
    DiffusionEngine,
    DiffusionOptions,
    InbetweenMethod,
    InbetweenRequest,
    JobKind,
    ModelChoice,
    Request,
    RequestError,
    SamplingOptions,
    Scheduler,
    StyleReference,
    StylizeEngine,
    StylizeMode,
    StylizeRequest,
    VaceControl,
    VaceOptions,
    camera_matrix,
    checked_frames,
    enum_value,
)

# Passes that can drive a ControlNet, in the order the UI lists them.
CONTROL_PASSES = ("depth", "normal", "lineart")
FLOW_PRESETS = ("ultrafast", "fast", "medium")
# The backend's optical flow needs frames at least this big (backend/vision/flow.py).
MIN_FLOW_SIZE = 12
# Diffusion works in latents 8× smaller than the frame (backend/pipelines/inbetween_diffusion.py).
DIFFUSION_SIZE_MULTIPLE = 8
MAX_IP_ADAPTER_SCALE = 2.0
MAX_KEY_STRENGTH = 4.0
MAX_VACE_SCALE = 4.0
# Wan2.1-VACE runs at its own size and returns frames at the shot's: any size from this up.
MIN_WAN_SIZE = 16
NO_CONTROL = "none"  # the in-between control menu's "keys only"


@dataclass(frozen=True)
class ControlNetSetting:
    """One pass → ControlNet row of the scene settings."""

    pass_name: str
    enabled: bool = False
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    model: str = ""  # a model name from the models folder; "" lets the backend choose


@dataclass(frozen=True, kw_only=True)
class Settings(ModelChoice, SamplingOptions):
    """Plain values of `scene.framesmith` (no bpy types), as the one input besides the shot.
    Prompt, seed, steps, guidance, scheduler and the checkpoint and motion adapter are shared by
    Stylize and diffusion in-betweening (the same generator, the same meaning)."""

    strength: float = 0.6
    stylize_mode: str = StylizeMode.VIDEO2VIDEO.value
    controlnets: tuple[ControlNetSetting, ...] = ()
    chunk_size: int = 16
    overlap: int = 4
    # video modes: follow the render's motion vectors (flow-guided latent fusion, warped noise)
    temporal_fusion: bool = True
    fusion_strength: float = 0.5
    inbetween_method: str = InbetweenMethod.FLOW.value
    on_twos: bool = False
    flow_preset: str = "medium"
    sparsectrl: str = ""  # "": the backend takes the first installed RGB SparseCtrl model
    key_strength: float = 1.0  # SparseCtrl conditioning scale
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
    # the video model: stylize on AnimateDiff or Wan2.1-VACE, diffusion in-betweens on SparseCtrl
    # or Wan2.1-VACE; Wan follows one control pass, as strongly as vace_conditioning_scale
    stylize_engine: str = StylizeEngine.ANIMATEDIFF.value
    vace_control: str = VaceControl.DEPTH.value
    vace_conditioning_scale: float = 1.0
    wan_vace: str = ""  # "": the backend takes the first installed Wan2.1-VACE model
    inbetween_engine: str = DiffusionEngine.SPARSECTRL.value
    inbetween_control: str = NO_CONTROL  # wan_vace in-betweens: none, depth or lineart


@dataclass(frozen=True)
class Shot:
    """What Blender knows about the shot: output size, output frames, key frames (in-between)."""

    width: int
    height: int
    frames: tuple[int, ...]
    keyframes: tuple[int, ...] = ()
    # Rotation taking world-space normals (Blender's Normal pass) into camera space, row-major.
    world_to_camera: tuple[tuple[float, ...], ...] | None = None


def build_request(kind: JobKind | str, settings: Settings, shot: Shot) -> Request:
    """The request for a job of `kind` from the scene's settings and the shot; pure."""
    kind = enum_value(JobKind, kind, "job kind")
    size_and_frames = checked_frames(shot.width, shot.height, shot.frames)
    if kind is JobKind.INBETWEEN:
        return _inbetween(settings, shot, *size_and_frames)
    return _stylize(settings, shot, *size_and_frames)


# --- in-between ------------------------------------------------------------------------------


def _inbetween(
    settings: Settings, shot: Shot, width: int, height: int, frames: tuple[int, ...]
) -> InbetweenRequest:
    method = enum_value(InbetweenMethod, settings.inbetween_method, "in-between method")
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
    engine = enum_value(DiffusionEngine, settings.inbetween_engine, "in-between engine")
    if engine is DiffusionEngine.WAN_VACE:
        return _wan_diffusion(settings, width, height)
    step = DIFFUSION_SIZE_MULTIPLE
    if width % step or height % step:
        raise RequestError(
            f"diffusion in-betweening needs a width and height that are multiples of {step}"
            f" (got {width}×{height}); change the render resolution or use another method"
        )
    sampling = _sampling(settings, needs_prompt=False)
    if not 0.0 <= settings.key_strength <= MAX_KEY_STRENGTH:
        raise RequestError(
            f"the key strength must be between 0 and {MAX_KEY_STRENGTH:g}"
            f" (got {settings.key_strength})"
        )
    return DiffusionOptions(
        **asdict(sampling),
        **asdict(_models(settings)),
        sparsectrl=settings.sparsectrl.strip(),
        conditioning_scale=_ui(settings.key_strength),
    )


def _wan_diffusion(settings: Settings, width: int, height: int) -> DiffusionOptions:
    """A Wan2.1-VACE in-between: the shared sampling (Wan has its own scheduler), its model,
    and the guide pass it follows between the keys, if any."""
    _wan_size("Wan2.1-VACE in-betweening", width, height)
    control = settings.inbetween_control.strip().lower()
    if control not in (NO_CONTROL, *INBETWEEN_CONTROLS):
        raise RequestError(
            f"unknown in-between control {control!r}; use one of"
            f" {', '.join((NO_CONTROL, *INBETWEEN_CONTROLS))}"
        )
    sampling = _sampling(settings, needs_prompt=False)
    return DiffusionOptions(
        prompt=sampling.prompt,
        negative_prompt=sampling.negative_prompt,
        seed=sampling.seed,
        steps=sampling.steps,
        guidance=sampling.guidance,
        conditioning_scale=_vace_scale(settings),
        engine=DiffusionEngine.WAN_VACE.value,
        control="" if control == NO_CONTROL else control,
        wan_vace=settings.wan_vace.strip(),
    )


def _wan_size(what: str, width: int, height: int) -> None:
    if min(width, height) < MIN_WAN_SIZE:
        raise RequestError(
            f"{what} needs frames of at least {MIN_WAN_SIZE}×{MIN_WAN_SIZE} pixels"
            f" (got {width}×{height}); raise the resolution"
        )


def _vace_scale(settings: Settings) -> float:
    if not 0.0 <= settings.vace_conditioning_scale <= MAX_VACE_SCALE:
        raise RequestError(
            f"the control strength must be between 0 and {MAX_VACE_SCALE:g}"
            f" (got {settings.vace_conditioning_scale})"
        )
    return _ui(settings.vace_conditioning_scale)


# --- what both generators share ----------------------------------------------------------------


def _sampling(settings: Settings, needs_prompt: bool) -> SamplingOptions:
    scheduler = enum_value(Scheduler, settings.scheduler, "scheduler")
    if needs_prompt and not settings.prompt.strip():
        raise RequestError("write a prompt: it says what the stylized frames should look like")
    if settings.steps < 1:
        raise RequestError(f"steps must be at least 1 (got {settings.steps})")
    if settings.guidance < 0.0:
        raise RequestError(f"guidance must not be negative (got {settings.guidance})")
    return SamplingOptions(
        prompt=settings.prompt.strip(),
        negative_prompt=settings.negative_prompt.strip(),
        seed=int(settings.seed),
        steps=int(settings.steps),
        guidance=_ui(settings.guidance),
        scheduler=scheduler.value,
    )


def _models(settings: Settings) -> ModelChoice:
    return ModelChoice(
        checkpoint=settings.checkpoint.strip(), motion_adapter=settings.motion_adapter.strip()
    )


# --- stylize ---------------------------------------------------------------------------------


def _stylize(
    settings: Settings, shot: Shot, width: int, height: int, frames: tuple[int, ...]
) -> StylizeRequest:
    engine = enum_value(StylizeEngine, settings.stylize_engine, "stylize engine")
    if engine is StylizeEngine.WAN_VACE:
        return _wan_stylize(settings, width, height, frames)
    mode = enum_value(StylizeMode, settings.stylize_mode, "stylize mode")
    sampling = _sampling(settings, needs_prompt=True)
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
    units = _controlnet_units(settings.controlnets)
    uses_normals = any(u.pass_name == "normal" for u in units)
    request = StylizeRequest(
        width=width,
        height=height,
        frames=frames,
        **asdict(sampling),
        **asdict(_models(settings)),
        strength=_ui(settings.strength),
        mode=mode.value,
        controlnets=units,
        chunk_size=int(settings.chunk_size),
        overlap=int(settings.overlap),
        temporal_fusion=bool(settings.temporal_fusion),
        fusion_strength=_ui(settings.fusion_strength),
        world_to_camera=camera_matrix(shot.world_to_camera) if uses_normals else None,
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


def _wan_stylize(
    settings: Settings, width: int, height: int, frames: tuple[int, ...]
) -> StylizeRequest:
    """Engine wan_vace: the sampling it shares, its control and model, and the style reference
    as Wan's own reference image. AnimateDiff's settings stay at their defaults, so the request
    is the same whatever they are (and a job re-imported by id gives it back)."""
    _wan_size("Wan2.1-VACE", width, height)
    control = enum_value(VaceControl, settings.vace_control, "Wan2.1-VACE control")
    sampling = _sampling(settings, needs_prompt=True)
    reference = _style_reference(settings)
    if reference is not None:  # Wan reads the image itself: no IP-Adapter, no strength
        reference = StyleReference(name=reference.name, sha256=reference.sha256)
    return StylizeRequest(
        width=width,
        height=height,
        frames=frames,
        prompt=sampling.prompt,
        negative_prompt=sampling.negative_prompt,
        seed=sampling.seed,
        steps=sampling.steps,
        guidance=sampling.guidance,
        reference=reference,
        engine=StylizeEngine.WAN_VACE.value,
        vace=VaceOptions(
            control=control.value,
            conditioning_scale=_vace_scale(settings),
            model=settings.wan_vace.strip(),
        ),
    )


def _controlnet_units(rows: tuple[ControlNetSetting, ...]) -> tuple[ControlNetUnit, ...]:
    units = []
    for c in rows:
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
        units.append(
            ControlNetUnit(
                pass_name=c.pass_name,
                model=c.model,
                scale=_ui(c.weight),
                start=_ui(c.start),
                end=_ui(c.end),
            )
        )
    return tuple(units)


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


def _ui(value: float) -> float:
    """A UI float (Blender stores float32: 0.6 reads back as 0.6000000238) as the user typed it."""
    return round(float(value), 6)
