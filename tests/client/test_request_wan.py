"""The engine choice in requests: stylize on Wan2.1-VACE (params.engine, params.vace) and
diffusion in-betweens on Wan2.1-VACE (params.diffusion.engine, control), built from the plain
settings, accepted field for field by the backend's own params models, uploading exactly what the
backend requires, and back from the strip and from the backend's report of the job. AnimateDiff
and SparseCtrl jobs are sent exactly as before engines existed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from backend.jobs import JobSpec
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_params import InbetweenParams
from backend.pipelines.stylize import StylizePipeline
from backend.pipelines.stylize_params import StylizeParams
from client.backend import ModelChoices
from client.request import (
    DiffusionOptions,
    InbetweenRequest,
    RequestError,
    StyleReference,
    StylizeRequest,
    VaceOptions,
    from_job,
    from_json,
)
from client.request_builder import ControlNetSetting, Settings, Shot, build_request

SHOT = Shot(width=64, height=48, frames=tuple(range(1, 9)), keyframes=(1, 4, 8))
EVERY = tuple(range(1, 9))
# AnimateDiff settings that Wan must not send (and the backend would refuse there)
ANIMATEDIFF = dict(
    checkpoint="toon", motion_adapter="mm", lora="lines", ip_adapter="ipa", image_encoder="enc",
    stylize_mode="text2video", strength=0.3, scheduler="lcm", temporal_fusion=True,
    controlnets=(ControlNetSetting("normal", enabled=True),), sparsectrl="rgb",
)  # fmt: skip
WAN = Settings(
    prompt=" a watercolour cube ",
    negative_prompt="blurry",
    seed=4,
    steps=3,
    guidance=5.0,
    stylize_engine="wan_vace",
    vace_control="depth",
    vace_conditioning_scale=0.8,
    inbetween_method="diffusion",
    inbetween_engine="wan_vace",
    inbetween_control="depth",
    **ANIMATEDIFF,
)


def test_a_wan_stylize_sends_its_engine_and_settings_only() -> None:
    request = build_request("stylize", WAN, SHOT)
    assert isinstance(request, StylizeRequest) and request.uses_wan
    assert request.job_body()["params"] == {
        "engine": "wan_vace",
        "vace": {"control": "depth", "conditioning_scale": 0.8, "window": 81, "overlap": 5},
        "prompt": "a watercolour cube",
        "negative_prompt": "blurry",
        "seed": 4,
        "steps": 3,
        "guidance": 5.0,
    }
    assert request.inputs() == {"depth": EVERY}  # no beauty, no ControlNet, no Vector
    assert not request.uses_fusion
    # the AnimateDiff settings change nothing; the model is sent once chosen
    assert build_request("stylize", replace(WAN, **{k: v for k, v in Settings().__dict__.items()
                                                    if k in ANIMATEDIFF}), SHOT) == request  # fmt: skip
    chosen = build_request("stylize", replace(WAN, wan_vace="wan/vace-14b"), SHOT)
    assert chosen.params()["vace"]["model"] == "wan/vace-14b"


@pytest.mark.parametrize(
    ("control", "passes"),
    [("depth", {"depth"}), ("lineart", {"lineart"}), ("luminance", {"beauty"}), ("none", set())],
)
def test_each_wan_control_uploads_its_pass_as_the_backend_requires(
    control: str, passes: set[str]
) -> None:
    settings = replace(WAN, vace_control=control, use_reference=True, reference_name="ref.png")
    request = build_request("stylize", settings, SHOT)
    assert set(request.inputs()) == passes | {"reference"}
    assert (
        request.params()["style_reference"] is True and "ip_adapter_scale" not in request.params()
    )
    spec = JobSpec("j", "stylize", 64, 48, request.frames, (), request.params())
    pipeline = StylizePipeline()
    pipeline.check_job(spec)
    required = {p.value: tuple(f) for p, f in pipeline.required_inputs(spec).items()}
    accepted = {p.value: set(f) for p, f in pipeline.accepted_inputs(spec).items()}
    assert required == request.inputs()
    assert all(set(f) <= accepted[p] for p, f in request.inputs().items())


def test_a_wan_stylize_comes_back_from_the_strip_and_from_the_job() -> None:
    settings = replace(WAN, use_reference=True, reference_name="ref.png",
                       reference_sha256="ab" * 32, wan_vace="wan/vace")  # fmt: skip
    request = build_request("stylize", settings, SHOT)
    text = request.to_json()
    assert from_json(text) == request and from_json(text).to_json() == text
    # the backend validates, fills in its defaults and pins the size it ran at
    params = StylizeParams.model_validate(request.params()).model_dump(mode="json")
    sent = request.params()
    assert {k: params[k] for k in sent if k != "vace"} == {k: v for k, v in sent.items()
                                                           if k != "vace"}  # fmt: skip
    assert {k: params["vace"][k] for k in sent["vace"]} == sent["vace"]
    params["vace"]["run_size"] = [832, 480]
    again = from_job({**request.job_body(), "params": params})
    assert isinstance(again, StylizeRequest) and again.vace is not None
    assert again.vace.run_size == (832, 480)
    assert again.reference == StyleReference()  # it never knew the image's name
    assert replace(again, reference=request.reference, vace=replace(again.vace, run_size=None)) \
        == request  # fmt: skip
    assert again.params() == request.params()  # a rerun sends the same job
    assert from_json(again.to_json()) == again


def test_animatediff_stylize_and_sparsectrl_in_betweens_are_sent_as_before() -> None:
    """Engines and the Wan settings leave these jobs' bodies as they were, key for key."""
    style = replace(WAN, stylize_engine="animatediff", inbetween_engine="sparsectrl",
                    inbetween_control="none")  # fmt: skip
    stylize = build_request("stylize", replace(style, temporal_fusion=False), SHOT)
    assert not {"engine", "vace"} & set(stylize.params())
    assert json.dumps(stylize.params()) == json.dumps({
        "prompt": "a watercolour cube", "negative_prompt": "blurry", "seed": 4, "steps": 3,
        "guidance": 5.0, "strength": 0.3, "mode": "text2video", "scheduler": "lcm",
        "controlnets": [{"pass": "normal", "model": None, "scale": 1.0, "start": 0.0,
                         "end": 1.0}],
        "chunk_size": 16, "overlap": 4, "temporal_fusion": False, "fusion_strength": 0.5,
        "checkpoint": "toon", "motion_adapter": "mm", "lora": {"name": "lines", "weight": 1.0},
    })  # fmt: skip
    inbetween = build_request("inbetween", style, SHOT)
    assert json.dumps(inbetween.params()["diffusion"]) == json.dumps({
        "prompt": "a watercolour cube", "negative_prompt": "blurry", "seed": 4, "steps": 3,
        "guidance": 5.0, "scheduler": "lcm", "checkpoint": "toon", "motion_adapter": "mm",
        "sparsectrl": "rgb", "conditioning_scale": 1.0, "clip_length": 16, "hold_keys": True,
    })  # fmt: skip
    assert inbetween.inputs() == {"keyframe": (1, 4, 8)}


