"""Small pieces every job operator needs: the wait option, the output folder, a connection, and
starting a job (blocking, or handed to the runtime so nothing waits on the main thread)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .. import preferences, state
from ..client.backend import BackendConfig, check_models, connect
from ..client.downloads import catalogue_or_none
from ..client.frames import FrameError, FrameRange, take_folder
from ..client.http import BackendClient, BackendError, BackendUnreachable
from ..client.jobs import Canceled, Done, InputFeed, JobRunner
from ..client.launcher import LaunchError
from ..client.request import Request, RequestError
from ..properties import find_job
from . import runtime
from .render import FrameRenders, RenderBatch
from .render_process import ProcessRenders

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


@dataclass
class JobPlan:
    """A checked job, before anything is rendered or sent: what to send, what to render first
    (batches into sub-folders of the take), and which inputs are on disk already."""

    kind: str  # STYLIZE or INBETWEEN
    request: Request
    config: BackendConfig
    root: Path
    frame_range: FrameRange
    warning: str | None = None
    client: BackendClient | None = None  # reached already (blocking runs)
    renders: tuple[RenderBatch, ...] = ()
    given: dict[tuple[str, int], Path] = field(default_factory=dict)


def _begin(
    op: bpy.types.Operator,
    scene: bpy.types.Scene,
    plan: JobPlan,
    renderer: type[FrameRenders] = FrameRenders,
):
    if plan.warning:
        op.report({"WARNING"}, plan.warning)
    take = new_take()
    folder = take_folder(plan.root, plan.kind.lower(), take)
    entry = runtime.add_job(
        scene,
        take,
        plan.kind,
        folder,
        plan.frame_range.start,
        plan.frame_range.end,
        plan.request.to_json(),
    )
    batches = tuple(b for b in plan.renders if b.frames)
    renders = renderer(batches, folder) if batches else None
    return entry, folder, renders


def start(op: bpy.types.Operator, scene: bpy.types.Scene, plan: JobPlan) -> str:
    """Start the job without waiting for anything: the runner thread connects, creates the job
    and uploads each input as it comes; the renders are done one frame per `runtime.advance()`.
    Returns the take."""
    in_process = not preferences.get(bpy.context).background_render
    entry, folder, renders = _begin(op, scene, plan, FrameRenders if in_process else ProcessRenders)
    expected = len(plan.given) + (renders.files_expected if renders else 0)
    feed = InputFeed(expected)
    for (pass_name, frame), path in sorted(plan.given.items()):
        feed.put(pass_name, frame, path)
    if renders is None:
        feed.close()
    entry.state = "SUBMITTING" if renders is None else "PREPARING"
    runner = JobRunner(
        entry.take, connector(plan.config), folder, request=plan.request, inputs=feed
    )
    runtime.watch(runner, scene, renders)
    return entry.take


def run_to_end(op: bpy.types.Operator, scene: bpy.types.Scene, plan: JobPlan) -> set[str]:
    """Render every input, then run the job to its end on this thread's watch (background)."""
    entry, folder, renders = _begin(op, scene, plan)
    inputs = dict(plan.given)
    if renders is not None:
        try:
            inputs.update(renders.all(scene))
        except (RuntimeError, OSError) as exc:
            return fail(op, entry, f"rendering failed: {exc}")
    entry.state = "SUBMITTING"
    client = plan.client
    connect_fn = (lambda: client) if client is not None else connector(plan.config)
    runner = JobRunner(entry.take, connect_fn, folder, request=plan.request, inputs=inputs)
    return run(op, scene, runner, True)


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


def checking(start: bool) -> Callable[[BackendConfig], Callable[[], list[str]]]:
    """The backend call of Check and Start: health and models as lines; the installed model
    names are kept for the settings' model menus."""

    def make_call(config: BackendConfig) -> Callable[[], list[str]]:
        def call() -> list[str]:
            connection = connect(config, start=start)
            lines, choices = check_models(connection)
            state.remember_models(choices)
            state.remember_catalogue(catalogue_or_none(connection))
            return lines

        return call

    return make_call


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
