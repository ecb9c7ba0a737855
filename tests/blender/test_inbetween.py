"""framesmith.inbetween in headless Blender against a real backend: keys rendered with Cycles at
the object's keyframes → a strip that lines up frame for frame with the shot."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

import compat
from client.http import BackendClient
from client.request import InbetweenRequest, from_json

REQUEST_KEY = "framesmith_request"


def framesmith_strips(scene: Any) -> list[Any]:
    editor = scene.sequence_editor
    return [s for s in editor.strips_all if REQUEST_KEY in s] if editor else []


def pixels(path: Path) -> list[float]:
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        return list(image.pixels[:])
    finally:
        bpy.data.images.remove(image)


def pump(runtime: ModuleType, done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run the add-on's timer function until `done()` (the bpy module never fires timers)."""
    deadline = time.monotonic() + timeout
    while True:
        runtime.tick()
        if done():
            return
        assert time.monotonic() < deadline, "timed out pumping the Framesmith timer"
        time.sleep(0.05)  # polling the worker's queue, with a deadline


def test_registered_as_an_extension(addon: ModuleType) -> None:
    assert addon.__name__ == "bl_ext.framesmith_tests.framesmith"
    for op in ("inbetween", "cancel", "reimport", "backend_start", "backend_stop"):
        assert hasattr(bpy.ops.framesmith, op)
    assert hasattr(bpy.types.Scene, "framesmith")
    assert bpy.context.preferences.addons[addon.__name__].preferences is not None


def test_inbetween_from_object_keys_lands_frame_for_frame(shot: Any) -> None:
    editor = shot.sequence_editor_create()
    existing = compat.new_effect_strip(editor, "Below", "COLOR", 1, 1, 8)

    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}

    (strip,) = framesmith_strips(shot)
    assert strip.type == "IMAGE" and strip.channel == existing.channel + 1
    assert compat.strip_span(strip) == (1, 9)  # frames 1..8
    folder = Path(bpy.path.abspath(strip.directory))
    names = [e.filename for e in strip.elements]
    assert names == [f"{f:04d}.png" for f in range(1, 9)]
    assert all((folder / n).is_file() for n in names)

    request = from_json(strip[REQUEST_KEY])
    assert isinstance(request, InbetweenRequest)
    assert request.keyframes == (1, 4, 7) and request.frames == tuple(range(1, 9))
    assert (request.width, request.height) == (64, 48)

    # the strip shows, at each key frame, exactly what Blender rendered at that frame
    for key in (1, 4, 7):
        assert pixels(folder / f"{key:04d}.png") == pixels(folder / "keys" / f"{key:04d}.png")
    assert pixels(folder / "0002.png") != pixels(folder / "0001.png")
    assert pixels(folder / "0008.png") == pixels(folder / "0007.png")  # holds the last key

    (job,) = shot.framesmith.jobs
    assert job.state == "DONE" and job.job_id and job.strip == strip.name
    assert shot.frame_current == 1  # the scene is left where it was

    # a second take goes above, never over the first
    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    channels = sorted(s.channel for s in framesmith_strips(shot))
    assert channels == [strip.channel, strip.channel + 1]


def test_jobs_and_requests_survive_save_and_reopen(shot: Any, tmp_path: Path) -> None:
    shot.framesmith.inbetween_method = "CROSSFADE"
    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    bpy.ops.wm.open_mainfile(filepath=str(path))

    scene = bpy.context.scene
    (job,) = scene.framesmith.jobs
    assert job.state == "DONE" and job.job_id
    (strip,) = framesmith_strips(scene)
    assert json.loads(strip[REQUEST_KEY])["method"] == "crossfade"
    assert strip["framesmith_job"] == job.job_id

    # re-import by the backend's job id: the same frames on a new strip above
    assert bpy.ops.framesmith.reimport(job=job.job_id) == {"FINISHED"}
    again = max(framesmith_strips(scene), key=lambda s: s.channel)
    assert again.channel == strip.channel + 1
    assert compat.strip_span(again) == (1, 9)


