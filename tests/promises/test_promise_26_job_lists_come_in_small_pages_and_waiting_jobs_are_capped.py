"""Promise 26: job lists come in small pages, and jobs waiting for inputs are capped.

`GET /v1/jobs` answers at most about a megabyte of JSON per page whatever the jobs hold (here
twelve jobs of 20,000 frames), newest first; the `X-Next-Cursor` header leads through every job
exactly once. At most `--max-awaiting` jobs wait for inputs: past it, the one idle longest (no
new input) expires with a sentence, and the jobs still receiving inputs are kept.
"""

from __future__ import annotations

import time

from backend.api.job_routes import NEXT_CURSOR, PAGE_BYTES
from tests.backend.images import png_bytes
from tests.backend.server import Backend
from tests.promises.support import H, W, square_keys

FRAMES = 20_000
JOBS = 12


def big_job(c, last: int = FRAMES - 1) -> str:
    body = {"kind": "inbetween", "frames": list(range(last + 1)), "keyframes": [0, last],
            "width": W, "height": H, "params": {"method": "crossfade"}}  # fmt: skip
    r = c.post("/v1/jobs", json=body)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_the_job_list_is_paged_by_size(make_backend) -> None:
    b: Backend = make_backend().start()
    with b.client() as c:
        made = [big_job(c) for _ in range(JOBS)]
        seen: list[str] = []
        cursor = None
        pages = 0
        started = time.monotonic()
        while True:
            r = c.get("/v1/jobs", params={} if cursor is None else {"cursor": cursor})
            assert r.status_code == 200, r.text
            one_job = max(len(r.content) // max(len(r.json()), 1), 1)
            assert len(r.content) <= PAGE_BYTES + one_job, len(r.content)
            seen += [j["id"] for j in r.json()]
            pages += 1
            cursor = r.headers.get(NEXT_CURSOR)
            if cursor is None:
                break
        took = time.monotonic() - started
    assert seen == made[::-1], "every job once, newest first"
    assert pages > 1
    assert took < 20, f"walking {JOBS} jobs took {took:.1f} s"


def test_the_job_idle_longest_expires_past_the_cap(make_backend) -> None:
    b: Backend = make_backend(extra_args=["--max-awaiting", "3"]).start()
    keys = square_keys({0: 4.0, 8: 36.0})
    with b.client() as c:
        first, second, third = (big_job(c, 8) for _ in range(3))
        up = c.put(f"/v1/jobs/{first}/inputs/keyframe/0", content=png_bytes(keys[0]))
        assert up.status_code == 200  # the first job is receiving inputs: not idle
        fourth = big_job(c, 8)
        states = {j: c.get(f"/v1/jobs/{j}").json() for j in (first, second, third, fourth)}
        assert states[second]["state"] == "failed", states[second]
        assert "expired" in states[second]["error"] and "create it again" in states[second]["error"]
        assert [states[j]["state"] for j in (first, third, fourth)] == ["awaiting_inputs"] * 3
        late = c.put(f"/v1/jobs/{second}/inputs/keyframe/0", content=png_bytes(keys[0]))
        assert late.status_code == 409 and "inputs are closed" in late.json()["detail"]
