"""framesmith.cancel: stop a job, here and on the backend; finished frames stay in its folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import bpy
from bpy.props import EnumProperty, StringProperty

from ..client.jobs import JobRunner
from ..properties import FINAL_STATES, find_job
from . import common, runtime


class FRAMESMITH_OT_cancel(bpy.types.Operator):
    """Cancel the job (the active one in the Jobs list when none is named)"""

    bl_idname = "framesmith.cancel"
    bl_label = "Cancel Job"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    job: StringProperty(name="Job", description="Take or backend job id; empty: the active job")
    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self._cancel(context, runtime.should_wait(self.wait))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        return self._cancel(context, self.wait == "WAIT")

    def _cancel(self, context: bpy.types.Context, blocking: bool) -> set[str]:
        props = context.scene.framesmith
        entry = find_job(props, self.job) if self.job else _active(props)
        if entry is None:
            self.report({"ERROR"}, f"Framesmith: no job {self.job!r} in this scene")
            return {"CANCELLED"}
        if entry.state in FINAL_STATES:
            self.report({"INFO"}, f"Framesmith: the job is already {entry.state.lower()}")
            return {"CANCELLED"}
        watched = runtime.runner(entry.take)
        if watched is not None:
            runtime.cancel(entry.take)  # the runner cancels on the backend and reports Canceled
            if blocking:
                watched.join()
                runtime.tick()
            return {"FINISHED"}
        if not entry.job_id:
            entry.state, entry.message = "CANCELED", "canceled before it reached the backend"
            return {"FINISHED"}
        try:
            config = common.backend(context)
        except common.UserError as exc:
            self.report({"ERROR"}, f"Framesmith: {exc}")
            return {"CANCELLED"}
        # Not watched (e.g. the file was reopened): a runner re-attaches only to cancel it.
        runner = JobRunner(
            entry.take, common.connector(config), Path(entry.folder), job_id=entry.job_id
        )
        runner.cancel()
        return common.run(self, context.scene, runner, blocking)


def _active(props):
    if 0 <= props.active_job < len(props.jobs):
        return props.jobs[props.active_job]
    return None


classes = (FRAMESMITH_OT_cancel,)

register, unregister = bpy.utils.register_classes_factory(classes)
