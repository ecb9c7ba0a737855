"""The add-on's main-thread stalls during an interactive take: the longest time Blender's UI
would wait on one timer tick (or on the operator itself) while a shot of about 2 s a frame
renders, with the frames rendered in a background render process and, for comparison, one per
tick in Blender itself.

Runs backend/bench/ui_blender.py under a Python with the bpy module (the backend never imports
bpy); that script drives the real add-on against a real local backend.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BLENDER_PYTHON = ROOT / ".venv-blender" / "bin" / "python"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blender-python",
        type=Path,
        default=DEFAULT_BLENDER_PYTHON,
        help="a Python with the bpy module (default: %(default)s)",
    )
    parser.add_argument("--frame-seconds", type=float, default=2.0, help="render time a frame")
    parser.add_argument("--keys", type=int, default=3, help="keys rendered per take")
    parser.add_argument("--quick", action="store_true", help="0.5 s frames, 2 keys")


def run(args: argparse.Namespace) -> int:
    if not args.blender_python.is_file():
        print(f"no bpy Python at {args.blender_python}: run `make setup` or pass --blender-python")
        return 2
    seconds, keys = (0.5, 2) if args.quick else (args.frame_seconds, args.keys)
    cmd = [str(args.blender_python), str(ROOT / "backend" / "bench" / "ui_blender.py"),
           "--backend-python", sys.executable, "--frame-seconds", str(seconds),
           "--keys", str(keys)]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT).returncode
