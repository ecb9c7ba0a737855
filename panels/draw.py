"""What the panels show, shared by the 3D View and the Sequencer sidebars. Draw only: reads
properties and the session state (state.py), never the network; buttons call operators by name."""

from __future__ import annotations

import bpy

from .. import preferences, state
from ..properties import FINAL_STATES
from . import model_downloads

STATE_ICONS = {
    "DONE": "CHECKMARK",
    "FAILED": "ERROR",
    "CANCELED": "CANCEL",
    "RUNNING": "RENDER_ANIMATION",
    "QUEUED": "SORTTIME",
    "DETACHED": "UNLINKED",
}


def frame_range(layout: bpy.types.UILayout, props) -> None:
    col = layout.column(align=True)
    col.prop(props, "use_scene_range")
    if not props.use_scene_range:
        row = col.row(align=True)
        row.prop(props, "frame_start")
        row.prop(props, "frame_end")
    layout.prop(props, "output_dir")


def stylize(layout: bpy.types.UILayout, props) -> None:
    layout.prop(props, "stylize_engine")
    layout.prop(props, "prompt", text="")
    layout.prop(props, "negative_prompt", text="", icon="REMOVE")
    row = layout.row(align=True)
    row.prop(props, "render_source", expand=True)
    layout.prop(props, "working_size")
    if props.stylize_engine == "WAN_VACE":
        wan_stylize(layout, props)
    else:
        animatediff_stylize(layout, props)
    frame_range(layout, props)
    if hasattr(bpy.types, "FRAMESMITH_OT_stylize"):
        layout.operator("framesmith.stylize", icon="BRUSH_DATA")
    else:
        layout.label(text="Stylize is not available in this version yet", icon="INFO")


def animatediff_stylize(layout: bpy.types.UILayout, props) -> None:
    """Engine AnimateDiff: mode, sampling, temporal fusion, ControlNets, reference, models."""
    col = layout.column(align=True)
    col.prop(props, "stylize_mode")
    col.prop(props, "strength")
    col.prop(props, "steps")
    col.prop(props, "guidance")
    col.prop(props, "seed")
    col.prop(props, "scheduler")
    row = layout.row(align=True)
    row.active = props.stylize_mode != "PER_FRAME"  # only frames made together follow motion
    row.prop(props, "temporal_fusion")
    sub = row.row(align=True)
    sub.active = props.temporal_fusion
    sub.prop(props, "fusion_strength", text="")
    box = layout.box()
    box.label(text="ControlNets")
    for attr, label in (
        ("controlnet_depth", "Depth"),
        ("controlnet_normal", "Normal"),
        ("controlnet_lineart", "Line Art"),
    ):
        unit = getattr(props, attr)
        row = box.row(align=True)
        row.prop(unit, "enabled", text=label)
        sub = row.row(align=True)
        sub.active = unit.enabled
        sub.prop(unit, "weight", text="")
    style_reference(layout, props)
    models(layout, props)


def wan_stylize(layout: bpy.types.UILayout, props) -> None:
    """Engine Wan2.1-VACE: its control pass and strength, sampling, reference image, model."""
    col = layout.column(align=True)
    col.prop(props, "vace_control")
    col.prop(props, "vace_conditioning_scale")
    col.prop(props, "steps")
    col.prop(props, "guidance")
    col.prop(props, "seed")
    style_reference(layout, props, ip_adapter=False)
    wan_model(layout, props)


def style_reference(layout: bpy.types.UILayout, props, ip_adapter: bool = True) -> None:
    """The style reference image (uploaded once per take) and, for AnimateDiff, its IP-Adapter
    settings (Wan2.1-VACE reads the image itself)."""
    box = layout.box()
    box.prop(props, "use_reference")
    col = box.column(align=True)
    col.active = props.use_reference
    col.template_ID(props, "reference_image", new="image.new", open="image.open")
    if not ip_adapter:
        return
    col.prop(props, "ip_adapter_scale")
    if props.use_reference:
        col.prop(props, "ip_adapter_menu", text="")
        col.prop(props, "image_encoder_menu", text="")


def wan_model(layout: bpy.types.UILayout, props) -> None:
    """The Wan2.1-VACE menu, and where to put one when the backend listed none."""
    box = layout.box()
    box.label(text="Model")
    box.prop(props, "wan_vace_menu", text="")
    for i, line in enumerate(wan_hint(state.listing())):
        box.label(text=line, icon="INFO" if i == 0 else "BLANK1")


def wan_hint(listing) -> list[str]:
    """Lines under the Wan2.1-VACE menu: none when the backend listed a model."""
    choices = listing.choices
    if choices.wan_vaces:
        return []
    if listing.checked_at is None:
        return ["Check the backend to list its models"]
    return [
        "No Wan2.1-VACE model installed: put a",
        "Wan2.1-VACE diffusers folder (such as",
        "Wan2.1-VACE-1.3B-diffusers) in",
        choices.wan_folder or "the models folder's wan/",
        "or Download it in the Backend panel",
    ]


