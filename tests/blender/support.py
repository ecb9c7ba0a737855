"""Helpers shared by the headless Blender tests (importable without bpy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"
REPO_MODULE = "framesmith_tests"  # the local extension repository's module name
ADDON = f"bl_ext.{REPO_MODULE}.framesmith"


def bpy_scripts_dir() -> Path:
    """The `4.x/scripts` folder inside the installed bpy module (found without importing it)."""
    spec = find_spec("bpy")
    assert spec is not None and spec.origin is not None
    found = sorted(Path(spec.origin).parent.glob("[0-9]*.[0-9]*/scripts"))
    assert found, f"no scripts folder next to {spec.origin}"
    return found[-1]


def scene_snapshot(scene) -> dict:
    """What a pass render must leave exactly as it was: compositor (on every version's API),
    node groups, output settings, passes, Freestyle, engine and the current frame."""
    import bpy

    render, image = scene.render, scene.render.image_settings
    layer = scene.view_layers[0]
    snap: dict = {
        "frame": scene.frame_current,
        "node_groups": sorted(g.name for g in bpy.data.node_groups),
        "linestyles": sorted(s.name for s in bpy.data.linestyles),
        "render": (render.engine, render.filepath, render.use_file_extension,
                   render.use_sequencer, render.use_motion_blur, render.use_freestyle,
                   render.resolution_x, render.resolution_y, render.resolution_percentage,
                   render.film_transparent),
        "image": (image.file_format, image.color_mode, image.color_depth),
        "layer": (layer.use_pass_z, layer.use_pass_normal, layer.use_pass_vector,
                  layer.use_freestyle, layer.freestyle_settings.as_render_pass,
                  len(layer.freestyle_settings.linesets)),
    }  # fmt: skip
    if getattr(scene, "cycles", None) is not None:
        snap["cycles"] = (scene.cycles.samples, scene.cycles.use_denoising)
    if hasattr(scene, "compositor_effects"):  # 5.3+
        effects = scene.compositor_effects
        snap["compositor"] = [
            (e.name, e.enable_for_render, e.node_group.name if e.node_group else None,
             len(e.node_group.nodes) if e.node_group else 0)
            for e in effects
        ] + [effects.active.name if effects.active else None]  # fmt: skip
    elif hasattr(scene, "compositing_node_group"):  # 5.0–5.2
        group = scene.compositing_node_group
        snap["compositor"] = (group.name, len(group.nodes)) if group else None
    else:
        tree = scene.node_tree
        snap["compositor"] = (scene.use_nodes, len(tree.nodes) if tree else 0)
    return snap


def tick_until(
    tick: Callable[[], Any], done: Callable[[], bool], seen: list[str], timeout: float = 120.0
) -> Any:
    """Tick (the timer function or the modal handler) until `done()`; the last tick's result."""
    deadline = time.monotonic() + timeout
    while True:
        result = tick()
        if done():
            return result
        assert time.monotonic() < deadline, f"the install did not get there: {seen}"
        time.sleep(0.05)  # the install's child processes, with a deadline
