"""Promise 29: log lines cannot be forged, strangers cannot keep the backend up, and a job is
started or deleted, never both.

A refused request whose path holds `%0A` (or any control character) is logged on one line,
the character escaped. Requests without the token do not count as activity: a backend with an
idle exit still exits while a stranger keeps knocking. A start and a delete of the same job at
the same moment: one of them wins, the other is refused.
"""

from __future__ import annotations

import re
import threading
import time

import httpx

from backend.worker import HOLD_ENV
from tests.backend.server import Backend
from tests.promises.support import create_inbetween, square_keys

FORGED = "2030-01-01 00:00:00,000 INFO framesmith.http: FORGED"
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def test_a_path_cannot_forge_a_log_line(make_backend) -> None:
    b: Backend = make_backend().start()
    with b.client(token=None) as c:
        r = c.get("/v1/jobs%0A" + FORGED.replace(" ", "%20") + "%0D%1B[2J")
        assert r.status_code == 401
    log = b.data / "logs" / "backend.log"
    deadline = time.monotonic() + 10
    while "FORGED" not in log.read_text():  # the line is written just after the answer
        assert time.monotonic() < deadline, "the refused request was not logged"
        time.sleep(0.02)  # polling the log, with a deadline
    lines = log.read_text().splitlines()
    assert not any(line.startswith(FORGED) for line in lines), "a request forged a log line"
    assert all(LINE_START.match(line) for line in lines), [
        line for line in lines if not LINE_START.match(line)
    ]
    assert any("\\n" + FORGED in line for line in lines), "the refused request was not logged"


def test_requests_without_the_token_do_not_keep_an_idle_backend_up(make_backend) -> None:
    b: Backend = make_backend(extra_args=["--idle-exit", "1"]).start()
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=b.url, timeout=2.0) as stranger:
        while b.proc.poll() is None:
            assert time.monotonic() < deadline, "a stranger kept the idle backend up"
            try:
                assert stranger.get("/v1/health").status_code == 401
            except httpx.TransportError:
                break  # it is closing
            time.sleep(0.1)  # knocking every 0.1 s: well inside the idle timeout
    assert b.proc.wait(20) == 0


def test_start_and_delete_of_one_job_never_both_succeed(make_backend) -> None:
    # The worker holds the first job it runs: a started job stays queued or running, so a
    # delete that also succeeded would have deleted a job in the queue.
    b: Backend = make_backend(env={HOLD_ENV: "1"}).start()
    keys = square_keys({0: 4.0, 2: 12.0})
    with b.client() as c:
        jobs = [create_inbetween(c, keys, range(3), params={"method": "crossfade"})["id"]
                for _ in range(20)]  # fmt: skip
    both = []
    for job_id in jobs:
        results = race(b, [("start", "POST", f"/v1/jobs/{job_id}/start"),
                           ("delete", "DELETE", f"/v1/jobs/{job_id}")])  # fmt: skip
        assert set(results.values()) <= {200, 202, 404, 409}, results
        if results["start"] == 202 and results["delete"] == 200:
            both.append(job_id)
    assert both == [], f"{len(both)} of {len(jobs)} jobs were both started and deleted"
    assert b.proc.poll() is None


def race(b: Backend, calls: list[tuple[str, str, str]]) -> dict[str, int]:
    """The calls at the same moment, each on its own connection; their status codes."""
    results: dict[str, int] = {}
    gate = threading.Barrier(len(calls))

    def call(name: str, method: str, path: str) -> None:
        with b.client() as own:
            gate.wait()
            results[name] = own.request(method, path).status_code

    threads = [threading.Thread(target=call, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
