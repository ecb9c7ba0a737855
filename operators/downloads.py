"""framesmith.download_model and framesmith.download_cancel: models from the backend's catalogue.

The backend downloads (it owns the models folder and may be on another machine); here a
DownloadRunner thread starts the download and polls it, posting messages that a bpy.app.timers
function drains on the main thread into the session state (state.downloads()) that the Backend
panel draws: a progress bar, a cancel button, the final word. When a download ends the runner
reads the catalogue and the model listing again, so the model menus offer the new model.
Interactive, invoke() first shows the size and licence and asks; under `blender -b` (or with
wait=WAIT) execute() follows the download to its end.
"""

from __future__ import annotations

import os
from typing import ClassVar

import bpy
from bpy.props import EnumProperty, StringProperty

from .. import preferences, state
from ..client.backend import is_loopback
from ..client.downloads import DownloadRunner, Ended, Message, Progress
from . import common, runtime

TICK = 0.25  # seconds between two drains while a download runs
DEFAULT_ENDPOINT = "https://huggingface.co"


def online_refusal(prefs: preferences.FramesmithPreferences) -> str | None:
    """A local backend reaches the hub for the download: Blender's online access must be on
    (a hub on this machine, HF_ENDPOINT on 127.0.0.1, needs no online access)."""
    if prefs.backend_mode != "LOCAL" or bpy.app.online_access:
        return None
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    if is_loopback(endpoint):
        return None
    return (
        f"Blender's online access is off, so the backend may not download models from"
        f" {endpoint}: allow it in Preferences > System > Network, then press Download again"
    )


def start(name: str, context: bpy.types.Context) -> DownloadRunner:
    """Begin following the download of `name`; common.UserError when it may not start."""
    prefs = preferences.get(context)
    refusal = online_refusal(prefs)
    if refusal:
        raise common.UserError(refusal)
    config = common.backend(context)
    downloads = state.downloads()
    runner = DownloadRunner(name, common.connector(config))
    downloads.runners[name] = runner
    downloads.status.pop(name, None)
    runner.start()
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=TICK, persistent=True)
    return runner


def drain() -> float | None:
    """The timer: apply every waiting message on the main thread; None once none runs."""
    downloads = state.downloads()
    for name, runner in list(downloads.runners.items()):
        while not runner.messages.empty():
            message = runner.messages.get_nowait()
            apply(message)
            if isinstance(message, Ended):
                downloads.runners.pop(name, None)
                break
    _redraw_sidebars()
    return TICK if downloads.runners else None


def _redraw_sidebars() -> None:
    for window in getattr(bpy.context.window_manager, "windows", ()):
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "SEQUENCE_EDITOR"}:
                area.tag_redraw()


def apply(message: Message) -> None:
    downloads = state.downloads()
    downloads.status[message.status.name] = message.status
    if isinstance(message, Progress):
        return
    state.remember_catalogue(message.catalogue)
    if message.choices is not None:
        state.remember_models(message.choices)
    if message.lines:
        state.backend_status().end(True, list(message.lines))


def stop() -> None:
    """The add-on is being disabled: stop following (the backend's downloads go on)."""
    state.downloads().runners.clear()
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)


class FRAMESMITH_OT_download_model(bpy.types.Operator):
    """Download this model from the backend's catalogue into its models folder"""

    bl_idname = "framesmith.download_model"
    bl_label = "Download Model"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    name: StringProperty(name="Model", description="The catalogue entry's name")
    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    @classmethod
    def description(cls, context: bpy.types.Context, properties: bpy.types.OperatorProperties):
        item = state.downloads().item(properties.name)
        if item is None:
            return cls.__doc__
        return f"Download {item.title} ({item.summary}) into the backend's models folder"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        item = state.downloads().item(self.name)
        if item is None or bpy.app.background or context.window is None:
            return self.execute(context)
        return context.window_manager.invoke_confirm(
            self,
            event,
            title=f"Download {item.title}?",
            message=f"{item.summary}. The backend saves it in its models folder.",
            confirm_text="Download",
        )

    def execute(self, context: bpy.types.Context) -> set[str]:
        if state.downloads().running(self.name):
            self.report({"WARNING"}, f"Framesmith: {self.name} is being downloaded already")
            return {"CANCELLED"}
        try:
            runner = start(self.name, context)
        except common.UserError as exc:
            self.report({"ERROR"}, f"Framesmith: {exc}")
            return {"CANCELLED"}
        if not runtime.should_wait(self.wait):
            self.report({"INFO"}, f"Framesmith: downloading {self.name}")
            return {"FINISHED"}
        runner.join()  # blender -b or wait=WAIT: to the end, then report
        drain()
        status = state.downloads().status.get(self.name)
        if status is not None and status.state == "done":
            self.report({"INFO"}, f"Framesmith: {self.name} is installed")
            return {"FINISHED"}
        said = status.text if status is not None else "the download did not report"
        self.report({"ERROR"}, f"Framesmith: {self.name}: {said}")
        return {"CANCELLED"}


class FRAMESMITH_OT_download_cancel(bpy.types.Operator):
    """Stop this download; nothing of it stays in the models folder"""

    bl_idname = "framesmith.download_cancel"
    bl_label = "Cancel Download"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    name: StringProperty(name="Model")

    def execute(self, context: bpy.types.Context) -> set[str]:
        runner = state.downloads().runners.get(self.name)
        if runner is None:
            return {"CANCELLED"}
        runner.cancel()
        return {"FINISHED"}


classes = (FRAMESMITH_OT_download_model, FRAMESMITH_OT_download_cancel)

_register, _unregister = bpy.utils.register_classes_factory(classes)


def register() -> None:
    _register()


def unregister() -> None:
    stop()
    _unregister()
