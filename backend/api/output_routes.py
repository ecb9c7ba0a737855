"""GET /v1/jobs/{id}/outputs/{frame}: a finished frame's PNG."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..store import JobState
from .errors import NotFound
from .job_view import check_frame, existing_job
from .services import ServicesDep

router = APIRouter()


@router.get(
    "/v1/jobs/{job_id}/outputs/{frame}",
    responses={200: {"content": {"image/png": {}}}},
    response_class=Response,
)
def get_output(job_id: str, frame: int, services: ServicesDep) -> Response:
    check_frame(frame)
    job = existing_job(services.store, job_id)
    if frame not in job.frames:
        raise NotFound(f"frame {frame} is not part of job {job_id}")
    data = services.store.read_output(job_id, frame)
    if data is None:
        if job.state is JobState.FAILED and job.error:
            raise NotFound(f"frame {frame} was not made: the job failed: {job.error}")
        raise NotFound(f"frame {frame} is not finished yet (job is {job.state.value})")
    return Response(content=data, media_type="image/png")
