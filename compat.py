"""Every Blender-version difference the add-on meets, in one place (4.2 LTS → 5.3).

- 4.4 renamed Sequence → Strip and added `sequence_editor.strips`; 5.0 removes `.sequences`.
- 4.4 layered actions: F-curves live in a channelbag per action slot; 5.0 drops `action.fcurves`.
- 5.0 moves the compositor tree to `scene.compositing_node_group` and renames the File Output
  node's fields (`directory`, `file_name`, `file_output_items`); its format defaults to one
  multilayer EXR (`media_type`), and a still render numbers a file only where its name holds
  `####`. 5.3 deprecates `compositing_node_group` for `scene.compositor_effects`.
- 5.0: `strips.new_effect(length=)` (was `frame_end=`); `bpy.data.grease_pencils` is Grease
  Pencil v3 again (4.3–4.5: `grease_pencils_v3`).
- 5.3 deprecates `Strip.frame_start` / `frame_final_start` / `frame_final_end` for
  `content_start` / `left_handle` / `right_handle`.
- EEVEE is `BLENDER_EEVEE_NEXT` in 4.2–4.5 and `BLENDER_EEVEE` again in 5.0.
- Grease Pencil v3 (4.3) is object type `GREASEPENCIL`; before it, `GPENCIL`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bpy

VERSION: tuple[int, int, int] = tuple(bpy.app.version)  # type: ignore[assignment]


# --- sequencer -------------------------------------------------------------------------------


def sequence_editor(scene: bpy.types.Scene, create: bool = True) -> Any:
    if scene.sequence_editor is None and create:
        scene.sequence_editor_create()
    return scene.sequence_editor


def top_level_strips(editor: Any) -> Any:
    """The collection that `new_image()` lives on."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: Any) -> Any:
    """Every strip, meta-strip contents included."""
    if editor is None:
        return ()
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def new_image_strip(editor: Any, name: str, first_file: str, channel: int, frame_start: int) -> Any:
    """An image strip scaled to fit the scene's frame (results may come back at the engine's
    working size, not the render's)."""
    return top_level_strips(editor).new_image(
        name=name, filepath=first_file, channel=channel, frame_start=frame_start, fit_method="FIT"
    )


def remove_strip(editor: Any, strip: Any) -> None:
    top_level_strips(editor).remove(strip)


def new_effect_strip(
    editor: Any, name: str, kind: str, channel: int, frame_start: int, length: int
) -> Any:
    """An effect strip (e.g. COLOR) covering `length` frames from `frame_start`."""
    strips = top_level_strips(editor)
    if VERSION >= (5, 0, 0):
        return strips.new_effect(
            name, kind, channel=channel, frame_start=frame_start, length=length
        )
    return strips.new_effect(
        name, kind, channel=channel, frame_start=frame_start, frame_end=frame_start + length
    )


def strip_span(strip: Any) -> tuple[int, int]:
    """The frames a strip shows: first, and one past the last."""
    if hasattr(strip, "left_handle"):  # 5.3+
        return int(strip.left_handle), int(strip.right_handle)
    return int(strip.frame_final_start), int(strip.frame_final_end)


def strip_content_start(strip: Any) -> int:
    """Where the strip's first element would show, before any trim."""
    if hasattr(strip, "content_start"):  # 5.3+
        return int(strip.content_start)
    return int(strip.frame_start)


def grease_pencils() -> Any:
    """The Grease Pencil v3 data-blocks (4.3+)."""
    if hasattr(bpy.data, "grease_pencils_v3"):  # 4.3–4.5
        return bpy.data.grease_pencils_v3
    return bpy.data.grease_pencils


# --- animation -------------------------------------------------------------------------------


def _fcurves(animation_data: Any) -> Iterator[Any]:
    if animation_data is None or animation_data.action is None:
        return
    action = animation_data.action
    slot = getattr(animation_data, "action_slot", None)
    if slot is not None:
        from bpy_extras import anim_utils

        channelbag = anim_utils.action_get_channelbag_for_slot(action, slot)
        if channelbag is not None:
            yield from channelbag.fcurves
        return
    if hasattr(action, "fcurves"):  # 4.2/4.3: legacy actions
        yield from action.fcurves


def keyframe_positions(obj: bpy.types.Object) -> list[float]:
    """Frames where `obj` has keys: its own action, its data's action (shape keys, camera
    lens, ...) and, for Grease Pencil, its drawn frames."""
    positions: list[float] = []
    owners = [obj, obj.data]
    shape_keys = getattr(obj.data, "shape_keys", None)
    if shape_keys is not None:
        owners.append(shape_keys)
    for owner in owners:
        for fcurve in _fcurves(getattr(owner, "animation_data", None)):
            positions.extend(point.co.x for point in fcurve.keyframe_points)
    if obj.type in ("GREASEPENCIL", "GPENCIL"):
        for layer in obj.data.layers:
            positions.extend(float(frame.frame_number) for frame in layer.frames)
    return positions


