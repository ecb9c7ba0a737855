"""Render the in-between benchmark's test shots with the bpy module (a script, not a backend
module: run it with Blender's Python, e.g. `.venv-blender/bin/python backend/bench/render_shots.py
--out DIR`; the backend itself never imports bpy).

Each shot is written as OUT/<shot>/beauty/NNNN.png (8-bit RGB), OUT/<shot>/vector/NNNN.exr and
OUT/<shot>/depth/NNNN.exr (32-bit float: Blender's Vector and Depth passes), frames 1..N, plus
OUT/<shot>/shot.json. Surfaces are emissive, textured in object space and shaded from their
normals, so Cycles gives noise-free frames in a few samples and every pixel is explained by the
motion the Vector pass describes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import bpy

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
import compat  # noqa: E402  (the add-on's one module of Blender-version differences)

LIGHT = (0.4, -0.5, 0.77)  # direction the fake shading comes from


def _reset(width: int, height: int, frames: int, samples: int) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_motion_blur = False  # Cycles writes no Vector pass with motion blur on
    scene.view_settings.view_transform = "Standard"
    scene.frame_start, scene.frame_end = 1, frames
    # Constant speed between the two keys of every animation (this process's preferences only).
    bpy.context.preferences.edit.keyframe_new_interpolation_type = "LINEAR"
    return scene


def _material(name: str, colour_a, colour_b, scale: float, detail_scale: float):
    """Emission = texture × (0.35 + 0.65 · max(0, N·L)), the texture in object space: organic
    patches between two colours (noise), a faint checker for hard edges, fine noise for detail.
    Mostly aperiodic on purpose: a bold checkerboard is a pathological case for any matcher."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    coords = nodes.new("ShaderNodeTexCoord")

    patches = nodes.new("ShaderNodeTexNoise")
    patches.inputs["Scale"].default_value = scale
    patches.inputs["Detail"].default_value = 3.0
    colours = nodes.new("ShaderNodeMix")
    colours.data_type = "RGBA"
    colours.inputs["A"].default_value = (*colour_a, 1.0)
    colours.inputs["B"].default_value = (*colour_b, 1.0)
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Color1"].default_value = (1.0, 1.0, 1.0, 1.0)
    checker.inputs["Color2"].default_value = (0.75, 0.75, 0.75, 1.0)
    checker.inputs["Scale"].default_value = scale
    detail = nodes.new("ShaderNodeTexNoise")
    detail.inputs["Scale"].default_value = detail_scale
    detail.inputs["Detail"].default_value = 6.0
    edged = nodes.new("ShaderNodeMix")
    edged.data_type = "RGBA"
    edged.blend_type = "MULTIPLY"
    edged.inputs["Factor"].default_value = 1.0
    texture = nodes.new("ShaderNodeMix")
    texture.data_type = "RGBA"
    texture.blend_type = "MULTIPLY"
    texture.inputs["Factor"].default_value = 0.5
    for node in (patches, checker, detail):
        links.new(coords.outputs["Object"], node.inputs["Vector"])
    links.new(patches.outputs["Fac"], colours.inputs["Factor"])
    links.new(colours.outputs["Result"], edged.inputs["A"])
    links.new(checker.outputs["Color"], edged.inputs["B"])
    links.new(edged.outputs["Result"], texture.inputs["A"])
    links.new(detail.outputs["Color"], texture.inputs["B"])

    geometry = nodes.new("ShaderNodeNewGeometry")
    facing = nodes.new("ShaderNodeVectorMath")
    facing.operation = "DOT_PRODUCT"
    facing.inputs[1].default_value = LIGHT
    lit = nodes.new("ShaderNodeMath")
    lit.operation = "MAXIMUM"
    lit.inputs[1].default_value = 0.0
    shade = nodes.new("ShaderNodeMath")
    shade.operation = "MULTIPLY_ADD"
    shade.inputs[1].default_value = 0.65
    shade.inputs[2].default_value = 0.35
    links.new(geometry.outputs["Normal"], facing.inputs[0])
    links.new(facing.outputs["Value"], lit.inputs[0])
    links.new(lit.outputs["Value"], shade.inputs[0])

    shaded = nodes.new("ShaderNodeMix")
    shaded.data_type = "RGBA"
    shaded.blend_type = "MULTIPLY"
    shaded.inputs["Factor"].default_value = 1.0
    links.new(texture.outputs["Result"], shaded.inputs["A"])
    links.new(shade.outputs["Value"], shaded.inputs["B"])
    emission = nodes.new("ShaderNodeEmission")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(shaded.outputs["Result"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return mat


def _object(kind: str, name: str, material, **kw) -> bpy.types.Object:
    adders: dict[str, Callable[..., object]] = {
        "plane": bpy.ops.mesh.primitive_plane_add,
        "cube": bpy.ops.mesh.primitive_cube_add,
        "sphere": bpy.ops.mesh.primitive_uv_sphere_add,
    }
    adders[kind](**kw)
    obj = bpy.context.active_object
    obj.name = name
    obj.data.materials.append(material)
    if kind == "sphere":
        bpy.ops.object.shade_smooth()
    return obj


def _camera(scene, location, rotation_deg, lens: float = 35.0) -> bpy.types.Object:
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = lens
    cam.location = location
    cam.rotation_euler = tuple(math.radians(a) for a in rotation_deg)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def _animate(obj, frames: int, **ends) -> None:
    """Key each given property at frame 1 and at the last frame (linear: see _reset)."""
    for prop, (start, end) in ends.items():
        setattr(obj, prop, start)
        obj.keyframe_insert(prop, frame=1)
        setattr(obj, prop, end)
        obj.keyframe_insert(prop, frame=frames)


def _backdrop(name: str = "Backdrop") -> bpy.types.Object:
    """A large textured wall behind everything, so every pixel shows a surface."""
    mat = _material(name, (0.85, 0.8, 0.6), (0.3, 0.4, 0.5), 0.6, 0.5)
    wall = _object("plane", name, mat, size=40, location=(0, 6, 0))
    wall.rotation_euler = (math.radians(90), 0, 0)
    return wall


def shot_camera_move(scene, frames: int) -> None:
    """The camera trucks sideways and pushes in over a floor with pillars: parallax only."""
    floor_mat = _material("Floor", (0.9, 0.85, 0.7), (0.35, 0.4, 0.45), 1.0, 0.6)
    _object("plane", "Floor", floor_mat, size=60, location=(0, 0, 0))
    _backdrop()
    pillar = _material("Pillar", (0.8, 0.3, 0.2), (0.95, 0.85, 0.3), 3.0, 3.0)
    for i, (x, y) in enumerate(((-2.5, 1.0), (0.0, -1.0), (2.2, 2.0), (-0.8, 3.5))):
        obj = _object("cube", f"Pillar{i}", pillar, size=1.0, location=(x, y, 0.8))
        obj.scale = (0.6, 0.6, 1.6)
    cam = _camera(scene, (-2.0, -9.0, 3.0), (75, 0, 0))
    _animate(cam, frames, location=((-1.2, -9.0, 3.0), (1.2, -8.0, 2.7)))


def shot_occlusion(scene, frames: int) -> None:
    """A near sphere and a farther cube cross in opposite directions; the sphere hides it."""
    _backdrop()
    ball_mat = _material("Ball", (0.2, 0.5, 0.9), (0.9, 0.9, 0.95), 5.0, 4.0)
    cube_mat = _material("Cube", (0.9, 0.3, 0.2), (1.0, 0.9, 0.2), 4.0, 3.0)
    ball = _object("sphere", "Ball", ball_mat, radius=1.0, location=(-3.0, -1.5, 0.0))
    cube = _object("cube", "Cube", cube_mat, size=1.6, location=(3.0, 1.5, 0.0))
    _animate(ball, frames, location=((-2.0, -1.5, 0.1), (2.0, -1.5, -0.1)))
    _animate(cube, frames, location=((2.2, 1.5, 0.2), (-2.2, 1.5, -0.2)))
    _animate(cube, frames, rotation_euler=((0.0, 0.0, 0.3), (0.4, 0.0, 1.4)))
    _camera(scene, (0.0, -10.0, 0.0), (90, 0, 0), lens=40.0)


def shot_large_motion(scene, frames: int) -> None:
    """A cube crosses most of the frame, turning, a third of the width between keys."""
    _backdrop()
    mat = _material("Cube", (0.2, 0.7, 0.3), (0.95, 0.95, 0.8), 3.0, 4.0)
    cube = _object("cube", "Cube", mat, size=1.8, location=(-4.5, 0.0, 0.0))
    span = 9.0
    _animate(cube, frames, location=((-span / 2, 0.0, -0.4), (span / 2, 0.0, 0.5)))
    _animate(cube, frames, rotation_euler=((0.2, 0.0, 0.0), (0.6, 0.5, 2.0)))
    _camera(scene, (0.0, -10.0, 0.0), (90, 0, 0), lens=35.0)


def shot_textured_surface(scene, frames: int) -> None:
    """A finely textured sphere spins in place while the camera drifts round it."""
    _backdrop()
    mat = _material("Globe", (0.95, 0.7, 0.3), (0.2, 0.3, 0.6), 8.0, 6.0)
    globe = _object("sphere", "Globe", mat, radius=2.0, location=(0, 0, 0), segments=48)
    _animate(globe, frames, rotation_euler=((0.3, 0.0, 0.0), (0.3, 0.0, 1.2)))
    cam = _camera(scene, (0.0, -9.0, 0.5), (88, 0, 0), lens=40.0)
    _animate(cam, frames, location=((-0.6, -9.0, 0.5), (0.6, -8.6, 0.3)))


def shot_crossing(scene, frames: int) -> None:
    """Two textured boxes close in depth cross fast in opposite directions, the nearer one
    passing in front, and a third one behind them rising: much of each is hidden for a while."""
    _backdrop()
    near = _material("Near", (0.15, 0.35, 0.8), (0.85, 0.9, 0.95), 4.0, 5.0)
    far = _material("Far", (0.85, 0.25, 0.2), (0.95, 0.85, 0.4), 3.5, 4.0)
    back = _material("Back", (0.3, 0.7, 0.35), (0.9, 0.95, 0.7), 3.0, 3.0)
    box_a = _object("cube", "BoxA", near, size=1.8, location=(-3.5, -1.0, 0.0))
    box_b = _object("cube", "BoxB", far, size=2.0, location=(3.5, 0.2, 0.0))
    box_c = _object("cube", "BoxC", back, size=1.4, location=(0.5, 2.0, -2.0))
    _animate(box_a, frames, location=((-3.6, -1.0, -0.3), (3.4, -1.0, 0.4)))
    _animate(box_a, frames, rotation_euler=((0.3, 0.2, 0.0), (0.3, 0.2, 0.9)))
    _animate(box_b, frames, location=((3.6, 0.2, 0.3), (-3.4, 0.2, -0.3)))
    _animate(box_c, frames, location=((0.6, 2.0, -2.2), (-0.4, 2.0, 1.8)))
    _camera(scene, (0.0, -10.0, 0.0), (90, 0, 0), lens=35.0)


def shot_camera_orbit(scene, frames: int) -> None:
    """The camera orbits a third of a turn round a group of textured objects on a floor."""
    floor_mat = _material("Floor", (0.8, 0.75, 0.6), (0.3, 0.35, 0.45), 1.2, 0.8)
    _object("plane", "Floor", floor_mat, size=60, location=(0, 0, 0))
    a = _material("A", (0.8, 0.3, 0.2), (0.95, 0.85, 0.3), 3.0, 3.0)
    b = _material("B", (0.2, 0.5, 0.85), (0.9, 0.9, 0.95), 4.0, 4.0)
    _object("cube", "Crate", a, size=1.4, location=(-0.9, 0.3, 0.7))
    _object("sphere", "Ball", b, radius=0.8, location=(1.0, -0.4, 0.8))
    tower = _object("cube", "Tower", b, size=1.0, location=(0.2, 1.4, 1.2))
    tower.scale = (0.5, 0.5, 1.2)
    pivot = bpy.data.objects.new("Pivot", None)
    scene.collection.objects.link(pivot)
    cam = _camera(scene, (0.0, -8.0, 3.5), (68, 0, 0), lens=32.0)
    cam.parent = pivot
    _animate(pivot, frames, rotation_euler=((0.0, 0.0, -0.6), (0.0, 0.0, 0.6)))


def shot_fast_small(scene, frames: int) -> None:
    """A small ball crosses the whole frame on a diagonal, about its own width a frame."""
    _backdrop()
    mat = _material("Ball", (0.9, 0.2, 0.15), (1.0, 0.95, 0.8), 6.0, 6.0)
    ball = _object("sphere", "Ball", mat, radius=0.35, location=(-3.4, -2.0, -1.2))
    _animate(ball, frames, location=((-3.4, -2.0, -1.2), (3.4, -2.0, 1.1)))
    _camera(scene, (0.0, -10.0, 0.0), (90, 0, 0), lens=35.0)


def shot_rotation(scene, frames: int) -> None:
    """A textured plate turns half a turn about the view axis (45° between keys) and a box
    tumbles beside it."""
    _backdrop()
    plate_mat = _material("Plate", (0.95, 0.75, 0.3), (0.2, 0.3, 0.6), 3.0, 4.0)
    box_mat = _material("Box", (0.3, 0.75, 0.4), (0.95, 0.9, 0.8), 3.5, 4.0)
    plate = _object("cube", "Plate", plate_mat, size=3.0, location=(-1.3, 0.0, 0.0))
    plate.scale = (1.0, 0.1, 0.7)
    box = _object("cube", "Box", box_mat, size=1.4, location=(2.6, -0.5, 0.0))
    _animate(plate, frames, rotation_euler=((0.0, 0.0, 0.0), (0.0, math.pi, 0.0)))
    _animate(box, frames, rotation_euler=((0.2, 0.0, 0.0), (1.8, 0.9, 0.4)))
    _camera(scene, (0.0, -10.0, 0.0), (90, 0, 0), lens=35.0)


SHOTS: dict[str, Callable[[bpy.types.Scene, int], None]] = {
    "camera_move": shot_camera_move,
    "occlusion": shot_occlusion,
    "large_motion": shot_large_motion,
    "textured_surface": shot_textured_surface,
    "crossing": shot_crossing,
    "camera_orbit": shot_camera_orbit,
    "fast_small": shot_fast_small,
    "rotation": shot_rotation,
}

# Render Layers socket → (folder, file format) written per frame.
OUTPUTS = (
    ("Image", "beauty", "PNG"),
    ("Vector", "vector", "OPEN_EXR"),
    ("Depth", "depth", "OPEN_EXR"),
)


def render_shot(name: str, out: Path, width: int, height: int, frames: int, samples: int) -> Path:
    scene = _reset(width, height, frames, samples)
    SHOTS[name](scene, frames)
    folder = out / name
    view_layer = scene.view_layers[0]
    view_layer.use_pass_vector = True
    view_layer.use_pass_z = True
    tree, _ = compat.compositor_tree(scene)
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = scene
    layers.layer = view_layer.name
    for index, (socket, sub, file_format) in enumerate(OUTPUTS):
        node, node_input = compat.file_output(tree, f"{folder}/{sub}/", file_format)
        tree.links.new(layers.outputs[socket], node_input)
        if index == 0:
            node.format.color_mode = "RGB"  # the beauty: opaque frames, no alpha channel
    for frame in range(1, frames + 1):
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)
    for _, sub, file_format in OUTPUTS:
        ext = "png" if file_format == "PNG" else "exr"
        missing = [
            f for f in range(1, frames + 1) if not (folder / sub / f"{f:04d}.{ext}").is_file()
        ]
        if missing:
            raise RuntimeError(f"Blender did not write {sub} for frames {missing} of {name}")
    info = {"shot": name, "width": width, "height": height, "frames": list(range(1, frames + 1))}
    (folder / "shot.json").write_text(json.dumps(info))
    return folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Render the in-between benchmark's test shots.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shot", action="append", choices=sorted(SHOTS), help="default: all")
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    for name in args.shot or list(SHOTS):
        folder = render_shot(name, args.out, args.width, args.height, args.frames, args.samples)
        print(f"rendered {name}: {args.frames} frames of {args.width}×{args.height} in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
