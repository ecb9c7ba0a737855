"""Requests are built by one pure function from plain settings, and survive a JSON round trip."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace

import pytest

from client.request import (
    DiffusionOptions,
    InbetweenRequest,
    JobKind,
    RequestError,
    StyleReference,
    StylizeRequest,
    from_job,
    from_json,
    guide_frames,
)
from client.request_builder import ControlNetSetting, Settings, Shot, build_request

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
    assert set(request.inputs()) == {"beauty", "depth", "lineart", "vector"}  # fusion is on
    text2video = build_request("stylize", replace(STYLE, stylize_mode="text2video"), SHOT)
    assert set(text2video.inputs()) == {"depth", "lineart", "vector"}
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


STYLE_CHANGES = (
    {"prompt": "oil painting"}, {"negative_prompt": "dark"}, {"seed": 8}, {"steps": 5},
    {"guidance": 6.0}, {"strength": 0.5}, {"stylize_mode": "per_frame"},
    {"scheduler": "euler_a"}, {"chunk_size": 12}, {"overlap": 2}, {"temporal_fusion": False},
    {"fusion_strength": 0.3}, {"checkpoint": "toon"}, {"motion_adapter": "mm"},
    {"lora": "lines"}, {"controlnets": STYLE.controlnets[:1]},
)  # fmt: skip
INBETWEEN_CHANGES = ({"inbetween_method": "crossfade"}, {"on_twos": True}, {"flow_preset": "fast"})


@pytest.mark.parametrize(
    ("kind", "change"),
    [("stylize", c) for c in STYLE_CHANGES] + [("inbetween", c) for c in INBETWEEN_CHANGES],
    ids=lambda v: v if isinstance(v, str) else next(iter(v)),
)
def test_every_setting_changes_the_job_body(kind: str, change: dict) -> None:
    """Equal settings giving equal requests is only half of it: a builder that left a setting
    out would pass that too. Each setting, changed alone, changes what the backend is sent."""
    base = build_request(kind, STYLE, SHOT).job_body()
    assert build_request(kind, replace(STYLE, **change), SHOT).job_body() != base


@pytest.mark.parametrize(
    ("kind", "settings", "shot", "words"),
    [
        ("inbetween", Settings(), replace(SHOT, keyframes=(3,)), "at least two key frames"),
        ("inbetween", Settings(), replace(SHOT, keyframes=()), "found none"),
        ("inbetween", Settings(inbetween_method="morph"), SHOT, "use one of flow, crossfade"),
        ("inbetween", Settings(), replace(SHOT, width=10, height=10), "cross-fade"),
        (
            "inbetween",
            Settings(inbetween_method="diffusion"),
            replace(SHOT, width=60),
            "multiples of 8 \\(got 60×48\\)",
        ),
        ("inbetween", Settings(inbetween_method="diffusion", steps=0), SHOT, "steps"),
        ("inbetween", Settings(inbetween_method="diffusion", key_strength=5.0), SHOT, "key str"),
        ("inbetween", Settings(inbetween_method="diffusion", scheduler="x"), SHOT, "scheduler"),
        ("inbetween", Settings(), replace(SHOT, frames=()), "frame range is empty"),
        ("inbetween", Settings(), replace(SHOT, width=4), "render resolution"),
        ("stylize", Settings(prompt="   "), SHOT, "write a prompt"),
        ("stylize", replace(STYLE, strength=0.0), SHOT, "strength"),
        ("stylize", replace(STYLE, overlap=16, chunk_size=16), SHOT, "overlap"),
        ("stylize", replace(STYLE, scheduler="magic"), SHOT, "unknown scheduler"),
        ("stylize", replace(STYLE, fusion_strength=1.5), SHOT, "fusion strength"),
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


def test_render_assisted_asks_for_guide_passes_of_every_frame_between_keys() -> None:
    request = build_request("inbetween", Settings(inbetween_method="render"), SHOT)
    assert request.params() == {"method": "render", "on_twos": False, "flow_preset": "medium"}
    every = tuple(range(1, 9))
    assert request.inputs() == {"keyframe": (1, 4, 8), "vector": every, "depth": every}
    # an interval with nothing to make (4–8: only its end key is asked for) needs no passes
    short = build_request(
        "inbetween", Settings(inbetween_method="render"), replace(SHOT, frames=(1, 2, 3, 4, 8))
    )
    assert short.inputs()["vector"] == (1, 2, 3, 4) == short.inputs()["depth"]
    assert guide_frames((1, 4, 8), (1, 4, 8)) == ()  # keys only: nothing in between
    assert guide_frames((2, 5), (0, 1, 3, 9)) == (2, 3, 4, 5)
    # flow and diffusion need the keys alone
    assert build_request("inbetween", Settings(), SHOT).inputs() == {"keyframe": (1, 4, 8)}


DIFFUSION = replace(STYLE, inbetween_method="diffusion", steps=2, sparsectrl="", key_strength=0.8)


def test_diffusion_sends_the_shared_generator_settings_and_chosen_models_only() -> None:
    request = build_request("inbetween", DIFFUSION, SHOT)
    assert request.inputs() == {"keyframe": (1, 4, 8)}
    assert request.params()["diffusion"] == {
        "prompt": "ink wash painting",
        "negative_prompt": "blurry",
        "seed": 7,
        "steps": 2,
        "guidance": 7.5,
        "scheduler": "ddim",
        "conditioning_scale": 0.8,
        "clip_length": 16,
        "hold_keys": True,
    }
    chosen = replace(DIFFUSION, checkpoint="toon", motion_adapter="mm", sparsectrl="rgb")
    params = build_request("inbetween", chosen, SHOT).params()["diffusion"]
    assert (params["checkpoint"], params["motion_adapter"], params["sparsectrl"]) == (
        "toon",
        "mm",
        "rgb",
    )
    # the stylize-only settings (strength, LoRA) and an empty prompt do not stop it
    loose = replace(DIFFUSION, prompt="", strength=1.0, lora="lines")
    assert "lora" not in build_request("inbetween", loose, SHOT).params()["diffusion"]
    # other methods carry no diffusion options (the backend refuses them there)
    assert "diffusion" not in build_request("inbetween", STYLE, SHOT).params()


@pytest.mark.parametrize("method", ["render", "diffusion"])
def test_new_methods_round_trip_through_the_strip(method: str) -> None:
    request = build_request("inbetween", replace(DIFFUSION, inbetween_method=method), SHOT)
    text = request.to_json()
    assert from_json(text) == request and from_json(text).to_json() == text


def test_a_diffusion_job_as_the_backend_reports_it_comes_back_whole() -> None:
    """After start the backend pins its model choices into params.diffusion, with every default
    filled in: re-importing the job by id must give a request that reruns exactly that."""
    request = build_request("inbetween", DIFFUSION, SHOT)
    pinned = {
        **request.params()["diffusion"],
        "checkpoint": "tiny-sd",
        "motion_adapter": "tiny-motion",
        "sparsectrl": "tiny-sparsectrl-rgb",
        "clip_length": 12,
    }
    job = {**request.job_body(), "params": {**request.params(), "diffusion": pinned}}
    again = from_job(job)
    assert isinstance(again, InbetweenRequest) and again.diffusion is not None
    assert again.diffusion == replace(
        request.diffusion,
        checkpoint="tiny-sd",
        motion_adapter="tiny-motion",
        sparsectrl="tiny-sparsectrl-rgb",
        clip_length=12,
    )
    assert again.params()["diffusion"] == pinned
    assert from_json(again.to_json()) == again
    # a job sent without options (the backend's defaults) stays without them
    bare = {**job, "params": {"method": "diffusion", "on_twos": False, "diffusion": None}}
    assert from_job(bare).params() == {"method": "diffusion", "on_twos": False,
                                       "flow_preset": "medium"}  # fmt: skip
    # backend nulls are its defaults
    assert DiffusionOptions.from_json({"checkpoint": None, "seed": 3}) == DiffusionOptions(seed=3)
    with pytest.raises(RequestError, match="unknown fields"):
        DiffusionOptions.from_json({"lora": "x"})


@pytest.mark.parametrize("mode", ["video2video", "text2video"])
def test_temporal_fusion_uploads_vector_and_depth_of_every_frame_in_video_modes(
    mode: str,
) -> None:
    lines_only = (ControlNetSetting("lineart", enabled=True),)  # no depth ControlNet
    settings = replace(STYLE, stylize_mode=mode, controlnets=lines_only, fusion_strength=0.3)
    request = build_request("stylize", settings, SHOT)
    assert request.uses_fusion
    assert request.params()["temporal_fusion"] is True
    assert request.params()["fusion_strength"] == 0.3
    every = tuple(range(1, 9))
    assert request.inputs()["vector"] == every == request.inputs()["depth"]
    # depth is uploaded for occlusion only: no ControlNet reads it
    assert [c["pass"] for c in request.params()["controlnets"]] == ["lineart"]

    off = build_request("stylize", replace(settings, temporal_fusion=False), SHOT)
    assert not off.uses_fusion and off.params()["temporal_fusion"] is False
    assert "vector" not in off.inputs() and "depth" not in off.inputs()


def test_per_frame_stylize_needs_no_motion_passes() -> None:
    request = build_request("stylize", replace(STYLE, stylize_mode="per_frame"), SHOT)
    assert not request.uses_fusion
    assert set(request.inputs()) == {"beauty", "depth", "lineart"}  # depth: its ControlNet


@pytest.mark.parametrize("fusion", [True, False])
def test_temporal_fusion_round_trips_through_the_strip_and_the_job(fusion: bool) -> None:
    settings = replace(STYLE, temporal_fusion=fusion, fusion_strength=0.25)
    request = build_request("stylize", settings, SHOT)
    assert from_json(request.to_json()) == request
    # the backend reports its params with its defaults filled in (fusion_end among them)
    job = {**request.job_body(), "params": {**request.params(), "fusion_end": 0.6}}
    again = from_job(job)
    assert again == request
    assert isinstance(again, StylizeRequest) and again.temporal_fusion is fusion
    # a request stored before fusion existed reads with the backend's default: on
    old = json.loads(request.to_json())
    del old["temporal_fusion"], old["fusion_strength"]
    assert from_json(json.dumps(old)) == replace(request, temporal_fusion=True, fusion_strength=0.5)


DIGEST = "ab" * 32
REFERENCE = replace(
    STYLE,
    use_reference=True,
    reference_name="watercolour.png",
    reference_sha256=DIGEST,
    ip_adapter_scale=0.75,
)


def test_a_style_reference_is_uploaded_once_and_named_not_sent_as_pixels() -> None:
    request = build_request("stylize", REFERENCE, SHOT)
    assert isinstance(request, StylizeRequest)
    assert request.reference == StyleReference("watercolour.png", DIGEST, 0.75)
    assert request.inputs()["reference"] == (0,)  # frame 0, once per job
    params = request.params()
    assert params["style_reference"] is True and params["ip_adapter_scale"] == 0.75
    assert "ip_adapter" not in params and "image_encoder" not in params  # the backend's choice
    # the name and the hash stay in the stored request: the backend would refuse them
    assert not {"reference", "name", "sha256"} & set(params)
    chosen = replace(REFERENCE, ip_adapter="ipa", image_encoder="enc")
    params = build_request("stylize", chosen, SHOT).params()
    assert (params["ip_adapter"], params["image_encoder"]) == ("ipa", "enc")
    # turned off, the image chosen in the settings is neither sent nor named
    off = build_request("stylize", replace(REFERENCE, use_reference=False), SHOT)
    assert off.reference is None and "reference" not in off.inputs()
    assert "style_reference" not in off.params()


def test_a_style_reference_round_trips_through_the_strip_and_the_job() -> None:
    request = build_request("stylize", replace(REFERENCE, ip_adapter="ipa"), SHOT)
    text = request.to_json()
    stored = json.loads(text)["reference"]
    assert stored == {"name": "watercolour.png", "sha256": DIGEST, "scale": 0.75,
                      "ip_adapter": "ipa", "image_encoder": ""}  # fmt: skip
    assert from_json(text) == request and from_json(text).to_json() == text
    # as the backend reports the job: models pinned; it never knew the image's name or hash
    job = {**request.job_body(), "params": {**request.params(), "image_encoder": "enc"}}
    again = from_job(job)
    assert isinstance(again, StylizeRequest)
    assert again.reference == StyleReference("", "", 0.75, "ipa", "enc")
    assert again.inputs()["reference"] == (0,)
    assert from_json(again.to_json()) == again
    # a job without one, reported with the backend's defaults filled in, has none
    plain = build_request("stylize", STYLE, SHOT)
    defaults = {"style_reference": False, "ip_adapter": None, "image_encoder": None,
                "ip_adapter_scale": 0.6}  # fmt: skip
    assert from_job({**plain.job_body(), "params": {**plain.params(), **defaults}}) == plain
    # a request stored before references existed reads as one without
    old = json.loads(plain.to_json())
    del old["reference"]
    assert from_json(json.dumps(old)) == plain
    with pytest.raises(RequestError, match="unknown fields"):
        from_json(json.dumps({**json.loads(text), "reference": {"pixels": [1, 2]}}))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"reference_name": "  "}, "choose a style reference image"),
        ({"reference_sha256": "not-a-hash"}, "64 hex digits"),
        ({"ip_adapter_scale": 2.5}, "reference strength must be between 0 and 2"),
    ],
)
def test_a_bad_style_reference_says_what_to_change(changes: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        build_request("stylize", replace(REFERENCE, **changes), SHOT)


def test_a_style_reference_may_be_checked_before_its_file_is_read() -> None:
    """The hash is added by the operator once the file is on disk; a check before that (e.g.
    which models are missing) builds the same job without it."""
    early = build_request("stylize", replace(REFERENCE, reference_sha256=""), SHOT)
    assert early.reference is not None and early.reference.sha256 == ""
    assert early.params() == build_request("stylize", REFERENCE, SHOT).params()
