"""The job routes: check, create, start, read, list, cancel and delete."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from pydantic import ValidationError

from ..jobs import InputError, JobSpec, frame_range_error, validation_text
from ..pipelines.base import Pipeline, input_reasons
from ..store import JobState
from .errors import ApiError, BadRequest, Conflict, NotFound, TooBusy, Unprocessable
from .job_view import existing_job, job_out, missing_inputs, pipeline_for, ranges_text
from .schemas import JobCheck, JobCreate, JobOut
from .services import ServicesDep

# GET /v1/jobs answers pages of at most this many bytes of JSON (and at least one job); the
# X-Next-Cursor header names the next page.
PAGE_BYTES = 1024 * 1024
NEXT_CURSOR = "X-Next-Cursor"
DELETABLE = (JobState.AWAITING_INPUTS, JobState.DONE, JobState.FAILED, JobState.CANCELED)

router = APIRouter()


def validated(body: JobCreate) -> tuple[Pipeline, JobSpec]:
    """The body's pipeline and job, params cleaned; an ApiError when it cannot be one."""
    pipeline = pipeline_for(body.kind)
    frames = tuple(body.frames)
    keyframes = tuple(body.keyframes)
    for name, values in (("frames", frames), ("keyframes", keyframes)):
        for f in values:
            if (problem := frame_range_error(f, f"{name[:-1]}")) is not None:
                raise Unprocessable(problem)
        if list(values) != sorted(set(values)):
            raise Unprocessable(f"{name} must be ascending without repeats")
    try:
        params = pipeline.params_model().model_validate(body.params)
    except ValidationError as exc:
        raise Unprocessable("params: " + validation_text(exc)) from exc
    clean = params.model_dump(mode="json")
    spec = JobSpec("0" * 32, body.kind, body.width, body.height, frames, keyframes, clean)
    try:
        pipeline.check_job(spec)
    except InputError as exc:
        raise Unprocessable(str(exc)) from exc
    return pipeline, spec


@router.post("/v1/jobs/check", response_model=JobCheck)
def check_job(body: JobCreate, services: ServicesDep) -> JobCheck:
    """What POST /v1/jobs and its start would refuse for this body (the models installed
    now included), before anything is rendered or uploaded. Creates nothing."""
    try:
        pipeline, spec = validated(body)
    except ApiError as exc:
        return JobCheck(ok=False, problems=[exc.detail])
    missing = pipeline.missing_models(spec, services.models())
    if missing:  # maybe installed since the last scan: the user was just told to
        missing = pipeline.missing_models(spec, services.models(rescan=True))
    problems = ["models missing: " + " ".join(missing)] if missing else []
    return JobCheck(ok=not problems, problems=problems)


@router.post("/v1/jobs", status_code=201, response_model=JobOut)
def create_job(
    body: JobCreate,
    response: Response,
    services: ServicesDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    _, spec = validated(body)
    request_hash = hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()
    store = services.store
    job, created = store.create_job(  # IdempotencyConflict: 409 (errors.py)
        kind=body.kind,
        width=body.width,
        height=body.height,
        frames=spec.frames,
        keyframes=spec.keyframes,
        params=dict(spec.params),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    if not created:
        response.status_code = 200
    else:
        store.expire_awaiting(keep=services.max_awaiting)
    return job_out(store, job)


@router.post("/v1/jobs/{job_id}/start", response_model=JobOut)
def start_job(job_id: str, response: Response, services: ServicesDep) -> JobOut:
    store = services.store
    job = existing_job(store, job_id)
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        return job_out(store, job)
    if job.state.terminal:
        raise Conflict(f"job {job_id} is {job.state.value}; create a new job")
    pipeline = pipeline_for(job.kind)
    missing = missing_inputs(store, job, pipeline)
    if missing:
        existing_job(store, job_id)  # deleted meanwhile: its inputs went with it
        why = {p: f", {reason}" for p, reason in input_reasons(pipeline, job.spec()).items()}
        listed = "; ".join(
            f"{p} for frame(s) {ranges_text(fs)}{why.get(p, '')}" for p, fs in missing.items()
        )
        raise BadRequest(f"inputs missing: {listed}")
    models = services.models_when_read()  # never a scan of the models folder in here
    missing_models = pipeline.missing_models(job.spec(), models)
    if missing_models:
        raise BadRequest("models missing: " + " ".join(missing_models))
    pinned = pipeline.pin_models(job.spec(), models)
    if pinned != job.params:
        store.set_params(job_id, pinned)
    if store.count(JobState.QUEUED) >= services.max_queue:
        raise TooBusy(f"the queue is full ({services.max_queue} jobs); try again when one finishes")
    started = store.transition(job_id, JobState.QUEUED, allowed_from=(JobState.AWAITING_INPUTS,))
    services.worker.notify()
    response.status_code = 202
    return job_out(store, started or existing_job(store, job_id))


@router.get("/v1/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, services: ServicesDep) -> JobOut:
    return job_out(services.store, existing_job(services.store, job_id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, services: ServicesDep) -> JobOut:
    store = services.store
    job = existing_job(store, job_id)
    if job.state.terminal:
        raise Conflict(f"job {job_id} is {job.state.value}; a finished job cannot be canceled")
    services.worker.cancel(job_id)
    store.transition(
        job_id, JobState.CANCELED, allowed_from=(JobState.AWAITING_INPUTS, JobState.QUEUED)
    )
    return job_out(store, existing_job(store, job_id))


@router.get("/v1/jobs", response_model=list[JobOut])
def list_jobs(
    response: Response,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    state: JobState | None = None,
    cursor: Annotated[int | None, Query(ge=1, description=f"from {NEXT_CURSOR}")] = None,
) -> list[JobOut]:
    """Newest first, one page of at most `limit` jobs and about PAGE_BYTES of JSON (at
    least one job). When more follow, the X-Next-Cursor header holds the `cursor` to pass
    for the next page."""
    store = services.store
    page: list[JobOut] = []
    size, before, full = 0, cursor, False
    while not full and len(page) < limit:
        batch = store.list(limit=min(8, limit - len(page)), state=state, before=before)
        if not batch:
            break
        for job in batch:
            out = job_out(store, job)
            size += len(out.model_dump_json())
            if page and size > PAGE_BYTES:
                full = True
                break
            page.append(out)
            before = job.seq
    if before is not None and page and store.any_before(before, state):
        response.headers[NEXT_CURSOR] = str(before)
    return page


@router.delete("/v1/jobs/{job_id}")
def delete_job(job_id: str, services: ServicesDep) -> dict[str, str]:
    job = existing_job(services.store, job_id)
    if services.worker.current_job == job_id:
        raise Conflict(f"job {job_id} is {job.state.value}; cancel it first")
    # checked and deleted in one step: a start at the same moment wins or loses whole
    was = services.store.delete(job_id, allowed_from=DELETABLE)
    if was is None:
        raise NotFound(f"no job with id {job_id!r}")
    if was not in DELETABLE:
        raise Conflict(f"job {job_id} is {was.value}; cancel it first")
    return {"deleted": job_id}
