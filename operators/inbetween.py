"""framesmith.inbetween: key images at key frames → every frame of the range, as a strip."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from .. import compat
from ..client.frames import (
    FrameRange,
    ImageStripInfo,
    describe_keys,
    key_frames,
    resolve_range,
    strip_keys,
)
from ..client.request import InbetweenMethod, InbetweenRequest
from ..client.request_builder import Shot, build_request
from ..properties import to_settings
from . import common, modal, render

KEY_FORMATS = (".png", ".exr")


class FRAMESMITH_OT_inbetween(modal.JobOperator, bpy.types.Operator):
    """Fill every frame between the keys: keys rendered at the active object's keyframes or at
    markers, or taken from the selected image strips; the result lands as a strip above"""

    bl_idname = "framesmith.inbetween"
    bl_label = "In-between"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None

    def plan(self, context: bpy.types.Context, blocking: bool) -> common.JobPlan | None:
        scene = context.scene
        props = scene.framesmith
        source = props.inbetween_source
        try:
            config = common.backend(context)
            frame_range = resolve_range(
                props.use_scene_range,
                (scene.frame_start, scene.frame_end),
                (props.frame_start, props.frame_end),
            )
            key_files: dict[int, Path] = {}
            if source == "SELECTED_STRIPS":
                key_files = selected_strip_keys(scene, frame_range)
                keys = tuple(key_files)
                width, height = key_image_size(key_files)
            else:
                positions, what = key_positions(context, source)
                keys = key_frames(positions, frame_range)
                if len(keys) < 2:
                    raise common.UserError(describe_keys(positions, frame_range, what))
                width, height = render.output_size(scene)
            request = build_request(
                "inbetween", to_settings(props), Shot(width, height, frame_range.frames, keys)
            )
            assert isinstance(request, InbetweenRequest)
            renders = planned_renders(scene, request, rendered_keys=not key_files)
            root, warning = common.output_root(props.output_dir)
            client = common.reach_early(config, blocking)
        except common.PREPARE_ERRORS as exc:
            self.report({"ERROR"}, f"Framesmith: {common.say(exc)}")
            return None
        return common.JobPlan(
            "INBETWEEN",
            request,
            config,
            root,
            frame_range,
            warning,
            client,
            renders=renders,
            given={("keyframe", frame): path for frame, path in key_files.items()},
        )


def planned_renders(
    scene: bpy.types.Scene, request: InbetweenRequest, rendered_keys: bool
) -> tuple[render.RenderBatch, ...]:
    """Beauty stills at the keys (unless the keys are given images), then the cheap guide passes
    of every frame between the keys that the job follows: Vector and Depth for render-assisted
    in-betweening, a Wan2.1-VACE in-between's control pass."""
    batches = []
    if rendered_keys:
        look = scene.framesmith.render_source
        batches.append(render.RenderBatch(request.keyframes, "keys", look=look))
    passes = request.guide_passes
    if passes:
        size = render.output_size(scene)
        what = (
            "render-assisted in-betweening"
            if request.method == InbetweenMethod.RENDER
            else "a guided Wan2.1-VACE in-between"
        )
        if size != (request.width, request.height):
            raise common.UserError(
                f"{what} needs keys at the render size {size[0]}×{size[1]} (the guide passes are"
                f" rendered at it); the keys are {request.width}×{request.height}"
            )
        guides = request.inputs()[passes[0]]
        batches.append(render.RenderBatch(guides, "guides", passes, guide=True))
    if batches and scene.camera is None:
        raise common.UserError("the scene has no camera to render the keys and passes from")
    return tuple(batches)


def key_positions(context: bpy.types.Context, source: str) -> tuple[list[float], str]:
    """Key positions (frames, maybe fractional) and what they came from, in words."""
    scene = context.scene
    if source == "MARKERS":
        return [float(m.frame) for m in scene.timeline_markers], "the timeline"
    obj = context.active_object
    if obj is None:
        raise common.UserError("select the animated object whose keyframes set the keys")
    return compat.keyframe_positions(obj), f"'{obj.name}'"


def selected_strip_keys(scene: bpy.types.Scene, frame_range: FrameRange) -> dict[int, Path]:
    editor = compat.sequence_editor(scene, create=False)
    infos = [
        ImageStripInfo(
            name=s.name,
            channel=s.channel,
            frame_start=compat.strip_content_start(s),
            frame_final_start=compat.strip_span(s)[0],
            frame_final_end=compat.strip_span(s)[1],
            directory=bpy.path.abspath(s.directory),
            files=tuple(e.filename for e in s.elements),
        )
        for s in compat.all_strips(editor)
        if s.select and s.type == "IMAGE"
    ]
    if not infos:
        raise common.UserError("select the image strips that hold the key drawings")
    keys = strip_keys(infos, frame_range)
    if len(keys) < 2:
        raise common.UserError(
            f"the selected strips give {len(keys)} key frame(s) in the frame range"
            f" {frame_range.start}–{frame_range.end}; in-betweening needs at least two"
        )
    for frame, path in keys.items():
        if path.suffix.lower() not in KEY_FORMATS:
            raise common.UserError(
                f"the key at frame {frame} ({path.name}) is not a PNG or EXR file;"
                " save the keys as PNG"
            )
        if not path.is_file():
            raise common.UserError(f"the key image for frame {frame} is missing: {path}")
    return keys


def key_image_size(key_files: dict[int, Path]) -> tuple[int, int]:
    """The keys' common pixel size (they must all match)."""
    sizes: dict[tuple[int, int], int] = {}
    for frame, path in key_files.items():
        image = bpy.data.images.load(str(path), check_existing=False)
        try:
            size = (int(image.size[0]), int(image.size[1]))
        finally:
            bpy.data.images.remove(image)
        sizes.setdefault(size, frame)
    if len(sizes) > 1:
        listed = ", ".join(f"{w}×{h} (frame {f})" for (w, h), f in sizes.items())
        raise common.UserError(f"the key images differ in size: {listed}; make them match")
    return next(iter(sizes))


classes = (FRAMESMITH_OT_inbetween,)

register, unregister = bpy.utils.register_classes_factory(classes)
