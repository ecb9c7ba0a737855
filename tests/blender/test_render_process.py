"""Interactive takes render in a background render process (here the bpy module's Python running
operators/render_child.py stands in for `blender -b`): nothing renders in this Blender, the
user's scene is never touched, Esc ends the process, and a crashed process is reported with the
last lines of its log."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

import compat
from tests.blender.support import scene_snapshot

REQUEST_KEY = "framesmith_request"


def pump(runtime: ModuleType, done: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        runtime.tick()
        assert time.monotonic() < deadline, "timed out pumping the Framesmith timer"
        time.sleep(0.02)  # the render process and the runner's HTTP, with a deadline


@pytest.fixture
def renders_here() -> Iterator[list[int]]:
    """Frames rendered in this Blender (render_pre fires for each)."""
    seen: list[int] = []

    def heard(scene: Any, *_: Any) -> None:
        seen.append(scene.frame_current)

    bpy.app.handlers.render_pre.append(heard)
    yield seen
    bpy.app.handlers.render_pre.remove(heard)


def many_keys(scene: Any, last: int, samples: int) -> None:
    """Keys at markers on every frame up to `last`, each a slower Cycles render."""
    scene.frame_end = last
    scene.cycles.samples = samples
    for frame in range(1, last + 1):
        scene.timeline_markers.new(f"k{frame}", frame=frame)
    scene.framesmith.inbetween_source = "MARKERS"


def process_of(runtime: ModuleType, take: str) -> Any:
    renders = runtime._watched[take].renders
    return renders._process if renders is not None else None


def test_take_renders_in_a_background_process_and_leaves_the_scene_alone(
    shot: Any, runtime: ModuleType, renders_here: list[int]
) -> None:
    shot.frame_set(5)
    before = scene_snapshot(shot)
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    pump(runtime, lambda: not runtime.watching(job.take))

    assert job.state == "DONE", job.message
    assert renders_here == []  # not one frame rendered in this Blender
    assert scene_snapshot(shot) == before
    work = Path(job.folder) / "render-process"
    assert (work / "scene.blend").is_file()
    said = [json.loads(line) for line in (work / "progress.jsonl").read_text().splitlines()]
    assert [line["files"][0][:2] for line in said[:-1]] == [["keyframe", f] for f in (1, 4, 7)]
    assert said[-1] == {"end": True}
    (strip,) = [s for s in compat.all_strips(shot.sequence_editor) if REQUEST_KEY in s]
    assert compat.strip_span(strip) == (1, 9)


def test_esc_ends_the_render_process(shot: Any, runtime: ModuleType) -> None:
    many_keys(shot, 40, samples=64)
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    keys = Path(job.folder) / "keys"
    pump(runtime, lambda: keys.is_dir() and any(keys.iterdir()))  # it renders
    process = process_of(runtime, job.take)

    assert runtime.cancel(job.take)
    assert process.wait(timeout=30) is not None  # ended by the cancel, not by finishing
    pump(runtime, lambda: not runtime.watching(job.take))
    assert job.state == "CANCELED"
    assert 0 < len(list(keys.iterdir())) < 40


def test_a_crashed_render_process_fails_the_take_with_its_log(
    shot: Any, runtime: ModuleType
) -> None:
    many_keys(shot, 40, samples=64)
    assert bpy.ops.framesmith.inbetween(wait="RETURN") == {"FINISHED"}
    (job,) = shot.framesmith.jobs
    pump(runtime, lambda: process_of(runtime, job.take) is not None)
    process = process_of(runtime, job.take)
    os.kill(process.pid, signal.SIGKILL)  # a crash: the process is gone without a word
    pump(runtime, lambda: not runtime.watching(job.take))

    assert job.state == "FAILED"
    assert "the render process ended (exit code -9)" in job.message
    assert "render.log" in job.message
