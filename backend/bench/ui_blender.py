"""Run by backend/bench/ui.py under a Python with the bpy module: an interactive in-between take
of a shot whose keys need about `--frame-seconds` each to render, driven as Blender's UI would
(the operator, then the add-on's timer every 0.1 s), once with the renders in a background
process and once in-process, printing the longest main-thread stall of each."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="framesmith-bench-ui-"))

import bpy

ROOT = Path(__file__).resolve().parents[2]
REPO_MODULE = "framesmith_bench"
ADDON = f"bl_ext.{REPO_MODULE}.framesmith"
TIMER_SECONDS = 0.1  # the add-on's modal tick


def enable_addon(work: Path, backend_python: str) -> None:
    import addon_utils

    repo = work / "extensions"
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "framesmith").symlink_to(ROOT, target_is_directory=True)
    bpy.context.preferences.extensions.repos.new(
        name="bench", module=REPO_MODULE, custom_directory=str(repo), source="USER"
    )
    if addon_utils.enable(ADDON, default_set=True) is None:
        raise SystemExit("the Framesmith extension did not register")
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.python_path, prefs.device = backend_python, "cpu"
    prefs.data_dir, prefs.models_dir = str(work / "data"), str(work / "models")


def build_shot(keys: int) -> bpy.types.Scene:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False  # render time proportional to samples
    scene.render.resolution_x, scene.render.resolution_y = 160, 120
    scene.render.resolution_percentage = 100
    bpy.ops.mesh.primitive_monkey_add()
    bpy.ops.object.modifier_add(type="SUBSURF")
    bpy.context.object.modifiers[0].levels = 2
    bpy.ops.object.light_add(type="POINT", location=(2, -3, 3))
    bpy.ops.object.camera_add(location=(0, -4, 0), rotation=(1.5708, 0, 0))
    scene.camera = bpy.context.object
    scene.frame_start, scene.frame_end = 1, 1 + 4 * (keys - 1)
    for frame in range(1, scene.frame_end + 1, 4):
        scene.timeline_markers.new(f"key {frame}", frame=frame)
    scene.framesmith.inbetween_source = "MARKERS"
    scene.framesmith.inbetween_method = "CROSSFADE"
    return scene


def calibrate(scene: bpy.types.Scene, seconds: float, work: Path) -> float:
    """Set Cycles samples so one frame takes about `seconds`; the measured frame time."""
    scene.render.filepath = str(work / "calibrate.png")
    scene.cycles.samples = 16
    took = 0.0
    for _ in range(3):  # the first render also builds the scene's BVH: rescale twice
        started = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        took = time.perf_counter() - started
        if abs(took - seconds) < 0.1 * seconds:
            break
        scene.cycles.samples = max(1, round(scene.cycles.samples * seconds / took))
    return took


def take(scene: bpy.types.Scene, background: bool, work: Path) -> dict[str, float]:
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.background_render = background
    runtime = sys.modules[f"{ADDON}.operators.runtime"]
    scene.framesmith.output_dir = str(work / ("process" if background else "inline")) + "/"
    started = time.perf_counter()
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    stalls = [time.perf_counter() - started]
    entry = scene.framesmith.jobs[-1]
    while runtime.watching(entry.take):
        time.sleep(TIMER_SECONDS)  # Blender's event loop between two timer events
        tick = time.perf_counter()
        runtime.tick()
        stalls.append(time.perf_counter() - tick)
    if entry.state != "DONE":
        raise SystemExit(f"the take ended {entry.state}: {entry.message}")
    return {"max": max(stalls), "p50": statistics.median(stalls), "ticks": len(stalls),
            "wall": time.perf_counter() - started}  # fmt: skip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backend-python", required=True)
    p.add_argument("--frame-seconds", type=float, default=2.0)
    p.add_argument("--keys", type=int, default=3)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="framesmith-bench-ui-"))
    enable_addon(work, args.backend_python)
    scene = build_shot(args.keys)
    frame = calibrate(scene, args.frame_seconds, work)
    print(f"Blender {bpy.app.version_string}; shot: {args.keys} keys at 160x120, Cycles "
          f"{scene.cycles.samples} samples = {frame:.2f} s a frame (asked {args.frame_seconds})")  # fmt: skip
    rows = {"background process": take(scene, True, work), "in-process": take(scene, False, work)}
    print(f"{'renders':<20}{'longest stall':>15}{'median tick':>13}{'ticks':>7}{'take':>9}")
    for name, r in rows.items():
        print(f"{name:<20}{r['max'] * 1000:>12.1f} ms{r['p50'] * 1000:>10.2f} ms"
              f"{r['ticks']:>7}{r['wall']:>8.1f}s")  # fmt: skip
    ratio = rows["in-process"]["max"] / rows["background process"]["max"]
    print(f"longest main-thread stall: {rows['background process']['max'] * 1000:.1f} ms with a "
          f"background render process (aim < 50 ms), {ratio:.0f}x shorter than in-process")  # fmt: skip
    bpy.ops.framesmith.backend_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