def test_a_wan_in_between_sends_its_engine_and_uploads_the_guides_it_follows() -> None:
    request = build_request("inbetween", WAN, SHOT)
    assert isinstance(request, InbetweenRequest) and request.diffusion is not None
    assert request.params()["diffusion"] == {
        "prompt": "a watercolour cube",
        "negative_prompt": "blurry",
        "seed": 4,
        "steps": 3,
        "guidance": 5.0,
        "conditioning_scale": 0.8,
        "engine": "wan_vace",
        "control": "depth",
        "window": 81,
    }
    assert request.inputs() == {"keyframe": (1, 4, 8), "depth": EVERY}
    assert request.guide_passes == ("depth",)
    for control, passes in (("lineart", {"lineart"}), ("none", set())):
        other = build_request("inbetween", replace(WAN, inbetween_control=control), SHOT)
        assert set(other.inputs()) == {"keyframe"} | passes
    keys_only = build_request("inbetween", replace(WAN, inbetween_control="none"), SHOT)
    assert "control" not in keys_only.params()["diffusion"]
    chosen = build_request("inbetween", replace(WAN, wan_vace="wan/vace"), SHOT)
    assert chosen.params()["diffusion"]["wan_vace"] == "wan/vace"


@pytest.mark.parametrize("control", ["depth", "lineart", "none"])
@pytest.mark.parametrize("frames", [tuple(range(1, 9)), (1, 2, 8), (0, 3, 9)])
def test_a_wan_in_between_validates_and_uploads_what_the_backend_requires(
    control: str, frames: tuple[int, ...]
) -> None:
    shot = replace(SHOT, frames=frames)
    request = build_request("inbetween", replace(WAN, inbetween_control=control), shot)
    spec = JobSpec("j", "inbetween", 64, 48, frames, (1, 4, 8), request.params())
    InbetweenPipeline().check_job(spec)
    required = InbetweenPipeline().required_inputs(spec)
    assert {p.value: tuple(f) for p, f in required.items()} == request.inputs()
    stored = InbetweenParams.model_validate(request.params()).model_dump(mode="json")
    sent = request.params()["diffusion"]
    assert {k: stored["diffusion"][k] for k in sent} == sent
    stored["diffusion"] |= {"wan_vace": "wan/tiny", "run_size": [32, 32]}  # pinned at start
    again = from_job({**request.job_body(), "params": stored})
    assert isinstance(again, InbetweenRequest) and again.diffusion is not None
    assert again.diffusion == replace(request.diffusion, wan_vace="wan/tiny", run_size=(32, 32))
    assert again.inputs() == request.inputs()
    assert from_json(again.to_json()) == again


