"""Scene settings (`scene.framesmith`), saved in the .blend: what to make, and the job list."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

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

from .client.request_builder import ControlNetSetting, Settings
from .model_menus import model_menu

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


class FRAMESMITH_PG_settings(bpy.types.PropertyGroup):
    # --- stylize
    stylize_engine: EnumProperty(
        name="Engine",
        description="The video model that stylizes the shot",
        items=(
            (
                "ANIMATEDIFF",
                "AnimateDiff",
                "SD1.5 with a motion module and ControlNets: the light engine, for small GPUs",
            ),
            (
                "WAN_VACE",
                "Wan2.1-VACE",
                "A current video model (1.3B: about 8 GB of GPU memory at 480p) following one"
                " control pass; slower, steadier motion",
            ),
        ),
    )
    vace_control: EnumProperty(
        name="Control",
        description="The pass Wan2.1-VACE's control video is made from, for every frame",
        items=(
            ("DEPTH", "Depth", "The depth pass, normalised once per shot"),
            ("LINEART", "Line Art", "Freestyle line art"),
            ("LUMINANCE", "Luminance", "The rendered frames' brightness"),
            ("NONE", "None", "The prompt (and a style reference image) alone"),
        ),
    )
    vace_conditioning_scale: FloatProperty(
        name="Control Strength",
        description="How strongly Wan2.1-VACE follows its control (VACE conditioning scale)",
        default=1.0,
        min=0.0,
        max=4.0,
    )
    wan_vace: StringProperty(
        name="Wan2.1-VACE",
        description="Wan2.1-VACE diffusers folder by name; empty: the first installed",
    )
    wan_vace_menu: model_menu("wan_vace", "wan_vaces", "First Installed Wan2.1-VACE")
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
    render_source: EnumProperty(
        name="Render",
        description="How the frames (stylize) and the keys (in-between) are rendered",
        items=(
            ("FINAL", "Final", "The scene's own engine and settings"),
            (
                "VIEWPORT",
                "Viewport",
                "The Workbench look (Render Properties > Workbench"
                " shading): a fraction of a second a frame, for animatics and blocking; data"
                " passes come from a cheap Cycles render",
            ),
        ),
        default="FINAL",
    )
    working_size: IntProperty(
        name="Working Size",
        description="Short side in pixels the shot is rendered, sent and stylized at; the strip"
        " is scaled to fill the frame. 0: the engine's own size (512 for AnimateDiff, 480 for"
        " Wan2.1-VACE)",
        default=0,
        min=0,
        soft_min=256,
        soft_max=1536,
        max=4096,
        subtype="PIXEL",
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
    checkpoint_menu: model_menu("checkpoint", "checkpoints", "First Installed")
    motion_adapter_menu: model_menu("motion_adapter", "motion_adapters", "First Installed")
    lora_menu: model_menu("lora", "loras", "No LoRA")
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
    # style reference image (the backend's "reference" pass, read by an IP-Adapter)
    use_reference: BoolProperty(
        name="Style Reference",
        description="Follow the style of a reference image (through an IP-Adapter); the image"
        " is uploaded once per take and named in the take's request",
    )
    reference_image: PointerProperty(
        type=bpy.types.Image,
        name="Reference Image",
        description="The image whose style the frames should take: a file, a packed or a"
        " painted image (any size)",
    )
    ip_adapter_scale: FloatProperty(
        name="Reference Strength",
        description="How strongly the reference image steers the style (IP-Adapter scale)",
        default=0.6,
        min=0.0,
        max=2.0,
    )
    ip_adapter: StringProperty(
        name="IP-Adapter", description="IP-Adapter model; empty: the first installed"
    )
    image_encoder: StringProperty(
        name="Image Encoder",
        description="CLIP image encoder of the IP-Adapter; empty: the first installed",
    )
    ip_adapter_menu: model_menu("ip_adapter", "ip_adapters", "First Installed IP-Adapter")
    image_encoder_menu: model_menu("image_encoder", "image_encoders", "First Installed Encoder")
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
                "Generate the in-betweens from the keys (SparseCtrl in AnimateDiff, or"
                " Wan2.1-VACE); uses the prompt, steps, guidance and seed of Stylize",
            ),
        ),
    )
    inbetween_engine: EnumProperty(
        name="Engine",
        description="The video model that generates the in-betweens",
        items=(
            ("SPARSECTRL", "SparseCtrl", "SparseCtrl RGB keys in AnimateDiff: the light engine"),
            (
                "WAN_VACE",
                "Wan2.1-VACE",
                "Keys held at their frames, everything else generated; may follow a guide pass",
            ),
        ),
    )
    inbetween_control: EnumProperty(
        name="Guide",
        description="What Wan2.1-VACE follows between the keys",
        items=(
            ("NONE", "Keys Only", "The keys alone"),
            ("DEPTH", "Depth", "A cheap depth pass rendered for every frame from key to key"),
            ("LINEART", "Line Art", "Freestyle line art rendered for every frame from key to key"),
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
    sparsectrl_menu: model_menu("sparsectrl", "sparsectrls", "First Installed")
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
    """The plain values `client.request_builder.build_request()` takes: each `Settings` field
    from the property of the same name (a menu's identifier in lower case), the ControlNet rows,
    and the style reference image's name."""
    rna = props.bl_rna.properties
    values: dict[str, Any] = {}
    for name in (f.name for f in fields(Settings)):
        if name in rna:
            value = getattr(props, name)
            values[name] = value.lower() if rna[name].type == "ENUM" else value
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
        **values, controlnets=controlnets, reference_name=reference_name(props.reference_image)
    )


def reference_name(image: bpy.types.Image | None) -> str:
    """What names the style reference image in the request: its file's name, else the image's
    name (a generated or painted image); "" when none is chosen. The operator adds the hash of
    the bytes it uploads."""
    if image is None:
        return ""
    return bpy.path.basename(image.filepath) or image.name


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
