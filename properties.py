"""Scene settings (`scene.framesmith`), saved in the .blend: what to make, and the job list."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .client.request import ControlNetSetting, Settings

JOB_STATES = (
    ("PREPARING", "Preparing", "Rendering and collecting the inputs"),
    ("SUBMITTING", "Submitting", "Creating the job and uploading its inputs"),
    ("AWAITING_INPUTS", "Uploading", "The backend waits for the inputs"),
    ("QUEUED", "Queued", "Waiting for the GPU"),
    ("RUNNING", "Running", "The backend is computing frames"),
    ("DONE", "Done", "Finished and imported"),
    ("FAILED", "Failed", "Stopped with an error"),
    ("CANCELED", "Canceled", "Canceled"),
    ("DETACHED", "Not Watched", "Running on the backend; re-import fetches its frames"),
)
FINAL_STATES = frozenset({"DONE", "FAILED", "CANCELED"})


class FRAMESMITH_PG_controlnet(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="Use", description="Let this pass guide a ControlNet")
    weight: FloatProperty(
        name="Weight", description="ControlNet conditioning scale", default=1.0, min=0.0, max=2.0
    )
    start: FloatProperty(name="Start", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    end: FloatProperty(name="End", default=1.0, min=0.0, max=1.0, subtype="FACTOR")
    model: StringProperty(
        name="Model", description="ControlNet model name; empty lets the backend choose"
    )


class FRAMESMITH_PG_job(bpy.types.PropertyGroup):
    take: StringProperty(name="Take", description="Local id of this take (its folder name)")
    job_id: StringProperty(name="Job ID", description="The backend's id of the job")
    kind: EnumProperty(
        name="Kind",
        items=(("STYLIZE", "Stylize", ""), ("INBETWEEN", "In-between", "")),
    )
    state: EnumProperty(name="State", items=JOB_STATES, default="PREPARING")
    stage: StringProperty(name="Stage")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    frames_fetched: IntProperty(name="Frames Fetched")
    message: StringProperty(name="Message")
    frame_start: IntProperty(name="Start")
    frame_end: IntProperty(name="End")
    folder: StringProperty(name="Folder", subtype="DIR_PATH")
    request: StringProperty(name="Request", description="The job's request (JSON)")
    channel: IntProperty(name="Channel")
    strip: StringProperty(name="Strip")


# Menus of the models the backend listed at its last check (nothing is fetched while drawing).
# Each menu writes the chosen name into a plain string property, so the .blend keeps the name,
# not a position in a list that changes with the models folder.
DEFAULT_MODEL = "DEFAULT"
_menu_items: dict[str, list[tuple[str, str, str, int]]] = {}  # Blender needs them kept alive


def _model_menu(attr: str, kind: str, default_label: str) -> EnumProperty:
    def items(self, _context) -> list[tuple[str, str, str, int]]:
        from .operators import runtime

        names = getattr(runtime.model_choices(), kind)
        listed = [(DEFAULT_MODEL, default_label, "Let the backend choose", 0)]
        listed += [(name, name, "", i + 1) for i, name in enumerate(names)]
        current = getattr(self, attr)
        if current and current not in names:
            listed.append((current, f"{current} (not listed)", "", len(listed)))
        _menu_items[f"{attr}:{self.as_pointer()}"] = listed
        return listed

    def get(self) -> int:
        current = getattr(self, attr)
        return next((n for ident, _, _, n in items(self, None) if ident == current), 0)

    def set(self, value: int) -> None:
        ident = next((i for i, _, _, n in items(self, None) if n == value), DEFAULT_MODEL)
        setattr(self, attr, "" if ident == DEFAULT_MODEL else ident)

    return EnumProperty(name=attr.replace("_", " ").title(), items=items, get=get, set=set)


class FRAMESMITH_PG_settings(bpy.types.PropertyGroup):
    # --- stylize
    prompt: StringProperty(name="Prompt", description="What the stylized frames should look like")
    negative_prompt: StringProperty(name="Negative Prompt", description="What to avoid")
    seed: IntProperty(name="Seed", default=0, min=0)
    steps: IntProperty(name="Steps", default=20, min=1, max=200)
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, max=30.0)
    strength: FloatProperty(
        name="Strength",
        description="How far the result may move away from the rendered frames",
        default=0.6,
        min=0.01,
        max=1.0,
        subtype="FACTOR",
    )
    stylize_mode: EnumProperty(
        name="Mode",
        items=(
            ("VIDEO2VIDEO", "Video to Video", "Restyle the rendered frames"),
            ("TEXT2VIDEO", "Passes Only", "Generate from the prompt, guided by the passes"),
            ("PER_FRAME", "Per Frame", "Each frame on its own (no motion module)"),
        ),
    )
    scheduler: EnumProperty(
        name="Scheduler",
        items=(
            ("DDIM", "DDIM", ""),
            ("EULER_A", "Euler Ancestral", ""),
            ("DPMPP_2M", "DPM++ 2M", ""),
            ("LCM", "LCM", "For LCM models and LoRAs (few steps)"),
        ),
    )
    checkpoint: StringProperty(
        name="Checkpoint", description="SD1.5-family checkpoint; empty: the first installed"
    )
    motion_adapter: StringProperty(
        name="Motion Adapter", description="AnimateDiff motion module; empty: the first installed"
    )
    lora: StringProperty(name="LoRA", description="LoRA to apply; empty: none")
    lora_weight: FloatProperty(name="LoRA Weight", default=1.0, min=-4.0, max=4.0)
    checkpoint_menu: _model_menu("checkpoint", "checkpoints", "First Installed")
    motion_adapter_menu: _model_menu("motion_adapter", "motion_adapters", "First Installed")
    lora_menu: _model_menu("lora", "loras", "No LoRA")
    chunk_size: IntProperty(name="Chunk", default=16, min=2, max=64)
    overlap: IntProperty(name="Overlap", default=4, min=0, max=32)
    temporal_fusion: BoolProperty(
        name="Temporal Fusion",
        description="Use the render's motion vectors to keep the style steady from frame to"
        " frame (renders the Vector and Depth passes too; video modes)",
        default=True,
    )
    fusion_strength: FloatProperty(
        name="Fusion Strength",
        description="How strongly each frame is pulled towards the previous one moved along"
        " the motion",
        default=0.5,
        min=0.0,
        max=1.0,
        subtype="FACTOR",
    )
    controlnet_depth: PointerProperty(type=FRAMESMITH_PG_controlnet, name="Depth")
    controlnet_normal: PointerProperty(type=FRAMESMITH_PG_controlnet, name="Normal")
    controlnet_lineart: PointerProperty(type=FRAMESMITH_PG_controlnet, name="Line Art")

    # --- frames and output
    use_scene_range: BoolProperty(name="Scene Frame Range", default=True)
    frame_start: IntProperty(name="Start", default=1)
    frame_end: IntProperty(name="End", default=24)
    output_dir: StringProperty(
        name="Output Folder",
        description="Each take gets a folder in here; '//' is the .blend file's folder",
        default="//framesmith/",
        subtype="DIR_PATH",
    )

    # --- in-between
    inbetween_source: EnumProperty(
        name="Keys From",
        items=(
            ("OBJECT_KEYS", "Object Keys", "Render the active object's keyframes"),
            ("SELECTED_STRIPS", "Selected Strips", "Use the selected image strips as keys"),
            ("MARKERS", "Markers", "Render the frames of the timeline markers"),
        ),
    )
    inbetween_method: EnumProperty(
        name="Method",
        items=(
            ("FLOW", "Optical Flow", "Estimate motion between keys and move pixels along it"),
            ("CROSSFADE", "Cross-fade", "Blend the keys (fast, no motion)"),
            (
                "RENDER",
                "Render-Assisted",
                "Exact motion from cheap Vector and Depth passes rendered for every frame",
            ),
            (
                "DIFFUSION",
                "Diffusion",
                "Generate the in-betweens from the keys (SparseCtrl in AnimateDiff); uses the"
                " prompt, steps, guidance and seed of Stylize",
            ),
        ),
    )
    on_twos: BoolProperty(name="On Twos", description="Hold every in-between for two frames")
    flow_preset: EnumProperty(
        name="Flow Quality",
        items=(
            ("medium", "Medium", ""),
            ("fast", "Fast", ""),
            ("ultrafast", "Ultrafast", ""),
        ),
    )

    sparsectrl: StringProperty(
        name="SparseCtrl", description="SparseCtrl RGB model; empty: the first installed"
    )
    sparsectrl_menu: _model_menu("sparsectrl", "sparsectrls", "First Installed")
    key_strength: FloatProperty(
        name="Key Strength",
        description="How strongly the keys steer the generated frames (SparseCtrl scale)",
        default=1.0,
        min=0.0,
        max=4.0,
    )

    # --- jobs
    jobs: CollectionProperty(type=FRAMESMITH_PG_job)
    active_job: IntProperty(name="Active Job")


def settings(scene: bpy.types.Scene) -> FRAMESMITH_PG_settings:
    return scene.framesmith


def to_settings(props: FRAMESMITH_PG_settings) -> Settings:
    """The plain values `client.request.build_request()` takes."""
    controlnets = tuple(
        ControlNetSetting(
            pass_name=name,
            enabled=unit.enabled,
            weight=unit.weight,
            start=unit.start,
            end=unit.end,
            model=unit.model,
        )
        for name, unit in (
            ("depth", props.controlnet_depth),
            ("normal", props.controlnet_normal),
            ("lineart", props.controlnet_lineart),
        )
    )
    return Settings(
        prompt=props.prompt,
        negative_prompt=props.negative_prompt,
        seed=props.seed,
        steps=props.steps,
        guidance=props.guidance,
        strength=props.strength,
        stylize_mode=props.stylize_mode.lower(),
        scheduler=props.scheduler.lower(),
        controlnets=controlnets,
        chunk_size=props.chunk_size,
        overlap=props.overlap,
        temporal_fusion=props.temporal_fusion,
        fusion_strength=props.fusion_strength,
        inbetween_method=props.inbetween_method.lower(),
        on_twos=props.on_twos,
        flow_preset=props.flow_preset,
        sparsectrl=props.sparsectrl,
        key_strength=props.key_strength,
        checkpoint=props.checkpoint,
        motion_adapter=props.motion_adapter,
        lora=props.lora,
        lora_weight=props.lora_weight,
    )


def find_job(props: FRAMESMITH_PG_settings, key: str) -> FRAMESMITH_PG_job | None:
    """A job entry by take or by backend job id."""
    for job in props.jobs:
        if key and key in (job.take, job.job_id):
            return job
    return None


classes = (FRAMESMITH_PG_controlnet, FRAMESMITH_PG_job, FRAMESMITH_PG_settings)

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()
    bpy.types.Scene.framesmith = PointerProperty(type=FRAMESMITH_PG_settings)


def unregister() -> None:
    del bpy.types.Scene.framesmith
    _unregister()
