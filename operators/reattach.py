"""On file load, follow again the jobs the file lists that were never imported.

A closed Blender or a dropped connection loses nothing: the backend keeps the job and its frames.
When a .blend is opened, each of its unfinished takes with a backend id gets a runner that
re-attaches by id (on its thread: nothing here waits on the network); finished jobs are imported
as strips by the runtime's timer, running ones are followed to their end. A local backend is not
started for this: with none running, the takes stay listed as not watched, for re-import.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

from ..client.backend import BackendConfig, connect
from ..client.http import BackendClient
from ..client.jobs import JobRunner
from ..properties import FINAL_STATES
from . import common, runtime


def reattach_all(context: bpy.types.Context) -> list[str]:
    """Re-attach every unfinished, unwatched take of every scene; the takes followed again."""
    try:
        config = common.backend(context)
    except common.UserError as exc:
        _detach_listed(str(exc))
        return []
    followed = []
    for scene in bpy.data.scenes:
        for entry in scene.framesmith.jobs:
            if entry.state in FINAL_STATES or runtime.watching(entry.take):
                continue
            if not entry.job_id:
                entry.state = "FAILED"
                entry.message = "Blender stopped before this take reached the backend; run it again"
                continue
            entry.state, entry.stage = "DETACHED", "checking"
            runner = JobRunner(
                entry.take, _running_backend(config), Path(entry.folder), job_id=entry.job_id
            )
            runtime.watch(runner, scene)
            followed.append(entry.take)
    return followed


def _running_backend(config: BackendConfig):
    """Connect to a backend that runs already (a local one is not started on file load)."""
    return lambda: BackendClient(connect(config, start=False))


def _detach_listed(reason: str) -> None:
    for scene in bpy.data.scenes:
        for entry in scene.framesmith.jobs:
            if entry.state not in FINAL_STATES and entry.job_id:
                entry.state, entry.message = "DETACHED", reason


@bpy.app.handlers.persistent
def _on_load_post(*_args: object) -> None:
    if os.environ.get("FRAMESMITH_RENDER_CHILD"):  # a take's render process: it only renders
        return
    reattach_all(bpy.context)


def register() -> None:
    bpy.app.handlers.load_post.append(_on_load_post)


def unregister() -> None:
    if _on_load_post in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load_post)
