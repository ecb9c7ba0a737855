"""The render process of an interactive take: run by Blender in the background on a saved copy
of the user's file, it renders the take's frames with the add-on's own render code and says
after each frame which files it wrote, one JSON line each, in the progress file.

    blender -b copy.blend --python-exit-code 1 --python render_child.py -- spec.json
    python render_child.py -- spec.json        (the bpy module: the script opens the copy itself)

spec.json: {"blend", "scene", "folder", "progress", "batches": [RenderBatch.to_json(), ...]}.
A progress line is {"files": [[pass, frame, path], ...]} once every file of that frame is on
disk, and {"end": true} after the last frame. Any failure ends the process with an error code
and its traceback in the log the parent keeps.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

PACKAGE = "framesmith_render_child"  # a private name: the enabled add-on, if any, is not touched
ROOT = Path(__file__).resolve().parents[1]  # the extension's folder


def _render_module():
    """The extension's operators/render.py, imported as part of a private package copy."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.operators.render")


def _spec_path(argv: list[str]) -> Path:
    args = argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]
    if len(args) != 1:
        raise SystemExit("usage: render_child.py -- spec.json")
    return Path(args[0])


def main(argv: list[str]) -> int:
    os.environ["FRAMESMITH_RENDER_CHILD"] = "1"  # the add-on, if enabled here, re-attaches nothing
    spec = json.loads(_spec_path(argv).read_text(encoding="utf-8"))
    import bpy

    if os.path.abspath(bpy.data.filepath or "") != os.path.abspath(spec["blend"]):
        bpy.ops.wm.open_mainfile(filepath=spec["blend"], load_ui=False)
    render = _render_module()
    scene = bpy.data.scenes[spec["scene"]]
    folder = Path(spec["folder"])
    with open(spec["progress"], "a", encoding="utf-8") as progress:

        def said(files: dict) -> None:
            line = [[name, frame, str(path)] for (name, frame), path in sorted(files.items())]
            progress.write(json.dumps({"files": line}) + "\n")
            progress.flush()

        for data in spec["batches"]:
            batch = render.RenderBatch.from_json(data)
            batch.render(scene, batch.frames, folder, on_frame=said)
        progress.write(json.dumps({"end": True}) + "\n")
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    if code:
        sys.exit(code)
