"""POST /v1/jobs/check: what creating and starting a job would refuse, asked before anything is
rendered or uploaded, in the same words, and without creating anything."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.backend.server import Backend

NETS = [{"pass": "depth"}, {"pass": "lineart"}]
STYLIZE = {"prompt": "ink", "steps": 2, "controlnets": NETS}


def body(kind: str = "stylize", **params: object) -> dict:
    out: dict = {"kind": kind, "frames": [0, 1, 2], "width": 64, "height": 64}
    if kind == "stylize":
        out["params"] = {**STYLIZE, **params}
    else:
        out["keyframes"], out["params"] = [0, 2], dict(params)
    return out


@pytest.fixture(scope="module")
def with_models(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp("check")
    b = Backend(data=root / "data", models=tiny_models).start()
    yield b
    b.stop()


def check(c: httpx.Client, payload: dict) -> dict:
    r = c.post("/v1/jobs/check", json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def job_ids(c: httpx.Client) -> list[str]:
    return [j["id"] for j in c.get("/v1/jobs").raise_for_status().json()]


def test_missing_models_are_named_as_start_names_them(shared_backend: Backend) -> None:
    """An empty models folder: the check says what start would say after every upload."""
    with shared_backend.client() as c:
        before = job_ids(c)
        answer = check(c, body(checkpoint="sd15-nope"))
        assert answer["ok"] is False and len(answer["problems"]) == 1
        sentence = answer["problems"][0]
        assert sentence.startswith("models missing: ") and "sd15-nope" in sentence
        assert f"{shared_backend.models}/checkpoints/" in sentence
        assert check(c, body("inbetween", method="flow")) == {"ok": True, "problems": []}
        assert job_ids(c) == before  # nothing was created


def test_a_request_the_backend_refuses_is_a_problem_in_its_words(shared_backend: Backend) -> None:
    with shared_backend.client() as c:
        created = c.post("/v1/jobs", json=body(steps=0))
        assert created.status_code == 422
        answer = check(c, body(steps=0))
        assert answer == {"ok": False, "problems": [created.json()["detail"]]}
        unknown = check(c, {**body(), "kind": "paint"})
        assert not unknown["ok"] and "unknown job kind 'paint'" in unknown["problems"][0]
        repeated = check(c, {**body(), "frames": [2, 1]})
        assert repeated["problems"] == ["frames must be ascending without repeats"]
        # a body that is not a job at all is the same 422 the create route gives
        broken = c.post("/v1/jobs/check", json={"kind": "stylize"})
        assert broken.status_code == 422 and "frames" in broken.json()["detail"]


def test_installed_models_pass(with_models: Backend) -> None:
    with with_models.client() as c:
        assert check(c, body()) == {"ok": True, "problems": []}
        assert check(c, body(checkpoint="tiny-sd15-ldm"))["ok"] is True
        wrong = check(c, body(checkpoint="controlnet/tiny-controlnet-depth"))
        assert not wrong["ok"] and "a ControlNet, not a checkpoint" in wrong["problems"][0]


def test_models_installed_after_a_refusal_are_seen(
    make_backend: Callable[..., Backend], tiny_models: Path, tmp_path: Path
) -> None:
    """The user reads the refusal, puts the models in the folder and runs the take again."""
    models = tmp_path / "later"
    b = make_backend("later", models=models).start()
    with b.client() as c:
        assert not check(c, body())["ok"]
        shutil.copytree(tiny_models, models, dirs_exist_ok=True)
        assert check(c, body()) == {"ok": True, "problems": []}
