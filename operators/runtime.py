"""What runs right now (not saved): watched job runners, backend calls, and the timer that applies
worker-thread messages to the scene on Blender's main thread.

Interactive runs start a runner and return; `advance()` renders the job's next input frame (if it
still needs renders) and applies what the runner said. An operator's modal handler calls it for
its own job; `tick()` (a bpy.app.timers function) for every other watched job. Background runs
(`blender -b`, scripts) call `run_blocking()`, which drains the same messages with the same
`apply()` until the job ends. What the panels and preferences read (which takes are watched,
the backend's status as the calls leave it) is in the session state, state.py.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bpy

from .. import properties, state
from ..client.frames import FrameError
from ..client.http import BackendError, BackendUnreachable
from ..client.jobs import FINAL, Canceled, Created, Done, Failed, FrameReady, JobRunner, Message
from ..client.jobs import Progress as JobProgress
from ..client.launcher import LaunchError
from . import strips
from .render import FrameRenders

TICK = 0.2  # seconds between two drains of the queues while something runs


@dataclass
class Watched:
    runner: JobRunner
    scene_name: str
    renders: FrameRenders | None = None  # input frames still to render, one per advance()
    modal: bool = False  # an operator's modal handler advances it (the timer only drains it)


@dataclass
class _Call:
    title: str
    results: queue.Queue[tuple[bool, list[str]]]


_watched: dict[str, Watched] = {}  # state.watching() says the same to the UI
_calls: list[_Call] = []


def runner(take: str) -> JobRunner | None:
    watched = _watched.get(take)
    return watched.runner if watched else None


def watching(take: str) -> bool:
    return take in _watched


def rendering(take: str) -> bool:
    """Whether a watched job still has input frames to render."""
    watched = _watched.get(take)
    return watched is not None and watched.renders is not None


# --- jobs ------------------------------------------------------------------------------------


def watch(
    job_runner: JobRunner, scene: bpy.types.Scene, renders: FrameRenders | None = None
) -> None:
    """Start the runner on its thread; `advance()` renders what it still needs (into its input
    feed) and applies what it says to `scene`."""
    _follow(job_runner.take, Watched(job_runner, scene.name, renders))
    job_runner.start()
    _ensure_timer()


def own(take: str, modal: bool) -> None:
    """A modal handler takes over (or gives back) advancing the job."""
    watched = _watched.get(take)
    if watched is not None:
        watched.modal = modal


def cancel(take: str) -> bool:
    """Cancel a watched job: no more renders; the runner cancels it on the backend."""
    watched = _watched.get(take)
    if watched is None:
        return False
    _drop_renders(watched)
    watched.runner.cancel()
    return True


def _follow(take: str, watched: Watched) -> None:
    _watched[take] = watched
    state.set_watched(take, True)


def _unfollow(take: str) -> None:
    _watched.pop(take, None)
    state.set_watched(take, False)


def _drop_renders(watched: Watched) -> None:
    """No more renders for this job; a render process still running is ended."""
    renders, watched.renders = watched.renders, None
    if renders is not None:
        renders.stop()


def advance(take: str, render: bool = True) -> None:
    """One step of a watched job on the main thread: apply every message its runner posted,
    then (unless that ended the job) render its next input frame when `render` and one is left.
    Messages first: a runner whose check refused the take has said so before it set `ready`."""
    watched = _watched.get(take)
    if watched is None:
        return
    scene = bpy.data.scenes.get(watched.scene_name)
    if _drain(take, watched, scene):
        return
    if render and watched.renders is not None and scene is not None and _ready(watched.runner):
        _render_step(watched, scene)


def _drain(take: str, watched: Watched, scene: bpy.types.Scene | None) -> bool:
    """Apply the runner's messages; whether one of them ended the job."""
    while True:
        try:
            message = watched.runner.messages.get_nowait()
        except queue.Empty:
            return False
        if scene is not None:
            apply(scene, message)
        if isinstance(message, FINAL):
            _drop_renders(watched)
            _unfollow(take)
            return True


def _ready(job_runner: JobRunner) -> bool:
    """Renders start once the runner checked the backend (API version, models): a take the
    backend cannot run fails before its first frame is rendered."""
    ready = getattr(job_runner, "ready", None)
    return ready is None or ready.is_set()


def _render_step(watched: Watched, scene: bpy.types.Scene) -> None:
    renders = watched.renders
    assert renders is not None
    feed = watched.runner.inputs
    try:
        files = renders.step(scene)
    except (RuntimeError, OSError) as exc:
        _drop_renders(watched)
        watched.runner.abort(f"rendering frame {renders.current_frame} failed: {exc}")
        return
    for (pass_name, frame), path in sorted(files.items()):
        feed.put(pass_name, frame, path)
    entry = properties.find_job(scene.framesmith, watched.runner.take)
    if entry is not None and entry.state in ("PREPARING", "SUBMITTING", "AWAITING_INPUTS"):
        entry.stage = f"rendering {renders.done}/{renders.total}"
        entry.progress = renders.done / renders.total
    if renders.finished:
        _drop_renders(watched)
        feed.close()


def status_line(scene: bpy.types.Scene, take: str) -> str:
    """One line for the status bar: the job, where it is, and how to cancel it."""
    entry = properties.find_job(scene.framesmith, take)
    if entry is None:
        return "Framesmith"
    what = f"Framesmith {entry.kind.title()} {take[:6]}: {entry.state.title().replace('_', ' ')}"
    if entry.stage:
        what += f" ({entry.stage})"
    if entry.state == "RUNNING":
        what += f" {entry.progress:.0%}, {entry.frames_fetched} frames fetched"
    return what + " — Esc cancels"