def test_backend_down_is_a_clear_error(shot: Any, prefs: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefs.backend_mode = "REMOTE"
    prefs.url = f"http://127.0.0.1:{port}"
    prefs.token = "t" * 20
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="no Framesmith backend answered"):
        bpy.ops.framesmith.inbetween()
    assert time.monotonic() - started < 15
    assert framesmith_strips(shot) == [] and len(shot.framesmith.jobs) == 0


def test_missing_backend_python_says_where_to_set_it(shot: Any, prefs: Any, tmp_path) -> None:
    prefs.data_dir = str(tmp_path / "no-backend-here")
    prefs.python_path = str(tmp_path / "nope" / "python")
    with pytest.raises(RuntimeError, match="preferences"):
        bpy.ops.framesmith.inbetween()


def test_too_few_keys_names_what_was_found(shot: Any) -> None:
    shot.framesmith.use_scene_range = False
    shot.framesmith.frame_start, shot.framesmith.frame_end = 2, 5
    with pytest.raises(RuntimeError, match="keys at 1, 4, 7, but 1 of them fall"):
        bpy.ops.framesmith.inbetween()


def test_cancel_mid_job(shot: Any, runtime: ModuleType, backend: dict[str, Any]) -> None:
    # A long shot with two keys: the backend needs seconds, so the cancel lands mid-job.
    shot.frame_end = 2000
    shot.framesmith.inbetween_method = "CROSSFADE"
    cube = bpy.data.objects["Cube"]
    cube.animation_data_clear()
    for frame, x in ((1, -1.5), (2000, 1.5)):
        cube.location.x = x
        cube.keyframe_insert("location", frame=frame)

    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    assert runtime.watching(job.take)
    # The bpy module never fires timers: call the timer function as Blender would.
    pump(runtime, lambda: job.frames_fetched >= 1)
    assert job.state == "RUNNING"
    assert bpy.ops.framesmith.cancel(job=job.take) == {"FINISHED"}
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "CANCELED"
    assert framesmith_strips(shot) == []

    client = BackendClient(backend["connection"])
    deadline = time.monotonic() + 30
    while (state := client.job(job.job_id))["state"] != "canceled":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)  # polling the backend's state, with a deadline
    assert len(state["finished_frames"]) < 2000


def test_interactive_run_imports_from_the_timer(shot: Any, runtime: ModuleType) -> None:
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    assert framesmith_strips(shot) == []  # nothing waits in execute(): the timer imports it
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "DONE" and job.progress == 1.0
    (strip,) = framesmith_strips(shot)
    assert compat.strip_span(strip) == (1, 9)
    assert runtime.tick() is None  # the timer stops once nothing runs


def test_keys_at_markers(shot: Any) -> None:
    props = shot.framesmith
    props.inbetween_source = "MARKERS"
    for frame in (2, 6):
        shot.timeline_markers.new(f"F_{frame:02d}", frame=frame)
    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    (strip,) = framesmith_strips(shot)
    assert from_json(strip[REQUEST_KEY]).keyframes == (2, 6)
    folder = Path(bpy.path.abspath(strip.directory))
    assert sorted(p.name for p in (folder / "keys").iterdir()) == ["0002.png", "0006.png"]


def test_keys_from_selected_image_strips(shot: Any, tmp_path: Path) -> None:
    """Drawn keys as one-image strips: each is a key at its first frame, at its own size."""
    render = shot.render
    render.resolution_x, render.resolution_y = 40, 30
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    for frame in (2, 7):
        shot.frame_set(frame)
        render.filepath = str(drawings / f"pose_{frame}.png")
        bpy.ops.render.render(write_still=True)
    render.resolution_x, render.resolution_y = 64, 48
    editor = shot.sequence_editor_create()
    for frame in (2, 7):
        strip = editor.strips.new_image(
            f"pose {frame}", str(drawings / f"pose_{frame}.png"), channel=1, frame_start=frame
        )
        strip.select = True
    shot.framesmith.inbetween_source = "SELECTED_STRIPS"

    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}
    (strip,) = framesmith_strips(shot)
    request = from_json(strip[REQUEST_KEY])
    assert request.keyframes == (2, 7) and (request.width, request.height) == (40, 30)
    assert strip.channel == 2 and compat.strip_span(strip) == (1, 9)
    folder = Path(bpy.path.abspath(strip.directory))
    assert pixels(folder / "0007.png") == pixels(drawings / "pose_7.png")
