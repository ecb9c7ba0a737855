"""Promise 15: the API never answers 5xx to a client's mistake.

Property-based fuzzing of the backend's own OpenAPI spec with schemathesis, over real HTTP with
the token: valid requests (positive) and requests that break the schema (negative) for every
operation, a bounded number of examples each; no answer may be a 5xx. Then a stateful test
(hypothesis rule-based state machine) drives job life cycles in random orders (create, upload,
start, cancel, delete, poll, unknown ids) and checks each answer against a model of the life
cycle: the right status for each action in each state, legal state changes only, finished jobs
never change.
"""

from __future__ import annotations

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)
from schemathesis import GenerationMode

from tests.backend.images import png_bytes
from tests.backend.server import Backend
from tests.promises.support import TERMINAL, create_inbetween, square_keys

EXAMPLES_PER_OPERATION = 8
SIDE = 16  # crossfade in-betweens of 16×16 frames: jobs finish in milliseconds

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same examples on every run
    database=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def test_fuzzing_the_openapi_spec_never_gets_a_5xx(shared_backend: Backend) -> None:
    b = shared_backend
    with b.client() as c:
        spec = c.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    with b.client() as c:  # a real job, so that generated requests get past the 404
        real = create_inbetween(c, square_keys({0: 1.0, 9: 6.0}, SIDE, SIDE), [0, 9], upload=False)
    sent: dict[tuple[str, str], int] = {}
    with requests.Session() as session:
        for op in operations:
            sent[op.label, "positive"] = fuzz(b, session, op, GenerationMode.POSITIVE)
            if can_be_broken(spec["paths"][op.path][op.method.lower()]):
                sent[op.label, "negative"] = fuzz(b, session, op, GenerationMode.NEGATIVE)
        # The routes of one job, with its real id (cancel last: it closes the job).
        for op in sorted(operations, key=lambda o: o.path.endswith("/cancel")):
            if "{job_id}" in op.path and op.method.upper() != "DELETE":
                ids = {"job_id": real["id"]}
                sent[op.label, "real id"] = fuzz(b, session, op, GenerationMode.POSITIVE, ids)
    for op in operations:
        assert sent[op.label, "positive"] > 0, sent
    assert (
        sum(n for (_, mode), n in sent.items() if mode == "negative") >= 4 * EXAMPLES_PER_OPERATION
    )
    print("requests sent per operation and mode:", sent)
    assert sum(sent.values()) >= len(operations) * EXAMPLES_PER_OPERATION, sent
    with b.client() as c:
        assert c.get("/v1/health").status_code == 200


def can_be_broken(operation: dict) -> bool:
    """Whether a request can violate this operation's schema (a plain string path id cannot)."""
    if "requestBody" in operation:
        return True
    for param in operation.get("parameters", []):
        schema = {k: v for k, v in param.get("schema", {}).items() if k != "title"}
        if schema != {"type": "string"}:
            return True
    return False


def fuzz(
    b: Backend,
    session: requests.Session,
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    path_parameters: dict[str, str] | None = None,
) -> int:
    """Send generated requests for one operation; returns how many reached the server."""
    auth = {"Authorization": f"Bearer {b.token}"}
    sent = 0

    @FUZZ_SETTINGS
    @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: schemathesis.Case) -> None:
        nonlocal sent
        try:
            response = case.call(base_url=b.url, session=session, headers=auth, timeout=30)
        except (ValueError, requests.exceptions.InvalidHeader):
            reject()  # the HTTP library refuses to send it: nothing reached the server
        sent += 1
        assert response.status_code < 500, (
            f"{response.status_code} for {case.as_curl_command()}: {response.text[:300]}"
        )

    run()
    return sent


# ---- the job life cycle, stateful ---------------------------------------------------------

REACHABLE = {
    "awaiting_inputs": {"awaiting_inputs", "queued", "running", "done", "failed", "canceled"},
    "queued": {"queued", "running", "done", "failed", "canceled"},
    "running": {"running", "done", "failed", "canceled"},
    "done": {"done"},
    "failed": {"failed"},
    "canceled": {"canceled"},
}


class JobModel:
    def __init__(self, job_id: str, frames: list[int], keys: list[int]) -> None:
        self.id = job_id
        self.frames = frames
        self.keys = keys
        self.uploaded: set[int] = set()
        self.state = "awaiting_inputs"  # last state seen
        self.started = False


