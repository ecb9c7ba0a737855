"""Model names for the settings' menus come from the backend's /v1/models listing; a job's
pinned models come back into the request when it is re-imported by id."""

from __future__ import annotations

import json

from client.backend import ModelChoices
from client.request import SCHEMA, StylizeRequest, from_job
from client.request_builder import Settings, Shot, build_request


def test_choices_from_the_listing_by_kind() -> None:
    listing = {
        "installed": {
            "checkpoint": [{"name": "toon"}, {"name": "anime"}, {"name": "toon"}],
            "motion_adapter": [{"name": "mm-v3"}],
            "lora": [],
            "controlnet": [{"name": "depth"}],
        },
        "pipelines": {},
    }
    choices = ModelChoices.from_listing(listing)
    assert choices == ModelChoices(("anime", "toon"), ("mm-v3",), ())
    assert ModelChoices.from_listing(None) == ModelChoices()


def test_the_stylize_working_size_comes_from_the_backends_engines() -> None:
    listing = {"installed": {"ip_adapter": [{"name": "ip"}], "image_encoder": [{"name": "enc"}]},
               "engines": {"animatediff": {"working_size": 640}}}  # fmt: skip
    choices = ModelChoices.from_listing(listing)
    assert (choices.ip_adapters, choices.image_encoders) == (("ip",), ("enc",))
    assert choices.working_size == 640
    for bad in (None, {}, {"animatediff": {"working_size": "big"}},
                {"animatediff": {"working_size": True}}, {"animatediff": {"working_size": 10**6}}):  # fmt: skip
        assert ModelChoices.from_listing({"engines": bad}).working_size == 512  # SD1.5's


def test_chosen_models_go_into_params_and_come_back_from_the_job() -> None:
    settings = Settings(prompt="ink", checkpoint="toon", lora="lines", lora_weight=0.5)
    request = build_request("stylize", settings, Shot(64, 48, (1, 2)))
    params = request.params()
    assert params["checkpoint"] == "toon" and "motion_adapter" not in params
    assert params["lora"] == {"name": "lines", "weight": 0.5}

    # as the backend reports the job: its default motion adapter pinned, nothing left as None
    job = {"kind": "stylize", "width": 64, "height": 48, "frames": [1, 2],
           "params": {**params, "motion_adapter": "mm-v3", "controlnets": []}}  # fmt: skip
    again = from_job(job)
    assert isinstance(again, StylizeRequest)
    assert (again.checkpoint, again.motion_adapter) == ("toon", "mm-v3")
    assert (again.lora, again.lora_weight) == ("lines", 0.5)
    no_lora = from_job({**job, "params": {**job["params"], "lora": None}})
    assert no_lora.lora == "" and json.loads(no_lora.to_json())["schema"] == SCHEMA
