"""Requests are built by one pure function from plain settings, and survive a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace

import pytest

from client.request import (
    ControlNetSetting,
    InbetweenRequest,
    JobKind,
    RequestError,
    Settings,
    Shot,
    StylizeRequest,
    build_request,
    from_json,
)

SHOT = Shot(width=64, height=48, frames=tuple(range(1, 9)), keyframes=(1, 4, 8))
STYLE = Settings(
    prompt="  ink wash painting ",
    negative_prompt="blurry",
    seed=7,
    steps=4,
    controlnets=(
        ControlNetSetting("depth", enabled=True, weight=0.8),
        ControlNetSetting("normal", enabled=False),
        ControlNetSetting("lineart", enabled=True, weight=0.5, start=0.0, end=0.6),
    ),
)


def test_inbetween_request_is_the_backends_job_body() -> None:
    request = build_request("inbetween", Settings(on_twos=True), SHOT)
    assert isinstance(request, InbetweenRequest)
    assert request.job_body() == {
        "kind": "inbetween",
        "frames": [1, 2, 3, 4, 5, 6, 7, 8],
        "keyframes": [1, 4, 8],
        "width": 64,
        "height": 48,
        "params": {"method": "flow", "on_twos": True, "flow_preset": "medium"},
    }
    assert request.inputs() == {"keyframe": (1, 4, 8)}


def test_stylize_request_keeps_enabled_controlnets_and_trims_the_prompt() -> None:
    request = build_request(JobKind.STYLIZE, STYLE, SHOT)
    assert isinstance(request, StylizeRequest)
    params = request.job_body()["params"]
    assert params["prompt"] == "ink wash painting"
    assert params["controlnets"] == [
        {"pass": "depth", "model": None, "scale": 0.8, "start": 0.0, "end": 1.0},
        {"pass": "lineart", "model": None, "scale": 0.5, "start": 0.0, "end": 0.6},
    ]
    assert "keyframes" not in request.job_body()
    assert set(request.inputs()) == {"beauty", "depth", "lineart"}
    text2video = build_request("stylize", replace(STYLE, stylize_mode="text2video"), SHOT)
    assert set(text2video.inputs()) == {"depth", "lineart"}
    per_frame = replace(STYLE, stylize_mode="per_frame", strength=1.0)
    assert set(build_request("stylize", per_frame, SHOT).inputs()) == {"depth", "lineart"}


@pytest.mark.parametrize("kind", ["inbetween", "stylize"])
def test_json_round_trip_gives_the_same_request(kind: str) -> None:
    request = build_request(kind, STYLE, SHOT)
    text = request.to_json()
    assert json.loads(text)["kind"] == kind
    again = from_json(text)
    assert again == request
    assert again.to_json() == text
    with pytest.raises(FrozenInstanceError):
        request.width = 1  # type: ignore[misc]


def test_normals_carry_the_camera_rotation_only_when_used() -> None:
    turn = ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    shot = replace(SHOT, world_to_camera=turn)
    assert "world_to_camera" not in build_request("stylize", STYLE, shot).params()
    with_normals = replace(STYLE, controlnets=(ControlNetSetting("normal", enabled=True),))
    request = build_request("stylize", with_normals, shot)
    assert request.params()["world_to_camera"] == [list(row) for row in turn]
    assert from_json(request.to_json()) == request
    with pytest.raises(RequestError, match="3×3"):
        build_request("stylize", with_normals, replace(SHOT, world_to_camera=((1.0, 0.0),)))


def test_same_settings_same_request() -> None:
    assert build_request("stylize", STYLE, SHOT) == build_request("stylize", STYLE, SHOT)


@pytest.mark.parametrize(
    ("kind", "settings", "shot", "words"),
    [
        ("inbetween", Settings(), replace(SHOT, keyframes=(3,)), "at least two key frames"),
        ("inbetween", Settings(), replace(SHOT, keyframes=()), "found none"),
        ("inbetween", Settings(inbetween_method="morph"), SHOT, "use one of flow, crossfade"),
        ("inbetween", Settings(), replace(SHOT, width=10, height=10), "cross-fade"),
        ("inbetween", Settings(), replace(SHOT, frames=()), "frame range is empty"),
        ("inbetween", Settings(), replace(SHOT, width=4), "render resolution"),
        ("stylize", Settings(prompt="   "), SHOT, "write a prompt"),
        ("stylize", replace(STYLE, strength=0.0), SHOT, "strength"),
        ("stylize", replace(STYLE, overlap=16, chunk_size=16), SHOT, "overlap"),
        ("stylize", replace(STYLE, scheduler="magic"), SHOT, "unknown scheduler"),
        ("stylize", replace(STYLE, stylize_mode="text2video", controlnets=()), SHOT, "ControlNet"),
        (
            "stylize",
            replace(STYLE, stylize_mode="per_frame", strength=1.0, controlnets=()),
            SHOT,
            "enable at least one pass",
        ),
        (
            "stylize",
            replace(STYLE, controlnets=(ControlNetSetting("vector", enabled=True),)),
            SHOT,
            "vector",
        ),
        ("paint", Settings(), SHOT, "unknown job kind"),
    ],
)
def test_bad_settings_say_what_to_change(
    kind: str, settings: Settings, shot: Shot, words: str
) -> None:
    with pytest.raises(RequestError, match=words):
        build_request(kind, settings, shot)


def test_stored_requests_are_checked_when_read() -> None:
    good = json.loads(build_request("inbetween", Settings(), SHOT).to_json())
    with pytest.raises(RequestError, match="not JSON"):
        from_json("{nope")
    with pytest.raises(RequestError, match="schema"):
        from_json(json.dumps({**good, "schema": 99}))
    with pytest.raises(RequestError, match="unknown fields: colour"):
        from_json(json.dumps({**good, "colour": "red"}))
    with pytest.raises(RequestError, match="ascending"):
        from_json(json.dumps({**good, "frames": [3, 2, 1]}))


def test_ui_floats_are_stored_as_typed() -> None:
    import struct

    def float32(x: float) -> float:  # what a Blender FloatProperty hands back
        return struct.unpack("f", struct.pack("f", x))[0]

    assert float32(0.6) != 0.6
    request = build_request(
        "stylize", replace(STYLE, strength=float32(0.6), guidance=float32(7.3)), SHOT
    )
    body = json.loads(request.to_json())
    assert body["strength"] == 0.6 and body["guidance"] == 7.3
