"""framesmith.install_backend: build the backend's environment with Blender's own Python.

invoke() starts an Installer (its own thread, each step a child process) and returns at once. A
bpy.app.timers function drains the installer's messages into the preferences (progress, step,
package, last message), so the install goes on when the preferences window closes; the modal
handler drains on its own ticks too and cancels on Esc, as does framesmith.install_backend_cancel.
When the install succeeds, Backend Python points at the new environment.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

import bpy

from .. import preferences, state
from ..client.installer import (
    STEP_TITLES,
    Canceled,
    Failed,
    Finished,
    Installer,
    InstallSpec,
    Message,
    Progress,
    Settings,
    TorchBuild,
    remote_indexes,
)

TICK = 0.2  # seconds between two drains while an install runs
# The folder holding requirements/backend.txt and the `backend` package (tests point it elsewhere).
EXTENSION_ROOT: Path = preferences.ROOT


def running() -> bool:
    return state.install().running


def install_settings(prefs: preferences.FramesmithPreferences) -> Settings:
    return Settings(
        torch_build=TorchBuild(prefs.install_torch_build),
        torch_version=prefs.install_torch_version.strip(),
        index_url=prefs.install_index_url.strip(),
        torch_index_url=prefs.install_torch_index_url.strip(),
    )


def online_refusal(settings: Settings) -> str | None:
    """Blender's online access must be on before the install reaches beyond this machine."""
    remote = remote_indexes(settings)
    if not remote or bpy.app.online_access:
        return None
    where = ", ".join(url or "PyPI" for url in remote)
    return (
        f"Blender's online access is off, so the packages cannot be downloaded from {where}:"
        " allow it in Preferences > System > Network, then press Install Backend again"
    )


def start(prefs: preferences.FramesmithPreferences) -> None:
    spec = InstallSpec(
        python=Path(sys.executable),
        target=preferences.backend_env_dir(),
        root=EXTENSION_ROOT,
        settings=install_settings(prefs),
    )
    run = state.install()
    run.installer, run.last = Installer(spec), None
    prefs.install_progress = 0.0
    prefs.install_message = "Starting the install"
    run.installer.start()
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=TICK, persistent=True)


def cancel() -> None:
    installer = state.install().installer
    if installer is not None:
        installer.cancel()


def drain() -> float | None:
    """The timer: apply every waiting message on the main thread; None once the install ended."""
    run = state.install()
    installer = run.installer
    if installer is None:
        return None
    prefs = preferences.get()
    while not installer.messages.empty():
        message = installer.messages.get_nowait()
        apply(prefs, message)
        if not isinstance(message, Progress):
            run.installer, run.last = None, message
            break
    _redraw_preferences()
    return TICK if run.running else None


def apply(prefs: preferences.FramesmithPreferences, message: Message) -> None:
    if isinstance(message, Progress):
        prefs.install_progress = message.fraction
        prefs.install_message = progress_line(message)
    elif isinstance(message, Finished):
        prefs.install_progress = 1.0
        prefs.python_path = str(message.python)
        prefs.install_message = f"Installed: Backend Python is {message.python}"
    elif isinstance(message, Failed):
        prefs.install_message = message.message
    elif isinstance(message, Canceled):
        prefs.install_message = "Canceled: press Install Backend to continue where it stopped"


def progress_line(message: Progress) -> str:
    """ "Step 2/4, Installing torch: Downloading torch (190 MB)"."""
    title, text = STEP_TITLES[message.step], message.text
    line = f"Step {message.index}/{message.total}, {title}"
    if text != title:
        line += f": {text}"
    if message.package and message.package not in text:
        line += f" ({message.package})"
    return line


def _redraw_preferences() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def stop() -> None:
    """The add-on is being disabled: end the install and the timer."""
    run = state.install()
    if run.installer is not None:
        run.installer.cancel()
        run.installer.join(timeout=15)
        run.installer = None
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)


class FRAMESMITH_OT_install_backend(bpy.types.Operator):
    """Create the backend's environment in the extension's user folder with Blender's Python:
    torch for this computer, the backend's packages, then a check. A re-run continues where a
    failed or canceled install stopped"""

    bl_idname = "framesmith.install_backend"
    bl_label = "Install Backend"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    _timer = None

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not self._begin(context):
            return {"CANCELLED"}
        if not bpy.app.background:
            return {"FINISHED"}  # the timer follows it
        installer = state.install().installer
        assert installer is not None  # a script under blender -b: the whole install, then return
        installer.join()
        drain()
        return self._report_end()

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        if not self._begin(context):
            return {"CANCELLED"}
        if context.window is None:
            return {"FINISHED"}  # nothing would send events: the timer alone follows it
        self._timer = context.window_manager.event_timer_add(TICK, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            cancel()
            self.report({"WARNING"}, "Framesmith: canceling the install")
            self._end(context)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        drain()
        if running():
            return {"PASS_THROUGH"}
        self._end(context)
        return self._report_end()

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender drops the handler (the window closes): the install goes on, the timer follows."""
        self._end(context)

    @classmethod
    def unregister(cls) -> None:
        stop()

    def _begin(self, context: bpy.types.Context) -> bool:
        if running():
            self.report({"WARNING"}, "Framesmith: the backend is being installed already")
            return False
        prefs = preferences.get(context)
        refusal = online_refusal(install_settings(prefs))
        if refusal:
            prefs.install_message = refusal
            self.report({"ERROR"}, f"Framesmith: {refusal}")
            return False
        start(prefs)
        return True

    def _end(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None

    def _report_end(self) -> set[str]:
        last = state.install().last
        if isinstance(last, Finished):
            self.report({"INFO"}, f"Framesmith: backend installed ({last.python})")
            return {"FINISHED"}
        if isinstance(last, Failed):
            self.report({"ERROR"}, f"Framesmith: {last.message}")
        return {"CANCELLED"}


class FRAMESMITH_OT_install_backend_cancel(bpy.types.Operator):
    """Stop the running install; a re-run continues where it stopped"""

    bl_idname = "framesmith.install_backend_cancel"
    bl_label = "Cancel Install"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return running()

    def execute(self, context: bpy.types.Context) -> set[str]:
        cancel()
        return {"FINISHED"}


classes = (FRAMESMITH_OT_install_backend, FRAMESMITH_OT_install_backend_cancel)

register, unregister = bpy.utils.register_classes_factory(classes)
