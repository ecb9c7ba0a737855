"""Interactive runs: an operator's `invoke()` starts the job and returns RUNNING_MODAL; its modal
handler advances the job on a window-manager timer (one render or one drain of the runner's
messages per tick), shows where it is in the status bar, and Esc cancels it.

Nothing here waits on the network or renders more than one frame per tick: the worker thread
does the waiting. In background mode (`blender -b`, scripts) `execute()` runs the whole job.
"""

from __future__ import annotations

import bpy

from ..properties import find_job
from . import common, runtime

MODAL_TICK = 0.1  # seconds between two timer events of a modal job operator

END_REPORTS = {"DONE": "INFO", "CANCELED": "WARNING", "DETACHED": "WARNING", "FAILED": "ERROR"}


class FollowJob:
    """Mixin for operators that follow one watched job from a modal handler."""

    _take: str = ""
    _scene: str = ""
    _timer = None

    def follow(self, context: bpy.types.Context, take: str) -> set[str]:
        """Take over advancing `take` from a modal handler; without a window (nothing would send
        events), leave it to the runtime's timer."""
        if context.window is None:
            return {"FINISHED"}
        wm = context.window_manager
        self._take, self._scene = take, context.scene.name
        self._timer = wm.event_timer_add(MODAL_TICK, window=context.window)
        wm.modal_handler_add(self)
        runtime.own(take, True)
        self._show(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS":
            runtime.cancel(self._take)
            self.report({"WARNING"}, "Framesmith: canceling; finished frames stay in its folder")
            self._end(context)
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        runtime.advance(self._take, render=True)
        if runtime.watching(self._take):
            self._show(context)
            return {"PASS_THROUGH"}
        self._end(context)
        return self._report_end()

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender drops the handler (a file is loaded, the window closes): the job goes on."""
        self._end(context)

    # --- helpers -----------------------------------------------------------------------------

    def _entry(self):
        scene = bpy.data.scenes.get(self._scene)
        return find_job(scene.framesmith, self._take) if scene is not None else None

    def _show(self, context: bpy.types.Context) -> None:
        scene = bpy.data.scenes.get(self._scene)
        if scene is not None and context.workspace is not None:
            context.workspace.status_text_set(runtime.status_line(scene, self._take))

    def _end(self, context: bpy.types.Context) -> None:
        runtime.own(self._take, False)
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)

    def _report_end(self) -> set[str]:
        entry = self._entry()
        if entry is None:
            return {"CANCELLED"}
        level = END_REPORTS.get(entry.state, "INFO")
        self.report({level}, f"Framesmith: {entry.message or entry.state.lower()}")
        return {"FINISHED"} if entry.state == "DONE" else {"CANCELLED"}


class JobOperator(FollowJob):
    """Mixin for stylize and in-between: `plan()` checks the settings (no network unless
    blocking, no renders); `execute()` runs the job (to its end when it waits), `invoke()` starts
    it and follows it modally."""

    def plan(self, context: bpy.types.Context, blocking: bool) -> common.JobPlan | None:
        raise NotImplementedError

    def execute(self, context: bpy.types.Context) -> set[str]:
        blocking = runtime.should_wait(self.wait)
        plan = self.plan(context, blocking)
        if plan is None:
            return {"CANCELLED"}
        if blocking:
            return common.run_to_end(self, context.scene, plan)
        common.start(self, context.scene, plan)
        self.report({"INFO"}, "Framesmith: the job runs; follow it in the Jobs panel")
        return {"FINISHED"}

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        if self.wait == "WAIT":
            return self.execute(context)
        plan = self.plan(context, blocking=False)
        if plan is None:
            return {"CANCELLED"}
        return self.follow(context, common.start(self, context.scene, plan))
