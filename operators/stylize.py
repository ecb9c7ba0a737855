"""framesmith.stylize: render the shot's passes, restyle them on the backend, import a strip."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from ..client.frames import resolve_range
from ..client.request import Shot, build_request
from ..properties import to_settings
from . import common, modal, render


class FRAMESMITH_OT_stylize(modal.JobOperator, bpy.types.Operator):
    """Render the frame range (beauty, the passes that drive ControlNets and, for temporal
    fusion, motion vectors), stylize it with the prompt on the backend and put the result on a
    strip above, frame for frame"""

    bl_idname = "framesmith.stylize"
    bl_label = "Stylize"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None and context.scene.camera is not None

    def plan(self, context: bpy.types.Context, blocking: bool) -> common.JobPlan | None:
        scene = context.scene
        props = scene.framesmith
        try:
            config = common.backend(context)
            frame_range = resolve_range(
                props.use_scene_range,
                (scene.frame_start, scene.frame_end),
                (props.frame_start, props.frame_end),
            )
            width, height = render.output_size(scene)
            shot = Shot(width, height, frame_range.frames, world_to_camera=camera_rotation(scene))
            request = build_request("stylize", to_settings(props), shot)
            root, warning = common.output_root(props.output_dir)
            client = common.reach_early(config, blocking)
        except common.PREPARE_ERRORS as exc:
            self.report({"ERROR"}, f"Framesmith: {common.say(exc)}")
            return None
        return common.JobPlan(
            "STYLIZE",
            request,
            config,
            root,
            frame_range,
            warning,
            client,
            renders=render.shot_batches(scene, request.frames, tuple(request.inputs())),
        )


def camera_rotation(scene: bpy.types.Scene) -> tuple[tuple[float, ...], ...] | None:
    """World → camera rotation of the scene camera at the current frame (Blender's Normal pass
    is in world space; the ControlNet wants camera space)."""
    if scene.camera is None:
        return None
    rotation = scene.camera.matrix_world.to_3x3().normalized().inverted()
    return tuple(tuple(float(v) for v in row) for row in rotation)


classes = (FRAMESMITH_OT_stylize,)

register, unregister = bpy.utils.register_classes_factory(classes)
