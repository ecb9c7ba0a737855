"""Put the demo's image sequences on the shot's timeline as strips (run with .venv-blender)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import bpy


def add_sequence(scene, name: str, folder: Path, channel: int, start: int, request: dict | None):
    files = sorted(p.name for p in folder.glob("*.png"))
    se = scene.sequence_editor or scene.sequence_editor_create()
    strips = se.strips if hasattr(se, "strips") else se.sequences
    strip = strips.new_image(name, str(folder / files[0]), channel, start)
    for f in files[1:]:
        strip.elements.append(f)
    if request is not None:
        strip["framesmith_request"] = json.dumps(request, sort_keys=True)
    return strip


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shot", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strip", nargs=4, action="append", metavar=("NAME", "DIR", "CHANNEL", "REQ"))
    args = p.parse_args(argv)
    bpy.ops.wm.open_mainfile(filepath=str(args.shot))
    scene = bpy.context.scene
    for name, folder, channel, req in args.strip:
        request = json.loads(Path(req).read_text()) if req != "-" else None
        add_sequence(scene, name, Path(folder).resolve(), int(channel), scene.frame_start, request)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
