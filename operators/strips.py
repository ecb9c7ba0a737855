"""Result frames → an image-sequence strip, frame for frame with the shot, on a free channel."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import bpy

from .. import compat
from ..client.frames import FrameError, free_channel, missing_files, strip_layout

REQUEST_KEY = "framesmith_request"
JOB_KEY = "framesmith_job"
TAKE_KEY = "framesmith_take"


def import_take(scene: bpy.types.Scene, entry: Any, directory: Path, frames: tuple[int, ...]):
    """Put the take's frames on the sequencer; the strip carries the job's request as JSON."""
    layout = strip_layout(directory, frames)
    missing = missing_files(directory, frames)
    if missing:
        raise FrameError(f"{len(missing)} frame files are missing in {directory}")
    editor = compat.sequence_editor(scene)
    occupied = [(s.channel, *compat.strip_span(s)) for s in compat.all_strips(editor)]
    channel = free_channel(occupied, layout.start, layout.end)
    name = f"{entry.kind.title()} {entry.take[:8]}"
    strip = compat.new_image_strip(
        editor, name, str(directory / layout.files[0]), channel, layout.start
    )
    for file_name in layout.files[1:]:
        strip.elements.append(file_name)
    if bpy.data.filepath:
        # Relative to the .blend, so the project folder can move as a whole.
        with contextlib.suppress(ValueError):  # another drive (Windows): keep it absolute
            strip.directory = bpy.path.relpath(str(directory)) + "/"
    strip[REQUEST_KEY] = entry.request or json.dumps({})
    strip[JOB_KEY] = entry.job_id
    strip[TAKE_KEY] = entry.take
    return strip


def strips_of_take(scene: bpy.types.Scene, take: str) -> list[Any]:
    editor = compat.sequence_editor(scene, create=False)
    return [s for s in compat.all_strips(editor) if s.get(TAKE_KEY) == take]
