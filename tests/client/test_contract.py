"""The add-on's requests are what the backend's own parameter models accept, field for field."""

from __future__ import annotations

from dataclasses import replace

import pytest

from backend.pipelines.inbetween import InbetweenParams
from backend.pipelines.stylize_params import StylizeParams
from client.request import (
    ControlNetSetting,
    InbetweenMethod,
    Scheduler,
    Settings,
    Shot,
    StylizeMode,
    build_request,
)

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
    request = build_request("inbetween", replace(Settings(), inbetween_method=method), SHOT)
    params = InbetweenParams.model_validate(request.params())
    assert params.model_dump(mode="json") == request.params()
