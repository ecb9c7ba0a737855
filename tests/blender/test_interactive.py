"""Interactive runs: invoke() starts the job and returns RUNNING_MODAL; each timer tick of the
modal handler renders at most one input frame or applies the runner's messages; Esc cancels; a
reopened file follows its unfinished jobs again and imports them.

Headless Blender has no event loop: see tests/blender/invoking.py for how invoke() and modal()
are reached (the real methods, on real operator instances).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

import compat
from client.http import BackendClient
from tests.blender.invoking import ESC, MOUSEMOVE, TIMER, Invoked, Invoker

REQUEST_KEY = "framesmith_request"


@pytest.fixture
def invoker(addon: ModuleType) -> Iterator[Invoker]:
    made = Invoker()
    yield made
    made.close()


def framesmith_strips(scene: Any) -> list[Any]:
    editor = scene.sequence_editor
    return [s for s in editor.strips_all if REQUEST_KEY in s] if editor else []


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def run_modal(op: Any, until: Callable[[], bool] | None = None, timeout: float = 60.0) -> set[str]:
    """Send timer ticks to the modal handler until it ends (or `until()`); what it returned."""
    deadline = time.monotonic() + timeout
    while True:
        result = op.modal(bpy.context, TIMER)
        if result != {"PASS_THROUGH"} or (until is not None and until()):
            return result
        assert time.monotonic() < deadline, "the modal handler did not end"
        time.sleep(0.02)  # the worker thread's HTTP round trips, with a deadline


def pump(runtime: ModuleType, done: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        runtime.tick()
        assert time.monotonic() < deadline, "timed out pumping the Framesmith timer"
        time.sleep(0.02)  # the worker thread's HTTP round trips, with a deadline


@pytest.mark.usefixtures("in_process_renders")
def test_invoke_renders_a_key_per_tick_then_imports(
    shot: Any, runtime: ModuleType, invoker: Invoker
) -> None:
    inbetween: Invoked = invoker("inbetween", "FRAMESMITH_OT_inbetween")
    assert inbetween.call() == {"RUNNING_MODAL"}
    (job,) = shot.framesmith.jobs
    keys = Path(job.folder) / "keys"
    assert files(keys) == []  # invoke() renders nothing
    assert runtime.watching(job.take)
    op = inbetween.last
    assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    assert files(keys) == []  # nothing renders before the backend said it can run the take
    assert runtime.runner(job.take).ready.wait(30)

    runtime.tick()  # the app timer leaves the renders to the modal handler that owns the job
    assert files(keys) == []
    assert op.modal(bpy.context, MOUSEMOVE) == {"PASS_THROUGH"}  # other events pass through
    assert files(keys) == []
    for rendered in (["0001.png"], ["0001.png", "0004.png"], ["0001.png", "0004.png", "0007.png"]):
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
        assert files(keys) == rendered  # one frame per tick
        assert "Esc cancels" in runtime.status_line(shot, job.take)
    assert shot.frame_current == 1  # the scene's frame is put back after each render

    assert run_modal(op) == {"FINISHED"}
    assert job.state == "DONE" and not runtime.watching(job.take)
    (strip,) = framesmith_strips(shot)
    assert compat.strip_span(strip) == (1, 9)


@pytest.mark.usefixtures("in_process_renders")
def test_invoke_stylize_renders_every_pass_of_one_frame_per_tick(
    shot: Any, runtime: ModuleType, invoker: Invoker, prefs: Any, tiny_backend: dict[str, Any]
) -> None:
    """The stylize inputs (beauty + ControlNet passes through the compositor) are rendered one
    frame per tick too, with the scene put back in between. (The round trip to a strip is the
    same code as the in-between's above; the backend stylize run is covered in test_stylize.)"""
    prefs.data_dir, prefs.models_dir = str(tiny_backend["data"]), str(tiny_backend["models"])
    props = shot.framesmith
    props.prompt = "ink"
    props.controlnet_depth.enabled = True
    use_nodes_before = shot.use_nodes
    stylize = invoker("stylize", "FRAMESMITH_OT_stylize")
    assert stylize.call() == {"RUNNING_MODAL"}
    (job,) = props.jobs
    passes = Path(job.folder) / "passes"
    assert files(passes) == []
    op = stylize.last
    assert runtime.runner(job.take).ready.wait(30)  # the backend can run it: renders start
    assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    # depth, vector (temporal fusion, on by default) and beauty of frame 1 only
    assert files(passes) == ["0001.exr", "0001.exr", "0001.png"]
    assert shot.use_nodes == use_nodes_before and not shot.view_layers[0].use_pass_z
    assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    assert files(passes) == ["0001.exr", "0001.exr", "0001.png", "0002.exr", "0002.exr",
                             "0002.png"]  # fmt: skip
    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "CANCELED"


@pytest.mark.usefixtures("in_process_renders")
def test_esc_cancels_the_job_and_stops_rendering(
    shot: Any, runtime: ModuleType, invoker: Invoker, backend: dict[str, Any]
) -> None:
    inbetween = invoker("inbetween", "FRAMESMITH_OT_inbetween")
    assert inbetween.call() == {"RUNNING_MODAL"}
    (job,) = shot.framesmith.jobs
    op = inbetween.last
    assert runtime.runner(job.take).ready.wait(30)
    assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    pump(runtime, lambda: bool(job.job_id))  # the job exists on the backend

    assert op.modal(bpy.context, ESC) == {"CANCELLED"}
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "CANCELED"
    assert files(Path(job.folder) / "keys") == ["0001.png"]  # no render after Esc
    assert framesmith_strips(shot) == []
    assert BackendClient(backend["connection"]).job(job.job_id)["state"] == "canceled"


@pytest.mark.usefixtures("in_process_renders")
def test_a_failed_render_fails_the_take_and_cancels_the_backend_job(
    shot: Any, runtime: ModuleType, invoker: Invoker, backend: dict[str, Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    shot.framesmith.output_dir = str(blocker) + "/"
    inbetween = invoker("inbetween", "FRAMESMITH_OT_inbetween")
    assert inbetween.call() == {"RUNNING_MODAL"}
    (job,) = shot.framesmith.jobs
    pump(runtime, lambda: bool(job.job_id))
    assert run_modal(inbetween.last) == {"CANCELLED"}
    assert job.state == "FAILED" and job.message.startswith("rendering frame 1 failed")
    assert BackendClient(backend["connection"]).job(job.job_id)["state"] == "canceled"


def test_reopened_file_follows_its_unfinished_job_and_imports_it(
    shot: Any, runtime: ModuleType, tmp_path: Path, backend: dict[str, Any]
) -> None:
    """Save while the job runs, 'close Blender' (open the file again: nothing is watched), and the
    reopened file finds the job on the backend and puts its frames on the timeline."""
    shot.framesmith.inbetween_method = "CROSSFADE"
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    pump(
        runtime, lambda: bool(job.job_id) and not runtime.rendering(job.take)
    )  # inputs handed over
    take, job_id = job.take, job.job_id
    # The job finishes on the backend while Blender is not looking (the timer is not pumped).
    client = BackendClient(backend["connection"])
    deadline = time.monotonic() + 30
    while client.job(job_id)["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polling the backend's state, with a deadline
    assert job.state not in ("DONE", "FAILED", "CANCELED")
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))

    bpy.ops.wm.open_mainfile(filepath=str(path))  # load_pre drops the runner, load_post re-attaches
    scene = bpy.context.scene
    (job,) = scene.framesmith.jobs
    assert (job.take, job.job_id) == (take, job_id)
    assert runtime.watching(take)  # followed again, without waiting in the load handler
    pump(runtime, lambda: not runtime.watching(take))
    assert job.state == "DONE"
    (strip,) = framesmith_strips(scene)
    assert compat.strip_span(strip) == (1, 9)
    assert strip["framesmith_job"] == job_id


def test_reopened_file_without_a_backend_keeps_its_jobs_listed(
    shot: Any, runtime: ModuleType, prefs: Any, tmp_path: Path
) -> None:
    props = shot.framesmith
    unsent = runtime.add_job(shot, "unsent", "STYLIZE", tmp_path / "a", 1, 8)
    sent = runtime.add_job(shot, "sent", "INBETWEEN", tmp_path / "b", 1, 8)
    sent.job_id, sent.state = "0123456789abcdef", "RUNNING"
    assert unsent.state == "PREPARING"
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))
    prefs.data_dir = str(tmp_path / "no-backend-runs-here")

    bpy.ops.wm.open_mainfile(filepath=str(path))
    props = bpy.context.scene.framesmith
    pump(runtime, lambda: not runtime.watching("sent"), timeout=20)
    unsent, sent = props.jobs
    assert unsent.state == "FAILED" and "run it again" in unsent.message
    assert sent.state == "DETACHED" and "no local backend is running" in sent.message
    assert not (tmp_path / "no-backend-runs-here" / "backend.json").exists()  # none started


def test_grease_pencil_drawn_frames_are_the_keys(
    shot: Any, runtime: ModuleType, invoker: Invoker
) -> None:
    """Keys from the active Grease Pencil object: its drawn frames and its own keyframes."""
    gp = compat.grease_pencils().new("Drawing")
    layer = gp.layers.new("Ink")
    for frame in (1, 5, 9):  # 9 is past the shot's end (8)
        layer.frames.new(frame)
    drawing = bpy.data.objects.new("Drawing", gp)
    shot.collection.objects.link(drawing)
    drawing.keyframe_insert("location", frame=3)
    bpy.context.view_layer.objects.active = drawing

    inbetween = invoker("inbetween", "FRAMESMITH_OT_inbetween")
    assert inbetween.call() == {"RUNNING_MODAL"}
    (job,) = shot.framesmith.jobs
    assert json.loads(job.request)["keyframes"] == [1, 3, 5]
    assert inbetween.last.modal(bpy.context, ESC) == {"CANCELLED"}  # before anything rendered
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "CANCELED" and files(Path(job.folder) / "keys") == []
