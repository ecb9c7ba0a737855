"""Drive the Framesmith add-on headless, as a studio script would (run with .venv-blender).

Opens the rendered demo shot, enables the extension from this source folder, points it at the
backend environment and the tiny models, then calls the add-on's own operators:
`framesmith.inbetween` (keys at markers every few frames) and `framesmith.stylize` (depth +
line-art ControlNets). In background mode each operator runs its job to the end and returns
once the strips are on the timeline. Saves the .blend with the strips.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="framesmith-demo-"))

import bpy

ROOT = Path(__file__).resolve().parents[1]
REPO_MODULE = "framesmith_demo"
ADDON = f"bl_ext.{REPO_MODULE}.framesmith"


def enable_addon(workdir: Path) -> None:
    import addon_utils  # on the path only once bpy is imported

    repo_dir = workdir / "extensions"
    repo_dir.mkdir(parents=True, exist_ok=True)
    link = repo_dir / "framesmith"
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    bpy.context.preferences.extensions.repos.new(
        name="Framesmith demo", module=REPO_MODULE, custom_directory=str(repo_dir), source="USER"
    )
    errors: list[BaseException] = []
    if addon_utils.enable(ADDON, default_set=True, handle_error=errors.append) is None or errors:
        raise SystemExit(f"the Framesmith extension did not register: {errors!r}")


def configure(out: Path, models: Path) -> None:
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.backend_mode = "LOCAL"
    prefs.python_path = str(ROOT / ".venv" / "bin" / "python")
    prefs.device = "cpu"
    prefs.models_dir = str(models)
    prefs.data_dir = str(out / "backend-data")


def run_operator(name: str) -> dict:
    op = getattr(bpy.ops.framesmith, name)
    result = op()
    if result != {"FINISHED"}:
        raise SystemExit(f"framesmith.{name} returned {result}")
    job = bpy.context.scene.framesmith.jobs[-1]
    if job.state != "DONE":
        raise SystemExit(f"framesmith.{name}: job {job.job_id} ended {job.state}: {job.message}")
    return {"strip": job.strip, "channel": job.channel, "folder": bpy.path.abspath(job.folder),
            "job_id": job.job_id, "request": json.loads(job.request)}  # fmt: skip


def saved_strips(path: Path) -> list[str]:
    """The Framesmith strips in the saved file, read back from disk."""
    bpy.ops.wm.open_mainfile(filepath=str(path))
    editor = bpy.context.scene.sequence_editor
    strips = editor.strips_all if editor is not None else ()
    return sorted(s.name for s in strips if "framesmith_request" in s)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shot", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--key-every", type=int, default=3)
    args = p.parse_args(argv)

    enable_addon(args.out)
    bpy.ops.wm.open_mainfile(filepath=str(args.shot))
    configure(args.out, args.models)
    scene = bpy.context.scene
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out / "framesmith_demo.blend"))
    settings = scene.framesmith
    settings.output_dir = "//framesmith/"

    keys = sorted({*range(scene.frame_start, scene.frame_end + 1, args.key_every),
                   scene.frame_end})  # fmt: skip
    for k in keys:
        scene.timeline_markers.new(f"key {k}", frame=k)
    settings.inbetween_source = "MARKERS"
    settings.inbetween_method = "FLOW"
    results = {"inbetween": run_operator("inbetween"), "keys": keys}
    settings.inbetween_method = "CROSSFADE"  # a second take, for comparison: lands above
    results["crossfade"] = run_operator("inbetween")

    settings.prompt = "a painted toy cube and ball on a checkered floor, gouache"
    settings.seed = 7
    settings.steps = 4
    settings.stylize_mode = "VIDEO2VIDEO"
    # Tiny random models paint noise at any size: stylize at the shot's own 144 px instead of
    # SD1.5's 512 px working size, which a real checkpoint gets by default.
    settings.working_size = scene.render.resolution_y * scene.render.resolution_percentage // 100
    settings.controlnet_depth.enabled = True
    settings.controlnet_lineart.enabled = True
    results["stylize"] = run_operator("stylize")

    saved = args.out / "framesmith_demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(saved))
    results["strips_in_saved_blend"] = saved_strips(saved)
    results["blender"] = bpy.app.version_string
    if len(results["strips_in_saved_blend"]) != 3:
        raise SystemExit(f"{saved} holds {results['strips_in_saved_blend']}, not three strips")
    bpy.ops.framesmith.backend_stop()
    (args.out / "addon_results.json").write_text(json.dumps(results, indent=2))
    import addon_utils

    addon_utils.disable(ADDON, default_set=True)
    print(json.dumps({k: v for k, v in results.items() if k != "keys"}, indent=2)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