# --- rendering -------------------------------------------------------------------------------


def eevee_engine_id() -> str:
    return "BLENDER_EEVEE_NEXT" if (4, 2, 0) <= VERSION < (5, 0, 0) else "BLENDER_EEVEE"


def compositor_tree(scene: bpy.types.Scene) -> tuple[Any, tuple[str, Any]]:
    """A compositor node tree whose nodes run when `scene` renders, and what
    `restore_compositor()` needs to put the scene back exactly as it was.

    5.3: a compositor effect of our own with its own node group (setting the deprecated
    `compositing_node_group` leaves an empty "Scene Effect" behind); the user's effects are off
    for the render. 5.0–5.2: the scene's node group, or one we create. 4.x: `scene.node_tree`.
    """
    if hasattr(scene, "compositor_effects"):  # 5.3+
        group = bpy.data.node_groups.new("Framesmith passes", "CompositorNodeTree")
        others = [(e.name, e.enable_for_render) for e in scene.compositor_effects]
        active = scene.compositor_effects.active
        for effect in scene.compositor_effects:
            effect.enable_for_render = False
        effect = scene.compositor_effects.new("Framesmith passes")
        effect.node_group = group
        saved = (effect.name, group.name, others, active.name if active else None)
        return group, ("effect", saved)
    if hasattr(scene, "compositing_node_group"):  # 5.0–5.2
        created = scene.compositing_node_group is None
        if created:
            scene.compositing_node_group = bpy.data.node_groups.new(
                f"{scene.name} Compositor", "CompositorNodeTree"
            )
        return scene.compositing_node_group, ("group", created)
    saved = scene.use_nodes
    existing = {node.name for node in scene.node_tree.nodes} if scene.node_tree else set()
    scene.use_nodes = True  # creates a default tree (Render Layers → Composite) the first time
    return scene.node_tree, ("use_nodes", (saved, existing))


def restore_compositor(scene: bpy.types.Scene, state: tuple[str, Any]) -> None:
    kind, value = state
    if kind == "use_nodes":
        saved, existing = value
        tree = scene.node_tree
        for node in [n for n in tree.nodes if n.name not in existing]:
            tree.nodes.remove(node)
        scene.use_nodes = saved
    elif kind == "effect":
        effect_name, group_name, others, active = value
        effects = scene.compositor_effects
        ours = effects.get(effect_name)
        if ours is not None:
            effects.remove(ours)
        for name, enabled in others:
            if name in effects:
                effects[name].enable_for_render = enabled
        if active is not None and active in effects:
            effects.active = effects[active]
        group = bpy.data.node_groups.get(group_name)
        if group is not None:
            bpy.data.node_groups.remove(group)
    elif value:  # we created the 5.0–5.2 node group
        group = scene.compositing_node_group
        scene.compositing_node_group = None
        bpy.data.node_groups.remove(group)


def file_output(tree: Any, directory: str, file_format: str) -> tuple[Any, Any]:
    """A File Output node writing one image a frame, `<directory>/<frame>.<ext>` (8-bit RGBA PNG
    or 32-bit float RGBA EXR); the node and its input socket.

    One node per pass on every version: 5.x puts every input of a node into one multilayer EXR
    by default, numbers a still render's file only where the name holds `####`, and turns `/` in
    input names into `_` (5.0), so a pass cannot get its own folder from an input name.
    """
    node = tree.nodes.new("CompositorNodeOutputFile")
    if hasattr(node, "file_output_items"):  # 5.0+
        node.format.media_type = "IMAGE"
        node.directory = directory
        node.file_name = ""
        node.file_output_items.clear()
        node.file_output_items.new("RGBA", "####")
    else:
        node.base_path = directory
        node.file_slots.clear()
        node.file_slots.new("####")
        node.file_slots[0].path = ""
    _set_format(node.format, file_format)
    return node, node.inputs[0]


def _set_format(image_format: Any, file_format: str) -> None:
    image_format.file_format = file_format
    # RGBA, whatever the scene's own output says: in RGB the Vector pass loses its W (the motion
    # to the next frame); data passes keep their own channel names (X,Y,Z,W / V).
    image_format.color_mode = "RGBA"
    if file_format == "OPEN_EXR":
        image_format.color_depth = "32"
        image_format.exr_codec = "ZIP"
    else:
        image_format.color_depth = "8"
