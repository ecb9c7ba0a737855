"""framesmith.stylize: render the shot's passes, restyle them on the backend, import a strip."""

from __future__ import annotations

import array
import hashlib
import uuid
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from .. import state
from ..client.frames import resolve_range
from ..client.jobs import atomic_write
from ..client.request import REFERENCE_FRAME, REFERENCE_PASS, StylizeRequest
from ..client.request_builder import Settings, Shot, build_request
from ..client.sizing import SizeError, working_size
from ..properties import to_settings
from . import common, modal, render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REFERENCE_FOLDER = "references"  # in the output folder: style references as uploaded
STILL_SOURCES = frozenset({"FILE", "GENERATED"})


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
            width, height = stylize_size(scene)
            shot = Shot(width, height, frame_range.frames, world_to_camera=camera_rotation(scene))
            settings = to_settings(props)
            request = build_request("stylize", settings, shot)
            root, warning = common.output_root(props.output_dir)
            request, given = with_reference(props.reference_image, settings, shot, request, root)
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
            renders=render.shot_batches(
                scene,
                request.frames,
                rendered_passes(request),
                look=props.render_source,
                size=(request.width, request.height),
            ),
            given=given,
        )


def stylize_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The size the shot is rendered, sent and stylized at: the render's aspect with the short
    side at the engine's working size (the backend's for the chosen engine, as last listed, or
    the user's)."""
    props = scene.framesmith
    engine = props.stylize_engine.lower()
    short_side = props.working_size or state.model_choices().working_size_for(engine)
    try:
        return working_size(render.output_size(scene), short_side)
    except SizeError as exc:
        raise common.UserError(str(exc)) from None


def rendered_passes(request: StylizeRequest) -> tuple[str, ...]:
    """The inputs Blender renders for every frame (the style reference is given, not rendered)."""
    return tuple(name for name in request.inputs() if name != REFERENCE_PASS)


def with_reference(
    image: bpy.types.Image | None,
    settings: Settings,
    shot: Shot,
    request: StylizeRequest,
    root: Path,
) -> tuple[StylizeRequest, dict[tuple[str, int], Path]]:
    """A request with a style reference names the exact image (the hash of the bytes that go
    up) and hands its file to the runner, which uploads it once; without one, as it was."""
    if request.reference is None:
        return request, {}
    folder = root / REFERENCE_FOLDER
    try:
        path, digest = reference_file(image, folder)
    except (OSError, RuntimeError) as exc:  # a file that cannot be read, saved or written
        raise common.UserError(
            f"the style reference could not be prepared in {folder}: {exc}"
        ) from None
    named = build_request("stylize", replace(settings, reference_sha256=digest), shot)
    assert isinstance(named, StylizeRequest)
    return named, {(REFERENCE_PASS, REFERENCE_FRAME): path}


def reference_file(image: bpy.types.Image | None, folder: Path) -> tuple[Path, str]:
    """The style reference as a PNG file and the SHA-256 of its bytes: the image's own file when
    it is an unchanged PNG on disk; otherwise (packed, generated, painted, another format) a PNG
    written into `folder`, named by its hash, so takes with the same image share one file."""
    if image is None:
        raise common.UserError("choose a style reference image, or turn Style Reference off")
    if image.source not in STILL_SOURCES:
        raise common.UserError(
            f"the style reference {image.name!r} is not a still image ({image.source.lower()});"
            " choose an image file or a painted image"
        )
    if not image.is_dirty:
        if image.packed_file is not None:
            packed = bytes(image.packed_file.data)
            if packed.startswith(PNG_SIGNATURE):
                return _keep(packed, folder)
        elif image.source == "FILE":
            own = Path(bpy.path.abspath(image.filepath, library=image.library))
            data = own.read_bytes() if own.is_file() else b""
            if data.startswith(PNG_SIGNATURE):
                return own, hashlib.sha256(data).hexdigest()
    return _keep(_as_png(image, folder), folder)


def _keep(data: bytes, folder: Path) -> tuple[Path, str]:
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{digest[:16]}.png"
    if not path.is_file():
        atomic_write(path, data)
    return path, digest


def _as_png(image: bpy.types.Image, folder: Path) -> bytes:
    """The image's pixels as 8-bit PNG bytes, through a throw-away copy (the user's image, its
    file path and format stay as they are). A float image (scene-linear) is encoded to sRGB:
    Blender writes a float buffer's values to PNG as they are, which would darken it."""
    width, height = image.size
    if not (width and height):
        where = f" from {image.filepath}" if image.filepath else ""
        raise common.UserError(f"the style reference {image.name!r} could not be read{where}")
    pixels = array.array("f", bytes(4 * width * height * 4))
    image.pixels.foreach_get(pixels)
    if image.is_float:
        pixels = linear_to_srgb(pixels)
    copy = bpy.data.images.new(".framesmith-reference", width, height, alpha=True)
    out = folder / f".reference-{uuid.uuid4().hex}.png"
    try:
        if not image.is_float:  # byte pixels are in the image's own colour space: keep it
            copy.colorspace_settings.name = image.colorspace_settings.name
        copy.pixels.foreach_set(pixels)
        folder.mkdir(parents=True, exist_ok=True)
        copy.filepath_raw = str(out)
        copy.file_format = "PNG"
        copy.save()
        return out.read_bytes()
    finally:
        bpy.data.images.remove(copy)
        out.unlink(missing_ok=True)


def linear_to_srgb(rgba: array.array) -> array.array:
    """Linear RGBA floats → sRGB-encoded, clamped to 0–1; alpha as it is."""

    def encode(v: float) -> float:
        v = min(max(v, 0.0), 1.0)
        return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055

    out = array.array("f", (encode(v) for v in rgba))
    out[3::4] = rgba[3::4]
    return out


def camera_rotation(scene: bpy.types.Scene) -> tuple[tuple[float, ...], ...] | None:
    """World → camera rotation of the scene camera at the current frame (Blender's Normal pass
    is in world space; the ControlNet wants camera space)."""
    if scene.camera is None:
        return None
    rotation = scene.camera.matrix_world.to_3x3().normalized().inverted()
    return tuple(tuple(float(v) for v in row) for row in rotation)


classes = (FRAMESMITH_OT_stylize,)

register, unregister = bpy.utils.register_classes_factory(classes)
