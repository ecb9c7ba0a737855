"""Every Blender-version difference the add-on meets, in one place (4.2 → 4.5 → 5.0).

- 4.4 renamed Sequence → Strip and added `sequence_editor.strips`; 5.0 removes `.sequences`.
- 4.4 layered actions: F-curves live in a channelbag per action slot; 5.0 drops `action.fcurves`.
- 5.0 moves the compositor tree to `scene.compositing_node_group` and renames the File Output
  node's fields (`directory`, `file_name`, `file_output_items`).
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
    return top_level_strips(editor).new_image(
        name=name, filepath=first_file, channel=channel, frame_start=frame_start
    )


def remove_strip(editor: Any, strip: Any) -> None:
    top_level_strips(editor).remove(strip)


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


def compositor_tree(scene: bpy.types.Scene) -> tuple[Any, tuple[str, bool]]:
    """The scene's compositor node tree, switched on or created, and what
    `restore_compositor()` needs to put things back."""
    if hasattr(scene, "compositing_node_group"):  # 5.0+
        created = scene.compositing_node_group is None
        if created:
            scene.compositing_node_group = bpy.data.node_groups.new(
                f"{scene.name} Compositor", "CompositorNodeTree"
            )
        return scene.compositing_node_group, ("group", created)
    saved = scene.use_nodes
    scene.use_nodes = True
    return scene.node_tree, ("use_nodes", saved)


def restore_compositor(scene: bpy.types.Scene, state: tuple[str, bool]) -> None:
    kind, value = state
    if kind == "use_nodes":
        scene.use_nodes = value
    elif value:  # we created the 5.0 node group
        group = scene.compositing_node_group
        scene.compositing_node_group = None
        bpy.data.node_groups.remove(group)


def file_output_node(tree: Any, directory: str, slot_names: list[str]) -> Any:
    """A File Output node with one input per name, writing `<directory>/<name>/<frame>.<ext>`."""
    node = tree.nodes.new("CompositorNodeOutputFile")
    if hasattr(node, "file_output_items"):  # 5.0+ (not verified here: no 5.0 build to test)
        node.directory = directory
        node.file_name = ""
        node.file_output_items.clear()
        for name in slot_names:
            node.file_output_items.new("RGBA", f"{name}/")
    else:
        node.base_path = directory
        node.file_slots.clear()
        for name in slot_names:
            node.file_slots.new(name)
            node.file_slots[name].path = f"{name}/"
    return node


def set_slot_format(node: Any, index: int, file_format: str) -> None:
    """Give one File Output input its own format: 8-bit RGBA PNG, or 32-bit float EXR."""
    if hasattr(node, "file_output_items"):  # 5.0+
        item = node.file_output_items[index]
        item.override_node_format = True
        image_format = item.format
    else:
        slot = node.file_slots[index]
        slot.use_node_format = False
        image_format = slot.format
    image_format.file_format = file_format
    if file_format == "OPEN_EXR":
        # RGBA, whatever the scene's own output says: in RGB the Vector pass loses its W (the
        # motion to the next frame); data passes keep their own channel names (X,Y,Z,W / V).
        image_format.color_mode = "RGBA"
        image_format.color_depth = "32"
        image_format.exr_codec = "ZIP"
    else:
        image_format.color_mode = "RGBA"
        image_format.color_depth = "8"
