"""framesmith.open_folder: show a take's folder in the file browser of the system."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import StringProperty

from ..properties import find_job


class FRAMESMITH_OT_open_folder(bpy.types.Operator):
    """Open the job's folder (its frames and inputs)"""

    bl_idname = "framesmith.open_folder"
    bl_label = "Open Folder"

    job: StringProperty(name="Job", description="Take or backend job id")

    def execute(self, context: bpy.types.Context) -> set[str]:
        entry = find_job(context.scene.framesmith, self.job)
        if entry is None or not Path(entry.folder).is_dir():
            self.report({"ERROR"}, "Framesmith: the job's folder does not exist (yet)")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=entry.folder)
        return {"FINISHED"}


classes = (FRAMESMITH_OT_open_folder,)

register, unregister = bpy.utils.register_classes_factory(classes)
