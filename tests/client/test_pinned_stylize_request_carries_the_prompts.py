"""Pins: the stylize request carries the negative prompt and the seed to the backend.

The request tests compare a request with its own JSON round trip, which a request that lost
the negative prompt passes just as well. Here the values are looked for where the backend reads
them: the job body's params, the job the real backend stores, and the request re-imported from
that job.
"""

from __future__ import annotations

from client.request import JobKind, from_job, from_json
from client.request_builder import Settings, Shot, build_request
from tests.backend.server import Backend

SHOT = Shot(width=64, height=48, frames=(1, 2, 3))
SETTINGS = Settings(
    prompt="ink wash painting",
    negative_prompt="  blurry, extra fingers ",
    seed=4242,
    stylize_mode="video2video",
)


def test_the_job_body_carries_the_negative_prompt_and_the_seed() -> None:
    request = build_request(JobKind.STYLIZE, SETTINGS, SHOT)
    params = request.job_body()["params"]
    assert params["negative_prompt"] == "blurry, extra fingers"
    assert params["seed"] == 4242
    assert from_json(request.to_json()).params()["negative_prompt"] == "blurry, extra fingers"


def test_the_backend_stores_them_and_they_come_back_with_the_job(
    shared_backend: Backend,
) -> None:
    request = build_request(JobKind.STYLIZE, SETTINGS, SHOT)
    with shared_backend.client() as c:
        r = c.post("/v1/jobs", json=request.job_body())
        assert r.status_code == 201, r.text
        job = c.get(f"/v1/jobs/{r.json()['id']}").raise_for_status().json()
    assert job["params"]["negative_prompt"] == "blurry, extra fingers"
    assert job["params"]["seed"] == 4242
    again = from_job(job)
    assert again.params()["negative_prompt"] == "blurry, extra fingers"
    assert again.params()["seed"] == 4242