def run_blocking(job_runner: JobRunner, scene: bpy.types.Scene) -> Message:
    """Run a job to its end on the calling (main) thread's watch; Ctrl+C cancels it."""
    job_runner.start()
    while True:
        try:
            message = job_runner.messages.get(timeout=0.5)
        except queue.Empty:
            continue
        except KeyboardInterrupt:
            job_runner.cancel()
            continue
        apply(scene, message)
        if isinstance(message, FINAL):
            job_runner.join()
            return message


def tick() -> float | None:
    """The timer: advance every watched job (renders only where no modal handler does); stop
    when nothing runs any more."""
    for take, watched in list(_watched.items()):
        advance(take, render=not watched.modal)
    for call in list(_calls):
        try:
            ok, lines = call.results.get_nowait()
        except queue.Empty:
            continue
        _calls.remove(call)
        state.backend_status().end(ok, lines)
    _redraw()
    return TICK if (_watched or _calls) else None


def apply(scene: bpy.types.Scene, message: Message) -> None:
    """One worker message → the scene's job entry (and, when done, the strip)."""
    entry = properties.find_job(scene.framesmith, message.take)
    if entry is None:
        return
    if isinstance(message, Created):
        entry.job_id = message.job_id
        entry.kind = message.kind.upper()
        entry.request = entry.request or message.request_json
        entry.state = "AWAITING_INPUTS"
    elif isinstance(message, JobProgress):
        # "done" waits for the Done message: the strip is not imported yet
        entry.state = "RUNNING" if message.state == "done" else message.state.upper()
        entry.stage = message.stage
        entry.progress = message.fraction
        entry.frames_fetched = message.frames_fetched
    elif isinstance(message, FrameReady):
        entry.frames_fetched += 1
        entry.state = "RUNNING"  # a finished frame: running, whatever the last poll said
    elif isinstance(message, Done):
        try:
            strip = strips.import_take(scene, entry, message.directory, message.frames)
        except (FrameError, RuntimeError, OSError) as exc:
            entry.state = "FAILED"
            entry.message = f"the frames are in {message.directory} but were not imported: {exc}"
            return
        entry.state = "DONE"
        entry.progress = 1.0
        entry.strip = strip.name
        entry.channel = strip.channel
        entry.message = f"{len(message.frames)} frames on channel {strip.channel}"
    elif isinstance(message, Failed) and message.unreachable and entry.job_id:
        # The job exists on the backend and goes on there: nothing is lost, only unwatched.
        entry.state, entry.stage = "DETACHED", ""
        entry.message = f"{message.message}; re-import fetches its frames once it answers"
    elif isinstance(message, Failed):
        entry.state = "FAILED"
        entry.message = message.message
    elif isinstance(message, Canceled):
        entry.state = "CANCELED"
        entry.message = f"canceled; {message.frames_fetched} finished frames kept in the folder"


def add_job(
    scene: bpy.types.Scene,
    take: str,
    kind: str,
    folder: Path,
    frame_start: int,
    frame_end: int,
    request_json: str = "",
) -> properties.FRAMESMITH_PG_job:
    props = scene.framesmith
    entry = props.jobs.add()
    entry.take = take
    entry.kind = kind
    entry.folder = str(folder)
    entry.frame_start, entry.frame_end = frame_start, frame_end
    entry.request = request_json
    entry.state = "PREPARING"
    props.active_job = len(props.jobs) - 1
    return entry


def detach_all() -> None:
    """Stop watching every job (they keep running on the backend; re-import fetches them)."""
    for take, watched in list(_watched.items()):
        _drop_renders(watched)
        watched.runner.detach()
        scene = bpy.data.scenes.get(watched.scene_name)
        entry = properties.find_job(scene.framesmith, take) if scene else None
        if entry is not None and entry.state not in properties.FINAL_STATES:
            entry.state = "DETACHED"
        _unfollow(take)


# --- backend calls ---------------------------------------------------------------------------


def backend_call(title: str, fn: Callable[[], list[str]], blocking: bool) -> tuple[bool, list[str]]:
    """Run a backend call (start, stop, check) and show its result as the backend status.

    Blocking: now, returning (ok, lines). Otherwise on a thread, returning (True, [title]) at
    once; the timer shows the result when it comes.
    """
    status = state.backend_status()
    status.begin(title)
    if blocking:
        ok, lines = _call(fn)
        status.end(ok, lines)
        return ok, lines
    call = _Call(title, queue.Queue())
    _calls.append(call)
    thread = threading.Thread(
        target=lambda: call.results.put(_call(fn)), name="framesmith-backend", daemon=True
    )
    thread.start()
    _ensure_timer()
    return True, [f"{title}..."]


def _call(fn: Callable[[], list[str]]) -> tuple[bool, list[str]]:
    try:
        return True, fn()
    except BackendError as exc:
        return False, [exc.detail]
    except (BackendUnreachable, LaunchError, OSError) as exc:
        return False, [str(exc)]


# --- plumbing --------------------------------------------------------------------------------


def should_wait(wait: str) -> bool:
    """The operators' `wait` option: AUTO waits only in background mode."""
    return wait == "WAIT" or (wait == "AUTO" and bpy.app.background)


def _ensure_timer() -> None:
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK, persistent=True)


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "SEQUENCE_EDITOR", "PREFERENCES"}:
                area.tag_redraw()


@bpy.app.handlers.persistent
def _on_load_pre(*_args: object) -> None:
    detach_all()


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    detach_all()
    _calls.clear()