def job_life_cycle(b: Backend) -> type[RuleBasedStateMachine]:
    class JobLifeCycle(RuleBasedStateMachine):
        jobs = Bundle("jobs")

        def __init__(self) -> None:
            super().__init__()
            self.c = httpx.Client(
                base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}, timeout=30
            )
            self.images = {
                f: png_bytes(img) for f, img in square_keys({0: 1.0, 9: 6.0}, SIDE, SIDE).items()
            }

        def teardown(self) -> None:
            self.c.close()

        def call(self, method: str, path: str, **kw) -> httpx.Response:
            r = self.c.request(method, path, **kw)
            assert r.status_code < 500, (method, path, r.status_code, r.text)
            return r

        def observe(self, job: JobModel) -> dict:
            now = self.call("GET", f"/v1/jobs/{job.id}").json()
            assert now["state"] in REACHABLE[job.state], (job.state, now["state"])
            if not job.started and now["state"] != "canceled":
                assert now["state"] == "awaiting_inputs", "a job ran without being started"
            if now["state"] == "done":
                assert now["finished_frames"] == job.frames
            job.state = now["state"]
            return now

        @rule(target=jobs, last=st.integers(1, 9), first_key_late=st.booleans())
        def create(self, last: int, first_key_late: bool) -> JobModel:
            keys = [1 if first_key_late else 0, 9]
            frames = list(range(0, last + 1))
            body = {"kind": "inbetween", "frames": frames, "keyframes": keys, "width": SIDE,
                    "height": SIDE, "params": {"method": "crossfade"}}  # fmt: skip
            r = self.call("POST", "/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            return JobModel(r.json()["id"], frames, keys)

        @rule(target=jobs, last=st.integers(1, 9))
        def submit(self, last: int) -> JobModel:
            """What the add-on does: create, upload every key, start."""
            job = self.create(last, first_key_late=False)
            for which in (0, 1):
                self.upload(job, which)
            self.start(job)
            return job

        @rule(job=jobs, which=st.sampled_from([0, 1]))
        def upload(self, job: JobModel, which: int) -> None:
            frame = job.keys[which]
            image = self.images[0 if which == 0 else 9]
            r = self.call("PUT", f"/v1/jobs/{job.id}/inputs/keyframe/{frame}", content=image)
            self.observe(job)
            if r.status_code == 200:
                job.uploaded.add(frame)
            else:
                assert r.status_code == 409 and job.state != "awaiting_inputs", r.text

        @rule(job=jobs)
        def start(self, job: JobModel) -> None:
            before = self.observe(job)["state"]
            r = self.call("POST", f"/v1/jobs/{job.id}/start")
            if before in TERMINAL:
                assert r.status_code == 409
            elif before == "awaiting_inputs" and job.uploaded != set(job.keys):
                assert r.status_code == 400 and "keyframe" in r.json()["detail"]
            elif before == "awaiting_inputs":
                assert r.status_code == 202, r.text
                job.started = True
            elif r.status_code == 409:  # it finished between the poll and the start
                assert self.observe(job)["state"] in TERMINAL
            else:
                assert r.status_code in (200, 202), r.text
            self.observe(job)

        @rule(job=jobs)
        def cancel(self, job: JobModel) -> None:
            before = self.observe(job)["state"]
            r = self.call("POST", f"/v1/jobs/{job.id}/cancel")
            if r.status_code == 409:
                assert self.observe(job)["state"] in TERMINAL
                return
            assert r.status_code == 200, r.text
            if before in ("awaiting_inputs", "queued") and r.json()["state"] != "done":
                assert r.json()["state"] in ("canceled", "running"), r.json()
            self.observe(job)
            assert job.state != "done" or before not in ("awaiting_inputs",)

        @rule(job=consumes(jobs))
        def delete(self, job: JobModel) -> None:
            r = self.call("DELETE", f"/v1/jobs/{job.id}")
            if r.status_code == 409:  # queued or running: it stays
                assert "cancel it first" in r.json()["detail"]
                self.call("POST", f"/v1/jobs/{job.id}/cancel")
                return
            assert r.status_code == 200
            assert self.call("GET", f"/v1/jobs/{job.id}").status_code == 404
            assert not (b.data / "jobs" / job.id).exists()

        @rule(job=jobs)
        def poll(self, job: JobModel) -> None:
            self.observe(job)

        @rule(job_id=st.text("0123456789abcdef", min_size=32, max_size=32))
        def unknown(self, job_id: str) -> None:
            assert self.call("GET", f"/v1/jobs/{job_id}").status_code == 404

        @invariant()
        def server_is_up(self) -> None:
            assert self.call("GET", "/v1/health").status_code == 200

    return JobLifeCycle


def test_job_life_cycles_in_random_orders_follow_the_rules(shared_backend: Backend) -> None:
    run_state_machine_as_test(
        job_life_cycle(shared_backend),
        settings=settings(
            max_examples=12,
            stateful_step_count=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
