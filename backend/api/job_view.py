"""How the routes find a job and show it: the lookups that answer 404/400, and JobOut."""

from __future__ import annotations

from .. import pipelines
from ..jobs import FrameRanges, frame_range_error
from ..pipelines.base import Pipeline
from ..store import JobRecord, JobState, Store
from .errors import BadRequest, NotFound, Unprocessable
from .schemas import MAX_LISTED_MISSING, MAX_LISTED_RANGES, JobOut, ProgressOut


def existing_job(store: Store, job_id: str) -> JobRecord:
    job = store.get(job_id)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


def pipeline_for(kind: str) -> Pipeline:
    try:
        return pipelines.get(kind)
    except LookupError as exc:
        raise BadRequest(str(exc)) from exc


def check_frame(frame: int) -> None:
    """A frame number in a path: Blender's range or a 422 (never a file name it cannot have)."""
    problem = frame_range_error(frame)
    if problem is not None:
        raise Unprocessable(problem)


def missing_inputs(
    store: Store, job: JobRecord, pipeline: Pipeline | None
) -> dict[str, FrameRanges]:
    """Per pass, the required frames not uploaded yet, as ranges (never one number per frame
    between two keys)."""
    if pipeline is None or job.state is not JobState.AWAITING_INPUTS:
        return {}
    have = store.uploaded(job.id)
    out: dict[str, FrameRanges] = {}
    for p, frames in pipeline.required_inputs(job.spec()).items():
        missing = FrameRanges.of(frames).without(have.get(p, set()))
        if missing:
            out[p.value] = missing
    return out


def job_out(store: Store, job: JobRecord) -> JobOut:
    missing = missing_inputs(store, job, pipelines.load(job.kind).pipeline)
    p = job.progress
    return JobOut(
        id=job.id,
        kind=job.kind,
        state=job.state,
        progress=ProgressOut(
            stage=p.stage,
            done=p.done,
            total=p.total,
            chunk=p.chunk,
            chunks=p.chunks,
            fraction=1.0 if job.state is JobState.DONE else p.fraction,
        ),
        error=job.error,
        finished_frames=store.finished_frames(job.id),
        frames=list(job.frames),
        keyframes=list(job.keyframes),
        width=job.width,
        height=job.height,
        params=job.params,
        missing_inputs={k: first_frames(v, MAX_LISTED_MISSING) for k, v in missing.items()},
        missing_input_ranges={k: list(v.spans[:MAX_LISTED_RANGES]) for k, v in missing.items()},
        missing_input_counts={k: len(v) for k, v in missing.items()},
        cancel_requested=job.cancel_requested,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def first_frames(frames: FrameRanges, count: int) -> list[int]:
    out: list[int] = []
    for f in frames:
        if len(out) >= count:
            break
        out.append(f)
    return out


def ranges_text(frames: FrameRanges, shown: int = 12) -> str:
    """'0, 30, 40-99 (62 frames)': at most `shown` ranges, then how many more."""
    spans = frames.spans
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:shown])
    if len(spans) > shown:
        text += f" and {len(spans) - shown} more ranges"
    return text if len(frames) == len(spans) else f"{text} ({len(frames)} frames)"
