"""Checkpoint / motion adapter / LoRA menus: filled from the backend's model listing when the
backend is checked (never while drawing), stored in the .blend by name, sent with the request."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import bpy

from client.http import BackendClient
from client.request import Shot, build_request
from tests.blender.support import ADDON


def test_model_menus_list_the_backend_models_and_reach_the_job(
    shot: Any, prefs: Any, tiny_backend: dict, runtime: ModuleType, monkeypatch
) -> None:
    monkeypatch.setattr(runtime, "_models", runtime.model_choices())  # the check below fills it
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    properties = sys.modules[f"{ADDON}.properties"]
    props = shot.framesmith
    assert props.checkpoint_menu == "DEFAULT" and props.checkpoint == ""

    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    choices = runtime.model_choices()
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
