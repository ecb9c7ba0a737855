"""PUT /v1/jobs/{id}/inputs/{pass}/{frame}: a job's renders, checked before they are kept."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from ..jobs import ANY_SIZE_PASSES, InputError, Pass
from ..store import JobRecord, JobState, Store
from ..vision.image_headers import probe
from ..vision.imageio import DecodeBusy, decode, label
from ..worker import MAX_PIXELS
from .errors import BadRequest, Conflict, TooBusy, Unprocessable
from .job_view import check_frame, existing_job, pipeline_for
from .services import ServicesDep

router = APIRouter()


@router.put("/v1/jobs/{job_id}/inputs/{pass_name}/{frame}")
async def upload_input(
    job_id: str, pass_name: Pass, frame: int, request: Request, services: ServicesDep
) -> dict:
    check_frame(frame)
    job = existing_job(services.store, job_id)
    if job.state is not JobState.AWAITING_INPUTS:
        raise Conflict(f"job {job_id} is {job.state.value}; inputs are closed")
    accepted = pipeline_for(job.kind).accepted_inputs(job.spec())
    if pass_name not in accepted:
        names = ", ".join(p.value for p in accepted) or "none"
        raise Unprocessable(f"a {job.kind} job takes no {pass_name.value} pass (it takes: {names})")
    if frame not in accepted[pass_name]:
        raise Unprocessable(f"frame {frame} is not one this job takes a {pass_name.value} pass for")
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
    if not data:
        raise BadRequest("empty body: send the PNG or EXR file's bytes")
    return await run_in_threadpool(_validate_and_save, services.store, job, pass_name, frame, data)


def _validate_and_save(
    store: Store, job: JobRecord, pass_name: Pass, frame: int, data: bytearray
) -> dict[str, Any]:
    """Decode the upload (its size and format checked) and keep it; InputsClosed and
    UnsafePath from the store become 404/409 (errors.py)."""
    try:  # the body's own bytes: no second copy of a large upload
        info = probe(data, what=label(pass_name))  # type: ignore[arg-type]
        decode(
            data,  # type: ignore[arg-type]
            max_pixels=MAX_PIXELS,
            expect_size=None if pass_name in ANY_SIZE_PASSES else (job.width, job.height),
            pass_=pass_name,
        )
    except DecodeBusy as exc:
        raise TooBusy(f"{pass_name.value} frame {frame}: {exc}") from exc
    except InputError as exc:
        raise BadRequest(f"{pass_name.value} frame {frame}: {exc}") from exc
    store.save_input(job.id, pass_name, frame, info.format, data)
    return {
        "pass": pass_name.value,
        "frame": frame,
        "format": info.format,
        "width": info.width,
        "height": info.height,
        "bytes": len(data),
    }
