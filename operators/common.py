"""Small pieces every job operator needs: the wait option, the output folder, a connection."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import bpy

from .. import preferences
from ..client.backend import BackendConfig, connect
from ..client.frames import FrameError
from ..client.http import BackendClient, BackendError, BackendUnreachable
from ..client.jobs import Canceled, Done, JobRunner
from ..client.launcher import LaunchError
from ..client.request import RequestError
from ..properties import find_job
from . import runtime

WAIT_ITEMS = (
    ("AUTO", "Auto", "Wait for the result only in background mode (blender -b, scripts)"),
    ("WAIT", "Wait", "Return when the result is on the timeline"),
    ("RETURN", "Return", "Return at once; the job runs on and reports in the Jobs panel"),
)


class UserError(Exception):
    """Something the user must change before the operator can run; the message says what."""


# Failures an operator reports as one sentence (never a traceback) before any job exists.
PREPARE_ERRORS = (
    UserError,
    RequestError,
    FrameError,
    LaunchError,
    BackendUnreachable,
    BackendError,
)


def output_root(folder: str) -> tuple[Path, str | None]:
    """The output folder as an absolute path, plus a warning when the .blend is not saved and
    a '//' path has nothing to be relative to."""
    if folder.startswith("//") and not bpy.data.filepath:
        fallback = Path(tempfile.gettempdir()) / "framesmith"
        return fallback, f"the .blend is not saved: results go to {fallback}"
    if not folder.strip():
        raise UserError("set an output folder in the Framesmith panel")
    return Path(bpy.path.abspath(folder)).resolve(), None


def new_take() -> str:
    return uuid.uuid4().hex[:12]


def backend(context: bpy.types.Context) -> BackendConfig:
    """The configured backend; refuses when Blender's settings forbid reaching it."""
    prefs = preferences.get(context)
    refusal = preferences.network_refusal(prefs)
    if refusal:
        raise UserError(refusal)
    return preferences.backend_config(prefs)


def connector(config: BackendConfig) -> Callable[[], BackendClient]:
    """What a runner calls on its thread to reach the backend (starting a local one if needed)."""
    return lambda: BackendClient(connect(config))


def reach_early(config: BackendConfig, blocking: bool) -> BackendClient | None:
    """In a blocking run, find a dead backend before spending time on renders."""
    if not blocking:
        return None
    client = BackendClient(connect(config))
    client.health()
    return client


def fail(op: bpy.types.Operator, entry, message: str) -> set[str]:
    """Mark the job entry failed and tell the user."""
    entry.state, entry.message = "FAILED", message
    op.report({"ERROR"}, f"Framesmith: {message}")
    return {"CANCELLED"}


def submit(
    op: bpy.types.Operator,
    scene: bpy.types.Scene,
    entry,
    runner_args: tuple[str, BackendConfig, BackendClient | None, Path],
    request,
    inputs: dict[tuple[str, int], Path],
    blocking: bool,
    warning: str | None,
) -> set[str]:
    """Hand the job to a runner thread (or run it to the end when blocking)."""
    take, config, client, folder = runner_args
    entry.state = "SUBMITTING"
    connect_fn = (lambda: client) if client is not None else connector(config)
    runner = JobRunner(take, connect_fn, folder, request=request, inputs=inputs)
    return run(op, scene, runner, blocking, warning)


def backend_action(
    op: bpy.types.Operator,
    context: bpy.types.Context,
    title: str,
    make_call: Callable[[BackendConfig], Callable[[], list[str]]],
    blocking: bool,
    *,
    all_lines: bool = False,
) -> set[str]:
    """Start, stop or check the backend: `make_call` may refuse with a UserError; the call runs
    now (blocking) or on a thread, and its first line (or all of them) is reported."""
    try:
        call = make_call(backend(context))
    except UserError as exc:
        op.report({"ERROR"}, f"Framesmith: {exc}")
        return {"CANCELLED"}
    ok, lines = runtime.backend_call(title, call, blocking)
    text = "; ".join(lines) if all_lines else lines[0]
    op.report({"INFO"} if ok else {"ERROR"}, f"Framesmith: {text}")
    return {"FINISHED"} if ok else {"CANCELLED"}


def say(exc: Exception) -> str:
    """An exception as the sentence for the user (the backend's own words where it answered)."""
    return exc.detail if isinstance(exc, BackendError) else str(exc)


def run(
    op: bpy.types.Operator,
    scene: bpy.types.Scene,
    runner: JobRunner,
    blocking: bool,
    warning: str | None = None,
) -> set[str]:
    """Watch the runner from the timer and return, or (blocking) run it to the end and report."""
    if warning:
        op.report({"WARNING"}, warning)
    if not blocking:
        runtime.watch(runner, scene)
        op.report({"INFO"}, "Framesmith: the job runs; follow it in the Jobs panel")
        return {"FINISHED"}
    final = runtime.run_blocking(runner, scene)
    entry = find_job(scene.framesmith, runner.take)
    said = entry.message if entry is not None else ""
    if isinstance(final, Done) and entry is not None and entry.state == "DONE":
        op.report({"INFO"}, f"Framesmith: {said}")
        return {"FINISHED"}
    if isinstance(final, Canceled):
        op.report({"WARNING"}, f"Framesmith: {said}")
    else:
        op.report({"ERROR"}, f"Framesmith: {said or getattr(final, 'message', 'failed')}")
    return {"CANCELLED"}
