"""The add-on's requests are what the backend's own parameter models accept, field for field."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from backend.jobs import JobSpec, Pass
from backend.pipelines.inbetween import InbetweenPipeline
from backend.pipelines.inbetween_guided import guide_frames as backend_guide_frames
from backend.pipelines.inbetween_params import DiffusionParams, InbetweenParams
from backend.pipelines.stylize import StylizePipeline
from backend.pipelines.stylize_params import StylizeParams
from client.request import (
    DiffusionOptions,
    InbetweenMethod,
    Scheduler,
    StylizeMode,
    from_job,
    guide_frames,
)
from client.request_builder import ControlNetSetting, Settings, Shot, build_request

SHOT = Shot(64, 48, tuple(range(1, 17)), (1, 16), ((1, 0, 0), (0, 0, 1), (0, -1, 0)))
NETS = (
    ControlNetSetting("depth", enabled=True, weight=0.7),
    ControlNetSetting("normal", enabled=True, start=0.1, end=0.9, model="cn-normal"),
    ControlNetSetting("lineart", enabled=True),
)


@pytest.mark.parametrize("mode", list(StylizeMode))
@pytest.mark.parametrize("scheduler", list(Scheduler))
def test_every_stylize_request_validates_in_the_backend(mode: str, scheduler: str) -> None:
    settings = Settings(
        prompt="oil paint", stylize_mode=mode, scheduler=scheduler, controlnets=NETS
    )
    request = build_request("stylize", settings, SHOT)
    params = StylizeParams.model_validate(request.params())
    dumped = params.model_dump(mode="json")
    assert {k: dumped[k] for k in request.params()} == request.params()  # nothing lost or changed
    assert params.uses_beauty == request.uses_beauty
    assert [c.pass_ for c in params.controlnets] == ["depth", "normal", "lineart"]
    assert params.controlnets[1].model == "cn-normal" and params.controlnets[0].model is None


@pytest.mark.parametrize("method", list(InbetweenMethod))
def test_every_inbetween_request_validates_in_the_backend(method: str) -> None:
    """The backend stores params as its model dumps them, its defaults filled in (a flow job's
    `diffusion: None` among them): what the add-on sent must come back unchanged, and the stored
    form must give back the same request when a take is re-imported by job id."""
    settings = Settings(prompt="ink", steps=3, seed=9, inbetween_method=method, key_strength=0.5)
    request = build_request("inbetween", settings, SHOT)
    params = InbetweenParams.model_validate(request.params())
    stored = params.model_dump(mode="json")
    sent = request.params()
    assert {k: stored[k] for k in sent if k != "diffusion"} == {
        k: v for k, v in sent.items() if k != "diffusion"
    }
    if method == InbetweenMethod.DIFFUSION:
        assert {k: stored["diffusion"][k] for k in sent["diffusion"]} == sent["diffusion"]
    else:
        assert "diffusion" not in sent and stored["diffusion"] is None
    job = {**request.job_body(), "params": stored}
    assert from_job(job) == request


def test_render_assisted_uploads_exactly_what_the_backend_requires() -> None:
    for frames in (tuple(range(1, 17)), (1, 2, 16), (1, 16), (0, 3, 20)):
        shot = replace(SHOT, frames=frames, keyframes=(1, 5, 16))
        request = build_request("inbetween", Settings(inbetween_method="render"), shot)
        spec = JobSpec("j", "inbetween", 64, 48, frames, (1, 5, 16), request.params())
        required = InbetweenPipeline().required_inputs(spec)
        assert {p.value: tuple(f) for p, f in required.items()} == request.inputs()
        assert guide_frames((1, 5, 16), frames) == backend_guide_frames((1, 5, 16), frames)
    assert Pass.VECTOR.value == "vector" and Pass.DEPTH.value == "depth"


def test_diffusion_defaults_are_the_backends() -> None:
    """Same fields, same defaults ("" here is the backend's "" or None: let it choose)."""
    backend = DiffusionParams().model_dump(mode="json")
    ours = asdict(DiffusionOptions())
    assert ours.keys() == backend.keys()
    assert {k: v if v != "" else None for k, v in ours.items()} == {
        k: v if v != "" else None for k, v in backend.items()
    }


@pytest.mark.parametrize("mode", list(StylizeMode))
@pytest.mark.parametrize("fusion", [True, False])
@pytest.mark.parametrize("nets", [NETS, NETS[1:]], ids=["depth-net", "no-depth-net"])
def test_stylize_uploads_what_the_backend_requires_and_accepts(
    mode: str, fusion: bool, nets: tuple[ControlNetSetting, ...]
) -> None:
    """Every required pass is uploaded, nothing the backend would refuse is, and the Vector and
    Depth passes go up exactly when the backend's own params say fusion runs (video modes)."""
    settings = Settings(prompt="ink", stylize_mode=mode, controlnets=nets, temporal_fusion=fusion)
    request = build_request("stylize", settings, SHOT)
    spec = JobSpec("j", "stylize", 64, 48, request.frames, (), request.params())
    pipeline = StylizePipeline()
    required = {p.value: f for p, f in pipeline.required_inputs(spec).items()}
    accepted = {p.value: f for p, f in pipeline.accepted_inputs(spec).items()}
    sent = request.inputs()
    assert {k: sent[k] for k in required} == required
    assert all(set(frames) <= set(accepted[name]) for name, frames in sent.items())
    params = StylizeParams.model_validate(request.params())
    fuses = params.temporal_fusion and params.uses_motion
    assert params.temporal_fusion is fusion and request.uses_fusion is fuses
    assert ("vector" in sent) is fuses
    if fuses:
        assert sent["vector"] == sent["depth"] == request.frames
    else:  # depth only for its ControlNet
        assert ("depth" in sent) is (nets is NETS)
    assert from_job({**request.job_body(), "params": params.model_dump(mode="json")}) == request


def test_fusion_defaults_are_the_backends() -> None:
    backend = StylizeParams()
    ours = Settings()
    assert (ours.temporal_fusion, ours.fusion_strength) == (
        backend.temporal_fusion,
        backend.fusion_strength,
    )
