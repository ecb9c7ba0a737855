"""Render the demo shot headless with the bpy module (run with .venv-blender's python).

A textured cube slides and turns across a checkered floor while a sphere crosses in front of
it: motion, occlusion and texture, in 24 frames at a small size so Cycles on a CPU is quick.
Writes every frame as PNG, and the .blend for the strips.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import bpy


def build_scene(width: int, height: int, frames: int) -> bpy.types.Scene:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.resolution_x = width
    scene.render.resolution_y = height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"

    world = bpy.data.worlds.new("World")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.6, 0.7, 0.9, 1)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
    scene.world = world

    floor = _add(bpy.ops.mesh.primitive_plane_add, size=20)
    floor.data.materials.append(_checker("Floor", (0.9, 0.85, 0.7), (0.3, 0.35, 0.4), 12))

    cube = _add(bpy.ops.mesh.primitive_cube_add, size=1.4, location=(-3, 0, 0.7))
    cube.data.materials.append(_checker("Cube", (0.9, 0.3, 0.2), (1.0, 0.9, 0.2), 4))
    _key(cube, 1, location=(-2, 0, 0.7), rotation=(0, 0, 0))
    _key(cube, frames, location=(2, 0.4, 0.7), rotation=(0, 0, math.radians(60)))

    ball = _add(bpy.ops.mesh.primitive_uv_sphere_add, radius=0.6, location=(1.5, -2, 0.6))
    ball.data.materials.append(_checker("Ball", (0.2, 0.5, 0.9), (0.9, 0.9, 0.95), 6))
    _key(ball, 1, location=(1.8, -2.0, 0.6))
    _key(ball, frames, location=(-1.8, -1.6, 0.6))

    cam_data = bpy.data.cameras.new("Camera")
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (0, -9, 4.5)
    cam.rotation_euler = (math.radians(65), 0, 0)
    scene.camera = cam

    sun_data = bpy.data.lights.new("Sun", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("Sun", sun_data)
    sun.rotation_euler = (math.radians(40), math.radians(20), math.radians(30))
    scene.collection.objects.link(sun)
    return scene


def _add(op, **kw) -> bpy.types.Object:
    op(**kw)
    return bpy.context.active_object


def _key(obj: bpy.types.Object, frame: int, location, rotation=None) -> None:
    obj.location = location
    obj.keyframe_insert("location", frame=frame)
    if rotation is not None:
        obj.rotation_euler = rotation
        obj.keyframe_insert("rotation_euler", frame=frame)


def _checker(name: str, a, b, scale: float) -> bpy.types.Material:
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Color1"].default_value = (*a, 1)
    checker.inputs["Color2"].default_value = (*b, 1)
    checker.inputs["Scale"].default_value = scale
    links.new(checker.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
    return mat


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args(argv)
    scene = build_scene(args.width, args.height, args.frames)
    frames_dir = args.out / "render"
    frames_dir.mkdir(parents=True, exist_ok=True)
    for frame in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(frame)
        scene.render.filepath = str(frames_dir / f"{frame:04d}.png")
        bpy.ops.render.render(write_still=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out / "shot.blend"))
    print(f"rendered {args.frames} frames to {frames_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
