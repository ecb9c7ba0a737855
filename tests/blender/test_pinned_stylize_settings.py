"""Pins: what the Stylize panel's prompt fields hold reaches the request it sends.

The panel's negative prompt and seed go scene property -> to_settings -> build_request; a
to_settings that dropped one would build a valid request the backend runs happily without it.
"""

from __future__ import annotations

import sys
from types import ModuleType

import bpy

from client.request_builder import Shot, build_request
from tests.blender.support import ADDON


def test_the_negative_prompt_and_the_seed_reach_the_stylize_request(addon: ModuleType) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    props = bpy.context.scene.framesmith
    props.prompt = "ink wash painting"
    props.negative_prompt = "blurry, extra fingers"
    props.seed = 4242
    properties = sys.modules[f"{ADDON}.properties"]
    settings = properties.to_settings(props)
    assert (settings.negative_prompt, settings.seed) == ("blurry, extra fingers", 4242)
    params = build_request("stylize", settings, Shot(64, 48, (1, 2))).params()
    assert params["negative_prompt"] == "blurry, extra fingers"
    assert params["seed"] == 4242