@pytest.mark.parametrize(
    ("kind", "changes", "words"),
    [
        ("stylize", {"stylize_engine": "sdxl"}, "unknown stylize engine 'sdxl'"),
        ("stylize", {"vace_control": "normal"}, "unknown Wan2.1-VACE control 'normal'"),
        ("stylize", {"vace_conditioning_scale": 5.0}, "control strength must be between 0 and 4"),
        ("stylize", {"prompt": " "}, "write a prompt"),
        ("inbetween", {"inbetween_engine": "rife"}, "unknown in-between engine 'rife'"),
        ("inbetween", {"inbetween_control": "normal"}, "unknown in-between control 'normal'"),
        ("inbetween", {"vace_conditioning_scale": -1.0}, "control strength"),
    ],
)
def test_bad_wan_settings_say_what_to_change(kind: str, changes: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        build_request(kind, replace(WAN, **changes), SHOT)


def test_wan_takes_any_size_from_16_pixels() -> None:
    odd = replace(SHOT, width=50, height=30)  # not multiples of 8: Wan runs at its own size
    assert build_request("stylize", WAN, odd).width == 50
    assert build_request("inbetween", WAN, odd).width == 50
    for kind in ("stylize", "inbetween"):
        with pytest.raises(RequestError, match="at least 16×16"):
            build_request(kind, WAN, replace(SHOT, width=12))


@pytest.mark.parametrize(
    "change",
    [{"stylize_engine": "animatediff"}, {"vace_control": "lineart"},
     {"vace_conditioning_scale": 0.5}, {"wan_vace": "wan/x"}, {"seed": 5}, {"steps": 4},
     {"guidance": 4.0}, {"prompt": "ink"}, {"negative_prompt": "dark"}],
    ids=lambda c: next(iter(c)),
)  # fmt: skip
def test_every_wan_stylize_setting_changes_the_job_body(change: dict) -> None:
    base = build_request("stylize", WAN, SHOT).job_body()
    assert build_request("stylize", replace(WAN, **change), SHOT).job_body() != base


@pytest.mark.parametrize(
    "change",
    [{"inbetween_engine": "sparsectrl"}, {"inbetween_control": "lineart"},
     {"vace_conditioning_scale": 0.5}, {"wan_vace": "wan/x"}, {"seed": 5}],
    ids=lambda c: next(iter(c)),
)  # fmt: skip
def test_every_wan_in_between_setting_changes_the_job_body(change: dict) -> None:
    base = build_request("inbetween", WAN, SHOT).job_body()
    assert build_request("inbetween", replace(WAN, **change), SHOT).job_body() != base


def test_stored_requests_from_before_engines_read_as_animatediff_and_sparsectrl() -> None:
    style = build_request("stylize", replace(WAN, stylize_engine="animatediff"), SHOT)
    old = json.loads(style.to_json())
    del old["engine"], old["vace"]
    assert from_json(json.dumps(old)) == style
    assert DiffusionOptions.from_json({"seed": 1}).engine == "sparsectrl"
    assert VaceOptions.from_json({"control": None}) == VaceOptions()


def test_the_model_listing_gives_the_wan_names_size_and_folder() -> None:
    listing = {
        "root": "/models",
        "layout": {"wan_vace": "wan/"},
        "installed": {"wan_vace": [{"name": "wan/vace-1.3b"}]},
        "engines": {"animatediff": {"working_size": 512}, "wan_vace": {"working_size": 480}},
    }
    choices = ModelChoices.from_listing(listing)
    assert choices.wan_vaces == ("wan/vace-1.3b",) and choices.wan_folder == "/models/wan/"
    assert (choices.working_size_for("animatediff"), choices.working_size_for("wan_vace")) == (
        512,
        480,
    )
    assert (
        "wan_vaces" in ModelChoices.name_kinds() and "wan_folder" not in ModelChoices.name_kinds()
    )
    bare = ModelChoices.from_listing({})
    assert (bare.working_size_for("wan_vace"), bare.wan_folder) == (480, "")
