"""framesmith.reimport: fetch a job's frames again by id and put them on a new strip."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import bpy
from bpy.props import EnumProperty, StringProperty

from ..client.frames import take_folder
from ..client.jobs import JobRunner
from ..properties import find_job
from . import common, modal, runtime


class FRAMESMITH_OT_reimport(modal.FollowJob, bpy.types.Operator):
    """Fetch the job's frames from the backend (they are kept there) and import them as a new
    strip; works after Blender was closed or the connection dropped"""

    bl_idname = "framesmith.reimport"
    bl_label = "Re-import"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    job: StringProperty(name="Job", description="Take or backend job id; empty: the active job")
    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        runner = self._runner(context)
        if runner is None:
            return {"CANCELLED"}
        return common.run(self, context.scene, runner, runtime.should_wait(self.wait))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        if self.wait == "WAIT":
            return self.execute(context)
        runner = self._runner(context)
        if runner is None:
            return {"CANCELLED"}
        runtime.watch(runner, context.scene)
        return self.follow(context, runner.take)

    def _runner(self, context: bpy.types.Context) -> JobRunner | None:
        """A runner that re-attaches to the job (not started), or None when refused."""
        scene = context.scene
        props = scene.framesmith
        if self.job:
            entry = find_job(props, self.job)
        else:
            entry = (
                props.jobs[props.active_job] if 0 <= props.active_job < len(props.jobs) else None
            )
        try:
            config = common.backend(context)
            if entry is None and not self.job:
                raise common.UserError("choose a job in the Jobs list, or give its id")
            if entry is not None and not entry.job_id:
                raise common.UserError("this take never reached the backend; run it again")
            if runtime.watching(entry.take if entry else ""):
                raise common.UserError("this job is still being fetched")
            if entry is None:  # a job id from elsewhere (another file, a colleague)
                root, _ = common.output_root(props.output_dir)
                take = common.new_take()
                entry = runtime.add_job(
                    scene, take, "INBETWEEN", take_folder(root, "job", take), 0, 0
                )
                entry.job_id = self.job
        except common.UserError as exc:
            self.report({"ERROR"}, f"Framesmith: {exc}")
            return None
        entry.state, entry.message = "SUBMITTING", ""
        return JobRunner(
            entry.take, common.connector(config), Path(entry.folder), job_id=entry.job_id
        )


classes = (FRAMESMITH_OT_reimport,)

register, unregister = bpy.utils.register_classes_factory(classes)