def models(layout: bpy.types.UILayout, props) -> None:
    """Model menus, filled from the backend's last check (never fetched here)."""
    box = layout.box()
    box.label(text="Models")
    col = box.column(align=True)
    col.prop(props, "checkpoint_menu", text="")
    if props.stylize_mode != "PER_FRAME":
        col.prop(props, "motion_adapter_menu", text="")
    row = col.row(align=True)
    row.prop(props, "lora_menu", text="")
    if props.lora:
        row.prop(props, "lora_weight", text="")
    if not state.model_choices().checkpoints:
        box.label(text="Check the backend to list its models", icon="INFO")


# One line under the method menu: what the method needs from the user.
METHOD_HINTS = {
    "FLOW": ("Motion estimated from the keys alone", "IPO_EASE_IN_OUT"),
    "CROSSFADE": ("Blends the keys: no motion", "IPO_LINEAR"),
    "RENDER": ("Renders cheap guide passes for every frame", "RENDER_STILL"),
    "DIFFUSION": ("Needs SparseCtrl, motion module, checkpoint models", "MOD_PARTICLES"),
}


WAN_HINT = ("Needs a Wan2.1-VACE model", "MOD_PARTICLES")


def inbetween(layout: bpy.types.UILayout, props) -> None:
    layout.prop(props, "inbetween_source")
    if props.inbetween_source != "SELECTED_STRIPS":  # rendered keys
        layout.row(align=True).prop(props, "render_source", expand=True)
    layout.prop(props, "inbetween_method")
    wan = props.inbetween_method == "DIFFUSION" and props.inbetween_engine == "WAN_VACE"
    text, icon = WAN_HINT if wan else METHOD_HINTS.get(props.inbetween_method, ("", "NONE"))
    if text:
        layout.label(text=text, icon=icon)
    row = layout.row()
    row.prop(props, "on_twos")
    if props.inbetween_method == "FLOW":
        row.prop(props, "flow_preset", text="")
    if props.inbetween_method == "DIFFUSION":
        diffusion(layout, props)
    frame_range(layout, props)
    layout.operator("framesmith.inbetween", icon="IPO_EASE_IN_OUT")


def diffusion(layout: bpy.types.UILayout, props) -> None:
    """Diffusion in-betweening: its engine, the generator settings it shares with Stylize, and
    the engine's own settings and models."""
    layout.prop(props, "inbetween_engine")
    layout.label(text="Prompt, sampling and models as in Stylize")
    layout.prop(props, "prompt", text="")
    layout.prop(props, "negative_prompt", text="", icon="REMOVE")
    col = layout.column(align=True)
    col.prop(props, "steps")
    col.prop(props, "guidance")
    col.prop(props, "seed")
    if props.inbetween_engine == "WAN_VACE":
        col.prop(props, "inbetween_control")
        col.prop(props, "vace_conditioning_scale")
        wan_model(layout, props)
        return
    col.prop(props, "scheduler")
    col.prop(props, "key_strength")
    box = layout.box()
    box.label(text="Models")
    col = box.column(align=True)
    col.prop(props, "checkpoint_menu", text="")
    col.prop(props, "motion_adapter_menu", text="")
    col.prop(props, "sparsectrl_menu", text="")
    if not state.model_choices().sparsectrls:
        box.label(text="Check the backend to list its models", icon="INFO")


def jobs(layout: bpy.types.UILayout, props) -> None:
    layout.template_list("FRAMESMITH_UL_jobs", "", props, "jobs", props, "active_job", rows=3)
    if not 0 <= props.active_job < len(props.jobs):
        return
    job = props.jobs[props.active_job]
    col = layout.column(align=True)
    if job.state not in FINAL_STATES and job.state != "DETACHED":
        col.progress(factor=job.progress, text=f"{job.state.title()} {job.stage}".strip())
    if job.message:
        col.label(text=job.message, icon=STATE_ICONS.get(job.state, "INFO"))
    if job.job_id:
        col.label(text=f"Job {job.job_id}")
    row = layout.row(align=True)
    live = job.state not in FINAL_STATES
    sub = row.row(align=True)
    sub.enabled = live
    sub.operator("framesmith.cancel", icon="CANCEL").job = job.take
    sub = row.row(align=True)
    sub.enabled = bool(job.job_id) and not state.watching(job.take)
    sub.operator("framesmith.reimport", icon="IMPORT").job = job.take
    row.operator("framesmith.open_folder", text="", icon="FILE_FOLDER").job = job.take


def backend(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    prefs = preferences.get(context)
    status = state.backend_status()
    layout.label(
        text="Local backend" if prefs.backend_mode == "LOCAL" else f"Remote: {prefs.url}",
        icon="CONSOLE" if prefs.backend_mode == "LOCAL" else "WORLD",
    )
    box = layout.box()
    icon = "TIME" if status.busy else {True: "CHECKMARK", False: "ERROR"}.get(status.ok, "QUESTION")
    for i, line in enumerate(status.lines):
        box.label(text=line, icon=icon if i == 0 else "BLANK1")
    row = layout.row(align=True)
    row.operator("framesmith.backend_check", text="Check", icon="CHECKMARK")
    if prefs.backend_mode == "LOCAL":
        row.operator("framesmith.backend_start", text="Start", icon="PLAY")
        row.operator("framesmith.backend_stop", text="Stop", icon="SNAP_FACE")
    model_downloads.draw(layout)
