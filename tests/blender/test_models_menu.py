"""Checkpoint / motion adapter / LoRA menus: filled from the backend's model listing when the
backend is checked (never while drawing), stored in the .blend by name, sent with the request;
the last listing is kept in the extension's user folder, so the menus have it after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy

from client.http import BackendClient
from client.request_builder import Shot, build_request
from tests.blender.support import ADDON, REPO_MODULE


def test_model_menus_list_the_backend_models_and_reach_the_job(
    shot: Any, prefs: Any, tiny_backend: dict, session_state: ModuleType, listing_file: Path
) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    properties = sys.modules[f"{ADDON}.properties"]
    props = shot.framesmith
    assert props.checkpoint_menu == "DEFAULT" and props.checkpoint == ""

    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    choices = session_state.model_choices()
    assert choices.checkpoints and choices.motion_adapters and choices.loras
    checkpoint, lora = choices.checkpoints[-1], choices.loras[0]

    props.checkpoint_menu = checkpoint
    props.lora_menu = lora
    assert (props.checkpoint, props.lora) == (checkpoint, lora)  # stored by name
    assert props.motion_adapter_menu == "DEFAULT" and props.motion_adapter == ""
    props.lora_weight = 0.5
    props.prompt = "ink"
    request = build_request("stylize", properties.to_settings(props), Shot(64, 48, (1, 2)))
    params = request.params()
    assert params["checkpoint"] == checkpoint and params["lora"] == {"name": lora, "weight": 0.5}
    assert "motion_adapter" not in params  # the backend's default

    # the backend takes the names as listed
    client = BackendClient(tiny_backend["connection"])
    job = client.create_job(request.job_body())
    try:
        assert job["params"]["checkpoint"] == checkpoint
        assert job["params"]["lora"]["name"] == lora
    finally:
        client.delete(job["id"])

    # a name the listing no longer has (the file came from elsewhere) stays, marked
    props.checkpoint = "gone-since"
    assert props.checkpoint_menu == "gone-since"
    props.checkpoint_menu = "DEFAULT"
    assert props.checkpoint == ""


def restart_listing(session_state: ModuleType) -> None:
    """What a restart does to the listing: unregister forgets it, register finds the folder
    again and the menus read the file on first use. (Disabling the whole extension here would
    leave this session's preferences fixture dangling; a real new process is tested below.)"""
    session_state.unregister()
    empty = type(session_state.model_choices())()
    assert session_state.model_choices() == empty  # nothing in memory any more
    session_state.register()


def menu_description(props: Any, menu: str, name: str) -> str:
    return bpy.types.UILayout.enum_item_description(props, menu, name)


def test_model_menus_keep_the_last_listing_across_restarts(
    shot: Any, prefs: Any, tiny_backend: dict, session_state: ModuleType, listing_file: Path
) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    checked = session_state.model_choices()
    assert checked.checkpoints and checked.sparsectrls
    stored = json.loads(listing_file.read_text())
    assert stored["models"]["checkpoints"] == list(checked.checkpoints)

    restart_listing(session_state)
    assert session_state.model_choices() == checked  # read back from the file, no check needed
    props = shot.framesmith
    checkpoint, sparsectrl = checked.checkpoints[-1], checked.sparsectrls[0]
    props.checkpoint_menu = checkpoint
    props.sparsectrl_menu = sparsectrl
    assert (props.checkpoint, props.sparsectrl) == (checkpoint, sparsectrl)
    said = menu_description(props, "checkpoint_menu", checkpoint)
    when = session_state.listing().when()
    assert "last check" in said and when in said, said

    # a new Blender process on the same user folder offers the names before any check
    assert fresh_blender_menu(checked.checkpoints) == list(checked.checkpoints)

    # a broken file: empty menus after the restart, no traceback
    listing_file.write_text("{ half a file")
    restart_listing(session_state)
    assert session_state.model_choices().checkpoints == ()
    assert props.checkpoint == checkpoint and props.checkpoint_menu == checkpoint  # kept, marked
    assert "(not listed)" in bpy.types.UILayout.enum_item_name(props, "checkpoint_menu", checkpoint)
    props.checkpoint_menu = "DEFAULT"
    props.sparsectrl_menu = "DEFAULT"


FRESH_BLENDER = """
import bpy
import addon_utils, json, sys
repo_dir, repo_module, addon, wanted = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
bpy.context.preferences.extensions.repos.new(
    name="Framesmith tests", module=repo_module, custom_directory=repo_dir, source="USER")
assert addon_utils.enable(addon, default_set=True) is not None
props = bpy.context.scene.framesmith
offered = []
for name in wanted:
    try:
        props.checkpoint_menu = name  # refused (TypeError) unless the menu offers the name
    except TypeError:
        continue
    offered.append(props.checkpoint)
print("MENU " + json.dumps(offered))
addon_utils.disable(addon, default_set=True)
"""


def fresh_blender_menu(names: tuple[str, ...]) -> list[str]:
    """Which of `names` the checkpoint menu offers in a new Blender process that shares this
    session's user folder (BLENDER_USER_RESOURCES), before any backend check."""
    repo = next(r for r in bpy.context.preferences.extensions.repos if r.module == REPO_MODULE)
    args = [sys.executable, "-c", textwrap.dedent(FRESH_BLENDER)]
    args += [repo.custom_directory, REPO_MODULE, ADDON, *names]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("MENU ")]
    assert done.returncode == 0 and lines, (
        done.returncode,
        done.stdout[-2000:],
        done.stderr[-2000:],
    )
    return json.loads(lines[-1][len("MENU ") :])
