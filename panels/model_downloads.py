"""The Backend panel's models part: what each pipeline still needs from the backend's
catalogue, every other model it offers, a Download button with the size and licence shown
before anything starts, progress and cancel. Draw only: reads the session state (state.py)."""

from __future__ import annotations

import bpy

from .. import state

PIPELINES = (("stylize", "Stylize"), ("inbetween", "In-between"))


def draw(layout: bpy.types.UILayout) -> None:
    downloads = state.downloads()
    items = downloads.catalogue
    if not items:
        return  # nothing read yet: Check (or Start) reads the catalogue with the models
    box = layout.box()
    listed: set[str] = set()
    for pipeline, title in PIPELINES:
        needed = [i for i in items if pipeline in i.needed_by]
        if needed:
            box.label(text=f"{title} needs one of these:", icon="ERROR")
        for item in needed:
            if item.name not in listed:
                model_row(box, item, downloads)
            listed.add(item.name)
    rest = [i for i in items if i.name not in listed]
    if rest:
        box.label(text="Models to download", icon="IMPORT")
    for item in rest:
        model_row(box, item, downloads)


def model_row(layout: bpy.types.UILayout, item, downloads: state.Downloads) -> None:
    col = layout.column(align=True)
    row = col.row(align=True)
    status = downloads.status.get(item.name)
    if downloads.running(item.name):
        fraction = status.fraction if status is not None else 0.0
        text = status.text if status is not None else "Starting"
        row.progress(factor=fraction, text=f"{item.title}: {text}")
        row.operator("framesmith.download_cancel", text="", icon="CANCEL").name = item.name
        return
    if item.installed:
        row.label(text=item.title, icon="CHECKMARK")
        return
    row.label(text=item.title, icon="BLANK1")
    row.operator("framesmith.download_model", text="Download", icon="IMPORT").name = item.name
    col.label(text=item.summary, icon="BLANK1")  # size and licence, before it starts
    if status is not None and status.state in ("failed", "canceled"):
        col.label(text=status.text, icon="ERROR" if status.state == "failed" else "CANCEL")
