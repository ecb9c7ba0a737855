"""Promise 14: re-submitting is idempotent.

The same Idempotency-Key with the same request gives the same job (also when sent at the same
moment from several threads, and after a restart) and no second job folder; the same key with a
different request is a 409. Re-uploading an input and re-starting a job leave one file per input
and one run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.backend.images import png_bytes
from tests.backend.server import Backend, wait_for
from tests.promises.support import H, W, file_facts, frame_files, square_keys

BODY = {"kind": "inbetween", "frames": [0, 1, 2, 3], "keyframes": [0, 3], "width": W, "height": H}


def job_dirs(b: Backend) -> set[str]:
    return {p.name for p in (b.data / "jobs").iterdir()}


def post(c: httpx.Client, key: str, body: dict = BODY) -> httpx.Response:
    return c.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})


def test_the_same_key_gives_the_same_job_and_no_duplicate_files(make_backend) -> None:
    b = make_backend().start()
    with b.client() as c:
        first = post(c, "take-7")
        assert first.status_code == 201
        job_id = first.json()["id"]
        again = post(c, "take-7")
        assert again.status_code == 200 and again.json()["id"] == job_id
        assert job_dirs(b) == {job_id}

        other = post(c, "take-7", {**BODY, "frames": [0, 1, 2, 3, 4], "keyframes": [0, 4]})
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
        assert job_dirs(b) == {job_id}

        def retry(_: int) -> httpx.Response:
            with b.client() as own:
                return post(own, "take-8")

        with ThreadPoolExecutor(8) as pool:  # a client retrying on several threads at once
            replies = list(pool.map(retry, range(8)))
        ids = {r.json()["id"] for r in replies}
        assert len(ids) == 1 and sorted(r.status_code for r in replies) == [200] * 7 + [201]
        assert job_dirs(b) == {job_id, *ids}

        fresh = post(c, "take-9")
        assert fresh.status_code == 201 and fresh.json()["id"] not in (job_id, *ids)
        r = c.post("/v1/jobs", json=BODY, headers={"Idempotency-Key": "k" * 201})
        assert r.status_code == 422
        listed = [j["id"] for j in c.get("/v1/jobs").json()]
        assert sorted(listed) == sorted({job_id, *ids, fresh.json()["id"]})

        # Re-uploading inputs and re-starting: one file per input, one run.
        keys = square_keys({0: 4.0, 3: 20.0})
        for _ in range(3):
            for f, img in keys.items():
                assert c.put(
                    f"/v1/jobs/{job_id}/inputs/keyframe/{f}", content=png_bytes(img)
                ).is_success
        inputs = b.data / "jobs" / job_id / "inputs" / "keyframe"
        assert sorted(p.name for p in inputs.iterdir()) == ["000000.png", "000003.png"]
        assert c.post(f"/v1/jobs/{job_id}/start").status_code == 202
        repeat = c.post(f"/v1/jobs/{job_id}/start")
        if repeat.status_code == 409:  # it finished in between: a finished job never restarts
            assert c.get(f"/v1/jobs/{job_id}").json()["state"] == "done"
        else:
            assert repeat.status_code in (200, 202)
            assert repeat.json()["state"] in ("queued", "running", "done")
        assert wait_for(c, job_id, {"done", "failed"})["state"] == "done"
        assert c.post(f"/v1/jobs/{job_id}/start").status_code == 409
        out = b.data / "jobs" / job_id / "outputs"
        facts = file_facts(out)
        assert [p.name for p in frame_files(out)] == sorted(facts) and len(facts) == 4

    b.kill9()
    b.start()
    with b.client() as c:
        after = post(c, "take-7")
        assert after.status_code == 200 and after.json()["id"] == job_id
        assert after.json()["state"] == "done"
    assert job_dirs(b) == {job_id, *ids, fresh.json()["id"]}
    assert file_facts(Path(out)) == facts
